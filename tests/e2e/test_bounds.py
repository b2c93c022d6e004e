"""Every SMTP bound answers with its reply code; smuggling and STARTTLS injection fail."""

import re
import socket
import time

import pytest

from moatlib import (RawSMTP, make_message, new_marker, queued_id, tls_client_context,
                     wait_until)


@pytest.fixture
def relay(moatd, sink):
    """(moatd, sink): example.com routed to a running smtp-sink; extra opts via .param."""
    def make(**opts):
        s = sink()
        m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"}, opts=opts)
        return m, s
    return make


def barrier(m, s):
    """Send a control message and wait for it: whatever was accepted before it
    has had its chance to be delivered too.  Returns the sink's messages
    other than the control."""
    marker = new_marker()
    m.send("control@ext.test", "control@example.com", make_message(marker=marker))
    s.wait_marker(marker)
    time.sleep(0.5)
    return [x for x in s.messages(settle=0) if marker.encode() not in x.raw]


def open_txn(m, rcpt="alice@example.com"):
    c = m.raw()
    c.greet()
    c.expect("MAIL FROM:<sender@ext.test>", 250)
    c.expect(f"RCPT TO:<{rcpt}>", 250)
    return c


# ------------------------------------------------------------ command lines

def test_command_line_too_long(relay):
    m, _ = relay()
    with m.raw() as c:
        c.greet()
        r = c.cmd("NOOP " + "x" * 600)
        assert r.code == 500 and r.enhanced in ("5.5.6", "5.5.2"), r
        # the rest of the over-long line was skipped: the session is in step
        assert c.cmd("NOOP").code == 250
        # MAIL and RCPT may be longer (RFC 1870 6 etc.: room for parameters),
        # but not without bound
        r = c.cmd("MAIL FROM:<" + "a" * 2000 + "@ext.test>")
        assert r.code == 500, r
        assert c.cmd("MAIL FROM:<a@ext.test>").code == 250


def test_command_line_limit_is_configurable(relay):
    m, _ = relay(smtp_max_command_line=2000)
    with m.raw() as c:
        c.greet()
        assert c.cmd("NOOP " + "x" * 1500).code == 250
        assert c.cmd("NOOP " + "x" * 2100).code == 500


def test_too_many_recipients(relay):
    m, s = relay(smtp_max_recipients=100)
    marker = new_marker()
    with m.raw() as c:
        c.greet()
        c.expect("MAIL FROM:<sender@ext.test>", 250)
        for i in range(100):
            c.expect(f"RCPT TO:<u{i}@example.com>", 250)
        r = c.cmd("RCPT TO:<u100@example.com>")
        assert (r.code, r.enhanced) == (452, "4.5.3"), r
        c.expect("DATA", 354)
        c.send(make_message(marker=marker) + ".\r\n")
        r = c.reply()
        assert r.code == 250, r
    # all 100 delivered (in one or more transactions), the refused one not
    want = {f"u{i}@example.com" for i in range(100)}
    wait_until(lambda: {a for x in s.with_marker(marker) for a in x.rcpt_addrs()} == want, 15,
               what="the 100 accepted recipients delivered")
    time.sleep(0.5)
    assert {a for x in s.with_marker(marker) for a in x.rcpt_addrs()} == want


def test_message_too_big(relay):
    m, s = relay(message_size_limit="10k")
    with m.raw() as c:
        r = c.greet()
        assert re.search(r"^SIZE 10240$", r.text, re.M), r.text
        # SIZE= on MAIL FROM is checked at once (RFC 1870)
        r = c.cmd("MAIL FROM:<sender@ext.test> SIZE=20000")
        assert (r.code, r.enhanced) == (552, "5.3.4"), r
        c.expect("MAIL FROM:<sender@ext.test> SIZE=2000", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        body = ("y" * 70 + "\r\n") * 300    # 21600 octets
        c.send(make_message(body=body) + ".\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (552, "5.3.4"), r
        assert c.cmd("NOOP").code == 250
    assert barrier(m, s) == []


def test_text_line_too_long(relay):
    m, s = relay()
    with open_txn(m) as c:
        c.expect("DATA", 354)
        c.send(make_message(body="z" * 1500) + ".\r\n")
        r = c.reply()
        assert r.code // 100 == 5, r
    assert barrier(m, s) == []


def test_too_many_errors(relay):
    m, _ = relay(smtp_max_errors=3)
    with m.raw() as c:
        c.greet()
        codes = []
        for _ in range(10):
            try:
                r = c.cmd("BOGUS")
            except (ConnectionError, OSError):
                break
            codes.append((r.code, r.enhanced))
            if r.code == 421:
                break
        assert codes[-1] == (421, "4.7.0"), codes
        assert all(code // 100 == 5 for code, _ in codes[:-1]), codes
        assert len(codes) <= 5, codes
        assert c.closed_by_peer(5), "connection still open after 421"


def test_command_timeout(relay):
    m, _ = relay(smtp_timeout_command="1s")
    with m.raw() as c:
        c.greet()
        t0 = time.monotonic()
        r = c.reply()
        assert (r.code, r.enhanced) == (421, "4.4.2"), r
        assert 0.5 < time.monotonic() - t0 < 5
        assert c.closed_by_peer(5)


def test_connections_per_ip(relay):
    m, _ = relay(smtp_max_connections_per_ip=2)

    def attempt():
        conns = [RawSMTP(m.host, m.port) for _ in range(3)]
        try:
            return [c.reply() for c in conns], conns
        except Exception:
            for c in conns:
                c.close()
            raise

    # the fixture's readiness probe may still be counted for a moment
    deadline = time.monotonic() + 3
    while True:
        replies, conns = attempt()
        if replies[0].code == 220 and replies[1].code == 220 or time.monotonic() > deadline:
            break
        for c in conns:
            c.close()
        time.sleep(0.2)
    try:
        assert [r.code for r in replies[:2]] == [220, 220], replies
        assert (replies[2].code, replies[2].enhanced) == (421, "4.7.0"), replies[2]
        assert conns[2].closed_by_peer(5)
    finally:
        for c in conns:
            c.close()
    # after the others leave, a new connection is welcome again
    wait_until(lambda: RawSMTP(m.host, m.port).reply().code == 220, 5, what="a slot frees up")


def test_too_many_received_headers(relay):
    m, s = relay(smtp_max_received_headers=10)
    hops = [f"Received: from h{i}.ext.test by h{i+1}.ext.test; Sat, 28 Nov 2026 12:00:0{i % 10} +0000"
            for i in range(11)]
    with open_txn(m) as c:
        c.expect("DATA", 354)
        c.send(make_message(extra_headers=hops) + ".\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (554, "5.4.6"), r
    # ten is still fine
    marker = new_marker()
    m.send("s@ext.test", "alice@example.com", make_message(extra_headers=hops[:9], marker=marker))
    s.wait_marker(marker)
    assert len([x for x in s.messages() if b"h10.ext.test" in x.raw]) == 0


@pytest.mark.parametrize("payload", [
    pytest.param("bare LF\nin the body\r\n", id="bare-LF"),
    pytest.param("bare CR\rin the body\r\n", id="bare-CR"),
])
def test_bare_line_ends_refused(relay, payload):
    m, s = relay()
    with open_txn(m) as c:
        c.expect("DATA", 354)
        c.send("Subject: bare\r\n\r\n" + payload + ".\r\n")
        r = c.reply()
        # the class only: refusing at once and closing (Postfix's 521) is as good
        assert r.code // 100 == 5, r
    assert barrier(m, s) == []


@pytest.mark.parametrize("seq", ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r"],
                         ids=["LF.LF", "CRLF.LF", "LF.CRLF", "CR.CR", "CRLF.CR"])
def test_smuggling_refused(relay, seq):
    """SMTP smuggling: a fake end-of-data must neither end the message nor
    start a second, smuggled one (the whole message is refused)."""
    m, s = relay()
    smuggled = ("MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
                "From: ceo@example.com\r\nSubject: SMUGGLED\r\n\r\nsmuggled body\r\n")
    c = open_txn(m)
    try:
        c.expect("DATA", 354)
        c.send("Subject: carrier\r\n\r\ncarrier body" + seq + smuggled + ".\r\n")
        r = c.reply()
        extra = c.pending(0.5)
        assert r.code // 100 == 5, f"after the real end of data: {r} (then {extra!r})"
        assert b"queued as" not in extra, extra
        assert extra == b"", f"more replies than one end of data: {extra!r}"
    finally:
        c.close()
    others = barrier(m, s)
    assert others == [], f"delivered: {[x.text[:300] for x in others]}"


def test_nul_cr_lf_in_arguments(relay):
    m, _ = relay()
    with m.raw() as c:
        c.greet()
        r = c.cmd("MAIL FROM:<a\x00b@ext.test>")
        assert (r.code, r.enhanced[:4]) == (501, "5.5."), r
        r = c.cmd("MAIL FROM:<a\rb@ext.test>")
        assert r.code == 501, r
        c.expect("MAIL FROM:<a@ext.test>", 250)
        r = c.cmd("RCPT TO:<al\x00ice@example.com>")
        assert r.code == 501, r
        r = c.cmd("EHLO host\rname")
        assert r.code == 501, r
        # a bare LF inside a command: one refusal, and the session stays in step
        c.send("RCPT TO:<al\nice@example.com>\r\n")
        r = c.reply()
        assert r.code == 501, r
        assert c.pending(0.5) == b"", "one bad line, one reply"
        assert c.cmd("NOOP").code == 250


def test_8bit_address_without_smtputf8(relay):
    m, _ = relay()
    with m.raw() as c:
        r = c.greet()
        r = c.cmd("MAIL FROM:<jörg@ext.test>")
        assert (r.code, r.enhanced) == (553, "5.6.7"), r
        c.expect("MAIL FROM:<joerg@ext.test>", 250)
        r = c.cmd("RCPT TO:<jürgen@example.com>")
        assert (r.code, r.enhanced) == (553, "5.6.7"), r


def test_starttls_pipelining_injection(relay):
    """RFC 3207 / CVE-2011-0411: bytes after STARTTLS in the same packet must be
    discarded, never answered (neither in clear nor inside TLS)."""
    m, _ = relay()
    c = m.raw()
    try:
        c.greet()
        c.send("STARTTLS\r\nNOOP\r\n")
        r = c.reply()
        assert r.code == 220, r
        assert c.buf == b"", f"the server answered the injected command in clear: {c.buf!r}"
        c.starttls(tls_client_context())
        # inside TLS: the injected NOOP must not be answered
        extra = c.pending(0.7)
        assert extra == b"", f"injected command answered inside TLS: {extra!r}"
        r = c.cmd("EHLO fresh.ext.test")
        assert r.code == 250, r
        assert c.cmd("NOOP").code == 250
        assert c.pending(0.3) == b""
    finally:
        c.close()


def test_starttls_twice_refused(relay):
    m, _ = relay()
    c = m.raw()
    try:
        c.greet()
        c.expect("STARTTLS", 220)
        c.starttls(tls_client_context())
        c.expect("EHLO again.ext.test", 250)
        r = c.cmd("STARTTLS")
        assert r.code in (503, 554), r
    finally:
        c.close()


def test_pipelining_replies_in_order(relay):
    m, s = relay()
    marker = new_marker()
    with m.raw() as c:
        c.greet()
        c.send("MAIL FROM:<p@ext.test>\r\nRCPT TO:<alice@example.com>\r\n"
               "RCPT TO:<x@other.test>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        codes = [c.reply().code for _ in range(5)]
        assert codes == [250, 250, 550, 250, 354], codes
        c.send(make_message(marker=marker) + ".\r\nQUIT\r\n")
        r = c.reply()
        assert r.code == 250
        queued_id(r.text)
        assert c.reply().code == 221
    got = s.wait_marker(marker)
    assert sorted(got.rcpt_addrs()) == ["alice@example.com", "bob@example.com"]


def test_commands_out_of_sequence(relay):
    m, _ = relay()
    with m.raw() as c:
        c.reply()
        # RFC 5321 4.1.4: MAIL before EHLO/HELO is a bad sequence
        r = c.cmd("MAIL FROM:<a@ext.test>")
        assert r.code == 503, r
        c.expect("EHLO seq.ext.test", 250)
        assert c.cmd("RCPT TO:<alice@example.com>").code == 503
        assert c.cmd("DATA").code == 503
        c.expect("MAIL FROM:<a@ext.test>", 250)
        assert c.cmd("MAIL FROM:<b@ext.test>").code == 503
        assert c.cmd("DATA").code in (503, 554)


def test_data_timeout_does_not_deliver(relay):
    m, s = relay(smtp_timeout_data_block="1s")
    c = open_txn(m)
    try:
        c.expect("DATA", 354)
        c.send("Subject: half\r\n\r\nhalf a message\r\n")
        assert c.closed_by_peer(6), "server kept the stalled DATA open"
    finally:
        c.close()
    assert barrier(m, s) == []


def test_client_disconnect_mid_data_does_not_deliver(relay):
    m, s = relay()
    c = open_txn(m)
    c.expect("DATA", 354)
    c.send("Subject: cut\r\n\r\ncut short\r\n")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    assert barrier(m, s) == []


def test_too_many_messages_per_session(relay):
    m, _ = relay(smtp_max_messages=2)
    with m.raw() as c:
        c.greet()
        for i in range(2):
            c.expect(f"MAIL FROM:<s{i}@ext.test>", 250)
            c.expect("RCPT TO:<alice@example.com>", 250)
            c.expect("DATA", 354)
            c.send(make_message() + ".\r\n")
            assert c.reply().code == 250
        r = c.cmd("MAIL FROM:<s2@ext.test>")
        assert (r.code, r.enhanced) == (421, "4.7.0"), r
        assert c.closed_by_peer(5)


def test_junk_commands_count_as_errors(relay):
    m, _ = relay(smtp_max_junk_commands=3, smtp_max_errors=2)
    with m.raw() as c:
        c.greet()
        codes = []
        for _ in range(10):
            try:
                r = c.cmd("NOOP")
            except (ConnectionError, OSError):
                break
            codes.append(r.code)
            if r.code == 421:
                break
        assert codes[:3] == [250, 250, 250], codes
        assert codes[-1] == 421, codes
        assert len(codes) <= 6, codes


def test_header_section_too_big(relay):
    m, s = relay(smtp_max_header_size="16k")
    big = [f"X-Filler-{i}: " + "h" * 70 for i in range(300)]     # ~25 kB of header
    with open_txn(m) as c:
        c.expect("DATA", 354)
        c.send(make_message(extra_headers=big) + ".\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (552, "5.3.4"), r
    assert barrier(m, s) == []


def _connect_from(m, src):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(10)
    c.bind((src, 0))
    c.connect((m.host, m.port))
    raw = RawSMTP.__new__(RawSMTP)
    raw.sock, raw.host, raw.buf, raw.transcript = c, m.host, b"", []
    return raw


def test_connection_limits_total_and_per_ip(relay):
    """Per-IP limit counts one address; the total limit counts everyone."""
    m, _ = relay(smtp_max_connections_per_ip=1, smtp_max_connections=3)
    conns = []
    try:
        time.sleep(0.3)     # let the readiness probe's connection be forgotten
        a1 = _connect_from(m, "127.0.0.2")
        conns.append(a1)
        assert a1.reply().code == 220
        a2 = _connect_from(m, "127.0.0.2")
        conns.append(a2)
        r = a2.reply()
        assert (r.code, r.enhanced) == (421, "4.7.0"), r
        b1 = _connect_from(m, "127.0.0.3")
        conns.append(b1)
        assert b1.reply().code == 220, "another address is not limited by the first one's count"
        c1 = _connect_from(m, "127.0.0.4")
        conns.append(c1)
        assert c1.reply().code == 220
        d1 = _connect_from(m, "127.0.0.5")
        conns.append(d1)
        r = d1.reply()
        assert (r.code, r.enhanced) == (421, "4.7.0"), f"over smtp_max_connections: {r}"
    finally:
        for c in conns:
            c.close()


def test_tls_handshake_timeout(relay):
    m, _ = relay(smtp_timeout_tls_handshake="1s")
    with m.raw() as c:
        c.greet()
        c.expect("STARTTLS", 220)
        t0 = time.monotonic()
        # never start the handshake: the server must give up on its own
        assert c.closed_by_peer(6), "server waits forever for a TLS handshake"
        assert time.monotonic() - t0 < 5
