"""The durable queue: retries, DSNs, and nothing lost across crashes and restarts."""

import re
import time

from moatlib import free_port, make_message, new_marker, wait_until

FAST = {"retry_schedule": "1s"}


def dsn_parts(sink_msg):
    """(top-level message, delivery-status text, returned-part text) of an RFC 3464 DSN."""
    msg = sink_msg.msg
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status", msg["Content-Type"]
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) >= 2, "a DSN has at least two parts"
    assert parts[0].get_content_type() == "text/plain"
    status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1, [p.get_content_type() for p in parts]
    st = status[0]
    # message/delivery-status: the email parser splits it into header blocks
    blocks = st.get_payload()
    text = "\n".join(b.as_string() for b in blocks) if isinstance(blocks, list) else str(blocks)
    returned = [p for p in parts if p.get_content_type() in ("message/rfc822", "text/rfc822-headers")]
    return msg, text, (returned[0].as_string() if returned else "")


def test_route_down_then_delivered_on_retry(moatd, sink):
    port = free_port()
    s = sink(port=port, start=False)
    m = moatd(domains={"example.com": f"127.0.0.1:{port}"}, opts=FAST)
    marker = new_marker()
    qid = m.send("sender@ext.test", "alice@example.com", make_message(marker=marker))

    # it stays queued and visible while the route is down
    time.sleep(1.5)
    assert qid.upper() in m.queue_ids(), m.cli("queue", "list", "--json").stdout
    show = m.cli("queue", "show", qid, json_out=True, check=0)
    assert "alice@example.com" in show.stdout

    s.start()
    got = s.wait_marker(marker, timeout=20)
    assert got.rcpt_addrs() == ["alice@example.com"]
    wait_until(lambda: qid.upper() not in m.queue_ids(), 10, what="queue empty after delivery")
    # delivered exactly once
    time.sleep(1.5)
    assert len(s.with_marker(marker)) == 1


def test_temporary_rcpt_failure_retried(moatd, sink):
    """A 4xx from the route is retried, the message is not bounced."""
    port = free_port()
    bad = sink(port=port, args=["-r", "RCPT", "-b", "450 4.2.0 try later"], name="tempfail")
    senders = sink(name="senders")
    m = moatd(domains={"example.com": f"127.0.0.1:{port}", "corp.test": f"127.0.0.1:{senders.port}"},
              opts=FAST)
    marker = new_marker()
    qid = m.send("someone@corp.test", "alice@example.com", make_message(marker=marker))
    time.sleep(2.5)   # two attempts at least
    assert qid.upper() in m.queue_ids()
    bad.stop()
    good = sink(port=port, name="good")
    got = good.wait_marker(marker, timeout=20)
    assert got.rcpt_addrs() == ["alice@example.com"]
    assert senders.count() == 0, "a temporary failure must not bounce"


def test_permanent_failure_dsn_to_internal_sender(moatd, sink):
    """5xx from the route: RFC 3464 DSN to the sender, delivered on the sender domain's route."""
    bad = sink(args=["-f", "RCPT", "-B", "550 5.1.1 User unknown"], name="rejecting")
    senders = sink(name="senders")
    m = moatd(domains={"example.com": f"127.0.0.1:{bad.port}",
                       "corp.test": f"127.0.0.1:{senders.port}"}, opts=FAST)
    marker = new_marker()
    qid = m.send("jane@corp.test", "nobody@example.com",
                 make_message(sender="jane@corp.test", to="nobody@example.com", marker=marker))

    dsn = senders.wait_count(1, timeout=20)[0]
    assert dsn.sender() == "", f"a DSN has the null envelope sender, got {dsn.mail_from!r}"
    assert dsn.rcpt_addrs() == ["jane@corp.test"]
    msg, status, returned = dsn_parts(dsn)
    assert re.search(r"^Status: 5\.\d{1,3}\.\d{1,3}\s*$", status, re.M), status
    assert re.search(r"^Status: 5\.1\.1\s*$", status, re.M), status
    assert re.search(r"^Action: failed\s*$", status, re.M | re.I), status
    assert re.search(r"^Final-Recipient: rfc822;\s*nobody@example\.com\s*$", status, re.M | re.I), status
    assert re.search(r"^Reporting-MTA: dns;\s*moat\.example\.test\s*$", status, re.M | re.I), status
    assert re.search(r"^Diagnostic-Code: smtp;\s*550 5\.1\.1 User unknown", status, re.M | re.I), status
    assert marker in returned or "Subject: test" in returned, "the DSN returns the message or its headers"
    assert msg["Auto-Submitted"] and msg["Auto-Submitted"].startswith("auto-replied"), \
        "RFC 3834: a DSN is Auto-Submitted: auto-replied"
    wait_until(lambda: qid.upper() not in m.queue_ids(), 10, what="failed message leaves the queue")


def test_permanent_failure_dsn_to_external_sender_via_mx(moatd, sink):
    """The sender is outside: the DSN goes to remote.example.org's MX (test unbound) on delivery_port."""
    bad = sink(args=["-f", "RCPT", "-B", "554 5.7.1 no thanks"], name="rejecting")
    mx = sink(name="ext-mx")
    m = moatd(domains={"example.com": f"127.0.0.1:{bad.port}"},
              opts=dict(FAST, delivery_port=mx.port))
    m.send("bill@remote.example.org", "alice@example.com", make_message(sender="bill@remote.example.org"))
    dsn = mx.wait_count(1, timeout=20)[0]
    assert dsn.rcpt_addrs() == ["bill@remote.example.org"]
    assert dsn.sender() == ""
    _, status, _ = dsn_parts(dsn)
    assert re.search(r"^Status: 5\.7\.1\s*$", status, re.M), status
    assert re.search(r"^Final-Recipient: rfc822;\s*alice@example\.com\s*$", status, re.M | re.I), status


def test_partial_failure_dsn_only_for_failed_recipient(moatd, aiosmtpd_server, sink):
    route = aiosmtpd_server(rcpt_replies={"ghost@example.com": "550 5.1.1 User unknown"})
    senders = sink(name="senders")
    m = moatd(domains={"example.com": f"127.0.0.1:{route.port}",
                       "corp.test": f"127.0.0.1:{senders.port}"}, opts=FAST)
    marker = new_marker()
    m.send("jane@corp.test", ["alice@example.com", "ghost@example.com"], make_message(marker=marker))
    wait_until(lambda: route.messages, 15, what="delivery of the accepted recipient")
    frm, rcpts, content = route.messages[0]
    assert rcpts == ["alice@example.com"]
    assert marker.encode() in content
    dsn = senders.wait_count(1, timeout=15)[0]
    _, status, _ = dsn_parts(dsn)
    assert re.search(r"Final-Recipient: rfc822;\s*ghost@example\.com", status, re.I), status
    assert not re.search(r"Final-Recipient: rfc822;\s*alice@", status, re.I), status


def test_null_sender_failure_gets_no_dsn(moatd, sink):
    bad = sink(args=["-f", "RCPT", "-B", "550 5.1.1 User unknown"], name="rejecting")
    mx = sink(name="ext-mx")
    m = moatd(domains={"example.com": f"127.0.0.1:{bad.port}"},
              opts=dict(FAST, delivery_port=mx.port))
    qid = m.send("", "nobody@example.com", make_message(sender="MAILER-DAEMON@remote.example.org"))
    wait_until(lambda: qid.upper() not in m.queue_ids(), 15, what="bounced message leaves the queue")
    # a control bounce proves DSNs do flow; the null-sender one must not be among them
    marker = new_marker()
    m.send("ctl@remote.example.org", "nobody@example.com", make_message(marker=marker))
    dsns = mx.wait_count(1, timeout=15)
    time.sleep(1.0)
    dsns = mx.messages()
    assert len(dsns) == 1, f"exactly one DSN expected (the control's), got {dsns}"
    assert dsns[0].rcpt_addrs() == ["ctl@remote.example.org"]


def test_delay_warning_then_delivery(moatd, sink):
    port = free_port()
    route = sink(port=port, start=False, name="route")
    senders = sink(name="senders")
    m = moatd(domains={"example.com": f"127.0.0.1:{port}", "corp.test": f"127.0.0.1:{senders.port}"},
              opts={"retry_schedule": "1s", "delay_warning_after": "2s"})
    marker = new_marker()
    qid = m.send("jane@corp.test", "alice@example.com", make_message(marker=marker))
    warn = senders.wait_count(1, timeout=20)[0]
    assert warn.sender() == ""
    _, status, _ = dsn_parts(warn)
    assert re.search(r"^Action: delayed\s*$", status, re.M | re.I), status
    assert re.search(r"^Status: 4\.\d{1,3}\.\d{1,3}\s*$", status, re.M), status
    assert qid.upper() in m.queue_ids(), "a delay warning leaves the message queued"
    route.start()
    route.wait_marker(marker, timeout=20)
    time.sleep(2.5)
    assert senders.count() == 1, "exactly one delay warning"


def test_queue_lifetime_expiry_bounces(moatd, sink):
    port = free_port()   # nothing ever listens here
    senders = sink(name="senders")
    m = moatd(domains={"example.com": f"127.0.0.1:{port}", "corp.test": f"127.0.0.1:{senders.port}"},
              opts={"retry_schedule": "1s", "queue_lifetime": "3s", "delay_warning_after": "0"})
    qid = m.send("jane@corp.test", "alice@example.com", make_message())
    dsn = senders.wait_count(1, timeout=25)[0]
    _, status, _ = dsn_parts(dsn)
    assert re.search(r"^Action: failed\s*$", status, re.M | re.I), status
    assert re.search(r"^Status: 4\.\d{1,3}\.\d{1,3}\s*$", status, re.M), \
        "expiry after temporary failures reports the last (4.x.x) status: " + status
    assert re.search(r"Final-Recipient: rfc822;\s*alice@example\.com", status, re.I), status
    wait_until(lambda: qid.upper() not in m.queue_ids(), 10, what="expired message leaves the queue")


def test_kill9_after_250_then_restart_delivers(moatd, sink):
    port = free_port()
    route = sink(port=port, start=False)
    m = moatd(domains={"example.com": f"127.0.0.1:{port}"}, opts=FAST)
    markers = [new_marker() for _ in range(3)]
    for mk in markers:
        m.send("sender@ext.test", "alice@example.com", make_message(marker=mk))
    m.kill9()   # right after the last 250
    m.start()
    route.start()
    for mk in markers:
        route.wait_marker(mk, timeout=20)
    time.sleep(1.5)
    for mk in markers:
        assert len(route.with_marker(mk)) == 1, f"{mk} delivered more than once"


def test_sigterm_with_queued_message_then_restart_delivers(moatd, sink):
    port = free_port()
    route = sink(port=port, start=False)
    m = moatd(domains={"example.com": f"127.0.0.1:{port}"}, opts=FAST)
    marker = new_marker()
    qid = m.send("sender@ext.test", "alice@example.com", make_message(marker=marker))
    assert m.stop() == 0
    m.start()
    assert qid.upper() in m.queue_ids(), "the queued message survives a clean restart"
    route.start()
    route.wait_marker(marker, timeout=20)


def test_sigterm_during_session_exits_cleanly(moatd, sink):
    """A session in the middle of a transaction does not keep moatd from exiting 0."""
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"}, opts={"smtp_timeout_shutdown": "1s"})
    c = m.raw()
    c.greet()
    c.expect("MAIL FROM:<a@ext.test>", 250)
    t0 = time.monotonic()
    assert m.stop() == 0
    assert time.monotonic() - t0 < 10
    c.close()


def test_dsn_notify_never_suppresses_bounce(moatd, sink):
    bad = sink(args=["-f", "RCPT", "-B", "550 5.1.1 User unknown"], name="rejecting")
    senders = sink(name="senders")
    m = moatd(domains={"example.com": f"127.0.0.1:{bad.port}",
                       "corp.test": f"127.0.0.1:{senders.port}"}, opts=FAST)
    with m.raw() as c:
        c.greet()
        c.expect("MAIL FROM:<jane@corp.test>", 250)
        c.expect("RCPT TO:<nobody@example.com> NOTIFY=NEVER", 250)
        c.expect("RCPT TO:<ghost@example.com>", 250)
        c.expect("DATA", 354)
        c.send(make_message() + ".\r\n")
        assert c.reply().code == 250
    dsn = senders.wait_count(1, timeout=20)[0]
    time.sleep(1.0)
    assert senders.count() == 1
    _, status, _ = dsn_parts(dsn)
    assert re.search(r"Final-Recipient: rfc822;\s*ghost@example\.com", status, re.I), status
    assert "nobody@example.com" not in status, "NOTIFY=NEVER recipient reported: " + status


def test_dsn_envid_orcpt_ret_hdrs(moatd, sink):
    """RFC 3461: ENVID and ORCPT come back in the DSN; RET=HDRS returns the header only."""
    bad = sink(args=["-f", "RCPT", "-B", "550 5.1.1 User unknown"], name="rejecting")
    senders = sink(name="senders")
    m = moatd(domains={"example.com": f"127.0.0.1:{bad.port}",
                       "corp.test": f"127.0.0.1:{senders.port}"}, opts=FAST)
    marker = new_marker()
    with m.raw() as c:
        c.greet()
        c.expect("MAIL FROM:<jane@corp.test> RET=HDRS ENVID=env+2Bid-42", 250)
        c.expect("RCPT TO:<nobody@example.com> NOTIFY=FAILURE ORCPT=rfc822;first+2Elast@example.com", 250)
        c.expect("DATA", 354)
        c.send(make_message(subject="hdrs only", marker=marker) + ".\r\n")
        assert c.reply().code == 250
    dsn = senders.wait_count(1, timeout=20)[0]
    msg, status, returned = dsn_parts(dsn)
    # xtext in SMTP (RFC 3461 4), decoded in the DSN (RFC 3464 2.2.1, 2.3.1)
    assert re.search(r"^Original-Envelope-Id:\s*env\+id-42\s*$", status, re.M | re.I), status
    assert re.search(r"^Original-Recipient:\s*rfc822;\s*first\.last@example\.com\s*$",
                     status, re.M | re.I), status
    parts = msg.get_payload()
    assert parts[-1].get_content_type() == "text/rfc822-headers", [p.get_content_type() for p in parts]
    assert "Subject: hdrs only" in returned
    assert marker not in dsn.text, "RET=HDRS: the body must not come back"


def test_kill9_mid_data_loses_only_the_unacknowledged(moatd, sink):
    """A message cut off by a crash before its 250 is not delivered; one
    acknowledged before it is; the spool recovers past the torn tail."""
    port = free_port()
    route = sink(port=port, start=False)
    m = moatd(domains={"example.com": f"127.0.0.1:{port}"}, opts=FAST)
    acked = new_marker()
    m.send("sender@ext.test", "alice@example.com", make_message(marker=acked))
    c = m.raw()
    c.greet()
    c.expect("MAIL FROM:<sender@ext.test>", 250)
    c.expect("RCPT TO:<bob@example.com>", 250)
    c.expect("DATA", 354)
    torn = new_marker()
    c.send("Subject: torn\r\n\r\n" + ("partial line\r\n" * 2000) + torn + "\r\n")
    time.sleep(0.3)
    m.kill9()
    c.close()
    m.start()
    route.start()
    route.wait_marker(acked, timeout=20)
    # a later message goes through too: the spool is usable after recovery
    after = new_marker()
    m.send("sender@ext.test", "carol@example.com", make_message(marker=after))
    route.wait_marker(after, timeout=20)
    assert route.with_marker(torn) == []
    assert not any("bob@example.com" in x.rcpt_addrs() for x in route.messages())


def test_kill9_under_load_loses_nothing_acknowledged(moatd, sink):
    """Clients keep sending while moatd is killed: every message that got its
    250 is delivered after the restart (duplicates are tolerated, loss is not)."""
    import threading
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"}, opts=FAST)
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def client(n):
        i = 0
        while not stop.is_set():
            mk = f"LOAD{n:02d}X{i:04d}END"
            i += 1
            try:
                with m.raw(timeout=5) as c:
                    c.greet()
                    c.expect(f"MAIL FROM:<c{n}@ext.test>", 250)
                    c.expect("RCPT TO:<alice@example.com>", 250)
                    c.expect("DATA", 354)
                    c.send(make_message(marker=mk) + ".\r\n")
                    r = c.reply()
                    if r.code == 250:
                        with lock:
                            acked.append(mk)
            except (OSError, ConnectionError, AssertionError):
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 40, 20, what="40 acknowledged messages")
        m.kill9()
        stop.set()
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    n_acked = len(acked)
    m.start()

    def delivered():
        have = set()
        for x in s.messages(settle=0.05):
            have.update(re.findall(r"LOAD\d{2}X\d{4}END", x.text))
        return have
    wait_until(lambda: set(acked) <= delivered(), 30,
               what=f"all {n_acked} acknowledged messages delivered "
                    f"(missing {len(set(acked) - delivered())})")


def test_refusing_route_with_several_queued_messages_is_no_busy_loop(moatd, sink):
    """Several messages for a route that refuses connections: each retry wave
    tries a bounded number of connections, then everything waits for the next
    retry (a failed connection must not start the next one at once)."""
    port = free_port()        # nothing listens here: connection refused
    m = moatd(domains={"example.com": f"127.0.0.1:{port}"})
    for i in range(5):
        m.send("sender@ext.test", "alice@example.com", make_message(marker=new_marker()))
    m.stop()
    m.start()                 # recovered messages are all due at once
    time.sleep(3.0)
    fails = len(m.events("connect_failed", since_start=True))
    # retry_schedule is 1s in the fixture: a few waves of at most 5 attempts
    assert 0 < fails <= 40, f"{fails} failed connections in 3 s"
    # and the route coming back still gets everything
    s = sink(port=port)
    wait_until(lambda: len(s.messages()) == 5, 20, what="5 messages delivered after the route returns")
