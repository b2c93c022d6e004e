"""Manual users, groups, the CSV import and recipient validation at RCPT time,
against a real moatd (and, for call-forward, a real Postfix that knows its
valid recipients: PEERS.md 2a), plus Connect's users and recipient_validation
checks.  Issue 5."""

import re
import time

import pytest

from api_fixtures import Api
from moatlib import wait_until

DOM = "example.com"


def rcpt(m, addr, sender="sender@ext.test"):
    """One RCPT in a fresh transaction: (code, text)."""
    s = m.smtp()
    try:
        s.ehlo("client.ext.test")
        code, _ = s.mail(sender)
        assert code == 250
        code, resp = s.rcpt(addr)
        s.quit()
        return code, resp.decode()
    finally:
        s.close()


def rejects(m, to):
    return [e for e in m.events("reject") if e.get("to") == to]


def api(m):
    return Api(m.http_port, m.token)


# --- the CSV import ---------------------------------------------------------

CSV = (
    "email,name,password,aliases\n"                                       # 1
    "ann@example.com,Ann Admin,,a.admin@example.com;ann.admin@example.com\n"  # 2 good
    "\"bob@example.com\",\"Builder, Bob\",correct-horse-42,b@example.com b2@example.com\n"  # 3 good
    "carol@example.com,\"Carol \"\"CJ\"\" Jones\",,\n"                    # 4 good, quotes
    "not-an-address,Nobody,,\n"                                           # 5 bad email
    "dave@elsewhere.org,Dave,,\n"                                         # 6 not internal
    "erin@example.com,Erin,short,\n"                                      # 7 bad password
    "frank@example.com,Frank,,ann@example.com\n"                          # 8 alias of ann
    "gina@example.com,Gina,,,extra\n"                                     # 9 too many fields
    "hank@example.com,Ha\"nk,,\n"                                         # 10 stray quote
    "\"ivy@example.com\",\"Ivy\nPoison\",,\n"                             # 11-12 newline in name
    "\n"                                                                  # 13 empty: skipped
    "jill@example.com,Jill,,\n"                                           # 14 good
)


def test_csv_import_cli_reports_bad_rows_and_imports_good_ones(moatd, tmp_path):
    m = moatd(domains={DOM: None})
    f = tmp_path / "users.csv"
    f.write_text(CSV)
    r = m.cli("user", "import", str(f))
    assert r.returncode == 1, r           # some rows were refused
    out = r.stdout
    assert "rows: 4 created, 0 updated, 7 refused" in out, out
    for line in (5, 6, 7, 8, 9, 10, 11):
        assert re.search(rf"^line {line}: ", out, re.M), (line, out)
    assert "line 6: " in out and "not under an internal domain" in out
    assert re.search(r"^line 8: .*a\.admin@example\.com|^line 8: .*ann@example\.com", out, re.M)
    users = {u["address"]: u for u in m.cli("user", "list", json_out=True, check=0).json}
    assert set(users) == {"ann@example.com", "bob@example.com", "carol@example.com",
                          "jill@example.com"}
    assert users["bob@example.com"]["name"] == "Builder, Bob"
    assert users["bob@example.com"]["has_password"] is True
    assert sorted(users["bob@example.com"]["aliases"]) == ["b2@example.com", "b@example.com"]
    assert users["carol@example.com"]["name"] == 'Carol "CJ" Jones'
    assert users["ann@example.com"]["source"] == "manual"
    # the hash never leaves the store
    assert "argon2" not in m.cli("user", "show", "b@example.com", json_out=True).stdout
    # importing again updates instead of conflicting
    f.write_text("email,name\nann@example.com,Ann A.\n")
    r = m.cli("user", "import", str(f), check=0)
    assert "1 rows: 0 created, 1 updated, 0 refused" in r.stdout
    assert m.cli("user", "show", "ann@example.com", json_out=True).json["name"] == "Ann A."
    # audited
    audit = m.cli("audit", "--action", "user.import", json_out=True, check=0).json
    assert len(audit) >= 2


def test_csv_import_api_streams_any_size_in_parts(moatd, tmp_path):
    m = moatd(domains={DOM: None})
    a = api(m)
    r = a.post("/api/v1/users/import", raw=b"email,name\nx@example.com,X\nbad,Y\n",
               content_type="text/csv")
    assert r.status == 200, r
    assert r.json["created"] == 1 and r.json["bad"] == 1
    assert r.json["errors"][0]["line"] == 3
    # first_line: the line numbers of the whole file
    r = a.post("/api/v1/users/import?first_line=100", raw=b"email,name\nbad,Y\n",
               content_type="text/csv")
    assert r.json["errors"][0]["line"] == 101
    # JSON is not CSV; CSV is refused where JSON is expected
    assert a.post("/api/v1/users/import", body={"a": 1}).status == 415
    assert a.post("/api/v1/users", raw=b"email,name\n", content_type="text/csv").status == 415
    # a bad header fails the request, naming the header
    r = a.post("/api/v1/users/import", raw=b"mail,name\nx@example.com,X\n",
               content_type="text/csv")
    assert r.status == 400 and r.error["field"] == "header", r
    # larger than http_max_body: the CLI sends parts, line numbers stay right
    lines = ["email,name"] + [f"user{i:05d}@example.com,User {i}" for i in range(12000)]
    lines.insert(6001, "broken,row")       # file line 6002
    f = tmp_path / "big.csv"
    f.write_text("\n".join(lines) + "\n")
    assert f.stat().st_size > 300_000
    r = m.cli("user", "import", str(f), "--json", timeout=120)
    rep = r.json
    assert rep["created"] == 12000 and rep["bad"] == 1, rep["errors"][:3]
    assert rep["errors"][0]["line"] == 6002


def test_users_groups_api_conflicts_and_validation(moatd):
    m = moatd(domains={DOM: None, "example.net": None})
    a = api(m)
    r = a.post("/api/v1/users", {"address": "Ann@Example.com", "name": "Ann",
                                 "aliases": ["ann.a@example.com"]})
    assert r.status == 201, r
    assert r.json["address"] == "ann@example.com"
    # an address resolves to exactly one user or group: 409 naming the field
    r = a.post("/api/v1/users", {"address": "ann.a@example.com"})
    assert r.status == 409 and r.error["field"] == "address", r
    assert "ann@example.com" in r.error["message"]
    r = a.post("/api/v1/users", {"address": "bob@example.com", "aliases": ["ann@example.com"]})
    assert r.status == 409 and r.error["field"] == "aliases", r
    r = a.post("/api/v1/users", {"address": "x@not-ours.org"})
    assert r.status == 400 and r.error["field"] == "address", r
    r = a.post("/api/v1/users", {"address": "bob@example.com", "bogus": 1})
    assert r.status == 400 and r.error["field"] == "bogus", r
    r = a.post("/api/v1/users", {"address": "bob@example.com", "password": "short"})
    assert r.status == 400 and r.error["field"] == "password", r
    assert a.post("/api/v1/users", {"address": "bob@example.com"}).status == 201
    # groups: members by any of their addresses; unknown member named
    r = a.post("/api/v1/groups", {"address": "sales@example.com",
                                  "members": ["ann.a@example.com", "bob@example.com"]})
    assert r.status == 201, r
    assert r.json["members"] == ["ann@example.com", "bob@example.com"]
    r = a.post("/api/v1/groups", {"address": "ops@example.com", "members": ["nobody@example.com"]})
    assert r.status == 404 and r.error["field"] == "members", r
    r = a.request("PATCH", "/api/v1/groups/sales@example.com", {"members": ["bob@example.com"]})
    assert r.status == 200 and r.json["members"] == ["bob@example.com"], r
    assert a.get("/api/v1/users/sales@example.com").status == 404     # a group, not a user
    # edit: the primary moves, the old address is free again
    r = a.request("PATCH", "/api/v1/users/ann@example.com", {"address": "anna@example.com"})
    assert r.status == 200 and r.json["address"] == "anna@example.com", r
    assert a.post("/api/v1/users", {"address": "ann@example.com"}).status == 201
    assert a.request("DELETE", "/api/v1/users/ann.a@example.com").status == 204
    assert a.get("/api/v1/users/anna@example.com").status == 404
    # CLI
    m.cli("group", "members", "sales@example.com", "--add", "ann@example.com", check=0)
    out = m.cli("group", "members", "sales@example.com", check=0).stdout.split()
    assert out == ["ann@example.com", "bob@example.com"]
    m.cli("user", "add", "zed@example.net", "--name", "Zed", "--alias", "z@example.net", check=0)
    m.cli("user", "remove", "z@example.net", check=0)
    assert m.cli("user", "show", "zed@example.net").returncode == 1
    actions = {e["action"] for e in m.cli("audit", json_out=True, check=0).json}
    assert {"user.create", "user.update", "user.delete", "group.create",
            "group.update"} <= actions


# --- recipient validation at RCPT time --------------------------------------

def test_rcpt_known_accept_all_and_directory_never_synced(moatd):
    m = moatd(domains={DOM: None})
    m.cli("user", "add", "ann@example.com", "--alias", "a@example.com", check=0)
    m.cli("group", "add", "team@example.com", "--member", "ann@example.com", check=0)
    # no mode yet: accept-all
    assert rcpt(m, "nobody@example.com")[0] == 250
    m.cli("rv", "set", DOM, "--mode", "known", check=0)
    for ok in ("ann@example.com", "A@Example.COM", "team@example.com"):
        assert rcpt(m, ok)[0] == 250, ok
    code, text = rcpt(m, "nobody@example.com")
    assert code == 550
    assert text == "5.1.1 <nobody@example.com>: Recipient address rejected: user unknown"
    e = rejects(m, "nobody@example.com")[-1]
    assert e["stage"] == "rcpt" and e["dsn"] == "5.1.1"
    assert "not a known user" in e["reason"]
    # a subdomain follows its parent's setting
    m.cli("domain", "add", "sub.example.com", "--trust-unverified", check=0)
    assert rcpt(m, "x@sub.example.com")[0] == 550
    # a new user is valid at once (the API change reloads the index)
    m.cli("user", "add", "new@example.com", check=0)
    assert rcpt(m, "new@example.com")[0] == 250
    # directory: the directory was never synchronised -> per the unreachable setting
    m.cli("rv", "set", DOM, "--mode", "directory", check=0)
    code, text = rcpt(m, "ann@example.com")
    assert (code, text[:5]) == (450, "4.4.3"), text
    assert "never synchronised" in rejects(m, "ann@example.com")[-1]["reason"]
    m.cli("rv", "set", DOM, "--mode", "directory", "--unreachable", "accept", check=0)
    assert rcpt(m, "whoever@example.com")[0] == 250
    # accept-all
    m.cli("rv", "set", DOM, "--mode", "accept-all", check=0)
    assert rcpt(m, "whoever@example.com")[0] == 250
    shown = m.cli("rv", "show", json_out=True, check=0).json
    assert {"domain": DOM, "mode": "accept-all", "unreachable": "accept"}.items() <= \
        [d for d in shown if d["domain"] == DOM][0].items()
    # bad input is named
    r = m.cli("rv", "set", DOM, "--mode", "everything")
    assert r.returncode == 1 and "mode" in r.stderr


def test_rcpt_call_forward_against_postfix(moatd, postfix):
    pf = postfix(["--role", "mailbox", "--domain", DOM, "--rcpt", "alice@example.com"])
    m = moatd(domains={DOM: f"127.0.0.1:{pf.port}"})
    m.cli("rv", "set", DOM, "--mode", "call-forward", check=0)
    assert rcpt(m, "alice@example.com")[0] == 250
    code, text = rcpt(m, "bob@example.com")
    assert code == 550 and text.startswith("5.1.1 <bob@example.com>: Recipient address rejected")
    reason = rejects(m, "bob@example.com")[-1]["reason"]
    assert "call-forward" in reason and "550 5.1.1" in reason, reason
    # cached: the second refusal does not ask Postfix again
    assert rcpt(m, "bob@example.com")[0] == 550
    assert "(cached)" in rejects(m, "bob@example.com")[-1]["reason"]
    wait_until(lambda: "bob@example.com" in pf.maillog(), 10, what="postfix log")
    time.sleep(0.5)
    probes = [l for l in pf.maillog().splitlines() if "reject: RCPT" in l and "bob@example.com" in l]
    assert len(probes) == 1, probes
    assert "from=<>" in probes[0]      # the null sender
    # PIPELINING: replies stay in order while a probe is in flight
    with m.raw() as c:
        c.greet()
        c.send("MAIL FROM:<s@ext.test>\r\nRCPT TO:<carol@example.com>\r\n"
               "RCPT TO:<alice@example.com>\r\nRCPT TO:<dan@example.com>\r\nNOOP\r\n")
        codes = [c.reply().code for _ in range(5)]
        assert codes == [250, 550, 250, 550, 250], codes
        c.cmd("QUIT")
    # the route down: unknown answers are not cached; cached ones still answer
    pf.stop()
    code, text = rcpt(m, "erin@example.com")
    assert (code, text[:5]) == (450, "4.4.3"), text
    assert rcpt(m, "alice@example.com")[0] == 250
    m.cli("rv", "set", DOM, "--mode", "call-forward", "--unreachable", "accept", check=0)
    assert rcpt(m, "frank@example.com")[0] == 250


# --- Connect ------------------------------------------------------------------

def check(m, task):
    r = m.cli("connect", "check", task, json_out=True)
    return r.json["result"]


def test_connect_users_and_recipient_validation_checks(moatd):
    m = moatd(domains={DOM: None})
    m.cli("org", "set", "--environment", "smtp", "--name", "Org", check=0)
    r = check(m, "users")
    assert r["outcome"] == "pending", r
    m.cli("user", "add", "ann@example.com", check=0)
    r = check(m, "users")
    assert r["outcome"] == "pass", r
    r = check(m, "recipient_validation")
    assert r["outcome"] == "pending", r            # no mode chosen yet
    m.cli("rv", "set", DOM, "--mode", "known", check=0)
    r = check(m, "recipient_validation")
    assert r["outcome"] == "pass", r
    d = r["details"]["domains"][0]
    assert d["unknown_reply"].startswith("550 5.1.1") and d["known_reply"].startswith("250")
    # directory mode without a sync: the unknown probe gets 450, not 550
    m.cli("rv", "set", DOM, "--mode", "directory", check=0)
    r = check(m, "recipient_validation")
    assert r["outcome"] == "fail", r
    assert r["details"]["domains"][0]["unknown_reply"].startswith("450 4.4.3")
