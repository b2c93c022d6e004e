"""Issue 8: the archive end to end.

A generated corpus is sent through real SMTP (smtplib) into a real moatd,
archived, and searched through the HTTP API and the moat CLI; every count is
computed from the corpus and asserted exactly.  Also: charsets and transfer
encodings found by a word of their decoded text, the role rules (admin,
basic administrator: metadata only, user: own mail only), the audit log of
every search and view, the .eml download (the message as sent plus Moat's
Received line), the mbox export read back with Python's mailbox module,
retention with an injected clock and a legal hold, and the journal
configuration through the API and the CLI.
"""

import mailbox
import smtplib
import subprocess
import time
import urllib.parse
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.header import Header
from email.utils import formatdate

import pytest

from api_fixtures import Api
from moatlib import MOAT, wait_until

PASSWORD = "correct-horse-battery-1"
INTERNAL = ["alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]
SENDERS = ["ann@ext.test", "ben@partner.test", "cid@sub.partner.test"]
SUBJECTS = ["invoice for march", "quarterly report", "meeting notes", "report quarterly draft",
            "lunch"]
WORDS = ["zebra", "giraffe", "okapi", "blue whale", "whale blue", "narwhal", "tapir"]


# ------------------------------------------------------------------ helpers

def admin(m):
    return Api(m.http_port, m.token)


def q(path, query, **params):
    args = {"q": query, **{k: str(v) for k, v in params.items()}}
    return f"{path}?{urllib.parse.urlencode(args, quote_via=urllib.parse.quote)}"


def search(api, query, **params):
    r = api.get(q("/api/v1/archive/messages", query, **params))
    return r


def total(api, query):
    r = search(api, query, limit=500)
    assert r.status == 200, (query, r)
    return r.json["total"]


def token_for(m, name, role):
    """An account with a known password (no forced change) and an API token of it."""
    r = admin(m).post("/api/v1/accounts", {"name": name, "role": role, "password": PASSWORD})
    assert r.status == 201, r
    s = Api(m.http_port)
    assert s.login(name, PASSWORD).status == 200
    r = s.post("/api/v1/tokens", {"name": f"{name}-token"})
    assert r.status == 201, r
    return r.json["token"]


def corpus():
    """The generated corpus: a list of dicts with everything a query can see."""
    out = []
    for i in range(30):
        sender = SENDERS[i % 3]
        rcpts = [INTERNAL[i % 4]] + ([INTERNAL[(i + 1) % 4]] if i % 5 == 0 else [])
        out.append({
            "i": i,
            "sender": sender,
            "rcpts": rcpts,
            "subject": f"{SUBJECTS[i % 5]} no{i}",
            "word": WORDS[i % 7],
            "attach": i % 4 == 0,
            "batch": "A" if i < 18 else "B",
        })
    return out


def build(c):
    """The message of corpus entry c (bytes, CRLF)."""
    body = f"Hello,\r\nthis is message {c['i']} about the {c['word']}.\r\nBye\r\n"
    if c["attach"]:
        msg = MIMEMultipart()
        msg.attach(MIMEText(body, "plain", "us-ascii"))
        part = MIMEApplication(b"%PDF-1.4 fake " + bytes([c["i"]]) * 64, "pdf")
        part.add_header("Content-Disposition", "attachment", filename=f"scan{c['i']}.pdf")
        msg.attach(part)
    else:
        msg = MIMEText(body, "plain", "us-ascii")
    msg["From"] = c["sender"]
    msg["To"] = ", ".join(c["rcpts"])
    msg["Subject"] = c["subject"]
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<corpus-{c['i']}-{time.time_ns()}@ext.test>"
    return crlf(msg)


def crlf(msg):
    """The message's octets with CRLF line ends (SMTP refuses bare LF)."""
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def send(m, sender, rcpts, data, src="127.0.0.1"):
    with smtplib.SMTP(m.host, m.port, timeout=20, source_address=(src, 0)) as s:
        s.ehlo("client.ext.test")
        code, resp = s.mail(sender)
        assert code == 250, (code, resp)
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert code == 250, (r, code, resp)
        code, resp = s.data(data)
        assert code == 250, (code, resp)
        return resp.decode().split()[-1]


def wait_archived(m, n, timeout=30):
    a = admin(m)
    wait_until(lambda: total(a, "") >= n, timeout, interval=0.2,
               what=f"{n} messages in the archive")
    assert total(a, "") == n


def domain_of(addr):
    return addr.split("@", 1)[1]


def in_domain(addr, dom):
    d = domain_of(addr)
    return d == dom or d.endswith("." + dom)


# ------------------------------------------------------------------ fixtures

@pytest.fixture
def world(moatd, sink):
    s = sink(name="inside")
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    return m, s


@pytest.fixture
def archived(world):
    """The corpus sent in two batches, a second apart; (moatd, corpus, boundary)."""
    m, _ = world
    c = corpus()
    for e in c:
        if e["batch"] == "A":
            send(m, e["sender"], e["rcpts"], build(e))
    wait_archived(m, sum(1 for e in c if e["batch"] == "A"))
    # the boundary: a whole second after batch A, before batch B
    boundary = int(time.time()) + 1
    while time.time() < boundary + 0.05:
        time.sleep(0.05)
    for e in c:
        if e["batch"] == "B":
            send(m, e["sender"], e["rcpts"], build(e))
    wait_archived(m, len(c))
    return m, c, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(boundary))


# ------------------------------------------------------------------ search

def test_search_counts_exact_api(archived):
    m, c, boundary = archived
    a = admin(m)

    def count(pred):
        return sum(1 for e in c if pred(e))

    cases = {
        "": len(c),
        "from:ann@ext.test": count(lambda e: e["sender"] == "ann@ext.test"),
        "from:ext.test": count(lambda e: in_domain(e["sender"], "ext.test")),
        # a domain covers its subdomains
        "from:partner.test": count(lambda e: in_domain(e["sender"], "partner.test")),
        "from:sub.partner.test": count(lambda e: e["sender"] == "cid@sub.partner.test"),
        "FROM:BEN@PARTNER.TEST": count(lambda e: e["sender"] == "ben@partner.test"),
        "to:bob@example.com": count(lambda e: "bob@example.com" in e["rcpts"]),
        "to:example.com": len(c),
        "to:nobody@example.com": 0,
        "subject:invoice": count(lambda e: "invoice" in e["subject"]),
        'subject:"quarterly report"': count(lambda e: "quarterly report" in e["subject"]),
        "subject:quarterly subject:report": count(lambda e: "quarterly" in e["subject"]),
        "zebra": count(lambda e: e["word"] == "zebra"),
        '"blue whale"': count(lambda e: e["word"] == "blue whale"),
        '"whale blue"': count(lambda e: e["word"] == "whale blue"),
        "whale": count(lambda e: "whale" in e["word"]),
        "has:attachment": count(lambda e: e["attach"]),
        "from:partner.test has:attachment": count(
            lambda e: in_domain(e["sender"], "partner.test") and e["attach"]),
        "from:ext.test to:alice@example.com subject:invoice": count(
            lambda e: e["sender"] == "ann@ext.test" and "alice@example.com" in e["rcpts"]
            and "invoice" in e["subject"]),
        "okapi has:attachment": count(lambda e: e["word"] == "okapi" and e["attach"]),
        f"after:{boundary}": count(lambda e: e["batch"] == "B"),
        f"before:{boundary}": count(lambda e: e["batch"] == "A"),
        f"before:{boundary} zebra": count(lambda e: e["batch"] == "A" and e["word"] == "zebra"),
        "after:2000-01-01": len(c),
        "before:2000-01-01": 0,
        "after:2099-01-01": 0,
        "no17": 1,
        "message": len(c),
    }
    for query, want in cases.items():
        r = search(a, query, limit=500)
        assert r.status == 200, (query, r)
        assert r.json["total"] == want, (query, r.json["total"], want)
        assert len(r.json["messages"]) == want, query
        assert r.json["total_capped"] is False
    # the corpus is not degenerate: the answers differ, so a wrong filter shows
    assert len(set(cases.values())) > 10

    # hits carry the listing fields, newest first, snippets for an administrator
    r = search(a, "zebra")
    hits = r.json["messages"]
    for h in hits:
        for k in ("id", "received", "direction", "message_id", "sender", "from", "to",
                  "subject", "size", "attachments"):
            assert k in h, (k, h)
        assert h["direction"] == "inbound"
        assert "zebra" in h.get("snippet", "").lower(), h
    assert [h["received"] for h in hits] == sorted([h["received"] for h in hits], reverse=True)

    # paging: offset/limit walk the same total without overlap
    r1 = search(a, "", limit=7).json
    r2 = search(a, "", limit=7, offset=7).json
    assert r1["total"] == r2["total"] == len(c)
    assert r1["limit"] == 7 and r2["offset"] == 7
    ids1 = [h["id"] for h in r1["messages"]]
    ids2 = [h["id"] for h in r2["messages"]]
    assert len(ids1) == 7 and len(ids2) == 7 and not set(ids1) & set(ids2)
    assert search(a, "", limit=500).json["messages"][7:14] == r2["messages"]


def test_search_bad_queries_and_parameters(archived):
    m, _, _ = archived
    a = admin(m)
    for bad in ('subject:"unterminated', "colour:red", "before:2026-13-45", "after:yesterday",
                " ".join(f"w{i}" for i in range(40))):
        r = search(a, bad)
        assert r.status == 400, (bad, r)
        assert r.error["field"] == "q", (bad, r)
        assert r.error["message"], bad
    for params, field in (({"limit": 0}, "limit"), ({"limit": 501}, "limit"),
                          ({"limit": "x"}, "limit"), ({"offset": -1}, "offset")):
        r = search(a, "", **params)
        assert r.status == 400 and r.error["field"] == field, (params, r)
    r = a.get("/api/v1/archive/messages/abc")
    assert r.status == 400 and r.error["field"] == "id"
    r = a.get("/api/v1/archive/messages/99999999")
    assert r.status == 404 and r.error["field"] == "id"
    # FTS5 syntax in a word is never passed through
    for tricky in ("NEAR(zebra okapi)", "zeb*", "zebra OR okapi", "-zebra", "^zebra", "{from}"):
        r = search(a, tricky)
        assert r.status in (200, 400), (tricky, r)
        if r.status == 200:
            assert r.json["total"] <= total(a, "zebra") + total(a, "okapi"), tricky


def test_search_through_the_cli(archived):
    m, c, boundary = archived
    want = sum(1 for e in c if in_domain(e["sender"], "partner.test") and e["attach"])
    r = m.cli("archive", "search", "from:partner.test", "has:attachment", json_out=True, check=0)
    assert r.json["total"] == want
    r = m.cli("archive", "search", 'subject:"quarterly report"', check=0)
    lines = [ln for ln in r.stdout.splitlines() if "quarterly report" in ln]
    assert len(lines) == sum(1 for e in c if "quarterly report" in e["subject"]), r.stdout
    assert "ID" in r.stdout.splitlines()[0] and "SUBJECT" in r.stdout.splitlines()[0]
    r = m.cli("archive", "search", "--limit", "5", "--offset", "2", json_out=True, check=0)
    assert r.json["total"] == len(c) and len(r.json["messages"]) == 5 and r.json["offset"] == 2
    r = m.cli("archive", "search", f"before:{boundary}", json_out=True, check=0)
    assert r.json["total"] == sum(1 for e in c if e["batch"] == "A")
    r = m.cli("archive", "search", "nosuchwordanywhere", check=0)
    assert "no messages match" in r.stdout
    r = m.cli("archive", "search", "colour:red")
    assert r.returncode == 1 and "field: q" in r.stderr, r
    r = m.cli("archive", "search", "--limit", "x")
    assert r.returncode == 2, r


# ------------------------------------------------------------------ charsets

def test_charsets_and_encodings_found_by_decoded_words(world):
    m, _ = world
    msgs = []
    latin = MIMEText("Der B\u00e4r schl\u00e4ft unter der Br\u00fccke.\n", "plain", "iso-8859-1")
    latin["Subject"] = Header("Gr\u00fc\u00dfe aus M\u00fcnchen", "iso-8859-1")
    msgs.append(("latin1-qp", latin, ["schl\u00e4ft", "br\u00fccke", "subject:m\u00fcnchen"]))
    utf8 = MIMEText("\u0397 \u03b8\u03ac\u03bb\u03b1\u03c3\u03c3\u03b1 \u03b5\u03af\u03bd\u03b1\u03b9 "
                    "\u03b3\u03b1\u03bb\u03ae\u03bd\u03b9\u03b1.\n", "plain", "utf-8")
    msgs.append(("utf8-base64", utf8, ["\u03b8\u03ac\u03bb\u03b1\u03c3\u03c3\u03b1"]))
    koi = MIMEText("\u0412\u0447\u0435\u0440\u0430 \u0431\u044b\u043b "
                   "\u0441\u043d\u0435\u0433\u043e\u043f\u0430\u0434.\n", "plain", "koi8-r")
    msgs.append(("koi8-r", koi, ["\u0441\u043d\u0435\u0433\u043e\u043f\u0430\u0434"]))
    html = MIMEText("<html><head><style>p { color: red }</style></head><body>"
                    "<p>The <b>octopus</b>&nbsp;sings &amp; dances</p>"
                    "<script>var hidden = 'scriptword';</script></body></html>", "html", "utf-8")
    msgs.append(("html-only", html, ["octopus", '"octopus sings"', "dances"]))
    for name, msg, _ in msgs:
        assert name and msg.get_content_charset()
        if msg["Subject"] is None:
            msg["Subject"] = f"charset test {name}"
        msg["From"] = "intl@ext.test"
        msg["To"] = "alice@example.com"
        msg["Message-ID"] = f"<{name}-{time.time_ns()}@ext.test>"
        msg["Date"] = formatdate()
        send(m, "intl@ext.test", ["alice@example.com"], crlf(msg))
    wait_archived(m, len(msgs))
    a = admin(m)
    # the transfer encodings are really there: the words are not in the raw octets
    assert latin["Content-Transfer-Encoding"] == "quoted-printable"
    assert utf8["Content-Transfer-Encoding"] == "base64"
    assert "schl".encode() + "\u00e4ft".encode("utf-8") not in latin.as_bytes()
    for name, _, words in msgs:
        for w in words:
            r = search(a, w)
            assert r.status == 200, (name, w, r)
            assert r.json["total"] == 1, (name, w, r.json)
    # script and style content is not text
    assert total(a, "scriptword") == 0
    assert total(a, "color") == 0
    # the view shows the decoded text and the decoded subject
    hit = search(a, "schl\u00e4ft").json["messages"][0]
    assert hit["subject"] == "Gr\u00fc\u00dfe aus M\u00fcnchen"
    v = a.get(f"/api/v1/archive/messages/{hit['id']}").json
    assert "Der B\u00e4r schl\u00e4ft" in v["text"]
    hit = search(a, "octopus").json["messages"][0]
    v = a.get(f"/api/v1/archive/messages/{hit['id']}").json
    assert "octopus" in v["text"] and "<b>" not in v["text"] and "scriptword" not in v["text"]


# ------------------------------------------------------------------ one message

def test_view_eml_and_mbox_export(archived, tmp_path):
    m, c, _ = archived
    a = admin(m)
    # a message sent now, whose bytes we know exactly
    e = {"i": 99, "sender": "ann@ext.test", "rcpts": ["alice@example.com", "bob@example.com"],
         "subject": "exact bytes no99", "word": "kakapo", "attach": True, "batch": "B"}
    raw = build(e)
    qid = send(m, e["sender"], e["rcpts"], raw)
    wait_archived(m, len(c) + 1)
    hit = search(a, "kakapo").json["messages"][0]

    v = a.get(f"/api/v1/archive/messages/{hit['id']}")
    assert v.status == 200, v
    v = v.json
    assert v["subject"] == "exact bytes no99"
    assert v["attachments"] == ["scan99.pdf"]
    assert "kakapo" in v["text"]
    names = [h["name"].lower() for h in v["headers"]]
    assert names[0] == "received"       # Moat's own trace line on top
    assert "message-id" in names and "subject" in names
    assert {"name": "Subject", "value": "exact bytes no99"} in v["headers"]
    assert len(v["arrivals"]) == 1
    arr = v["arrivals"][0]
    assert arr["qid"].upper() == qid.upper()
    assert arr["sender"] == "ann@ext.test" and arr["client_addr"] == "127.0.0.1"
    assert sorted(r["address"] for r in arr["recipients"]) == ["alice@example.com", "bob@example.com"]
    assert v["size"] >= len(raw)

    # the .eml: exactly the message as sent, after Moat's Received line
    r = a.get(f"/api/v1/archive/messages/{hit['id']}/eml")
    assert r.status == 200
    assert r.headers["Content-Type"] == "message/rfc822"
    assert "attachment" in r.headers["Content-Disposition"]
    eml = r.raw
    assert eml.startswith(b"Received: ")
    assert eml.endswith(raw), (eml[-200:], raw[-200:])
    prefix = eml[:len(eml) - len(raw)]
    # the prefix is one header field (folded lines start with white space)
    lines = prefix.split(b"\r\n")
    assert lines[-1] == b"" and all(ln[:1] in (b" ", b"\t") for ln in lines[1:-1]), prefix
    assert v["size"] == len(eml)
    # the CLI writes the same octets
    cp = subprocess.run([str(MOAT), "archive", "show", str(hit["id"]), "--eml"],
                        capture_output=True, env=m.cli_env(), timeout=30)
    assert cp.returncode == 0 and cp.stdout == eml, cp.stderr
    out = m.cli("archive", "show", str(hit["id"]), check=0).stdout
    assert "exact bytes no99" in out and "scan99.pdf" in out and "kakapo" in out
    assert "to <bob@example.com>" in out

    # the mbox export of a search, read back with Python's mailbox module
    query = "from:partner.test"
    want = total(a, query)
    path = tmp_path / "export.mbox"
    r = m.cli("archive", "export", query, "-o", str(path), check=0)
    assert f"exported {want} messages" in r.stdout, r
    box = mailbox.mbox(str(path))
    got = [msg["Subject"] for msg in box]
    assert len(got) == want
    expect = sorted(e2["subject"] for e2 in c if in_domain(e2["sender"], "partner.test"))
    assert sorted(got) == expect
    for msg in box:
        assert msg.get_from().split()[0] in ("ben@partner.test", "cid@sub.partner.test")
    # an existing file is not overwritten
    r = m.cli("archive", "export", query, "-o", str(path))
    assert r.returncode == 1 and "exists" in r.stderr
    # the API streams the same mailbox
    r = a.get(q("/api/v1/archive/export", "kakapo"))
    assert r.status == 200 and r.headers["Content-Type"] == "application/mbox"
    assert r.raw.startswith(b"From ann@ext.test ")
    assert r.raw.count(b"\nFrom ") == 0
    assert b"kakapo" in r.raw
    r = a.get(q("/api/v1/archive/export", "colour:red"))
    assert r.status == 400 and r.error["field"] == "q"


# ------------------------------------------------------------------ roles, audit

def test_roles_and_audit(archived):
    m, c, _ = archived
    a = admin(m)
    basic = Api(m.http_port, token_for(m, "basic1", "basic_admin"))
    alice = Api(m.http_port, token_for(m, "alice@example.com", "user"))
    plain_user = Api(m.http_port, token_for(m, "frank", "user"))
    some = search(a, "zebra").json["messages"][0]["id"]

    # basic administrator: metadata only, no snippets, no content
    r = search(basic, "from:ext.test subject:invoice")
    assert r.status == 200
    assert r.json["total"] == sum(1 for e in c if e["sender"] == "ann@ext.test"
                                  and "invoice" in e["subject"])
    r = search(basic, "has:attachment to:alice@example.com")
    assert r.status == 200 and all("snippet" not in h for h in r.json["messages"])
    for query in ("zebra", 'from:ext.test "blue whale"'):
        r = search(basic, query)
        assert r.status == 403 and r.error["code"] == "protected" and r.error["field"] == "q", r
    for path in (f"/api/v1/archive/messages/{some}", f"/api/v1/archive/messages/{some}/eml"):
        r = basic.get(path)
        assert r.status == 403 and r.error["code"] == "protected", (path, r)
    r = basic.get(q("/api/v1/archive/export", ""))
    assert r.status == 403 and r.error["code"] == "forbidden"
    assert basic.post("/api/v1/archive/purge").status == 403
    assert basic.get("/api/v1/archive/legal-holds").status == 403
    r = m.cli("archive", "show", str(some), token=basic.token)
    assert r.returncode == 1 and "protected" in r.stderr, r

    # a user: their own mail only (envelope recipient, To/Cc, sender)
    mine = [e for e in c if "alice@example.com" in e["rcpts"]]
    r = search(alice, "")
    assert r.status == 200 and r.json["total"] == len(mine)
    assert total(alice, "zebra") == sum(1 for e in mine if e["word"] == "zebra")
    assert total(alice, "to:bob@example.com") == sum(1 for e in mine if "bob@example.com" in e["rcpts"])
    own = search(alice, "zebra").json["messages"]
    assert own and all("snippet" in h for h in own)
    assert alice.get(f"/api/v1/archive/messages/{own[0]['id']}").status == 200
    assert alice.get(f"/api/v1/archive/messages/{own[0]['id']}/eml").status == 200
    others = [h["id"] for h in search(a, "", limit=500).json["messages"]
              if h["id"] not in {x["id"] for x in search(alice, "", limit=500).json["messages"]}]
    assert others
    assert alice.get(f"/api/v1/archive/messages/{others[0]}").status == 404
    assert alice.get(f"/api/v1/archive/messages/{others[0]}/eml").status == 404
    assert alice.get(q("/api/v1/archive/export", "")).status == 403
    assert alice.get("/api/v1/archive/stats").status == 403
    # a user whose account name is not an address sees nothing
    r = search(plain_user, "")
    assert r.status == 403 and r.error["code"] == "protected"

    # every search and view is in the audit log, with the query as target
    audit = a.get("/api/v1/audit?action=archive.search&limit=1000").json["items"]
    targets = [x["target"] for x in audit]
    assert "from:ext.test subject:invoice" in targets
    assert "has:attachment to:alice@example.com" in targets
    views = a.get("/api/v1/audit?action=archive.view&limit=1000").json["items"]
    assert any(x["target"] == str(own[0]["id"]) for x in views), views
    downloads = a.get("/api/v1/audit?action=archive.download&limit=1000").json["items"]
    assert any(x["target"] == str(own[0]["id"]) for x in downloads), downloads


# ------------------------------------------------------------------ retention

def test_retention_purge_spares_legal_holds(moatd, sink):
    s = sink(name="inside")
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"},
              opts={"test_clock_file": "PLACEHOLDER"}, start=False)
    clock = m.dir / "clock"
    clock.write_text("0\n")
    m.opts["test_clock_file"] = str(clock)
    m.start()
    a = admin(m)
    plan = [("ann@ext.test", "dave@example.com"), ("ann@ext.test", "alice@example.com"),
            ("dave@example.com", "bob@example.com"), ("ben@partner.test", "carol@example.com"),
            ("ben@partner.test", "alice@example.com")]
    for i, (frm, to) in enumerate(plan):
        msg = MIMEText(f"retention message {i}\n")
        msg["From"], msg["To"], msg["Subject"] = frm, to, f"retention {i}"
        msg["Message-ID"] = f"<ret-{i}-{time.time_ns()}@ext.test>"
        send(m, frm, [to], crlf(msg))
    wait_archived(m, len(plan))

    r = m.cli("archive", "hold", "add", "Dave@Example.com", "--reason", "case 17", check=0)
    assert "dave@example.com" in r.stdout
    r = m.cli("archive", "hold", "add", "dave@example.com")
    assert r.returncode == 1, r             # already held: 409
    r = m.cli("archive", "hold", "add", "not an address")
    assert r.returncode == 1 and "address" in r.stderr, r
    holds = m.cli("archive", "hold", "list", json_out=True, check=0).json
    assert [h["address"] for h in holds] == ["dave@example.com"]
    assert holds[0]["reason"] == "case 17" and holds[0]["created_by"] == "admin"

    # within the retention period nothing goes
    r = m.cli("archive", "purge", json_out=True, check=0).json
    assert r["purged"] == 0
    # eight years later: everything but dave's mail (as recipient or sender)
    clock.write_text(f"{8 * 365 * 86400}\n")
    held = sum(1 for f, t in plan if "dave@example.com" in (f, t))
    r = m.cli("archive", "purge", check=0)
    assert f"purged {len(plan) - held} messages" in r.stdout, r
    assert total(a, "") == held
    assert total(a, "retention") == held
    stats = m.cli("archive", "stats", json_out=True, check=0).json
    assert stats["messages"] == held and stats["legal_holds"] == 1
    assert stats["retention_seconds"] == 2557 * 86400
    # the hold lifted: the rest goes too
    m.cli("archive", "hold", "remove", "dave@example.com", check=0)
    assert m.cli("archive", "hold", "list", json_out=True, check=0).json == []
    r = a.post("/api/v1/archive/purge")
    assert r.status == 200 and r.json["purged"] == held
    assert total(a, "") == 0
    # audited
    audit = a.get("/api/v1/audit?action=archive.purge").json["items"]
    assert sorted(x["after"]["purged"] for x in audit) == sorted([0, len(plan) - held, held])
    assert a.get("/api/v1/audit?action=legal_hold.create").json["items"][0]["target"] == \
        "dave@example.com"
    assert a.get("/api/v1/audit?action=legal_hold.delete").json["items"]


# ------------------------------------------------------------------ journal configuration

def test_journal_configuration_api_and_cli(world):
    m, _ = world
    a = admin(m)
    r = a.get("/api/v1/journal")
    assert r.status == 200
    assert r.json["address"] == "journal@journal.example.com"
    assert r.json["address_is_default"] is True
    assert r.json["undeliverable_address"] == ""
    assert r.json["evidence"]["last_report"] is None and r.json["evidence"]["reports"] == 0

    r = a.request("PUT", "/api/v1/journal", body={"address": "Archive@Journal.Example.com",
                                                   "undeliverable_address": "ndr@elsewhere.test"})
    assert r.status == 200, r
    assert r.json["address"] == "archive@journal.example.com" and not r.json["address_is_default"]
    assert r.json["undeliverable_address"] == "ndr@elsewhere.test"
    # absent members are unchanged; "" goes back to the default
    r = a.request("PUT", "/api/v1/journal", body={"undeliverable_address": ""})
    assert r.json["address"] == "archive@journal.example.com" and r.json["undeliverable_address"] == ""
    r = a.request("PUT", "/api/v1/journal", body={"address": ""})
    assert r.json["address"] == "journal@journal.example.com" and r.json["address_is_default"]
    for body, field in (({"address": "no at sign"}, "address"),
                        ({"undeliverable_address": "x@"}, "undeliverable_address"),
                        ({"address": 5}, "address"), ({"colour": "red"}, "colour")):
        r = a.request("PUT", "/api/v1/journal", body=body)
        assert r.status == 400 and r.error["field"] == field, (body, r)
    audit = a.get("/api/v1/audit?action=journal.update").json["items"]
    assert len(audit) == 3
    assert any(x["after"]["address"] == "archive@journal.example.com" for x in audit)

    # sources through the CLI
    r = m.cli("journal", "source", "add", "192.0.2.10", "--comment", "exchange 1", check=0)
    assert "192.0.2.10/32" in r.stdout
    v6 = m.cli("journal", "source", "add", "2001:db8::/64", json_out=True, check=0).json
    assert v6["cidr"] == "2001:db8::/64"
    assert m.cli("journal", "source", "add", "192.0.2.10").returncode == 1
    r = m.cli("journal", "source", "add", "10.0.0.0/4")
    assert r.returncode == 1 and "cidr" in r.stderr, r
    lst = m.cli("journal", "source", "list", json_out=True, check=0).json
    assert sorted(x["cidr"] for x in lst) == ["192.0.2.10/32", "2001:db8::/64"]
    out = m.cli("journal", "show", check=0).stdout
    assert "journal@journal.example.com (the default)" in out and "192.0.2.10/32" in out
    m.cli("journal", "set", "--undeliverable", "ndr@elsewhere.test", check=0)
    assert a.get("/api/v1/journal").json["undeliverable_address"] == "ndr@elsewhere.test"
    assert m.cli("journal", "set").returncode == 2
    m.cli("journal", "source", "remove", "192.0.2.10", check=0)
    m.cli("journal", "source", "remove", str(v6["id"]), check=0)
    assert m.cli("journal", "source", "list", json_out=True, check=0).json == []
    assert m.cli("journal", "source", "remove", "192.0.2.10").returncode == 1
    r = a.request("DELETE", "/api/v1/journal/sources/4242")
    assert r.status == 404
    audit = a.get("/api/v1/audit?action=journal_source.create").json["items"]
    assert sorted(x["target"] for x in audit) == ["192.0.2.10/32", "2001:db8::/64"]
    assert len(a.get("/api/v1/audit?action=journal_source.delete").json["items"]) == 2
