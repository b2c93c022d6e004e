"""Issue 11: message tracking.  Every SMTP transaction and every message Moat
generates is tracked event by event; GET /api/v1/tracking searches,
GET /api/v1/tracking/{id} gives one timeline, `moat track` shows both.

One moatd and its peers for the module (smtp-sink as the internal route, a
second smtp-sink answering 550 at RCPT, a route that is down until the test
starts a sink on its port); smtplib as the sending MTA.  Timelines are
compared exactly: the kinds and results of the events, in order.  Events
reach the tracking database within ~200 ms, so the API is polled.
"""

import smtplib
import urllib.parse

import pytest

import moatlib
from api_fixtures import Api
from moatlib import Moatd, Sink, free_port, make_message, new_marker, wait_until

RETRY = "1h"    # no retry but the one a test asks for: attempts are exact


@pytest.fixture(scope="module")
def world(tmp_path_factory, unbound):
    d = tmp_path_factory.mktemp("tracking")
    moatlib._ensure_world_traversable(d)
    good = Sink(d, name="route").start()
    bad = Sink(d, args=["-f", "RCPT", "-B", "550 5.1.1 no such user"], name="rejecting").start()
    down_port = free_port()
    m = Moatd(d, unbound.port, opts={"retry_schedule": RETRY})
    for dom, route in (("example.com", good.port), ("bounce.example", bad.port),
                       ("later.example", down_port)):
        m.pending.append(["domain", "add", dom, "--trust-unverified"])
        m.pending.append(["route", "set", dom, f"127.0.0.1:{route}"])
    m.pending.append(["blocked", "add", "spammer@ext.test", "--action", "hold"])
    m.pending.append(["forward", "add", "sales@example.com", "alice@example.com"])
    started = []
    try:
        m.start()
        yield {"m": m, "api": Api(m.http_port, m.token), "good": good, "down_port": down_port,
               "d": d, "started": started}
    except BaseException:
        print(m.log_tail(80))
        raise
    finally:
        if m.running:
            m.stop()
        for s in [good, bad] + started:
            s.stop()


def steps(tl):
    """The timeline as (kind, result) pairs, archiving aside (it runs on its own thread)."""
    return [(e["kind"], e.get("result", "")) for e in tl["events"] if e["kind"] != "archived"]


def timeline(w, ident, want, timeout=15):
    """Poll GET /api/v1/tracking/{ident} until its steps are want; then assert them."""
    last = {}

    def done():
        r = w["api"].get(f"/api/v1/tracking/{ident}")
        last["r"] = r
        return r.status == 200 and steps(r.json) == want
    try:
        wait_until(done, timeout, interval=0.1, what=f"timeline of {ident}")
    except AssertionError:
        r = last.get("r")
        assert r is not None and r.status == 200, r
        assert steps(r.json) == want, r.json
    return last["r"].json


SMTP_ACCEPTED = [("connect", ""), ("mail", "accepted"), ("rcpt", "accepted"),
                 ("data", "accepted"), ("queued", "")]


def test_delivered_timeline_and_cli(world):
    w, m = world, world["m"]
    marker = new_marker()
    qid = m.send("carol@example.com", "alice@example.com",
                 make_message(sender="carol@example.com", subject="tracked hello", body=marker))
    tl = timeline(w, qid, SMTP_ACCEPTED + [("attempt", "delivered")])
    msg = tl["message"]
    assert (msg["qid"], msg["sender"], msg["subject"], msg["outcome"], msg["role"]) == \
        (qid, "carol@example.com", "tracked hello", "delivered", "inbound")
    assert msg["rcpts"] == [{"address": "alice@example.com", "state": "delivered"}]
    att = [e for e in tl["events"] if e["kind"] == "attempt"][0]
    assert att["code"] == 250 and att["remote"].endswith(f":{w['good'].port}"), att
    assert att["rcpt"] == "alice@example.com" and att["latency_ms"] >= 0
    # the archive keeps it: one ARCHIVED event
    wait_until(lambda: [e["kind"] for e in w["api"].get(f"/api/v1/tracking/{qid}").json["events"]]
               .count("archived") == 1, 15, what="archived event")

    # moat track: one match prints its timeline; show by qid prints the same
    r = m.cli("track", "--qid", qid, check=0)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("message ") and qid in lines[0] and "delivered" in lines[0], r.stdout
    kinds = [ln.split()[2] for ln in lines if ln[:2] == "20"]
    assert [k for k in kinds if k != "archived"] == [k for k, _ in SMTP_ACCEPTED] + ["attempt"]
    assert any(" rcpt " in ln and "alice@example.com accepted 250 2.1.5" in ln for ln in lines), r.stdout
    assert any(" attempt " in ln and "delivered in " in ln and " ms" in ln for ln in lines), r.stdout
    assert m.cli("track", "show", qid, check=0).stdout == r.stdout
    # the table: several matches
    r = m.cli("track", "--to", "alice@example.com", "--limit", "1000", check=0)
    assert "tracked hello" in r.stdout


def test_rejected_at_rcpt_is_found_by_sender_and_ip(world):
    w, m = world, world["m"]
    c = smtplib.SMTP(m.host, m.port, timeout=10, source_address=("127.0.0.5", 0))
    try:
        c.ehlo("client.ext.test")
        assert c.mail("dave@ext.test")[0] == 250
        code, _ = c.rcpt("someone@not-ours.example")
        assert code >= 500
        c.quit()
    finally:
        c.close()
    want = [("connect", ""), ("mail", "accepted"), ("rcpt", "rejected")]
    found = {}
    for query in ("sender=dave%40ext.test", "client_ip=127.0.0.5", "client_ip=127.0.0.4%2F30"):
        def one():
            items = w["api"].get(f"/api/v1/tracking?{query}").json["items"]
            return items if len(items) == 1 else None
        items = wait_until(one, 10, interval=0.1, what=f"tracking search {query}")
        found[query] = items[0]["id"]
        assert items[0]["qid"] is None and items[0]["outcome"] == "rejected", items
    assert len(set(found.values())) == 1, found
    tl = timeline(w, found["client_ip=127.0.0.5"], want)
    rcpt = tl["events"][2]
    assert rcpt["rcpt"] == "someone@not-ours.example" and rcpt["code"] >= 500 and rcpt["check"], rcpt
    r = m.cli("track", "--ip", "127.0.0.5", check=0)
    assert "NOQUEUE" in r.stdout and "someone@not-ours.example rejected" in r.stdout, r.stdout


def test_deferred_then_delivered(world):
    w, m = world, world["m"]
    qid = m.send("erin@example.com", "bob@later.example", make_message(sender="erin@example.com"))
    timeline(w, qid, SMTP_ACCEPTED + [("attempt", "deferred")])
    s = Sink(w["d"], port=w["down_port"], name="later").start()
    w["started"].append(s)
    m.cli("queue", "retry", qid, check=0)
    tl = timeline(w, qid, SMTP_ACCEPTED + [("attempt", "deferred"), ("attempt", "delivered")])
    assert tl["message"]["outcome"] == "delivered"
    first, second = [e for e in tl["events"] if e["kind"] == "attempt"]
    assert 400 <= first["code"] < 500 and first["reason"], first
    assert second["code"] == 250 and second["remote"].endswith(f":{w['down_port']}"), second


def test_bounced_with_dsn(world):
    w, m = world, world["m"]
    qid = m.send("frank@example.com", "nobody@bounce.example",
                 make_message(sender="frank@example.com", to="nobody@bounce.example"))
    tl = timeline(w, qid, SMTP_ACCEPTED + [("attempt", "failed"), ("bounced", "failed"), ("dsn", "")])
    assert tl["message"]["outcome"] == "bounced"
    att = [e for e in tl["events"] if e["kind"] == "attempt"][0]
    assert (att["code"], att["dsn"], att["reason"]) == (550, "5.1.1", "no such user"), att
    dsn_qid = [e for e in tl["events"] if e["kind"] == "dsn"][0]["detail"]
    # the DSN is tracked as a message of its own, generated by Moat
    dtl = timeline(w, dsn_qid, [("queued", ""), ("attempt", "delivered")])
    assert dtl["message"]["role"] == "dsn" and dtl["message"]["qid"] == dsn_qid


def test_held_then_released(world):
    w, m = world, world["m"]
    qid = m.send("spammer@ext.test", "alice@example.com", make_message(sender="spammer@ext.test"))
    timeline(w, qid, SMTP_ACCEPTED + [("held", "")])
    m.cli("held", "release", qid, check=0)
    tl = timeline(w, qid, SMTP_ACCEPTED + [("held", ""), ("released", ""), ("attempt", "delivered")])
    held = [e for e in tl["events"] if e["kind"] == "held"][0]
    assert held["check"] == "blocked_sender" and held["reason"] == "blocked sender (hold)", held
    assert [e for e in tl["events"] if e["kind"] == "released"][0]["actor"] == "admin"


def test_forwarded(world):
    w, m = world, world["m"]
    qid = m.send("hank@example.com", "sales@example.com", make_message(sender="hank@example.com"))
    tl = timeline(w, qid, SMTP_ACCEPTED[:4] + [("forwarded", ""), ("queued", ""),
                                                ("attempt", "delivered")])
    fwd = [e for e in tl["events"] if e["kind"] == "forwarded"][0]
    assert (fwd["rcpt"], fwd["detail"]) == ("sales@example.com", "alice@example.com"), fwd
    assert [e["rcpt"] for e in tl["events"] if e["kind"] == "attempt"] == ["alice@example.com"]


def test_bad_query_is_400_naming_the_field(world):
    api = world["api"]
    for query, field in (("outcome=lost", "outcome"), ("after=yesterday", "after"),
                         ("limit=0", "limit"), ("client_ip=not-an-ip", "client_ip"),
                         ("qid=XYZ", "qid")):
        r = api.get(f"/api/v1/tracking?{query}")
        assert r.status == 400 and r.error.get("field") == field, (query, r)
    r = api.get("/api/v1/tracking/" + urllib.parse.quote("12ab!"))
    assert r.status == 400 and r.error.get("field") == "id", r
    assert api.get("/api/v1/tracking/0123456789ABCDEF").status == 404
    r = world["m"].cli("track", "--outcome", "lost")
    assert r.returncode != 0 and "outcome" in r.stderr, r


def test_runtime_limits_reach_the_engine(world):
    """The tracking thread keeps its own copy of the limits: a change through
    the API reaches it at once (moatd's settings-changed hook), and a reset
    goes back to the default."""
    m = world["m"]
    m.cli("settings", "set", "tracking_retention", "2h")
    wait_until(lambda: "event=tracking_limits retention=7200 " in m.log_text(), 5,
               what="the engine's new retention")
    m.cli("settings", "reset", "tracking_retention")
    wait_until(lambda: f"event=tracking_limits retention={30 * 86400} " in m.log_text(), 5,
               what="the default retention back")
