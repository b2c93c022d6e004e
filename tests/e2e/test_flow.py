"""A message flows from a real client through moatd to a real server."""

import re
import smtplib
import subprocess

import pytest

from moatlib import (have_ipv6_loopback, make_message, new_marker, queued_id,
                     tls_client_context, wait_until)


def moat_received(msg):
    """The Received headers Moat added (by moat.example.test, the hostname the fixture sets)."""
    return [h for h in msg.get_all("Received", []) if "by moat.example.test" in h]


def test_smtplib_to_sink(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    marker = new_marker()
    msg = make_message(subject="flow", body="first line\r\n.leading dot", marker=marker)

    with m.smtp() as c:
        code, ehlo = c.ehlo("client.ext.test")
        assert code == 250
        assert b"PIPELINING" in ehlo and b"SIZE" in ehlo and b"STARTTLS" in ehlo
        assert c.mail("sender@ext.test")[0] == 250
        assert c.rcpt("alice@example.com")[0] == 250
        assert c.rcpt("bob@example.com")[0] == 250
        code, resp = c.data(msg.encode())
        assert code == 250
        queued_id(resp)

    got = s.wait_marker(marker)
    assert got.sender() == "sender@ext.test"
    assert sorted(got.rcpt_addrs()) == ["alice@example.com", "bob@example.com"]
    assert got.msg["Subject"] == "flow"
    # smtplib dot-stuffs; moatd must unstuff on the way in and stuff again on the way out
    assert "\n.leading dot\n" in got.text
    rec = moat_received(got.msg)
    assert len(rec) == 1, got.msg.get_all("Received")
    r = " ".join(rec[0].split())
    assert "from client.ext.test" in r
    assert "127.0.0.1" in r
    assert re.search(r"\bwith ESMTP\b", r), r
    # the sink's own Received header comes first, Moat's right after it
    assert "by moat.example.test" in got.msg.get_all("Received")[1]


def test_swaks_to_sink(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    marker = new_marker()
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{m.port}", "--from", "s@ext.test",
                        "--to", "carol@example.com", "--helo", "swaks.ext.test",
                        "--body", f"via swaks\n{marker}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"<-  250 2\.0\.0 Ok: queued as [0-9A-Fa-f]{16}", r.stdout), r.stdout
    got = s.wait_marker(marker)
    assert got.rcpt_addrs() == ["carol@example.com"]
    assert got.sender() == "s@ext.test"
    assert moat_received(got.msg)


def test_starttls_client_side(moatd, sink, certs):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"},
              opts={"tls_cert": certs["chain"], "tls_key": certs["key"]})
    marker = new_marker()
    with m.smtp() as c:
        c.ehlo("tls.ext.test")
        code, _ = c.starttls(context=tls_client_context(certs["ca"]))
        assert code == 220
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        code, ehlo = c.ehlo("tls.ext.test")
        assert code == 250
        assert b"STARTTLS" not in ehlo, "STARTTLS offered again inside TLS (RFC 3207 4.2)"
        assert c.mail("sender@ext.test")[0] == 250
        assert c.rcpt("alice@example.com")[0] == 250
        code, resp = c.data(make_message(marker=marker).encode())
        assert code == 250
        queued_id(resp)
    got = s.wait_marker(marker)
    rec = " ".join(moat_received(got.msg)[0].split())
    # RFC 3848: ESMTPS marks a session protected by STARTTLS
    assert re.search(r"\bwith ESMTPS\b", rec), rec


def test_starttls_with_generated_certificate(moatd, sink):
    """Without tls_cert moatd generates a certificate and still offers STARTTLS."""
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    with m.smtp() as c:
        c.ehlo("tls.ext.test")
        assert c.starttls(context=tls_client_context())[0] == 220
        assert c.ehlo("tls.ext.test")[0] == 250
        assert c.noop()[0] == 250


@pytest.mark.skipif(not have_ipv6_loopback(), reason="this machine has no ::1")
def test_ipv6_listener(moatd, sink, free_port6):
    s = sink()
    port6 = free_port6
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"}, listen=[f"[::1]:{port6}"])
    assert m.host == "::1"
    marker = new_marker()
    c = smtplib.SMTP(timeout=10)
    try:
        c.connect("::1", port6)
        c.ehlo("v6.ext.test")
        c.sendmail("v6@ext.test", ["alice@example.com"], make_message(marker=marker))
        c.quit()
    finally:
        c.close()
    got = s.wait_marker(marker)
    assert "IPv6:::1" in " ".join(moat_received(got.msg)[0].split()) or \
        "::1" in moat_received(got.msg)[0]


@pytest.fixture
def free_port6():
    from moatlib import free_port
    return free_port("::1")


def test_opportunistic_starttls_to_route(moatd, postfix, certs):
    """The route offers STARTTLS: moatd uses it (opportunistic), as Postfix's Received shows."""
    pf = postfix(["--role", "mailbox", "--rcpt", "alice@example.com",
                  "--tls-key", certs["key"], "--tls-chain", certs["chain"]])
    m = moatd(domains={"example.com": f"127.0.0.1:{pf.port}"})
    marker = new_marker()
    m.send("sender@ext.test", "alice@example.com", make_message(marker=marker))
    files = wait_until(lambda: pf.mailbox_files("alice@example.com"), 20, what="Maildir delivery")
    text = files[0].read_text(errors="replace")
    assert marker in text
    assert re.search(r"\(using TLSv1\.[23] with cipher", text), text[:1500]
    assert "by moat.example.test" in text


def test_route_host_by_name(moatd, sink):
    """The route names a host (mail.example.net), resolved through the test unbound."""
    s = sink()
    m = moatd(domains={"example.com": f"mail.example.net:{s.port}"})
    marker = new_marker()
    m.send("sender@ext.test", "alice@example.com", make_message(marker=marker))
    got = s.wait_marker(marker)
    assert got.rcpt_addrs() == ["alice@example.com"]


def test_several_messages_one_session(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    markers = [new_marker() for _ in range(5)]
    qids = set()
    with m.smtp() as c:
        c.ehlo("multi.ext.test")
        for i, mk in enumerate(markers):
            assert c.mail(f"s{i}@ext.test")[0] == 250
            assert c.rcpt(f"u{i}@example.com")[0] == 250
            code, resp = c.data(make_message(marker=mk).encode())
            assert code == 250
            qids.add(queued_id(resp))
    assert len(qids) == 5, "every message gets its own queue id"
    for i, mk in enumerate(markers):
        got = s.wait_marker(mk)
        assert got.rcpt_addrs() == [f"u{i}@example.com"]
        assert got.sender() == f"s{i}@ext.test"


def test_smtputf8_message_to_smtputf8_route(moatd, aiosmtpd_server):
    """RFC 6531: an internationalised envelope passes when the route offers SMTPUTF8."""
    route = aiosmtpd_server(enable_smtputf8=True)
    m = moatd(domains={"example.com": f"127.0.0.1:{route.port}"})
    with m.raw() as c:
        r = c.greet()
        assert "SMTPUTF8" in r.lines
        c.expect("MAIL FROM:<jörg@ext.test> SMTPUTF8", 250)
        c.expect("RCPT TO:<jürgen@example.com>", 250)
        c.expect("DATA", 354)
        c.send("From: <jörg@ext.test>\r\nSubject: Grüße\r\n\r\nhallo\r\n.\r\n")
        assert c.reply().code == 250
    wait_until(lambda: route.messages, 15, what="delivery to the SMTPUTF8 route")
    frm, rcpts, content = route.messages[0]
    assert frm == "jörg@ext.test" and rcpts == ["jürgen@example.com"]
    assert "Grüße".encode() in content


def test_delivery_splits_recipients_per_transaction(moatd, sink):
    """delivery_max_rcpts_per_txn bounds the RCPTs of one outgoing transaction."""
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"},
              opts={"delivery_max_rcpts_per_txn": 10})
    marker = new_marker()
    rcpts = [f"u{i:02d}@example.com" for i in range(25)]
    m.send("sender@ext.test", rcpts, make_message(marker=marker))
    wait_until(lambda: sum(len(x.rcpts) for x in s.with_marker(marker)) >= 25, 15,
               what="25 recipients delivered")
    got = s.with_marker(marker)
    assert all(len(x.rcpts) <= 10 for x in got), [len(x.rcpts) for x in got]
    assert sorted(a for x in got for a in x.rcpt_addrs()) == rcpts
    assert len(got) == 3


def test_binds_then_drops_privileges_when_root(moatd, sink):
    """Started as root, moatd binds its ports and then runs as run_user (moat,
    or nobody when no moat user exists): no uid or gid of the process is 0."""
    import os
    if os.geteuid() != 0:
        pytest.skip("needs root to start moatd as root")
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    status = open(f"/proc/{m.proc.pid}/status").read()
    uids = next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1:]
    gids = next(l for l in status.splitlines() if l.startswith("Gid:")).split()[1:]
    assert "0" not in uids and "0" not in gids, status
    assert any(e.get("event") == "privileges_dropped" for e in m.events())
    # and it still works: the spool, the store and the API are usable as that user
    marker = new_marker()
    m.send("sender@ext.test", "alice@example.com", make_message(marker=marker))
    s.wait_marker(marker)
    m.cli("domain", "list", check=0)
