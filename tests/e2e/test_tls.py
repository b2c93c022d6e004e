"""TLS toward the route: opportunistic, relaxed, strict (route --tls)."""

import re
import time

from moatlib import make_message, new_marker, wait_until


def test_relaxed_route_without_starttls_is_not_sent_in_clear(moatd, sink):
    """relaxed = TLS required: a route that offers no STARTTLS (smtp-sink) gets nothing."""
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"}, tls="relaxed",
              opts={"retry_schedule": "1s"})
    qid = m.send("sender@ext.test", "alice@example.com", make_message())
    time.sleep(2.5)   # the first attempt and at least one retry
    assert s.count() == 0, "message sent in clear despite --tls relaxed"
    assert qid.upper() in m.queue_ids(), "a TLS policy failure is temporary: the message stays queued"


def test_opportunistic_route_without_starttls_is_sent(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"}, tls="opportunistic")
    marker = new_marker()
    m.send("sender@ext.test", "alice@example.com", make_message(marker=marker))
    s.wait_marker(marker)


def test_relaxed_route_with_untrusted_certificate(moatd, postfix, certs):
    """relaxed: encrypted, certificate not checked (the test CA is not trusted by moatd)."""
    pf = postfix(["--role", "mailbox", "--rcpt", "alice@example.com",
                  "--tls-key", certs["key"], "--tls-chain", certs["chain"]])
    m = moatd(domains={"example.com": f"127.0.0.1:{pf.port}"}, tls="relaxed")
    marker = new_marker()
    m.send("sender@ext.test", "alice@example.com", make_message(marker=marker))
    files = wait_until(lambda: pf.mailbox_files("alice@example.com"), 20, what="Maildir delivery")
    text = files[0].read_text(errors="replace")
    assert marker in text
    assert re.search(r"\(using TLSv1\.[23] with cipher", text)


def test_strict_route_with_untrusted_certificate_is_not_sent(moatd, postfix, certs):
    """strict: the route's certificate is issued by the test CA, which moatd does not
    trust, so the message must wait in the queue rather than go out."""
    pf = postfix(["--role", "mailbox", "--rcpt", "alice@example.com",
                  "--tls-key", certs["key"], "--tls-chain", certs["chain"]])
    m = moatd(domains={"example.com": f"127.0.0.1:{pf.port}"}, tls="strict",
              opts={"retry_schedule": "1s"})
    qid = m.send("sender@ext.test", "alice@example.com", make_message())
    time.sleep(3)
    assert pf.mailbox_files("alice@example.com") == [], "delivered despite an untrusted certificate"
    assert qid.upper() in m.queue_ids()
    # the failure is logged with the message's queue id
    assert any(e.get("qid", "").upper() == qid.upper() and e.get("event") in ("deferred", "tls_failed")
               for e in m.events()), m.log_tail()
