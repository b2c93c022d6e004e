"""Issue 8: Connect's journaling task against a real moatd.

The task fails without a journal source, waits (pending) once a source is
authorised, and passes after a Microsoft Exchange envelope journal report
sent through real SMTP from the authorised source (127.0.0.1) has been
archived with its envelope unwrapped: the archive (through the API) holds
the attached original with the report's recipients, including the
expanded and forwarded ones.  A malformed report afterwards fails the
check, saying why; a stranger's mail to the journal address is refused.
"""

import smtplib
import time

from api_fixtures import Api
from moatlib import wait_until

JOURNAL = "journal@journal.example.com"


def admin(m):
    return Api(m.http_port, m.token)


def check(m):
    r = admin(m).post("/api/v1/connect/journaling/check")
    assert r.status == 200, r
    return r.json["result"]


def send(m, rcpt, data, src="127.0.0.1", sender="MicrosoftExchange@example.com"):
    with smtplib.SMTP(m.host, m.port, timeout=20, source_address=(src, 0)) as s:
        s.ehlo("exchange.example.com")
        code, resp = s.mail(sender)
        assert code == 250, (code, resp)
        code, resp = s.rcpt(rcpt)
        if code != 250:
            return code, resp.decode()
        code, resp = s.data(data)
        return code, resp.decode()


def exchange_report(original_id, word):
    """An envelope journal report as Exchange writes it: the envelope block,
    then the original message attached (message/rfc822)."""
    original = (
        "From: Alice Example <alice@example.com>\r\n"
        "To: Sales <sales@example.com>\r\n"
        "Cc: dave@example.com\r\n"
        "Subject: Board minutes\r\n"
        f"Message-ID: <{original_id}>\r\n"
        "Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"The minutes mention the {word} twice: {word}.\r\n")
    envelope = (
        "Sender: alice@example.com\r\n"
        "Subject: Board minutes\r\n"
        f"Message-Id: <{original_id}>\r\n"
        "To: bob@example.com\r\n"
        "To: carol@example.com, Expanded: sales@example.com\r\n"
        "Cc: erin@example.com, Forwarded: dave@example.com\r\n"
        "Bcc: frank@example.com\r\n")
    return (
        "From: Microsoft Outlook <MicrosoftExchange@example.com>\r\n"
        f"To: {JOURNAL}\r\n"
        "Subject: Board minutes\r\n"
        f"Message-ID: <report-{time.time_ns()}@example.com>\r\n"
        "Date: Sat, 28 Nov 2026 12:00:01 +0000\r\n"
        "X-MS-Journal-Report:\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="jr-boundary"\r\n'
        "\r\n"
        "--jr-boundary\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"{envelope}"
        "\r\n"
        "--jr-boundary\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n"
        f"{original}"
        "\r\n"
        "--jr-boundary--\r\n").encode()


def malformed_report():
    return (
        "From: Microsoft Outlook <MicrosoftExchange@example.com>\r\n"
        f"To: {JOURNAL}\r\n"
        "Subject: broken\r\n"
        f"Message-ID: <broken-{time.time_ns()}@example.com>\r\n"
        "X-MS-Journal-Report:\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n'
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "this is not an envelope block at all\r\n"
        "--b--\r\n").encode()


def test_journaling_task_fail_pending_pass_then_malformed(moatd, sink):
    s = sink(name="inside")
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    a = admin(m)
    m.cli("org", "set", "--environment", "microsoft365", "--public-host", "mx1.moat.example.test",
          "--public-ip", "192.0.2.25", check=0)

    # no source: fail, saying what to do
    res = check(m)
    assert res["outcome"] == "fail", res
    assert "journal source" in res["message"]
    detail = a.get("/api/v1/connect/journaling").json
    assert detail["checkable"] is True
    arts = {x["title"]: x for x in detail["artefacts"]}
    rule = arts["Exchange Online: the journal contact and rule"]
    assert rule["kind"] == "powershell"
    assert f'New-MailContact -Name "Moat journal" -ExternalEmailAddress "{JOURNAL}"' in rule["content"]
    assert "New-JournalRule" in rule["content"] and "-Scope Global" in rule["content"]
    conn = arts["Exchange Online: outbound connector for the journal domain"]["content"]
    assert '-RecipientDomains "journal.example.com"' in conn and "mx1.moat.example.test" in conn
    assert any("undeliverable" in step for step in detail["instructions"])

    # a source, no report yet: pending
    m.cli("journal", "source", "add", "127.0.0.1", "--comment", "exchange", check=0)
    res = check(m)
    assert res["outcome"] == "pending", res
    assert "127.0.0.1/32" in res["message"] and JOURNAL in res["message"]

    # a stranger may not send to the journal address
    code, text = send(m, JOURNAL, exchange_report("x@example.com", "never"), src="127.0.0.2")
    assert 500 <= code < 600, (code, text)

    # the report from the source: accepted, never relayed, archived unwrapped
    before = s.count()
    code, text = send(m, JOURNAL, exchange_report("orig-1@example.com", "pelican"))
    assert code == 250, (code, text)
    qid = text.split()[-1]
    wait_until(lambda: a.get("/api/v1/archive/messages?q=pelican").json["total"] == 1, 30,
               interval=0.2, what="the unwrapped original in the archive")
    res = check(m)
    assert res["outcome"] == "pass", res
    assert "127.0.0.1" in res["message"] and "unwrapped" in res["message"]
    time.sleep(1)
    assert s.count() == before            # journal mail is never relayed

    hit = a.get("/api/v1/archive/messages?q=pelican").json["messages"][0]
    assert hit["message_id"] == "orig-1@example.com"
    assert hit["subject"] == "Board minutes"
    v = a.get(f"/api/v1/archive/messages/{hit['id']}").json
    assert "pelican" in v["text"]
    assert [h["value"] for h in v["headers"] if h["name"].lower() == "subject"] == ["Board minutes"]
    assert len(v["arrivals"]) == 1
    arr = v["arrivals"][0]
    assert arr["source"] == "journal" and arr["journal"] == "report"
    assert arr["qid"].upper() == qid.upper()
    assert arr["client_addr"] == "127.0.0.1"
    assert arr["sender"] == "alice@example.com"
    assert arr["direction"] == "internal"
    rc = {r["address"]: r for r in arr["recipients"]}
    assert set(rc) == {"bob@example.com", "carol@example.com", "erin@example.com",
                       "frank@example.com"}, rc
    assert rc["bob@example.com"]["kind"] == "to" and rc["bob@example.com"]["expanded"] is None
    assert rc["carol@example.com"]["expanded"] == "sales@example.com"
    assert rc["erin@example.com"]["kind"] == "cc"
    assert rc["erin@example.com"]["forwarded"] == "dave@example.com"
    assert rc["frank@example.com"]["kind"] == "bcc"
    # the report's recipients are searchable
    assert a.get("/api/v1/archive/messages?q=to:frank@example.com").json["total"] == 1
    assert a.get("/api/v1/archive/messages?q=from:alice@example.com").json["total"] == 1
    j = a.get("/api/v1/journal").json["evidence"]
    assert j["last_report_unwrapped"] is True and j["unwrapped"] == 1
    assert j["last_report_client"] == "127.0.0.1"
    out = m.cli("journal", "show", check=0).stdout
    assert "unwrapped" in out and "127.0.0.1" in out

    # a malformed report: kept and flagged, and the check says why it failed
    code, text = send(m, JOURNAL, malformed_report())
    assert code == 250, (code, text)
    wait_until(lambda: a.get("/api/v1/journal").json["evidence"]["malformed"] == 1, 30,
               interval=0.2, what="the malformed report recorded")
    res = check(m)
    assert res["outcome"] == "fail", res
    assert "not a readable journal report" in res["message"], res
    hit = a.get("/api/v1/archive/messages?q=subject:broken").json["messages"]
    assert len(hit) == 1
    arr = a.get(f"/api/v1/archive/messages/{hit[0]['id']}").json["arrivals"][0]
    assert arr["journal"] == "malformed" and arr["journal_error"], arr
