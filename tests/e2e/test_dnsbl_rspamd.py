"""DNSBL (issue 7 item 5) and rspamd (item 6): real unbound zones as
blocklists, real clients bound to 127.0.0.2 / 127.0.0.3 as "the internet"."""

import smtplib
import time

import pytest

from moatlib import make_message, new_marker, wait_until

# blocklist zones served by the session's unbound (added at run time)
BL1, BL2, BLERR, BLREF = "bl1.example", "bl2.example", "blerr.example", "blref.example"


@pytest.fixture(scope="module")
def zones(unbound):
    def ctl(*a):
        r = unbound.control(*a)
        assert r.returncode == 0 and not r.stdout.startswith("error"), (a, r.stdout, r.stderr)
    for z in (BL1, BL2, BLERR):
        ctl("local_zone", z + ".", "static")
        ctl("local_data", f"{z}. 0 IN SOA ns.{z}. hostmaster.{z}. 1 0 0 0 0")
    # 127.0.0.2 is listed by bl1 and bl2; blerr answers a Spamhaus-style error code
    ctl("local_data", f"2.0.0.127.{BL1}. 0 IN A 127.0.0.2")
    ctl("local_data", f"2.0.0.127.{BL1}. 0 IN TXT \"listed for testing\"")
    ctl("local_data", f"2.0.0.127.{BL2}. 0 IN A 127.0.0.4")
    ctl("local_data", f"2.0.0.127.{BLERR}. 0 IN A 127.255.255.254")
    # a zone the resolver refuses: REFUSED, "could not check"
    ctl("local_zone", BLREF + ".", "refuse")
    return unbound


def dnsbl_moatd(moatd, sink, zones_weights, **opts):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"}, opts=opts)
    for z, w in zones_weights:
        r = m.cli("dnsbl", "add", z, "--weight", str(w), check=0)
        assert "added DNSBL zone" in r.stdout
    # the CLI asks for a reload; the next connection sees the zones
    time.sleep(0.3)
    return m, s


def attempt(m, src, rcpt="alice@example.com", sender="someone@ext.example", marker=None):
    """One transaction from src; (rcpt code, rcpt text, data code or None)."""
    c = smtplib.SMTP(m.host, m.port, timeout=20, source_address=(src, 0))
    try:
        c.ehlo("client.ext.example")
        assert c.mail(sender)[0] == 250
        code, text = c.rcpt(rcpt)
        dcode = None
        if code == 250:
            dcode = c.data(make_message(marker=marker or new_marker()).encode())[0]
        c.quit()
        return code, text.decode(), dcode
    finally:
        c.close()


def dnsbl_events(m, zone):
    return [e for e in m.events("dnsbl") if e.get("zone") == zone]


def test_listed_client_refused_naming_zone(moatd, sink, zones):
    m, s = dnsbl_moatd(moatd, sink, [(BL1, 1)])
    code, text, _ = attempt(m, "127.0.0.2")
    assert code == 554, text
    assert text.startswith("5.7.1 "), text
    assert "client [127.0.0.2] listed at bl1.example" in text
    ev = dnsbl_events(m, BL1)
    assert any(e.get("result") == "listed" and e.get("answer") == "127.0.0.2" for e in ev), ev
    # the reject line names the check and the reason
    rej = [e for e in m.events("reject") if e.get("stage") == "rcpt"]
    assert rej and "listed at bl1.example" in rej[-1].get("reason", ""), rej


def test_unlisted_client_accepted(moatd, sink, zones):
    m, s = dnsbl_moatd(moatd, sink, [(BL1, 1)])
    marker = new_marker()
    code, text, dcode = attempt(m, "127.0.0.3", marker=marker)
    assert (code, dcode) == (250, 250), text
    s.wait_marker(marker)
    ev = dnsbl_events(m, BL1)
    assert any(e.get("client") == "127.0.0.3" and e.get("result") == "clean" for e in ev), ev


def test_error_code_answer_is_not_listed(moatd, sink, zones):
    m, s = dnsbl_moatd(moatd, sink, [(BLERR, 5)])
    marker = new_marker()
    code, text, dcode = attempt(m, "127.0.0.2", marker=marker)
    assert (code, dcode) == (250, 250), text
    s.wait_marker(marker)
    ev = dnsbl_events(m, BLERR)
    assert any(e.get("result") == "error" and e.get("answer") == "127.255.255.254"
               and e.get("reason") == "could not check" for e in ev), ev


def test_resolver_error_accepts_and_logs_could_not_check(moatd, sink, zones):
    m, s = dnsbl_moatd(moatd, sink, [(BLREF, 5)])
    marker = new_marker()
    code, text, dcode = attempt(m, "127.0.0.2", marker=marker)
    assert (code, dcode) == (250, 250), text
    s.wait_marker(marker)
    ev = dnsbl_events(m, BLREF)
    assert any(e.get("result") == "error" and e.get("reason") == "could not check" for e in ev), ev
    v = m.events("dnsbl_verdict")
    assert v and v[-1].get("errors") == "1" and v[-1].get("action") == "pass", v


def test_unanswered_zone_times_out_as_could_not_check(moatd, sink, zones):
    # not a local zone: unbound forwards it to a dead port; dnsbl_timeout bounds the wait
    m, s = dnsbl_moatd(moatd, sink, [("nowhere-bl.example", 5)], dnsbl_timeout="2s")
    t0 = time.monotonic()
    code, text, dcode = attempt(m, "127.0.0.2")
    assert (code, dcode) == (250, 250), text
    assert time.monotonic() - t0 < 10
    ev = dnsbl_events(m, "nowhere-bl.example")
    assert ev and ev[-1].get("result") == "error", ev


def test_weights_add_up_to_threshold(moatd, sink, zones):
    # one zone of weight 1 is below the threshold 2: accepted
    m, s = dnsbl_moatd(moatd, sink, [(BL1, 1)], dnsbl_threshold="2")
    code, text, dcode = attempt(m, "127.0.0.2")
    assert (code, dcode) == (250, 250), text
    # the second zone (weight 1) brings the score to 2: refused, both named
    m.cli("dnsbl", "add", BL2, check=0)
    time.sleep(0.3)
    code, text, _ = attempt(m, "127.0.0.2")
    assert code == 554 and text.startswith("5.7.1"), text
    assert "bl1.example" in text and "bl2.example" in text, text
    # an error zone with a large weight never counts
    m2, _ = dnsbl_moatd(moatd, sink, [(BL1, 1), (BLERR, 50)], dnsbl_threshold="2")
    code, text, _ = attempt(m2, "127.0.0.2")
    assert code == 250, text


def test_hold_threshold_holds_instead_of_refusing(moatd, sink, zones):
    m, s = dnsbl_moatd(moatd, sink, [(BL1, 1)], dnsbl_threshold="5", dnsbl_hold_threshold="1")
    marker = new_marker()
    code, text, dcode = attempt(m, "127.0.0.2", marker=marker)
    assert (code, dcode) == (250, 250), text
    holds = m.events("hold")
    assert holds and holds[-1].get("check") == "dnsbl", holds
    assert "listed at bl1.example" in holds[-1].get("reason", "")
    # never delivered while held
    time.sleep(2)
    assert not any(marker in p.read_text(errors="replace") for p in s.dir.rglob("*") if p.is_file())


def test_outbound_host_is_not_looked_up(moatd, sink, zones):
    m, s = dnsbl_moatd(moatd, sink, [(BL1, 1)])
    m.cli("outbound", "host", "add", "127.0.0.2", check=0)
    time.sleep(0.3)
    code, text, dcode = attempt(m, "127.0.0.2", sender="app@example.com")
    assert (code, dcode) == (250, 250), text
    assert not [e for e in dnsbl_events(m, BL1) if e.get("client") == "127.0.0.2"]


def test_api_and_cli_errors(moatd, zones):
    m = moatd()
    r = m.cli("dnsbl", "add", "bad zone!", check=None)
    assert r.returncode != 0 and "zone" in (r.stderr + r.stdout)
    r = m.cli("dnsbl", "add", "bl1.example", "--weight", "0", check=None)
    assert r.returncode != 0 and "weight" in (r.stderr + r.stdout)
    r = m.cli("dnsbl", "add", "BL1.Example.", "--weight", "3", "--comment", "test list", check=0)
    assert "bl1.example" in r.stdout
    r = m.cli("dnsbl", "add", "bl1.example", check=None)
    assert r.returncode != 0 and "already exists" in (r.stderr + r.stdout)
    lst = m.cli("dnsbl", "list", json_out=True, check=0).json
    assert [(z["zone"], z["weight"], z["comment"]) for z in lst] == [("bl1.example", 3, "test list")]
    txt = m.cli("dnsbl", "list", check=0).stdout
    assert "ZONE" in txt and "bl1.example" in txt
    r = m.cli("dnsbl", "remove", "nothere.example", check=None)
    assert r.returncode != 0 and "no such DNSBL zone" in (r.stderr + r.stdout)
    m.cli("dnsbl", "remove", "bl1.example", check=0)
    assert m.cli("dnsbl", "list", json_out=True, check=0).json == []
    audit = m.cli("audit", json_out=True, check=0).json
    actions = [a.get("action") for a in (audit["items"] if isinstance(audit, dict) else audit)]
    assert "dnsbl_zone.create" in actions and "dnsbl_zone.delete" in actions


# --- rspamd (PEERS.md 7): Debian's rspamd 3.4, private config, loopback only ---

import json          # noqa: E402
import shutil        # noqa: E402
import socket        # noqa: E402
import subprocess    # noqa: E402

import moatlib       # noqa: E402

RSPAMD_TOOL = moatlib.build_dir() / "tests" / "unit" / "rspamd_scan_tool"

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class Rspamd:
    """rspamd -f on 127.0.0.1 (normal worker only needed), DNS to a dead port.
    Two test rules on the Subject give the middle actions deterministically:
    MOAT-ADD-HEADER scores 7 (add header at 6), MOAT-GREYLIST 4.5 (greylist at 4)."""

    def __init__(self, d):
        self.dir = d
        (d / "db").mkdir(parents=True, exist_ok=True)
        (d / "run").mkdir(exist_ok=True)
        self.port, self.cport = moatlib.free_port(), moatlib.free_port()
        conf = f'''lua = "$RULESDIR/rspamd.lua"
.include "$CONFDIR/metrics.conf"
.include "$CONFDIR/actions.conf"
.include "$CONFDIR/groups.conf"
.include "$CONFDIR/composites.conf"
modules {{ path = "${{PLUGINSDIR}}"; }}
options {{ pidfile = "{d}/run/rspamd.pid"; filters = "chartable,regexp"; cache_file = "{d}/db/symbols.cache";
  hs_cache_dir = "{d}/db/"; control_socket = "{d}/run/rspamd.sock mode=0600"; local_addrs = [127.0.0.0/8];
  url_tld = "${{SHAREDIR}}/effective_tld_names.dat";
  dns {{ nameserver = ["127.0.0.1:9"]; timeout = 1s; retransmits = 1; }} }}
logging {{ type = "console"; level = "info"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{self.port}"; count = 1; .include "$CONFDIR/worker-normal.inc" }}
worker "controller" {{ bind_socket = "127.0.0.1:{self.cport}"; count = 1; password = "q"; .include "$CONFDIR/worker-controller.inc" }}
regexp {{
  MOAT_TEST_ADD_HEADER {{ re = "Subject=/MOAT-ADD-HEADER/H"; score = 7.0; }}
  MOAT_TEST_GREYLIST {{ re = "Subject=/MOAT-GREYLIST/H"; score = 4.5; }}
}}
'''
        self.conf = d / "rspamd.conf"
        self.conf.write_text(conf)
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.log = open(self.dir / "rspamd.log", "ab")
        self.proc = moatlib.spawn(["rspamd", "-f", "-i", "-u", "root", "-g", "root", "-c", self.conf],
                                  stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"rspamd exited {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
                    return b"pong" in s.recv(4096)
            except OSError:
                return False
        # the first start compiles the hyperscan database (~25 s on 2 cores)
        wait_until(ready, 120, interval=0.5, what="rspamd /ping")
        return self

    def stop(self):
        if self.proc is not None:
            moatlib.stop_process(self.proc, timeout=10)
            self.proc = None
            self.log.close()


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    if shutil.which("rspamd") is None:
        pytest.fail("rspamd is not installed (apt-get install --no-install-recommends rspamd)")
    r = Rspamd(tmp_path_factory.mktemp("rspamd")).start()
    yield r
    r.stop()


def message(subject, body):
    return ("From: someone@ext.example\r\nTo: alice@example.com\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{new_marker()}@ext.example>\r\n"
            "Date: Sat, 28 Nov 2026 22:00:00 +0000\r\n\r\n" + body + "\r\n")


def scan(tmp_path, url, msg, unreachable="tempfail", hold="none", timeout=5):
    f = tmp_path / f"msg-{new_marker()}.eml"
    f.write_text(msg)
    cp = subprocess.run([str(RSPAMD_TOOL), url, str(timeout), unreachable, hold, str(f),
                         "127.0.0.2", "someone@ext.example", "alice@example.com"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_rspamd_gtube_is_rejected(rspamd, tmp_path):
    v = scan(tmp_path, rspamd.url, message("offer", GTUBE))
    assert v["rc"] == 0 and v["rspamd_action"] == "reject", v
    assert (v["verdict"], v["code"], v["dsn"]) == ("reject", 550, "5.7.1"), v


def test_rspamd_gtube_held_when_configured(rspamd, tmp_path):
    v = scan(tmp_path, rspamd.url, message("offer", GTUBE), hold="reject")
    assert v["verdict"] == "hold" and "(held)" in v["reason"], v
    assert "X-Spam-Status: Yes" in v["headers"], v


def test_rspamd_plain_message_accepted(rspamd, tmp_path):
    v = scan(tmp_path, rspamd.url, message("lunch", "See you at noon."))
    assert v["rc"] == 0 and v["rspamd_action"] == "no action", v
    assert v["verdict"] == "accept" and v["headers"] == "", v


def test_rspamd_add_header_accepts_with_spam_headers(rspamd, tmp_path):
    v = scan(tmp_path, rspamd.url, message("deal MOAT-ADD-HEADER", "Cheap."))
    assert v["rspamd_action"] == "add header" and v["verdict"] == "accept", v
    assert "X-Spam-Status: Yes, score=7.00" in v["headers"], v
    assert "X-Spam-Score: 7.00\r\n" in v["headers"], v
    held = scan(tmp_path, rspamd.url, message("deal MOAT-ADD-HEADER", "Cheap."), hold="add_header")
    assert held["verdict"] == "hold", held


def test_rspamd_greylist_is_tempfail(rspamd, tmp_path):
    v = scan(tmp_path, rspamd.url, message("hi MOAT-GREYLIST", "Later."))
    assert v["rspamd_action"] == "greylist", v
    assert (v["verdict"], v["code"], v["dsn"]) == ("tempfail", 451, "4.7.1"), v


def test_rspamd_unreachable_tempfail_or_accept(tmp_path):
    dead = f"http://127.0.0.1:{moatlib.free_port()}"   # nothing listens there
    v = scan(tmp_path, dead, message("lunch", "noon"))
    assert v["rc"] == -1 and (v["verdict"], v["code"], v["dsn"]) == ("tempfail", 451, "4.7.0"), v
    v = scan(tmp_path, dead, message("lunch", "noon"), unreachable="accept")
    assert v["verdict"] == "accept" and "accepted unscanned" in v["reason"], v


def test_rspamd_silent_server_times_out(tmp_path):
    # accepts the connection, never answers: bounded by the timeout
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    try:
        t0 = time.monotonic()
        v = scan(tmp_path, f"http://127.0.0.1:{srv.getsockname()[1]}", message("a", "b"), timeout=1)
        assert time.monotonic() - t0 < 8
        assert v["rc"] == -1 and v["verdict"] == "tempfail" and "imeout" in v["why"], v
    finally:
        srv.close()


def test_rspamd_stopped_then_tempfail(tmp_path, rspamd):
    # the real daemon, stopped: its port refuses; started again: scans again
    rspamd.stop()
    try:
        v = scan(tmp_path, rspamd.url, message("lunch", "noon"))
        assert v["verdict"] == "tempfail" and v["code"] == 451, v
    finally:
        rspamd.start()
    v = scan(tmp_path, rspamd.url, message("lunch", "noon"))
    assert v["rc"] == 0 and v["verdict"] == "accept", v


def smtp_send(m, src, msg, sender="someone@ext.example", rcpt="alice@example.com"):
    """One whole transaction from src; (the final reply's code, its text)."""
    c = smtplib.SMTP(m.host, m.port, timeout=60, source_address=(src, 0))
    try:
        c.ehlo("client.ext.example")
        assert c.mail(sender)[0] == 250
        assert c.rcpt(rcpt)[0] == 250
        try:
            code, text = c.data(msg.encode())
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error
        c.quit()
        return code, text.decode()
    finally:
        c.close()


def test_rspamd_through_smtp(moatd, sink, rspamd):
    """moatd's content stage asks the real rspamd at end of DATA: GTUBE is
    refused at the final dot, a plain message is delivered with the verdict
    header, and a permitted sender is not scanned at all"""
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"}, opts={"rspamd_url": rspamd.url})
    code, text = smtp_send(m, "127.0.0.2", message("offer", GTUBE))
    assert code == 550 and "5.7.1" in text, (code, text)
    marker = new_marker()
    code, text = smtp_send(m, "127.0.0.2", message("lunch", f"See you at noon. {marker}"))
    assert code == 250, (code, text)
    got = s.wait_marker(marker)
    assert "X-Moat-Verdict: accept" in got.text and "rspamd" in got.text, got.text
    # a permitted sender skips spam scoring (never anti-spoofing or DMARC)
    assert m.cli("permitted", "add", "friend@ext.example", check=0).returncode == 0
    time.sleep(0.3)
    code, text = smtp_send(m, "127.0.0.2", message("offer", GTUBE), sender="friend@ext.example")
    assert code == 250, (code, text)
    # rspamd gone: tempfail by default, nothing accepted
    with_down = moatd(domains={"example.com": f"127.0.0.1:{s.port}"},
                      opts={"rspamd_url": "http://127.0.0.1:9/", "rspamd_timeout": "2s"})
    code, text = smtp_send(with_down, "127.0.0.2", message("lunch", "hello"))
    assert code == 451 and "4.7.0" in text, (code, text)
