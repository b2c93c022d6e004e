"""Issue 7: held (quarantined) mail and its trigger, the organisation-wide
blocked senders; forwarding rules.

Real peers only: moatd from the build, smtp-sink as the internal route,
smtplib as the sending MTA, the moat CLI and the HTTP API as the
administrator.
"""

import base64
import re
import time

from api_fixtures import Api
from moatlib import make_message, new_marker, wait_until


def held_ids(m):
    r = m.cli("held", "list", json_out=True, check=0)
    return [x["id"] for x in r.json]


def setup_hold(moatd, sink, opts=None, pattern="spammer@ext.test"):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"}, opts=opts or {})
    m.cli("blocked", "add", pattern, "--action", "hold", "--comment", "test", check=0)
    return m, s


def send_held(m, sender="spammer@ext.test", body="hello", extra_headers=()):
    marker = new_marker()
    qid = m.send(sender, "alice@example.com",
                 make_message(sender=sender, body=body, marker=marker, extra_headers=extra_headers))
    wait_until(lambda: qid.upper() in held_ids(m), 10, what="message in the held list")
    return qid.upper(), marker


def test_blocked_hold_is_held_then_released_exactly_once(moatd, sink):
    m, s = setup_hold(moatd, sink)
    qid, marker = send_held(m)

    # held: in the held list with its reason, not in the queue, not delivered
    lst = m.cli("held", "list", json_out=True, check=0).json
    entry = [x for x in lst if x["id"] == qid][0]
    assert entry["reason"] == "blocked sender (hold)"
    assert entry["sender"] == "spammer@ext.test"
    assert entry["rcpts"] == ["alice@example.com"]
    assert qid not in m.queue_ids()
    human = m.cli("held", "list", check=0).stdout
    assert qid in human and "blocked sender (hold)" in human
    # the queue refuses to act on held mail: retry would otherwise deliver it
    m.cli("queue", "retry", "--all", check=0)
    time.sleep(2)
    assert s.with_marker(marker) == []
    assert any(e.get("event") == "hold" and e.get("check") == "blocked_sender"
               for e in m.events()), m.log_tail()

    # show: envelope, headers, decoded text
    show = m.cli("held", "show", qid, json_out=True, check=0).json
    assert show["client_addr"] == "127.0.0.1"
    assert "Subject: test" in show["headers"]
    assert marker in show["text"]

    # release: delivered exactly once
    r = m.cli("held", "release", qid, check=0)
    assert "released" in r.stdout, r
    got = s.wait_marker(marker, timeout=15)
    assert got.rcpt_addrs() == ["alice@example.com"]
    wait_until(lambda: qid not in held_ids(m), 5, what="held list empty")
    time.sleep(2)
    assert len(s.with_marker(marker)) == 1
    # a second release finds nothing
    r = m.cli("held", "release", qid)
    assert r.returncode != 0 and "no held message" in r.stderr, r
    # audited
    audit = Api(m.http_port, m.token).get("/api/v1/audit").json
    assert any(a.get("action") == "held.release" and a.get("target") == qid
               for a in audit["items"]), audit


def test_release_across_restart_delivers_once(moatd, sink):
    m, s = setup_hold(moatd, sink)
    qid, marker = send_held(m)

    # held mail survives a restart, still held
    m.stop()
    m.restart()
    assert qid in held_ids(m)
    time.sleep(1.5)
    assert s.with_marker(marker) == []

    # release and kill moatd at once: after the restart it is delivered, once
    m.cli("held", "release", qid, check=0)
    m.kill9()
    m.restart()
    s.wait_marker(marker, timeout=15)
    time.sleep(2.5)
    assert len(s.with_marker(marker)) == 1
    assert qid not in held_ids(m)
    m.stop()
    m.restart()
    time.sleep(2.5)
    assert len(s.with_marker(marker)) == 1


def test_delete_held_message(moatd, sink):
    m, s = setup_hold(moatd, sink)
    qid, marker = send_held(m)
    m.cli("held", "delete", qid, check=0)
    assert qid not in held_ids(m)
    r = m.cli("held", "delete", qid)
    assert r.returncode != 0, r
    m.stop()
    m.restart()
    assert qid not in held_ids(m)
    time.sleep(1.5)
    assert s.with_marker(marker) == []
    # no DSN either: the sink (route of example.com) is the only peer, and
    # the sender's domain has no route
    assert s.count() == 0


def test_purge_after_held_lifetime(moatd, sink):
    m, s = setup_hold(moatd, sink, opts={"held_lifetime": "3s"})
    qid, marker = send_held(m)
    wait_until(lambda: qid not in held_ids(m), 10, what="held message purged")
    assert any(e.get("event") == "held_purged" and e.get("qid") == qid for e in m.events())
    time.sleep(1)
    assert s.with_marker(marker) == []


def test_blocked_reject_and_domain_pattern(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    m.cli("blocked", "add", "bad.test", "--action", "reject", check=0)
    for sender in ("x@bad.test", "y@sub.bad.test", "Z@BAD.TEST"):
        c = m.smtp()
        c.ehlo("client.ext.test")
        assert c.mail(sender)[0] == 250
        code, text = c.rcpt("alice@example.com")
        assert code == 550 and text.decode().startswith("5.7.1 sender blocked by policy"), (sender, code, text)
        c.quit()
    # a sender merely ending in the domain text is not in it
    marker = new_marker()
    m.send("x@notbad.test", "alice@example.com", make_message(sender="x@notbad.test", marker=marker))
    s.wait_marker(marker)
    # list and remove
    lst = m.cli("blocked", "list", json_out=True, check=0).json
    assert [(b["address"], b["action"]) for b in lst] == [("bad.test", "reject")]
    m.cli("blocked", "remove", "bad.test", check=0)
    marker = new_marker()
    m.send("x@bad.test", "alice@example.com", make_message(sender="x@bad.test", marker=marker))
    s.wait_marker(marker)


def test_blocked_sender_errors(moatd, sink):
    m = moatd()
    api = Api(m.http_port, m.token)
    r = api.post("/api/v1/blocked-senders", {"address": "a@b.test", "action": "drop"})
    assert r.status == 400 and r.error.get("field") == "action", r
    r = api.post("/api/v1/blocked-senders", {"address": "not an address", "action": "hold"})
    assert r.status == 400 and r.error.get("field") == "address", r
    r = api.post("/api/v1/blocked-senders", {"address": "a@b.test"})
    assert r.status == 400, r
    assert api.post("/api/v1/blocked-senders", {"address": "a@b.test", "action": "hold"}).status == 201
    r = api.post("/api/v1/blocked-senders", {"address": "A@B.test", "action": "reject"})
    assert r.status == 409, r
    r = api.request("DELETE", "/api/v1/blocked-senders/nobody@b.test")
    assert r.status == 404, r
    r = api.get("/api/v1/held/XYZ")
    assert r.status == 400 and r.error.get("field") == "id", r
    r = api.get("/api/v1/held/0123456789ABCDEF")
    assert r.status == 404, r
    cp = m.cli("blocked", "add", "a@c.test")
    assert cp.returncode == 2 and "--action" in cp.stderr, cp
    cp = m.cli("blocked", "add", "a@c.test", "--action", "bounce")
    assert cp.returncode == 1 and "action" in cp.stderr, cp


def test_held_show_decodes_mime(moatd, sink):
    m, s = setup_hold(moatd, sink)
    b64 = base64.b64encode("Grüße aus dem Base64-Teil\r\n".encode()).decode()
    body = "\r\n".join([
        "This is a MIME message.",
        "--XYZ",
        "Content-Type: text/html; charset=utf-8",
        "",
        "<p>not this</p>",
        "--XYZ",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        "",
        b64,
        "--XYZ--",
        "",
    ])
    qid, _ = send_held(m, body=body, extra_headers=(
        "MIME-Version: 1.0", 'Content-Type: multipart/alternative; boundary="XYZ"'))
    show = m.cli("held", "show", qid, json_out=True, check=0).json
    assert show["text"].startswith("Grüße aus dem Base64-Teil"), show["text"]
    human = m.cli("held", "show", qid, check=0).stdout
    assert "Grüße" in human and "reason:   blocked sender (hold)" in human

    qp = "Sch=C3=B6ne Gr=C3=BC=\r\n=C3=9Fe"
    qid2, _ = send_held(m, body=qp, extra_headers=(
        "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable"))
    show = m.cli("held", "show", qid2, json_out=True, check=0).json
    assert show["text"].startswith("Schöne Grüße"), show["text"]


def test_outbound_role_is_not_screened(moatd, sink):
    """Blocked senders screen inbound mail only: an authorised outbound host
    sending as a blocked address is not held."""
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    m.cli("outbound", "host", "add", "127.0.0.1", check=0)
    m.cli("blocked", "add", "spammer@ext.test", "--action", "hold", check=0)
    marker = new_marker()
    m.send("spammer@ext.test", "alice@example.com", make_message(sender="spammer@ext.test", marker=marker))
    s.wait_marker(marker)
    assert held_ids(m) == []


# --- forwarding ---------------------------------------------------------------

def forwarding_world(moatd, sink):
    """example.com and other.test internal (own sinks), corp.test internal for
    the original senders, remote.example.org external (MX -> mx sink)."""
    ex, other, senders, mx = sink(name="example"), sink(name="other"), sink(name="senders"), sink(name="mx")
    m = moatd(domains={"example.com": f"127.0.0.1:{ex.port}",
                       "other.test": f"127.0.0.1:{other.port}",
                       "corp.test": f"127.0.0.1:{senders.port}"},
              opts={"delivery_port": mx.port})
    return m, ex, other, senders, mx


def test_forward_redirect_internal(moatd, sink):
    m, ex, other, senders, mx = forwarding_world(moatd, sink)
    r = m.cli("forward", "add", "alice@example.com", "bob@other.test", check=0)
    assert "redirected to bob@other.test" in r.stdout, r
    marker = new_marker()
    m.send("someone@corp.test", "alice@example.com", make_message(sender="someone@corp.test", marker=marker))
    got = other.wait_marker(marker)
    assert got.rcpt_addrs() == ["bob@other.test"]
    assert got.sender() == "someone@corp.test"      # internal target: no SRS
    assert got.msg["X-Moat-Forwarded-For"] == "<alice@example.com>"
    time.sleep(1.5)
    assert ex.with_marker(marker) == []
    lst = m.cli("forward", "list", json_out=True, check=0).json
    assert [(f["address"], f["target"], f["mode"]) for f in lst] == [
        ("alice@example.com", "bob@other.test", "redirect")]


def test_forward_copy_delivers_both(moatd, sink):
    m, ex, other, senders, mx = forwarding_world(moatd, sink)
    m.cli("forward", "add", "alice@example.com", "bob@other.test", "--copy", check=0)
    marker = new_marker()
    m.send("someone@corp.test", "alice@example.com", make_message(sender="someone@corp.test", marker=marker))
    mine = ex.wait_marker(marker)
    theirs = other.wait_marker(marker)
    assert mine.rcpt_addrs() == ["alice@example.com"] and mine.msg["X-Moat-Forwarded-For"] is None
    assert theirs.rcpt_addrs() == ["bob@other.test"]
    assert theirs.msg["X-Moat-Forwarded-For"] == "<alice@example.com>"
    time.sleep(1)
    assert len(ex.with_marker(marker)) == 1 and len(other.with_marker(marker)) == 1


def test_forward_external_srs_and_bounce(moatd, sink):
    m, ex, other, senders, mx = forwarding_world(moatd, sink)
    m.cli("forward", "add", "alice@example.com", "carol@remote.example.org", check=0)
    marker = new_marker()
    m.send("someone@corp.test", "alice@example.com", make_message(sender="someone@corp.test", marker=marker))
    got = mx.wait_marker(marker, timeout=20)
    assert got.rcpt_addrs() == ["carol@remote.example.org"]
    srs = got.sender()
    assert re.fullmatch(r"SRS0=[a-z2-7]{6}=[a-z2-7]{2}=corp\.test=someone@example\.com", srs), srs
    assert got.msg["X-Moat-Forwarded-For"] == "<alice@example.com>"
    assert any(e.get("event") == "forwarded" for e in m.events())

    # the destination bounces: to the SRS address, which Moat relays to the original sender
    bmarker = new_marker()
    c = m.smtp()
    c.ehlo("mx.remote.example.org")
    assert c.mail("<>")[0] == 250
    code, text = c.rcpt(srs)
    assert code == 250, (code, text)
    assert c.data(make_message(sender="MAILER-DAEMON@remote.example.org", to=srs, subject="bounce",
                               marker=bmarker).encode())[0] == 250
    c.quit()
    b = senders.wait_marker(bmarker, timeout=20)
    assert b.rcpt_addrs() == ["someone@corp.test"]
    assert b.sender() == ""

    # forged, tampered or foreign SRS addresses are refused
    forged = srs.replace("someone@", "other@")
    tampered = "SRS0=aaaaaa" + srs[len("SRS0=aaaaaa"):] if not srs.startswith("SRS0=aaaaaa") else "SRS0=bbbbbb" + srs[11:]
    for bad in (forged, tampered, "SRS0=xyz@example.com", "SRS0=aaaaaa=aa=corp.test=x@example.com"):
        c = m.smtp()
        c.ehlo("mx.remote.example.org")
        c.mail("<>")
        code, text = c.rcpt(bad)
        assert code == 550 and text.decode().startswith("5.7.1"), (bad, code, text)
        c.quit()

    # with recipient validation on, unknown users are refused but the SRS address is not
    m.cli("rv", "set", "example.com", "--mode", "known", check=0)

    def rcpt_code(addr):
        c = m.smtp()
        try:
            c.ehlo("mx.remote.example.org")
            c.mail("<>")
            return c.rcpt(addr)[0]
        finally:
            c.close()
    wait_until(lambda: rcpt_code("nobody@example.com") == 550, 10, what="recipient validation on")
    assert rcpt_code(srs) == 250
    assert any(e.get("event") == "srs_bounce" for e in m.events())


def test_forward_rules_api_errors(moatd, sink):
    m, ex, other, senders, mx = forwarding_world(moatd, sink)
    api = Api(m.http_port, m.token)
    r = api.post("/api/v1/forwarding", {"address": "x@nowhere.test", "target": "y@example.com"})
    assert r.status == 400 and r.error.get("field") == "address", r
    r = api.post("/api/v1/forwarding", {"address": "x@example.com", "target": "x@example.com"})
    assert r.status == 400 and r.error.get("field") == "target", r
    r = api.post("/api/v1/forwarding", {"address": "x@example.com", "target": "bad target"})
    assert r.status == 400 and r.error.get("field") == "target", r
    r = api.post("/api/v1/forwarding", {"address": "x@example.com", "target": "y@example.com", "mode": "bcc"})
    assert r.status == 400 and r.error.get("field") == "mode", r
    r = api.post("/api/v1/forwarding", {"address": "x@example.com", "target": "y@example.com"})
    assert r.status == 201, r
    rid = r.json["id"]
    assert api.post("/api/v1/forwarding", {"address": "x@example.com", "target": "y@example.com"}).status == 409
    assert api.request("DELETE", f"/api/v1/forwarding/{rid}").status == 204
    assert api.request("DELETE", f"/api/v1/forwarding/{rid}").status == 404
    assert api.request("DELETE", "/api/v1/forwarding/abc").status == 400
    audit = api.get("/api/v1/audit").json
    assert {"forwarding.create", "forwarding.delete"} <= {a.get("action") for a in audit["items"]}


def test_forward_loop_terminates(moatd, sink):
    """a -> b and b -> a: rules apply once, so each is delivered once to the other."""
    m, ex, other, senders, mx = forwarding_world(moatd, sink)
    m.cli("forward", "add", "a@example.com", "b@other.test", check=0)
    m.cli("forward", "add", "b@other.test", "a@example.com", check=0)
    marker = new_marker()
    m.send("someone@corp.test", "a@example.com", make_message(sender="someone@corp.test", marker=marker))
    got = other.wait_marker(marker)
    assert got.rcpt_addrs() == ["b@other.test"]
    time.sleep(1.5)
    assert ex.with_marker(marker) == [] and len(other.with_marker(marker)) == 1


def test_connect_forwarding_task_shows_rewrite(moatd, sink):
    m, ex, other, senders, mx = forwarding_world(moatd, sink)
    api = Api(m.http_port, m.token)
    r = api.post("/api/v1/connect/forwarding/check")
    assert r.status == 200, r
    assert r.json["result"]["outcome"] == "pending", r.json
    m.cli("forward", "add", "alice@example.com", "carol@remote.example.org", check=0)
    m.cli("forward", "add", "alice@example.com", "bob@other.test", "--copy", check=0)
    r = api.post("/api/v1/connect/forwarding/check")
    assert r.status == 200, r
    res = r.json["result"]
    assert res["outcome"] == "pass", res
    rule = res["details"]["rules"][0]
    assert rule["address"] == "alice@example.com"
    got = {t["address"]: t for t in rule["recipients"]}
    assert set(got) == {"alice@example.com", "carol@remote.example.org", "bob@other.test"}
    assert got["alice@example.com"]["mail_from"] == "sender@example.net"
    assert got["bob@other.test"]["mail_from"] == "sender@example.net"
    srs = got["carol@remote.example.org"]["mail_from"]
    assert re.fullmatch(r"SRS0=[a-z2-7]{6}=[a-z2-7]{2}=example\.net=sender@example\.com", srs), srs
    # the address the probe shows is one Moat accepts as a bounce: same function, same key
    c = m.smtp()
    c.ehlo("mx.remote.example.org")
    c.mail("<>")
    assert c.rcpt(srs)[0] == 250
    c.quit()
    assert r.json["state"] != "unavailable"
