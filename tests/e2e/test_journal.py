"""The archive's mail path (issue 8): the journal role at RCPT, journal reports
unwrapped and archived (never relayed), inbound and outbound mail archived as
it is relayed, deduplication, and a crash before archiving.

example.com is internal, routed to an smtp-sink ("inside"); "the internet" is
remote.example.org, whose MX (the session's unbound) is 127.0.0.1 where
another sink listens on delivery_port.  The journal address is the default,
journal@journal.example.com; 127.0.0.1 is the authorised journal source and
127.0.0.2 a stranger.

What was archived is read with build/tests/unit/archive_dump_tool, which
reads the archive database through the archive store's own interface.
"""

import json
import smtplib
import sqlite3
import subprocess
import time

import pytest

from moatlib import build_dir, make_message, new_marker, queued_id, sanitizer_env, wait_until

JOURNAL = "journal@journal.example.com"
EXT = "remote.example.org"


# --- helpers ----------------------------------------------------------------

def add_journal_source(m, cidr="127.0.0.1/32"):
    """Authorise a journal source through the CLI (`moat journal source
    add`), then wait until the SMTP loop's snapshot has it (the journal
    address is accepted from 127.0.0.1)."""
    m.cli("journal", "source", "add", cidr, "--comment", "test", check=0)

    def accepted():
        with smtplib.SMTP(m.host, m.port, timeout=10) as c:
            c.ehlo("exchange.example.com")
            c.mail("postmaster@example.com")
            code = c.rcpt(JOURNAL)[0]
            c.rset()
            return code == 250
    wait_until(accepted, timeout=15, what="journal source in the snapshot")


def archive_dump(m):
    cp = subprocess.run([str(build_dir() / "tests" / "unit" / "archive_dump_tool"),
                         str(m.state_dir / "archive.db")],
                        capture_output=True, text=True, timeout=30, env=sanitizer_env())
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def arrival(dump, qid):
    """(message, arrival) of the arrival with queue id qid, or (None, None)"""
    for msg in dump:
        for a in msg["arrivals"]:
            if a["qid"] == qid:
                return msg, a
    return None, None


def wait_archived(m, qid, timeout=20):
    got = {}

    def find():
        msg, a = arrival(archive_dump(m), qid)
        got["v"] = (msg, a)
        return a is not None
    wait_until(find, timeout=timeout, interval=0.3, what=f"{qid} in the archive")
    return got["v"]


def send_from(m, src, sender, rcpts, data, ehlo="exchange.example.com"):
    """MAIL/RCPT/DATA from source address src; returns the queue id"""
    with smtplib.SMTP(m.host, m.port, timeout=20, source_address=(src, 0)) as c:
        c.ehlo(ehlo)
        assert c.mail(sender)[0] == 250
        for r in rcpts:
            code, text = c.rcpt(r)
            assert code == 250, (r, code, text)
        code, text = c.data(data.encode() if isinstance(data, str) else data)
        assert code == 250, (code, text)
        return queued_id(text)


def journal_report(marker, message_id="orig-1@example.com"):
    """An Exchange envelope journal report: the envelope block, then the
    original message attached"""
    original = "\r\n".join([
        "From: Alice <alice@example.com>",
        f"To: bob@{EXT}, sales@example.com",
        "Cc: erin@example.com",
        "Subject: Quarterly figures",
        "Date: Sat, 28 Nov 2026 12:00:00 +0000",
        f"Message-ID: <{message_id}>",
        "",
        f"The figures are in. {marker}",
        ""])
    envelope = "\r\n".join([
        "Sender: alice@example.com",
        "Subject: Quarterly figures",
        f"Message-Id: <{message_id}>",
        f"To: bob@{EXT}",
        "To: carol@example.com, Expanded: sales@example.com",
        "Cc: dave@example.com, Forwarded: erin@example.com",
        ""])
    return "\r\n".join([
        "From: Microsoft Exchange Server <postmaster@example.com>",
        f"To: {JOURNAL}",
        "Subject: Quarterly figures",
        "Date: Sat, 28 Nov 2026 12:00:01 +0000",
        "Message-ID: <report-" + marker + "@example.com>",
        "X-MS-Journal-Report:",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="jr-boundary"',
        "",
        "--jr-boundary",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        envelope,
        "--jr-boundary",
        "Content-Type: message/rfc822",
        "",
        original,
        "--jr-boundary--",
        ""])


@pytest.fixture
def world(moatd, sink):
    """(moatd, inside sink, external MX sink) with 127.0.0.1 a journal source"""
    inside = sink(name="inside")
    mx = sink(name="ext-mx")
    m = moatd(domains={"example.com": f"127.0.0.1:{inside.port}"},
              opts={"delivery_port": mx.port, "retry_schedule": "1s"})
    add_journal_source(m)
    return m, inside, mx


# --- the journal role -----------------------------------------------------------

def test_report_from_source_is_archived_unwrapped_never_relayed(world):
    m, inside, mx = world
    marker = new_marker()
    qid = send_from(m, "127.0.0.1", "postmaster@example.com", [JOURNAL], journal_report(marker))
    msg, a = wait_archived(m, qid)
    assert a["source"] == "journal" and a["journal"] == "report"
    # the report's envelope, not the transaction's
    assert a["sender"] == "alice@example.com"
    rc = {r["addr"]: r for r in a["rcpts"]}
    assert rc[f"bob@{EXT}"]["kind"] == "to"
    assert rc["carol@example.com"]["kind"] == "to"
    assert rc["carol@example.com"]["expanded"] == "sales@example.com"
    assert rc["dave@example.com"]["kind"] == "cc"
    assert rc["dave@example.com"]["forwarded"] == "erin@example.com"
    assert JOURNAL not in rc
    # internal sender, one recipient outside: outbound
    assert a["direction"] == "outbound"
    # the original is what is archived, not the report around it
    assert msg["message_id"] == "orig-1@example.com"
    assert marker in msg["body"] and "X-MS-Journal-Report" not in msg["body"]
    assert any(e.get("qid") == qid for e in m.events("journal_accepted"))
    time.sleep(1.0)
    assert inside.count() == 0 and mx.count() == 0


def test_report_from_stranger_is_refused(world):
    m, inside, mx = world
    with smtplib.SMTP(m.host, m.port, timeout=20, source_address=("127.0.0.2", 0)) as c:
        c.ehlo("stranger.ext.test")
        assert c.mail("postmaster@example.com")[0] == 250
        code, text = c.rcpt(JOURNAL)
        assert code == 550, (code, text)
        assert text.startswith(b"5.7.1") and b"not an authorised journal source" in text, text
        # upper case is the same address
        code, text = c.rcpt(JOURNAL.upper())
        assert code == 550 and text.startswith(b"5.7.1"), (code, text)
    rejects = [e for e in m.events("reject") if e.get("check") == "journal" or "journal" in
               e.get("reason", "")]
    assert rejects, m.log_tail(30)


def test_journal_refused_while_the_archive_is_off(moatd, sink):
    """archive=no: nothing would keep a journal report, so even an
    authorised source is refused rather than accepted and dropped."""
    inside = sink(name="inside")
    m = moatd(domains={"example.com": f"127.0.0.1:{inside.port}"}, opts={"archive": "no"})
    m.cli("journal", "source", "add", "127.0.0.1/32", check=0)

    def refused_as_off():
        with smtplib.SMTP(m.host, m.port, timeout=10) as c:
            c.ehlo("exchange.example.com")
            c.mail("postmaster@example.com")
            code, text = c.rcpt(JOURNAL)
            return code == 550 and text.startswith(b"5.7.1") and b"journaling is off" in text
    wait_until(refused_as_off, timeout=15, what="journal address refused with the archive off")
    # ordinary mail still flows, and nothing waits for an archive
    q = m.send("bob@" + EXT, ["alice@example.com"], make_message(sender="bob@" + EXT))
    inside.wait_count(1)
    wait_until(lambda: q not in m.queue_ids(), timeout=15, what="message gone from the spool")


def test_journal_recipient_travels_alone(world):
    m, inside, mx = world
    with smtplib.SMTP(m.host, m.port, timeout=20) as c:
        c.ehlo("exchange.example.com")
        # the journal address first: nothing else may join
        assert c.mail("postmaster@example.com")[0] == 250
        assert c.rcpt(JOURNAL)[0] == 250
        code, text = c.rcpt("alice@example.com")
        assert code == 452 and text.startswith(b"4.5.3"), (code, text)
        assert b"journal reports travel alone" in text
        c.rset()
        # another recipient first: the journal address may not join
        assert c.mail("bob@" + EXT)[0] == 250
        assert c.rcpt("alice@example.com")[0] == 250
        code, text = c.rcpt(JOURNAL)
        assert code == 452 and text.startswith(b"4.5.3"), (code, text)
        # the transaction goes on with what was accepted
        assert c.data(make_message(sender="bob@" + EXT).encode())[0] == 250
    inside.wait_count(1)
    assert inside.messages()[0].rcpt_addrs() == ["alice@example.com"]


def test_malformed_report_is_kept_and_flagged(world):
    m, inside, mx = world
    marker = new_marker()
    data = "\r\n".join([
        "From: Microsoft Exchange Server <postmaster@example.com>",
        f"To: {JOURNAL}",
        "Subject: broken report",
        "Message-ID: <broken-" + marker + "@example.com>",
        "X-MS-Journal-Report:",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: text/plain",
        "",
        "this is no envelope block",
        "--b--",
        marker,
        ""])
    qid = send_from(m, "127.0.0.1", "postmaster@example.com", [JOURNAL], data)
    msg, a = wait_archived(m, qid)
    assert a["journal"] == "malformed" and a["source"] == "journal"
    assert a["journal_error"]
    # kept as it came, with the transaction's envelope
    assert "X-MS-Journal-Report" in msg["body"] and marker in msg["body"]
    assert a["sender"] == "postmaster@example.com"
    assert [r["addr"] for r in a["rcpts"]] == [JOURNAL]
    time.sleep(1.0)
    assert inside.count() == 0 and mx.count() == 0


def test_plain_journal_copy_keeps_the_transaction_envelope(world):
    m, inside, mx = world
    marker = new_marker()
    data = make_message(sender=f"bob@{EXT}", to="alice@example.com", marker=marker,
                        subject="bcc style copy")
    qid = send_from(m, "127.0.0.1", f"bob@{EXT}", [JOURNAL], data)
    msg, a = wait_archived(m, qid)
    assert a["journal"] == "plain" and a["source"] == "journal"
    assert a["sender"] == f"bob@{EXT}"
    assert [(r["addr"], r["kind"]) for r in a["rcpts"]] == [(JOURNAL, "envelope")]
    assert a["direction"] == "inbound"
    assert marker in msg["body"]
    time.sleep(1.0)
    assert inside.count() == 0 and mx.count() == 0


# --- inbound and outbound mail ----------------------------------------------------

def test_inbound_mail_is_relayed_and_archived(world):
    m, inside, mx = world
    marker = new_marker()
    qid = m.send(f"bob@{EXT}", ["alice@example.com"],
                 make_message(sender=f"bob@{EXT}", marker=marker, subject="hello inside"))
    inside.wait_marker(marker)
    msg, a = wait_archived(m, qid)
    assert a["direction"] == "inbound" and a["source"] == "smtp" and a["journal"] is None
    assert a["sender"] == f"bob@{EXT}"
    assert [(r["addr"], r["kind"]) for r in a["rcpts"]] == [("alice@example.com", "envelope")]
    assert marker in msg["body"]


def test_outbound_mail_is_archived_as_outbound(world):
    m, inside, mx = world
    m.cli("outbound", "host", "add", "127.0.0.1", check=0)
    time.sleep(1.5)   # the snapshot with the outbound host
    marker = new_marker()
    qid = m.send("alice@example.com", [f"bob@{EXT}"],
                 make_message(sender="alice@example.com", to=f"bob@{EXT}", marker=marker))
    mx.wait_marker(marker, timeout=20)
    msg, a = wait_archived(m, qid)
    assert a["direction"] == "outbound" and a["source"] == "smtp"


def test_same_message_twice_is_one_message_with_two_arrivals(world):
    m, inside, mx = world
    data = make_message(sender=f"bob@{EXT}", marker=new_marker(), subject="twice")
    q1 = m.send(f"bob@{EXT}", ["alice@example.com"], data)
    q2 = m.send(f"bob@{EXT}", ["alice@example.com"], data)
    assert q1 != q2
    m1, _ = wait_archived(m, q1)
    m2, _ = wait_archived(m, q2)
    assert m1["id"] == m2["id"]
    dump = archive_dump(m)
    msg = [x for x in dump if x["id"] == m1["id"]][0]
    assert sorted(a["qid"] for a in msg["arrivals"]) == sorted([q1, q2])
    assert sum(1 for x in dump if x["subject"] == "twice") == 1


# --- durability -------------------------------------------------------------------

def test_crash_before_archiving_is_archived_after_restart(world):
    """The archive database is held locked (another writer), so the ingest
    cannot commit; the message is accepted (250) and delivered, then moatd is
    killed.  After the restart it is archived, once, and the spool forgets it."""
    m, inside, mx = world
    lock = sqlite3.connect(str(m.state_dir / "archive.db"), timeout=10, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")      # the write lock: every ingest fails (busy)
    try:
        marker = new_marker()
        qid = m.send(f"bob@{EXT}", ["alice@example.com"],
                     make_message(sender=f"bob@{EXT}", marker=marker, subject="crash"))
        inside.wait_marker(marker)
        wait_until(lambda: any("archive_ingest_failed" in line
                               for line in m.log_text().splitlines()),
                   timeout=90, interval=0.5, what="a failed ingest (busy archive database)")
        m.kill9()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert arrival(archive_dump(m), qid) == (None, None)
    m.restart()
    msg, a = wait_archived(m, qid)
    assert a["direction"] == "inbound" and marker in msg["body"]
    # delivered once: the recovered message was finished, not sent again
    time.sleep(1.0)
    assert len(inside.with_marker(marker)) == 1
    # archived and done: a clean restart no longer knows it
    m.stop()
    m.start()
    time.sleep(2.0)
    archived_again = [e for e in m.events("archived", since_start=True) if e.get("qid") == qid]
    assert archived_again == []
    msg, _ = arrival(archive_dump(m), qid)
    assert [x["qid"] for x in msg["arrivals"]] == [qid]


# --- retention ----------------------------------------------------------------------

def test_retention_purges_old_mail_but_not_legal_holds(moatd, sink, workdir):
    """The retention timer (archive_purge_interval) purges mail older than
    archive_retention by the screening clock (test_clock_file moves it on),
    sparing the mail of an address under legal hold."""
    inside = sink(name="inside")
    clock = workdir / "clock"
    clock.write_text("0\n")
    m = moatd(domains={"example.com": f"127.0.0.1:{inside.port}"},
              opts={"archive_purge_interval": "1s", "archive_retention": "1d",
                    "test_clock_file": str(clock)})
    m.cli("archive", "hold", "add", "carol@example.com", "--reason", "litigation", check=0)
    q1 = m.send(f"bob@{EXT}", ["alice@example.com"], make_message(sender=f"bob@{EXT}"))
    q2 = m.send(f"bob@{EXT}", ["carol@example.com"],
                make_message(sender=f"bob@{EXT}", to="carol@example.com"))
    wait_archived(m, q1)
    wait_archived(m, q2)
    time.sleep(2.5)        # purges ran: nothing is old enough yet
    assert arrival(archive_dump(m), q1)[1] is not None
    clock.write_text(str(2 * 86400) + "\n")     # two days later

    def purged():
        return arrival(archive_dump(m), q1) == (None, None)
    wait_until(purged, timeout=20, interval=0.5, what="retention to purge q1")
    assert arrival(archive_dump(m), q2)[1] is not None
    assert any(e.get("event") == "archive_purged" for e in m.events())
