"""The test peers themselves: if these fail, the other failures say nothing about Moat."""

import smtplib
import subprocess

from moatlib import make_message, new_marker, tls_client_context


def test_sink_records_envelope_and_message(sink):
    s = sink()
    marker = new_marker()
    with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
        c.sendmail("a@ext.test", ["bob@example.com", "carol@example.com"],
                   make_message(marker=marker))
    m = s.wait_marker(marker)
    assert m.sender() == "a@ext.test"
    assert m.rcpt_addrs() == ["bob@example.com", "carol@example.com"]
    assert m.msg["Subject"] == "test"


def test_sink_rejects_with_configured_reply(sink):
    s = sink(args=["-f", "RCPT", "-B", "550 5.1.1 User unknown"])
    with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
        c.ehlo()
        c.mail("a@ext.test")
        code, msg = c.rcpt("bob@example.com")
    assert (code, msg) == (550, b"5.1.1 User unknown")


def test_unbound_serves_test_zones(unbound):
    r = subprocess.run(["dig", "+short", "-p", str(unbound.port), "@127.0.0.1",
                        "mail.example.net", "A"], capture_output=True, text=True, timeout=10)
    assert r.stdout.strip() == "127.0.0.1"
    r = subprocess.run(["dig", "+short", "-p", str(unbound.port), "@127.0.0.1",
                        "remote.example.org", "MX"], capture_output=True, text=True, timeout=10)
    assert r.stdout.strip() == "10 mx.remote.example.org."


def test_postfix_mailbox_with_starttls(postfix, certs):
    pf = postfix(["--role", "mailbox", "--rcpt", "alice@example.com",
                  "--tls-key", certs["key"], "--tls-chain", certs["chain"]])
    marker = new_marker()
    with smtplib.SMTP("127.0.0.1", pf.port, timeout=10) as c:
        c.starttls(context=tls_client_context(certs["ca"]))
        c.ehlo()
        c.mail("a@ext.test")
        assert c.rcpt("nobody@example.com")[0] == 550
        assert c.rcpt("alice@example.com")[0] == 250
        assert c.data(make_message(marker=marker).encode())[0] == 250
    from moatlib import wait_until
    files = wait_until(lambda: pf.mailbox_files("alice@example.com"), 15, what="maildir delivery")
    text = files[0].read_text()
    assert marker in text
    assert "using TLSv1.3" in text
