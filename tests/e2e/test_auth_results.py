"""SPF, DKIM verification and DMARC in the end-of-DATA content stage (issue 7
item 4), against a real unbound serving the sender's records.

Mail comes "from the internet": smtplib bound to 127.0.0.2, MAIL FROM and
header From under sender.example, whose SPF TXT and _dmarc TXT records this
module's own unbound serves (TTL 0, changed per test).  The results are read
where they matter: the Authentication-Results / X-Moat-Verdict headers at the
sink (smtp-sink), the SMTP reply (DMARC reject), and the log (event=hold for
a DMARC quarantine, which is never delivered).
"""

import smtplib
import time

import pytest

from connect_fixtures import Unbound
from moatlib import make_message, new_marker, wait_until
from test_dkim import crlf, keygen, publish

HOST = "moat.example.test"
ON = {"spf_check": "yes", "dkim_verify": "yes", "dmarc_check": "yes", "retry_schedule": "1s"}
ZONES = ["sender.example", "signer.example", "dest.example"]


@pytest.fixture(scope="module")
def unbound(tmp_path_factory):
    """overrides conftest's: moatd here resolves through this one"""
    u = Unbound(tmp_path_factory.mktemp("unbound-ar"), ZONES).start()
    yield u
    u.stop()


@pytest.fixture
def world(moatd, sink, unbound):
    unbound.remove("sender.example")
    unbound.remove("_dmarc.sender.example")
    s = sink()
    m = moatd(opts=ON, domains={"example.com": f"127.0.0.1:{s.port}"})
    return m, s


def send_from_internet(m, sender, msg, rcpt="alice@example.com"):
    """one transaction from 127.0.0.2; (code, reply) of the end of DATA"""
    c = smtplib.SMTP(m.host, m.port, timeout=30, source_address=("127.0.0.2", 0))
    try:
        c.ehlo("mail.sender.example")
        code, resp = c.mail(sender)
        assert code == 250, resp
        code, resp = c.rcpt(rcpt)
        assert code == 250, resp
        code, resp = c.data(msg.encode())
        c.quit()
        return code, resp.decode()
    finally:
        c.close()


def delivered(s, marker, timeout=15):
    def find():
        for msg in s.messages():
            if marker in msg.text:
                return msg
        return None
    return wait_until(find, timeout=timeout, what=f"message {marker} at the sink")


def auth_results(msg):
    ars = msg.msg.get_all("Authentication-Results") or []
    ours = [" ".join(a.split()) for a in ars if a.strip().startswith(HOST)]
    assert len(ours) == 1, ars
    return ours[0]


@pytest.mark.parametrize("record,word", [
    ("v=spf1 ip4:127.0.0.2 -all", "pass"),
    ("v=spf1 ip4:192.0.2.1 -all", "fail"),
    ("v=spf1 ip4:192.0.2.1 ~all", "softfail"),
])
def test_spf_result_in_header(world, unbound, record, word):
    m, s = world
    unbound.set("sender.example", "TXT", f'"{record}"')
    marker = new_marker()
    code, resp = send_from_internet(m, "bob@sender.example",
                                    make_message(sender="bob@sender.example", marker=marker))
    # SPF alone never refuses (spf_fail_action=none): no DMARC record here
    assert code == 250, resp
    msg = delivered(s, marker)
    ar = auth_results(msg)
    assert f"spf={word} smtp.mailfrom=bob@sender.example" in ar, ar
    assert "dmarc=none header.from=sender.example" in ar, ar
    verdict = msg.msg["X-Moat-Verdict"]
    assert verdict.startswith("accept"), verdict
    assert "checks=spf dkim dmarc" in verdict, verdict
    assert f"check=spf result={word} domain=sender.example" in m.log_text()


def test_spf_fail_action_reject(moatd, sink, unbound):
    unbound.remove("_dmarc.sender.example")
    unbound.set("sender.example", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    s = sink()
    m = moatd(opts=dict(ON, spf_fail_action="reject"), domains={"example.com": f"127.0.0.1:{s.port}"})
    code, resp = send_from_internet(m, "bob@sender.example", make_message(sender="bob@sender.example"))
    assert code == 550 and resp.startswith("5.7.23"), (code, resp)


def test_dmarc_reject(world, unbound):
    m, s = world
    unbound.set("sender.example", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    unbound.set("_dmarc.sender.example", "TXT", '"v=DMARC1; p=reject"')
    marker = new_marker()
    code, resp = send_from_internet(m, "bob@sender.example",
                                    make_message(sender="bob@sender.example", marker=marker))
    assert code == 550, resp
    assert resp == "5.7.1 rejected by DMARC policy of sender.example", resp
    assert "event=content check=dmarc action=reject" in m.log_text()
    time.sleep(2)
    assert not any(marker in x.text for x in s.messages()), "a refused message was delivered"


def test_dmarc_pass_spf_aligned_policy_reject(world, unbound):
    """p=reject, but SPF passes for the aligned MAIL FROM domain: delivered"""
    m, s = world
    unbound.set("sender.example", "TXT", '"v=spf1 ip4:127.0.0.2 -all"')
    unbound.set("_dmarc.sender.example", "TXT", '"v=DMARC1; p=reject"')
    marker = new_marker()
    code, resp = send_from_internet(m, "bob@sender.example",
                                    make_message(sender="bob@sender.example", marker=marker))
    assert code == 250, resp
    ar = auth_results(delivered(s, marker))
    assert "dmarc=pass (p=reject) header.from=sender.example" in ar, ar


def test_dmarc_quarantine_holds(world, unbound):
    m, s = world
    unbound.set("sender.example", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    unbound.set("_dmarc.sender.example", "TXT", '"v=DMARC1; p=quarantine"')
    marker = new_marker()
    code, resp = send_from_internet(m, "bob@sender.example",
                                    make_message(sender="bob@sender.example", marker=marker))
    assert code == 250, resp      # accepted: the sender is not told
    wait_until(lambda: "event=hold stage=content check=dmarc" in m.log_text(), timeout=10,
               what="event=hold in the log")
    time.sleep(3)                 # retry_schedule is 1 s: a scheduled message would be out
    assert not any(marker in x.text for x in s.messages()), "a held message was delivered"


def test_dmarc_pct_zero_quarantine_not_sampled(world, unbound):
    """pct=0: no message is in the sample; quarantine falls to none (RFC 7489 6.6.4)"""
    m, s = world
    unbound.set("sender.example", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    unbound.set("_dmarc.sender.example", "TXT", '"v=DMARC1; p=quarantine; pct=0"')
    marker = new_marker()
    code, resp = send_from_internet(m, "bob@sender.example",
                                    make_message(sender="bob@sender.example", marker=marker))
    assert code == 250, resp
    ar = auth_results(delivered(s, marker))
    assert "dmarc=fail (p=quarantine) header.from=sender.example" in ar, ar


def test_resolver_error_is_temperror(world, unbound):
    """the resolver cannot answer for sender.example: temperror, accepted, said in the header"""
    m, s = world
    unbound.deny("sender.example")
    try:
        marker = new_marker()
        code, resp = send_from_internet(m, "bob@sender.example",
                                        make_message(sender="bob@sender.example", marker=marker))
        assert code == 250, resp
        ar = auth_results(delivered(s, marker))
        assert "spf=temperror smtp.mailfrom=bob@sender.example" in ar, ar
        assert "dmarc=temperror header.from=sender.example" in ar, ar
    finally:
        unbound.allow("sender.example")


def test_outbound_role_not_screened(world, unbound):
    """mail from an authorised outbound host gets no content stage"""
    m, s = world
    unbound.set("_dmarc.sender.example", "TXT", '"v=DMARC1; p=reject"')
    unbound.set("sender.example", "TXT", '"v=spf1 -all"')
    m.cli("outbound", "host", "add", "127.0.0.3/32", check=0)
    marker = new_marker()
    c = smtplib.SMTP(m.host, m.port, timeout=30, source_address=("127.0.0.3", 0))
    try:
        c.ehlo("relay.example.com")
        assert c.mail("bob@example.com")[0] == 250
        assert c.rcpt("alice@example.com")[0] == 250
        code, resp = c.data(make_message(sender="bob@sender.example", marker=marker).encode())
        assert code == 250, resp
        c.quit()
    finally:
        c.close()
    msg = delivered(s, marker)
    assert msg.msg["X-Moat-Verdict"] is None
    assert not [a for a in (msg.msg.get_all("Authentication-Results") or []) if a.strip().startswith(HOST)]


def test_hostile_headers_bounded(world, unbound):
    """thousands of header fields and oversized DKIM-Signature fields: answered promptly"""
    m, s = world
    unbound.set("sender.example", "TXT", '"v=spf1 ip4:127.0.0.2 -all"')
    junk = [f"X-Junk-{i}: {'x' * 40}" for i in range(3000)]
    sigs = [f"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=s{i}; h=from; bh=AAAA; b={'A' * 800}"
            for i in range(40)]
    marker = new_marker()
    t0 = time.monotonic()
    code, resp = send_from_internet(m, "bob@sender.example",
                                    make_message(sender="bob@sender.example", marker=marker,
                                                 extra_headers=junk + sigs))
    assert time.monotonic() - t0 < 20
    assert code == 250, resp
    ar = auth_results(delivered(s, marker))
    # at most dkim_max_signatures (5) are checked: one result each
    assert ar.count("dkim=") == 5, ar


# --- DKIM: signatures made by a real signer -----------------------------------
# A second moatd is signer.example's outbound relay: it signs with its DKIM key
# (libopendkim) and delivers by MX (dest.example -> 127.0.0.1) to an smtp-sink.
# The signed message captured there is then sent to the moatd under test from
# "the internet" (127.0.0.2), as is or with its body changed after signing.

def signed_message(moatd, sink, unbound, marker):
    unbound.set("dest.example", "MX", "10 mx.dest.example.")
    unbound.set("mx.dest.example", "A", "127.0.0.1")
    mx = sink(name="signer-mx")
    signer = moatd(name="signer", domains={"signer.example": None},
                   opts={"delivery_port": mx.port, "retry_schedule": "1s"})
    signer.cli("outbound", "host", "add", "127.0.0.1/32", check=0)
    key = keygen(signer, "signer.example", "--algorithm", "rsa", "--selector", "sel")
    publish(unbound, key)
    signer.send("ann@signer.example", "bob@dest.example",
                make_message(sender="ann@signer.example", to="bob@dest.example", marker=marker))
    got = mx.wait_marker(marker, timeout=20)
    data = crlf(got)
    assert b"DKIM-Signature:" in data and b"d=signer.example" in data, data[:600]
    return data


def test_dkim_valid_signature_aligns_dmarc_while_spf_fails(world, moatd, sink, unbound):
    m, s = world
    marker = new_marker()
    data = signed_message(moatd, sink, unbound, marker)
    unbound.set("signer.example", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    unbound.set("_dmarc.signer.example", "TXT", '"v=DMARC1; p=reject"')
    code, resp = send_from_internet(m, "ann@signer.example", data.decode())
    assert code == 250, resp
    ar = auth_results(delivered(s, marker))
    assert "spf=fail smtp.mailfrom=ann@signer.example" in ar, ar
    assert "dkim=pass header.d=signer.example header.s=sel" in ar, ar
    assert "dmarc=pass (p=reject) header.from=signer.example" in ar, ar


def test_dkim_body_changed_after_signing(world, moatd, sink, unbound):
    m, s = world
    marker = new_marker()
    data = signed_message(moatd, sink, unbound, marker)
    tampered = data.replace(marker.encode(), marker.encode() + b" and more")
    assert tampered != data
    unbound.set("signer.example", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    unbound.set("_dmarc.signer.example", "TXT", '"v=DMARC1; p=none"')
    code, resp = send_from_internet(m, "ann@signer.example", tampered.decode())
    assert code == 250, resp     # p=none: accepted, the header tells
    ar = auth_results(delivered(s, marker))
    assert "dkim=fail (body hash mismatch) header.d=signer.example header.s=sel" in ar, ar
    assert "dmarc=fail (p=none) header.from=signer.example" in ar, ar
    # and with p=reject the same message is refused
    unbound.set("_dmarc.signer.example", "TXT", '"v=DMARC1; p=reject"')
    code, resp = send_from_internet(m, "ann@signer.example", tampered.decode())
    assert code == 550 and resp == "5.7.1 rejected by DMARC policy of signer.example", (code, resp)


def test_forged_auth_results_renamed(world, unbound):
    """RFC 8601 5: a field claiming our authserv-id is renamed, never trusted;
    another server's results stay as they are"""
    m, s = world
    unbound.set("sender.example", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    marker = new_marker()
    forged = [f"Authentication-Results: {HOST}; spf=pass smtp.mailfrom=bob@sender.example",
              f"Authentication-Results:\r\n  {HOST.upper()}; dkim=pass header.d=sender.example",
              "Authentication-Results: mx.other.example; spf=pass"]
    code, resp = send_from_internet(m, "bob@sender.example",
                                    make_message(sender="bob@sender.example", marker=marker,
                                                 extra_headers=forged))
    assert code == 250, resp
    msg = delivered(s, marker)
    ar = auth_results(msg)            # exactly one claims our id: ours
    assert "spf=fail" in ar, ar
    renamed = msg.msg.get_all("X-Untrusted-AuthResult") or []
    assert len(renamed) == 2, renamed
    assert any(a.strip().startswith("mx.other.example") for a in msg.msg.get_all("Authentication-Results"))
    assert "event=header_renamed" in m.log_text()


def test_message_over_screen_max_size(moatd, sink, unbound):
    """a message larger than screen_max_size is accepted; DKIM (which needs the
    message) is skipped and the headers say so; SPF still runs"""
    unbound.remove("_dmarc.sender.example")
    unbound.set("sender.example", "TXT", '"v=spf1 ip4:127.0.0.2 -all"')
    s = sink()
    m = moatd(opts=dict(ON, screen_max_size="64k"), domains={"example.com": f"127.0.0.1:{s.port}"})
    marker = new_marker()
    body = "\r\n".join("y" * 70 for _ in range(2000))     # ~144 KiB
    code, resp = send_from_internet(m, "bob@sender.example",
                                    make_message(sender="bob@sender.example", body=body, marker=marker))
    assert code == 250, resp
    msg = delivered(s, marker)
    ar = auth_results(msg)
    assert "spf=pass" in ar and "dkim=none (message too large to verify)" in ar, ar
    assert "body not screened" in msg.msg["X-Moat-Verdict"], msg.msg["X-Moat-Verdict"]


class SlowDns:
    """A resolver on loopback UDP that answers every query NXDOMAIN after
    `delay` seconds: each lookup of the content stage costs that long"""

    def __init__(self, delay=0.06):
        import socket
        import threading
        self.delay = delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.stopped = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        import socket
        import threading
        while not self.stopped:
            try:
                q, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(q) < 12:
                continue
            self.queries += 1
            threading.Timer(self.delay, self.answer, (q, addr)).start()

    # sender.example's SPF record: ten "a" mechanisms, ten more slow lookups
    SPF = "v=spf1 " + " ".join(f"a:h{i}.sender.example" for i in range(10)) + " -all"

    def answer(self, q, addr):
        end = 12
        while end < len(q) and q[end] != 0:
            end += q[end] + 1
        qname = []
        i = 12
        while i < end:
            qname.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace").lower())
            i += q[i] + 1
        qtype = int.from_bytes(q[end + 1:end + 3], "big")
        question = q[12:end + 5]
        if ".".join(qname) == "sender.example" and qtype == 16:
            txt = self.SPF.encode()
            rdata = bytes([len(txt)]) + txt
            rr = b"\xc0\x0c" + b"\x00\x10\x00\x01" + b"\x00\x00\x00\x00" + \
                len(rdata).to_bytes(2, "big") + rdata
            hdr = q[:2] + bytes([0x80 | (q[2] & 0x01), 0x80]) + b"\x00\x01\x00\x01\x00\x00\x00\x00"
            resp = hdr + question + rr
        else:
            # NXDOMAIN: QR, RD copied, RA, rcode 3, the question echoed
            hdr = q[:2] + bytes([0x80 | (q[2] & 0x01), 0x83]) + b"\x00\x01\x00\x00\x00\x00\x00\x00"
            resp = hdr + question
        try:
            self.sock.sendto(resp, addr)
        except OSError:
            pass

    def stop(self):
        self.stopped = True
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.mark.parametrize("action", ["tempfail", "accept"])
def test_content_timeout(moatd, sink, action):
    """the content checks take longer than content_timeout (about 30 lookups at
    a resolver answering each after 60 ms: SPF's ten "a" mechanisms, 16 DKIM
    keys, DMARC): tempfail 451 4.7.1, or accept without the headers"""
    dns = SlowDns()
    try:
        s = sink()
        m = moatd(opts=dict(ON, resolver=f"127.0.0.1:{dns.port}", content_timeout="1s",
                            dkim_max_signatures="16", content_timeout_action=action),
                  domains={"example.com": f"127.0.0.1:{s.port}"})
        sigs = [f"DKIM-Signature: v=1; a=rsa-sha256; d=slow{i}.example; s=s; h=from; bh=AAAA; b=AAAA"
                for i in range(16)]
        marker = new_marker()
        t0 = time.monotonic()
        code, resp = send_from_internet(m, "bob@sender.example",
                                        make_message(sender="bob@sender.example", marker=marker,
                                                     extra_headers=sigs))
        took = time.monotonic() - t0
        assert dns.queries > 0, "moatd did not use the slow resolver"
        assert took < 1.0 + 1.5, took
        assert f"event=content_timeout action={action}" in m.log_text()
        if action == "tempfail":
            assert code == 451 and resp == "4.7.1 Content checks timed out, try again later", (code, resp)
            time.sleep(2)
            assert not any(marker in x.text for x in s.messages())
        else:
            assert code == 250, resp
            msg = delivered(s, marker)
            assert msg.msg["X-Moat-Verdict"] is None
        # the orphaned job ends on its own; the daemon goes on serving
        time.sleep(3)
        assert m.smtp().noop()[0] == 250
    finally:
        dns.stop()


def test_dkim_key_lookup_error_is_temperror(world, moatd, sink, unbound):
    """the signer's zone cannot be resolved: dkim=temperror, dmarc=temperror, accepted"""
    m, s = world
    marker = new_marker()
    data = signed_message(moatd, sink, unbound, marker)
    unbound.deny("signer.example")
    try:
        code, resp = send_from_internet(m, "ann@signer.example", data.decode())
        assert code == 250, resp
        ar = auth_results(delivered(s, marker))
        assert "spf=temperror" in ar, ar
        assert "dkim=temperror (key lookup failed) header.d=signer.example header.s=sel" in ar, ar
        assert "dmarc=temperror header.from=signer.example" in ar, ar
    finally:
        unbound.allow("signer.example")
