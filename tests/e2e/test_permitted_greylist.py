"""Permitted senders, auto-allow and greylisting (issue 7 items 2 and 3), with real
peers: smtplib clients from loopback addresses, smtp-sink as the internal mail server
and as "the internet" (remote.example.org's MX), the CLI and the HTTP API.

The greylisting clock is moved with the test_clock_file setting (test only): the
file holds an offset in seconds that moatd adds to the clock of greylisting and
permitted-sender expiry.  example.com is internal; 127.0.0.1 is the authorised
outbound host in the auto-allow tests, 127.0.0.2 a stranger on the internet.
"""

import json
import smtplib
import sqlite3
import time
import urllib.error
import urllib.request

import pytest

from moatlib import make_message, new_marker, wait_until

EXT = "remote.example.org"
MIN_DELAY = 300          # the default greylist_min_delay (5 min)
MAX_DELAY = 2 * 86400    # the default greylist_max_delay (2 days)


@pytest.fixture
def grey(moatd, sink):
    """(moatd with greylisting on and a test clock, internal sink, external MX sink)."""
    inside = sink(name="inside")
    mx = sink(name="ext-mx")
    clock = None

    def make(**extra):
        nonlocal clock
        m = moatd(domains={"example.com": f"127.0.0.1:{inside.port}"},
                  opts={"greylisting": "yes", "delivery_port": mx.port,
                        "test_clock_file": "PLACEHOLDER", **extra}, start=False)
        clock = m.dir / "clock"
        clock.write_text("0\n")
        m.opts["test_clock_file"] = str(clock)
        m.start()
        m.clock = clock
        return m

    return make, inside, mx


def set_clock(m, offset):
    m.clock.write_text(f"{int(offset)}\n")


def rcpt_from(m, src, sender, rcpt, data=False, marker=None):
    """One transaction from source address src: the RCPT reply (code, text); with
    data=True and a 250, the message is sent too."""
    with smtplib.SMTP(m.host, m.port, timeout=20, source_address=(src, 0)) as c:
        c.ehlo("client.ext.test")
        code, text = c.mail(sender)
        assert code == 250, (code, text)
        code, text = c.rcpt(rcpt)
        if code == 250 and data:
            dcode, dtext = c.data(make_message(sender=sender, to=rcpt, marker=marker).encode())
            assert dcode == 250, (dcode, dtext)
        return code, text


def greylisted(reply):
    code, text = reply
    return code == 451 and text.startswith(b"4.7.1") and b"greylisted" in text


def grey_events(m, result=None):
    return [e for e in m.events("greylist") if result is None or e.get("result") == result]


class Api:
    """The HTTP API with the administrator's token (urllib: real HTTP)."""

    def __init__(self, m):
        self.base = f"http://127.0.0.1:{m.http_port}"
        self.token = m.token

    def request(self, method, path, body=None, raw=None, ctype="application/json"):
        data = None
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
            headers["Content-Type"] = ctype
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, (json.loads(text) if text else None)


# --- greylisting ---------------------------------------------------------------

def test_first_attempt_early_retry_window_and_max_delay(grey):
    make, inside, _ = grey
    m = make()
    sender, rcpt = "Someone@Ext.Test", "alice@example.com"
    first = rcpt_from(m, "127.0.0.2", sender, rcpt)
    assert greylisted(first), first
    # an early retry (the clock has not moved past greylist_min_delay)
    set_clock(m, MIN_DELAY - 30)
    assert greylisted(rcpt_from(m, "127.0.0.2", sender, rcpt))
    # the same /24, another address: the same triplet, still early
    assert greylisted(rcpt_from(m, "127.0.0.3", sender.lower(), rcpt))
    # in the window: accepted and delivered
    set_clock(m, MIN_DELAY + 10)
    marker = new_marker()
    assert rcpt_from(m, "127.0.0.2", sender, rcpt, data=True, marker=marker)[0] == 250
    inside.wait_marker(marker, timeout=20)
    # passed: accepted at once from now on
    set_clock(m, MIN_DELAY + 20)
    assert rcpt_from(m, "127.0.0.2", sender, rcpt)[0] == 250
    results = [e["result"] for e in grey_events(m)]
    assert results[:4] == ["new", "early", "early", "passed"], results
    assert all(e.get("check") == "greylisting" for e in grey_events(m))
    assert any(e.get("triplet") == "127.0.0.0/24|someone@ext.test|alice@example.com"
               for e in grey_events(m)), grey_events(m)

    # another triplet retried after greylist_max_delay starts over
    other = "late@ext.test"
    set_clock(m, 1000)
    assert greylisted(rcpt_from(m, "127.0.0.2", other, rcpt))
    set_clock(m, 1000 + MAX_DELAY + 60)
    assert greylisted(rcpt_from(m, "127.0.0.2", other, rcpt))
    assert grey_events(m, "expired"), m.log_tail()
    # ... and its new window counts from that attempt
    set_clock(m, 1000 + MAX_DELAY + 60 + MIN_DELAY + 1)
    assert rcpt_from(m, "127.0.0.2", other, rcpt)[0] == 250


def test_greylisting_off_accepts_at_once(grey):
    make, _, _ = grey
    m = make(greylisting="no")
    assert rcpt_from(m, "127.0.0.2", "someone@ext.test", "alice@example.com")[0] == 250
    assert grey_events(m) == []


def test_passed_and_pending_triplets_survive_a_restart(grey):
    make, inside, _ = grey
    m = make()
    rcpt = "alice@example.com"
    assert greylisted(rcpt_from(m, "127.0.0.2", "passed@ext.test", rcpt))
    assert greylisted(rcpt_from(m, "127.0.0.2", "pending@ext.test", rcpt))
    set_clock(m, MIN_DELAY + 1)
    assert rcpt_from(m, "127.0.0.2", "passed@ext.test", rcpt)[0] == 250
    db = m.state_dir / "moat.db"

    def saved():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            rows = dict(c.execute("SELECT triplet, passed FROM greylist").fetchall())
        return rows.get("127.0.0.0/24|passed@ext.test|alice@example.com") == 1 and \
            "127.0.0.0/24|pending@ext.test|alice@example.com" in rows
    wait_until(saved, 10, what="greylist triplets written to the store")
    m.stop()
    m.start()
    assert any(e.get("event") == "greylist_loaded" and e.get("triplets") == "2"
               for e in m.events(since_start=True)), m.log_tail()
    # passed before the restart: accepted at once
    assert rcpt_from(m, "127.0.0.2", "passed@ext.test", rcpt)[0] == 250
    # pending before the restart: its window still counts from the first attempt
    assert rcpt_from(m, "127.0.0.2", "pending@ext.test", rcpt)[0] == 250
    # a stranger is still greylisted
    assert greylisted(rcpt_from(m, "127.0.0.2", "new@ext.test", rcpt))


# --- permitted senders -------------------------------------------------------

def test_org_permitted_address_and_domain_bypass_greylisting(grey):
    make, inside, _ = grey
    m = make()
    m.cli("permitted", "add", "Boss@Partner.Example", "--comment", "our auditor", check=0)
    m.cli("permitted", "add", "friends.example", check=0)
    marker = new_marker()
    assert rcpt_from(m, "127.0.0.2", "boss@partner.example", "alice@example.com",
                     data=True, marker=marker)[0] == 250
    inside.wait_marker(marker, timeout=20)
    # the domain covers its subdomains
    assert rcpt_from(m, "127.0.0.2", "x@friends.example", "bob@example.com")[0] == 250
    assert rcpt_from(m, "127.0.0.2", "y@mail.friends.example", "bob@example.com")[0] == 250
    # not listed: greylisted
    assert greylisted(rcpt_from(m, "127.0.0.2", "other@partner.example", "alice@example.com"))
    assert greylisted(rcpt_from(m, "127.0.0.2", "x@notfriends.example", "alice@example.com"))
    # permitted senders are never recorded as triplets; the log says why they passed
    assert not [e for e in grey_events(m) if "friends.example|" in e.get("triplet", "")
                and "notfriends" not in e.get("triplet", "")]
    skipped = grey_events(m, "skipped")
    assert {e["from"] for e in skipped} >= {"boss@partner.example", "x@friends.example",
                                            "y@mail.friends.example"}, skipped
    assert all(e["reason"] == "permitted sender" for e in skipped)
    listed = m.cli("permitted", "list", json_out=True, check=0).json
    assert {e["value"] for e in listed} == {"boss@partner.example", "friends.example"}
    # removed: greylisted again
    m.cli("permitted", "remove", "friends.example", check=0)
    assert greylisted(rcpt_from(m, "127.0.0.2", "z@friends.example", "bob@example.com"))


def test_per_user_permitted_sender(grey):
    make, _, _ = grey
    m = make()
    m.cli("user", "add", "alice@example.com", "--name", "Alice", check=0)
    m.cli("user", "add", "carol@example.com", "--name", "Carol", check=0)
    r = m.cli("permitted", "user", "alice@example.com", "add", "friend@ext.test", check=0)
    assert "friend@ext.test" in r.stdout
    assert rcpt_from(m, "127.0.0.2", "friend@ext.test", "alice@example.com")[0] == 250
    # only for alice
    assert greylisted(rcpt_from(m, "127.0.0.2", "friend@ext.test", "carol@example.com"))
    mine = m.cli("permitted", "user", "alice@example.com", "list", json_out=True, check=0).json
    assert [(e["value"], e["source"]) for e in mine] == [("friend@ext.test", "manual")]
    # a user that does not exist
    r = m.cli("permitted", "user", "nobody@example.com", "add", "x@ext.test")
    assert r.returncode == 1 and "nobody@example.com" in r.stderr
    m.cli("permitted", "user", "alice@example.com", "remove", str(mine[0]["id"]), check=0)
    assert greylisted(rcpt_from(m, "127.0.0.2", "friend@ext.test", "alice@example.com"))


# --- auto-allow ----------------------------------------------------------------

def _auto_entries(m, user):
    return {e["value"]: e for e in
            m.cli("permitted", "user", user, "list", json_out=True, check=0).json
            if e["source"] == "auto"}


def test_auto_allow_from_outbound_mail_and_not_from_auto_replies(grey):
    make, _, mx = grey
    m = make()
    m.cli("user", "add", "alice@example.com", "--name", "Alice", check=0)
    m.cli("user", "add", "carol@example.com", "--name", "Carol", check=0)
    m.cli("outbound", "host", "add", "127.0.0.1", check=0)
    # alice writes to bob at another organisation through the authorised host
    marker = new_marker()
    m.send("alice@example.com", f"bob@{EXT}",
           make_message(sender="alice@example.com", to=f"bob@{EXT}", marker=marker))
    mx.wait_marker(marker, timeout=20)
    wait_until(lambda: f"bob@{EXT}" in _auto_entries(m, "alice@example.com"), 10,
               what="bob auto-allowed for alice")
    entry = _auto_entries(m, "alice@example.com")[f"bob@{EXT}"]
    assert entry["expires"] and entry["last_seen"]
    # an automatic reply teaches nothing
    m.send("alice@example.com", f"carl@{EXT}",
           make_message(sender="alice@example.com", to=f"carl@{EXT}",
                        extra_headers=["Auto-Submitted: auto-replied"]))
    m.send("alice@example.com", f"dora@{EXT}",
           make_message(sender="alice@example.com", to=f"dora@{EXT}",
                        extra_headers=["Precedence: bulk"]))
    # "Auto-Submitted: no" is a person's message: it teaches
    m.send("alice@example.com", f"erin@{EXT}",
           make_message(sender="alice@example.com", to=f"erin@{EXT}",
                        extra_headers=["Auto-Submitted: no"]))
    wait_until(lambda: f"erin@{EXT}" in _auto_entries(m, "alice@example.com"), 10,
               what="erin auto-allowed")
    skipped = [e for e in m.events("auto_allow") if e.get("result") == "skipped"]
    assert {e.get("reason") for e in skipped} == {"Auto-Submitted", "Precedence"}, skipped
    learned = _auto_entries(m, "alice@example.com")
    assert f"carl@{EXT}" not in learned and f"dora@{EXT}" not in learned
    # the index is reloaded within a second or two of the write
    time.sleep(2.5)
    # bob, from the internet, to alice: not greylisted
    assert rcpt_from(m, "127.0.0.2", f"bob@{EXT}", "alice@example.com")[0] == 250
    # bob to carol (who never wrote to him): greylisted
    assert greylisted(rcpt_from(m, "127.0.0.2", f"bob@{EXT}", "carol@example.com"))
    # carl (auto-reply) to alice: greylisted
    assert greylisted(rcpt_from(m, "127.0.0.2", f"carl@{EXT}", "alice@example.com"))
    # auto entries expire permitted_auto_lifetime (120 days) after the last use
    set_clock(m, 121 * 86400)
    m.cli("permitted", "user", "alice@example.com", "list", check=0)   # any reload trigger
    assert greylisted(rcpt_from(m, "127.0.0.2", f"bob@{EXT}", "alice@example.com"))
    # the outbound role itself is never greylisted
    assert rcpt_from(m, "127.0.0.1", "alice@example.com", f"new@{EXT}")[0] == 250


# --- CSV import, CLI and API -------------------------------------------------

def test_csv_import_reports_bad_rows_by_line(grey, tmp_path):
    make, _, _ = grey
    m = make()
    m.cli("permitted", "add", "dup.example", check=0)
    csv = tmp_path / "permitted.csv"
    csv.write_text("address_or_domain,comment\n"
                   "good@partner.example,the auditor\n"
                   "not a domain!!\n"
                   "\"quoted.example\",\"with, a comma\"\n"
                   "@nolocal.example\n"
                   "dup.example\n"
                   "too,many,columns\n"
                   "last.example")
    r = m.cli("permitted", "import", str(csv))
    assert r.returncode == 1, r
    assert "7 rows: 3 added, 1 already listed, 3 refused" in r.stdout, r.stdout
    for line in (3, 5, 7):
        assert f"line {line}:" in r.stderr, r.stderr
    values = {e["value"]: e for e in m.cli("permitted", "list", json_out=True, check=0).json}
    assert set(values) == {"dup.example", "good@partner.example", "quoted.example",
                           "last.example"}, values
    assert values["quoted.example"]["comment"] == "with, a comma"
    assert values["good@partner.example"]["comment"] == "the auditor"
    # the API answer names each refused line
    api = Api(m)
    st, rep = api.request("POST", "/api/v1/permitted-senders/import",
                          raw="ok.example\nbad..example\n", ctype="text/csv")
    assert st == 200 and rep["created"] == 1 and rep["bad"] == 1, rep
    assert rep["errors"][0]["line"] == 2 and "value" in rep["errors"][0]["reason"], rep
    # imported entries bypass greylisting
    assert rcpt_from(m, "127.0.0.2", "x@ok.example", "alice@example.com")[0] == 250


def test_api_errors_and_audit(grey):
    make, _, _ = grey
    m = make()
    api = Api(m)
    st, e = api.request("POST", "/api/v1/permitted-senders", body={})
    assert st == 400 and e["error"]["field"] == "value", e
    st, e = api.request("POST", "/api/v1/permitted-senders", body={"value": "no spaces allowed"})
    assert st == 400 and e["error"]["field"] == "value", e
    st, e = api.request("POST", "/api/v1/permitted-senders", body={"value": "a.example", "x": 1})
    assert st == 400, e
    st, made = api.request("POST", "/api/v1/permitted-senders",
                           body={"value": "A.Example", "comment": "partner"})
    assert st == 201 and made["value"] == "a.example" and made["created_by"] == "admin", made
    st, e = api.request("POST", "/api/v1/permitted-senders", body={"value": "a.example"})
    assert st == 409, e
    st, e = api.request("POST", "/api/v1/permitted-senders/import", raw="x.example",
                        ctype="text/plain")
    assert st in (400, 415), (st, e)
    st, e = api.request("DELETE", "/api/v1/permitted-senders/999999")
    assert st == 404, e
    st, e = api.request("GET", "/api/v1/users/ghost@example.com/permitted-senders")
    assert st == 404 and e["error"]["field"] == "address", e
    st, page = api.request("GET", "/api/v1/permitted-senders?limit=1")
    assert st == 200 and len(page["items"]) == 1
    st, _ = api.request("DELETE", f"/api/v1/permitted-senders/{made['id']}")
    assert st == 204
    audit = m.cli("audit", "--action", "permitted_sender", json_out=True, check=0).json
    actions = [a["action"] for a in (audit if isinstance(audit, list) else audit["items"])]
    assert "permitted_sender.create" in actions and "permitted_sender.delete" in actions, actions


# --- Connect's permitted_senders task ---------------------------------------

def _connect_check(m):
    r = m.cli("connect", "check", "permitted_senders", json_out=True)
    return r.json["result"]


def test_connect_permitted_senders_task(grey):
    make, _, _ = grey
    m = make()
    m.cli("org", "set", "--environment", "smtp", "--name", "Org", check=0)
    r = _connect_check(m)
    assert r["outcome"] == "pending" and "moat permitted import" in r["message"], r
    shown = m.cli("connect", "show", "permitted_senders", json_out=True, check=0).json
    text = json.dumps(shown)
    assert "address_or_domain,comment" in text and "never skip" in text, text
    m.cli("user", "add", "alice@example.com", check=0)
    m.cli("permitted", "add", "partner.example", check=0)
    r = _connect_check(m)
    assert r["outcome"] == "pass", r
    d = r["details"]
    assert d["org"] == 1 and d["greylisting"] is True
    assert d["probe"]["sender"] == "moat-probe@partner.example"
    assert d["probe"]["rcpt"] == "alice@example.com"
    assert d["permitted_reply"].startswith("250"), d
    assert d["unknown_reply"].startswith("451 4.7.1"), d
    # the probe came from a loopback address that is not the listener's
    assert any(e.get("client") == "127.0.0.77" for e in grey_events(m)), m.log_tail()


def test_csv_import_of_a_big_file_in_parts_keeps_line_numbers(grey, tmp_path):
    """A file beyond one request (the CLI sends parts below http_max_body): the refused
    rows still carry the file's line numbers, whatever part they were in."""
    make, _, _ = grey
    m = make()
    n = 40000
    lines = ["domain"] + [f"sender{i}@bulk{i % 50}.example,row {i} of the bulk list"
                          for i in range(n)]
    lines[30000] = "broken row without a domain"
    lines[n] = "@also.broken"
    csv = tmp_path / "big.csv"
    csv.write_text("\n".join(lines) + "\n")
    assert csv.stat().st_size > 2 * 1024 * 1024     # beyond the default http_max_body (1M)
    r = m.cli("permitted", "import", str(csv), json_out=True, timeout=300)
    assert r.returncode == 1, r
    rep = r.json
    assert rep["rows"] == n and rep["created"] == n - 2 and rep["bad"] == 2, \
        {k: rep[k] for k in ("rows", "created", "bad")}
    assert sorted(e["line"] for e in rep["errors"]) == [30001, n + 1], rep["errors"]
    # the CLI really sent several requests
    posts = [e for e in m.events("http") if e.get("path") == "/api/v1/permitted-senders/import"]
    assert len(posts) >= 4, len(posts)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    r = m.cli("permitted", "import", str(empty))
    assert r.returncode == 1 and "empty" in r.stderr


def test_no_auto_allow_from_replies_to_released_held_mail(grey):
    """a reply to a message an administrator released from hold teaches
    nothing (it may be a phish the user answers); a new message does"""
    make, inside, mx = grey
    m = make()
    m.cli("user", "add", "alice@example.com", "--name", "Alice", check=0)
    m.cli("outbound", "host", "add", "127.0.0.1", check=0)
    m.cli("blocked", "add", f"bob@{EXT}", "--action", "hold", check=0)
    msgid = f"{new_marker()}@{EXT}"
    marker = new_marker()
    msg = (f"From: <bob@{EXT}>\r\nTo: <alice@example.com>\r\nSubject: invoice\r\n"
           f"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{msgid}>\r\n\r\n{marker}\r\n")

    def from_bob():
        with smtplib.SMTP(m.host, m.port, timeout=20, source_address=("127.0.0.2", 0)) as c:
            c.ehlo("client.ext.test")
            assert c.mail(f"bob@{EXT}")[0] == 250
            code, text = c.rcpt("alice@example.com")
            if code == 250:
                assert c.data(msg.encode())[0] == 250
            return code, text
    assert greylisted(from_bob())
    set_clock(m, 400)
    assert from_bob()[0] == 250
    held = wait_until(lambda: m.cli("held", "list", json_out=True, check=0).json, 10,
                      what="the message held")
    assert m.cli("held", "release", held[0]["id"], check=0).returncode == 0
    inside.wait_marker(marker, timeout=20)
    time.sleep(2.5)   # the permitted index reloads with the released Message-ID
    # alice answers the released message: bob is not learned
    reply = new_marker()
    m.send("alice@example.com", f"bob@{EXT}",
           make_message(sender="alice@example.com", to=f"bob@{EXT}", marker=reply,
                        extra_headers=[f"In-Reply-To: <{msgid}>", f"References: <{msgid}>"]))
    mx.wait_marker(reply, timeout=20)
    wait_until(lambda: any(e.get("reason") == "reply to released held mail"
                           for e in m.events("auto_allow")), 10, what="the skipped reply")
    assert f"bob@{EXT}" not in _auto_entries(m, "alice@example.com")
    # a message of her own to bob teaches as usual
    fresh = new_marker()
    m.send("alice@example.com", f"bob@{EXT}",
           make_message(sender="alice@example.com", to=f"bob@{EXT}", marker=fresh))
    mx.wait_marker(fresh, timeout=20)
    wait_until(lambda: f"bob@{EXT}" in _auto_entries(m, "alice@example.com"), 10,
               what="bob auto-allowed for alice")
