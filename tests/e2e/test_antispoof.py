"""Anti-spoofing (issue 7 item 1): inbound mail may not claim to come from an
internal domain, by its envelope sender (refused at RCPT) or its header From
(refused at the end of DATA), unless a bypass excepts the source.

example.com is internal, routed to an smtp-sink.  moatd listens on
127.0.0.1; strangers connect from other loopback addresses (127.0.0.2 ...).
The session's unbound serves reverse DNS for the host-name bypass: records
are added at run time through unbound-control (TTL 0) and removed after.
"""

import json
import smtplib
import time
import urllib.error
import urllib.request

import pytest

from moatlib import make_message, new_marker

SPOOF_TEXT = b"5.7.1 rejected by anti-spoofing policy"


@pytest.fixture
def world(moatd, sink):
    inside = sink(name="inside")
    m = moatd(domains={"example.com": f"127.0.0.1:{inside.port}"},
              opts={"antispoof": "yes"})
    return m, inside


def _smtp_from(m, src, timeout=20):
    c = smtplib.SMTP(m.host, m.port, timeout=timeout, source_address=(src, 0))
    c.ehlo("client.ext.test")
    return c


def _delivered(inside, marker):
    return inside.wait_marker(marker, timeout=20)


def _send_ok(m, inside, src, sender, header_from=None):
    """The message goes through from src and is delivered."""
    marker = new_marker()
    with _smtp_from(m, src) as c:
        assert c.mail(sender)[0] == 250
        code, text = c.rcpt("alice@example.com")
        assert code == 250, (src, sender, code, text)
        code, text = c.data(make_message(sender=header_from or sender, marker=marker).encode())
        assert code == 250, (src, sender, code, text)
    _delivered(inside, marker)


def _rcpt_refused(m, src, sender):
    with _smtp_from(m, src) as c:
        assert c.mail(sender)[0] == 250
        code, text = c.rcpt("alice@example.com")
        # pipelining order: a second RCPT gets the same answer
        code2, _ = c.rcpt("bob@example.com")
        c.rset()
    return code, text, code2


def _reject_events(m, check="antispoof"):
    return [e for e in m.events("reject") if e.get("check") == check]


def _api(m):
    base = f"http://127.0.0.1:{m.http_port}"

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {m.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None
    return call


# --- the envelope sender -------------------------------------------------------

def test_spoofed_envelope_sender_refused_at_rcpt(world):
    m, inside = world
    code, text, code2 = _rcpt_refused(m, "127.0.0.2", "boss@example.com")
    assert code == 550 and text == SPOOF_TEXT, (code, text)
    assert code2 == 550
    # a subdomain of an internal domain is internal too
    code, text, _ = _rcpt_refused(m, "127.0.0.2", "boss@mail.Example.COM")
    assert code == 550 and text == SPOOF_TEXT
    ev = _reject_events(m)
    assert ev, m.log_tail()
    assert ev[0]["reason"] == "envelope sender example.com from 127.0.0.2 (no bypass)", ev[0]
    assert ev[0]["stage"] == "rcpt" and ev[0]["dsn"] == "5.7.1"
    # an outside sender is not affected, and its mail arrives
    _send_ok(m, inside, "127.0.0.2", "someone@partner.test")
    assert inside.count() == 1


def test_spoofed_header_from_refused_at_end_of_data(world):
    m, inside = world
    with _smtp_from(m, "127.0.0.2") as c:
        assert c.mail("news@partner.test")[0] == 250
        assert c.rcpt("alice@example.com")[0] == 250
        code, text = c.data(make_message(sender="ceo@example.com").encode())
        assert (code, text) == (550, SPOOF_TEXT)
        # several From fields: not one author (RFC 7489 6.6.1), the strictest treatment
        assert c.mail("news@partner.test")[0] == 250
        assert c.rcpt("alice@example.com")[0] == 250
        msg = "From: <news@partner.test>\r\nFrom: <ceo@example.com>\r\nSubject: x\r\n\r\nhi\r\n"
        code, text = c.data(msg.encode())
        assert code == 550 and text.startswith(b"5.7.1 rejected by anti-spoofing policy"), text
        # the session goes on: a clean message in the same session is accepted
        marker = new_marker()
        assert c.mail("news@partner.test")[0] == 250
        assert c.rcpt("alice@example.com")[0] == 250
        assert c.data(make_message(sender="news@partner.test", marker=marker).encode())[0] == 250
    _delivered(inside, marker)
    time.sleep(1)
    assert inside.count() == 1      # nothing of the refused messages was delivered
    ev = [e for e in _reject_events(m) if e["stage"] == "data"]
    assert ev and ev[0]["reason"] == "header from example.com from 127.0.0.2 (no bypass)", ev


def test_authorised_host_and_setting_off_are_not_checked(world, moatd, sink):
    m, inside = world
    m.cli("outbound", "host", "add", "127.0.0.1", check=0)
    # the outbound role: its mail is ours
    _send_ok(m, inside, "127.0.0.1", "app@example.com")
    _send_ok(m, inside, "127.0.0.1", "app@partner.test", header_from="ceo@example.com")
    # a stranger still is refused
    code, text, _ = _rcpt_refused(m, "127.0.0.2", "app@example.com")
    assert code == 550 and text == SPOOF_TEXT
    # antispoof = no (what the other tests' fixture sets) turns the check off
    inside2 = sink(name="inside2")
    m2 = moatd(domains={"example.com": f"127.0.0.1:{inside2.port}"}, name="moatd-off")
    _send_ok(m2, inside2, "127.0.0.2", "app@example.com")
    assert not _reject_events(m2)


# --- bypasses ------------------------------------------------------------------

def test_bypass_by_ip(world):
    m, inside = world
    r = m.cli("antispoof", "bypass", "add", "ip", "127.0.0.2", "--domain", "example.com",
              "--comment", "newsletter service", check=0)
    assert "127.0.0.2/32" in r.stdout and "example.com" in r.stdout
    _send_ok(m, inside, "127.0.0.2", "news@example.com")
    _send_ok(m, inside, "127.0.0.2", "news@partner.test", header_from="news@example.com")
    # only that source
    code, text, _ = _rcpt_refused(m, "127.0.0.5", "news@example.com")
    assert code == 550 and text == SPOOF_TEXT
    lst = m.cli("antispoof", "bypass", "list", json_out=True, check=0).json
    assert [(b["kind"], b["value"], b["domain"]) for b in lst] == \
        [("ip", "127.0.0.2/32", "example.com")]
    # removing it restores the refusal
    m.cli("antispoof", "bypass", "remove", str(lst[0]["id"]), check=0)
    code, text, _ = _rcpt_refused(m, "127.0.0.2", "news@example.com")
    assert code == 550 and text == SPOOF_TEXT


@pytest.fixture
def rdns(unbound):
    """Reverse DNS on the session's unbound: 127.0.0.3 <-> relay.example.net
    (forward-confirmed); 127.0.0.4 -> fake.example.net, whose A is elsewhere."""
    data = [("3.0.0.127.in-addr.arpa.", "PTR", "relay.example.net."),
            ("relay.example.net.", "A", "127.0.0.3"),
            ("4.0.0.127.in-addr.arpa.", "PTR", "fake.example.net."),
            ("fake.example.net.", "A", "127.0.0.9")]
    for name, t, v in data:
        r = unbound.control("local_data", f"{name} 0 IN {t} {v}")
        assert r.returncode == 0 and "error" not in r.stdout, r.stdout + r.stderr
    yield unbound
    for name, _, _ in data:
        unbound.control("local_data_remove", name)


def test_bypass_by_forward_confirmed_host_name(world, rdns):
    m, inside = world
    m.cli("antispoof", "bypass", "add", "host", "*.example.net", check=0)
    # PTR relay.example.net, whose A is 127.0.0.3: confirmed, matches the pattern
    _send_ok(m, inside, "127.0.0.3", "crm@example.com")
    _send_ok(m, inside, "127.0.0.3", "crm@partner.test", header_from="crm@example.com")
    # PTR fake.example.net, but its A is 127.0.0.9: not confirmed -> refused
    code, text, _ = _rcpt_refused(m, "127.0.0.4", "crm@example.com")
    assert code == 550 and text == SPOOF_TEXT
    fc = {e["client"]: e for e in m.events("fcrdns")}
    assert fc["127.0.0.3"]["confirmed"] == "relay.example.net"
    assert fc["127.0.0.4"]["ptr"] == "fake.example.net" and fc["127.0.0.4"]["confirmed"] == ""
    # the candidate shows the unconfirmed name; a host bypass for it is refused
    cands = m.cli("antispoof", "candidates", json_out=True, check=0).json
    c4 = [c for c in cands if c["address"] == "127.0.0.4"]
    assert c4 and c4[0]["host"] == "fake.example.net" and c4[0]["host_confirmed"] is False
    r = m.cli("antispoof", "bypass", "add", "--from-candidate", "127.0.0.4", "--by", "host")
    assert r.returncode != 0 and "no forward-confirmed host name" in r.stderr, r


def test_candidates_and_one_step_bypass(world):
    m, inside = world
    assert "no source was refused" in m.cli("antispoof", "candidates", check=0).stdout
    for sender in ("a@example.com", "b@example.com", "c@sub.example.com"):
        code, _, _ = _rcpt_refused(m, "127.0.0.6", sender)
        assert code == 550
    cands = m.cli("antispoof", "candidates", json_out=True, check=0).json
    assert len(cands) == 1
    c = cands[0]
    assert c["address"] == "127.0.0.6"
    assert c["count"] == 6          # two RCPTs in each of the three transactions
    assert c["domains"] == ["example.com", "sub.example.com"]
    assert c["first_seen"] and c["last_seen"]
    human = m.cli("antispoof", "candidates", check=0).stdout
    assert "127.0.0.6" in human and "--from-candidate" in human
    # one step: a bypass per refused domain, and the source leaves the list
    r = m.cli("antispoof", "bypass", "add", "--from-candidate", "127.0.0.6", json_out=True,
              check=0).json
    assert sorted((b["kind"], b["value"], b["domain"]) for b in r["items"]) == [
        ("ip", "127.0.0.6/32", "example.com"), ("ip", "127.0.0.6/32", "sub.example.com")]
    assert m.cli("antispoof", "candidates", json_out=True, check=0).json == []
    _send_ok(m, inside, "127.0.0.6", "a@example.com")
    # not a candidate: 404 with a clear message
    r = m.cli("antispoof", "bypass", "add", "--from-candidate", "127.0.0.7")
    assert r.returncode != 0 and "not an anti-spoofing candidate" in r.stderr, r
    # audited
    audit = m.cli("audit", "--action", "antispoof_bypass.create", json_out=True, check=0).json
    assert "127.0.0.6/32" in json.dumps(audit), audit


def test_cli_and_api_errors(world):
    m, _ = world
    call = _api(m)
    st, b = call("POST", "/api/v1/antispoof/bypasses", {"kind": "dns", "value": "x.test"})
    assert st == 400 and b["error"]["field"] == "kind"
    st, b = call("POST", "/api/v1/antispoof/bypasses", {"kind": "ip", "value": "10.0.0.1/8"})
    assert st == 400 and b["error"]["field"] == "value"
    st, b = call("POST", "/api/v1/antispoof/bypasses", {"kind": "host", "value": "bad host"})
    assert st == 400 and b["error"]["field"] == "value"
    st, b = call("POST", "/api/v1/antispoof/bypasses",
                 {"kind": "spf", "value": "partner.test", "domain": "no such"})
    assert st == 400 and b["error"]["field"] == "domain"
    st, b = call("POST", "/api/v1/antispoof/bypasses", {"kind": "ip", "value": "192.0.2.1",
                                                        "extra": 1})
    assert st == 400 and b["error"]["field"] == "extra"
    st, b = call("POST", "/api/v1/antispoof/bypasses", {"kind": "ip"})
    assert st == 400 and b["error"]["field"] == "value"
    st, b = call("POST", "/api/v1/antispoof/bypasses", {"kind": "ip", "value": "192.0.2.1"})
    assert st == 201 and b["value"] == "192.0.2.1/32" and b["domain"] is None
    st, b = call("POST", "/api/v1/antispoof/bypasses", {"kind": "ip", "value": "192.0.2.1/32"})
    assert st == 409
    st, b = call("DELETE", "/api/v1/antispoof/bypasses/99999")
    assert st == 404 and b["error"]["field"] == "id"
    st, b = call("DELETE", "/api/v1/antispoof/bypasses/abc")
    assert st == 400 and b["error"]["field"] == "id"
    st, b = call("POST", "/api/v1/antispoof/candidates/not-an-ip/bypass", {})
    assert st == 400 and b["error"]["field"] == "address"
    st, b = call("POST", "/api/v1/antispoof/candidates/127.0.0.8/bypass", {"by": "mx"})
    assert st == 400 and b["error"]["field"] == "by"
    # the CLI: a message and a non-zero exit
    r = m.cli("antispoof", "bypass", "add", "dns", "x.test")
    assert r.returncode != 0 and "kind" in r.stderr, r
    r = m.cli("antispoof", "bypass", "add", "ip")
    assert r.returncode != 0, r
    r = m.cli("antispoof", "bypass", "remove", "99999")
    assert r.returncode != 0 and "no such bypass" in r.stderr, r
    r = m.cli("antispoof", "bypass", "frob")
    assert r.returncode != 0, r


# --- Connect: the antispoof_bypass task ------------------------------------------

def _check(m):
    r = m.cli("connect", "check", "antispoof_bypass", json_out=True)
    assert r.returncode in (0, 1), r
    return r.json["result"]


def test_connect_task_pass_and_fail(world, moatd, sink):
    m, _ = world
    m.cli("outbound", "host", "add", "127.0.0.1", check=0)    # the outbound role: skipped as source
    m.cli("antispoof", "bypass", "add", "ip", "127.0.0.2", check=0)
    m.cli("antispoof", "bypass", "add", "host", "*.mailer.example.net", check=0)
    r = _check(m)
    assert r["outcome"] == "pass", r
    probes = {p["leg"]: p for p in r["details"]["probes"]}
    assert probes["stranger"]["source"] == "127.0.0.3"
    assert probes["stranger"]["code"] == 550 and "anti-spoofing" in probes["stranger"]["reply"]
    assert probes["excepted"]["source"] == "127.0.0.2" and probes["excepted"]["code"] == 250
    assert [u["bypass"] for u in r["details"]["untested"]] == \
        ["host *.mailer.example.net (all domains)"]
    # the probes are real transactions: moatd logged the stranger's refusal
    assert any(e["client"] == "127.0.0.3" for e in _reject_events(m))
    ins = m.cli("connect", "show", "antispoof_bypass", json_out=True, check=0).json
    assert "bypass add" in json.dumps(ins)

    # anti-spoofing off: the stranger gets through, the task fails and says why
    inside2 = sink(name="inside2")
    m2 = moatd(domains={"example.com": f"127.0.0.1:{inside2.port}"}, name="moatd-off")
    r = _check(m2)
    assert r["outcome"] == "fail", r
    assert "anti-spoofing is off" in r["message"], r


def _pipelined(m, src, sender):
    """EHLO, then MAIL, two RCPTs and DATA in one write: the replies in order."""
    import socket
    s = socket.create_connection((m.host, m.port), timeout=20, source_address=(src, 0))
    f = s.makefile("rb")

    def reply():
        lines = []
        while True:
            line = f.readline().decode()
            assert line, "connection closed"
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return lines[-1]
    reply()
    s.sendall(b"EHLO client.ext.test\r\n")
    reply()
    s.sendall(f"MAIL FROM:<{sender}>\r\nRCPT TO:<alice@example.com>\r\n"
              f"RCPT TO:<bob@example.com>\r\nDATA\r\n".encode())
    out = [reply() for _ in range(4)]
    s.sendall(b"QUIT\r\n" if not out[3].startswith("354") else b".\r\nQUIT\r\n")
    s.close()
    return out


def test_pipelined_replies_stay_in_order_while_fcrdns_is_asked(world, rdns):
    m, inside = world
    m.cli("antispoof", "bypass", "add", "host", "relay.example.net", check=0)
    # the first RCPT waits for PTR + A of 127.0.0.3; the replies keep their order
    out = _pipelined(m, "127.0.0.3", "crm@example.com")
    assert [r[:3] for r in out] == ["250", "250", "250", "354"], out
    out = _pipelined(m, "127.0.0.4", "crm@example.com")
    assert [r[:3] for r in out[:3]] == ["250", "550", "550"], out
    assert out[1].endswith("5.7.1 rejected by anti-spoofing policy"), out
    assert out[3][:1] == "5" or out[3][:3] == "503", out    # no valid recipient: no DATA
