"""Issue 11: /metrics (Prometheus text format 0.0.4) against one real moatd.

One moatd for the module, started with metrics_allow=127.0.0.2/32, so the
same daemon shows both sides of the access control: scrapes from 127.0.0.2
are allowed by address, scrapes from 127.0.0.1 need the metrics token.

The traffic test scrapes before and after known SMTP traffic (accepted mail
delivered to smtp-sink, one STARTTLS, recipients refused at RCPT, one
message deferred to a closed port) and asserts the deltas exactly.  The
message counters (transactions, rejections, deliveries, sizes, latency)
are fed by the tracking events of issue 11B: they pass once that work is
merged.  Connections, STARTTLS, the queue gauges and the access control do
not depend on it.
"""

import http.client
import json
import re
import smtplib
import ssl
import subprocess

import pytest

import moatlib
from moatlib import Moatd, Sink, make_message, wait_until

SERIES_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                       r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (\S+)$')
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_exposition(text):
    """{series: value} of the exposition; every line must be HELP, TYPE or a sample
    of the family last typed, and each family is typed once."""
    samples, typed, family = {}, set(), None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in typed, f"{name} typed twice"
            typed.add(name)
            family = name
            continue
        m = SERIES_RE.match(line)
        assert m, f"not a sample line: {line!r}"
        assert family and m.group(1).startswith(family), f"{line!r} outside its family {family}"
        series = m.group(1) + (m.group(2) or "")
        assert series not in samples, f"{series} twice"
        samples[series] = float(m.group(3))
    return samples


def get(m, path="/metrics", source="127.0.0.2", token=None):
    """(status, headers, body text) of GET path from the given loopback source address."""
    c = http.client.HTTPConnection("127.0.0.1", m.http_port, timeout=10,
                                   source_address=(source, 0))
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        c.close()


def scrape(m, **kw):
    status, ctype, body = get(m, **kw)
    assert status == 200, body
    assert ctype == CONTENT_TYPE
    return parse_exposition(body)


@pytest.fixture(scope="module")
def world(tmp_path_factory, unbound):
    d = tmp_path_factory.mktemp("metrics")
    moatlib._ensure_world_traversable(d)
    s = Sink(d).start()
    closed = moatlib.free_port()
    # retry_schedule 1h: the deferred message is tried exactly once during the test
    m = Moatd(d, unbound.port, opts={"metrics_allow": "127.0.0.2/32", "retry_schedule": "1h"})
    m.pending += [["domain", "add", "example.com", "--trust-unverified"],
                  ["route", "set", "example.com", f"127.0.0.1:{s.port}"],
                  ["domain", "add", "example.net", "--trust-unverified"],
                  ["route", "set", "example.net", f"127.0.0.1:{closed}"]]
    try:
        m.start()
        yield m, s
    except BaseException:
        print(m.log_tail(80))
        raise
    finally:
        if m.running:
            m.stop()
        s.stop()


def delta(after, before, series):
    assert series in after, f"{series} missing from the exposition"
    return after[series] - before.get(series, 0)


def family_sum(samples, prefix):
    return sum(v for k, v in samples.items() if k.startswith(prefix))


def send_one(m, rcpt, tls=False, subject="metrics"):
    c = smtplib.SMTP(m.host, m.port, timeout=30)
    try:
        c.ehlo("client.ext.test")
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            code, resp = c.starttls(context=ctx)
            assert code == 220, resp
            c.ehlo("client.ext.test")
        msg = make_message(subject=subject, to=rcpt)
        c.sendmail("sender@ext.test", [rcpt], msg.encode())
        c.quit()
        return len(msg)
    finally:
        c.close()


def test_scrape_deltas(world):
    m, sink = world
    before = scrape(m)
    assert before["moat_start_time_seconds"] > 1.7e9
    # every known series is there from the start, at zero if nothing happened
    assert "moat_smtp_rejections_total{stage=\"rcpt\",reason=\"relay_control\"}" in before
    assert "moat_deliveries_total{role=\"inbound\",result=\"deferred\"}" in before

    # three accepted messages, one of them over STARTTLS, three connections
    sizes = [send_one(m, "alice@example.com", tls=True), send_one(m, "alice@example.com"),
             send_one(m, "bob@example.com")]
    # a fourth connection: two recipients outside the internal domains, refused at RCPT
    c = smtplib.SMTP(m.host, m.port, timeout=30)
    c.ehlo("client.ext.test")
    assert c.mail("sender@ext.test")[0] == 250
    for r in ("x@elsewhere.example", "y@nowhere.example"):
        code, resp = c.rcpt(r)
        assert code == 550, resp
    c.rset()
    c.quit()
    c.close()
    sink.wait_count(3)

    def closed():
        a = scrape(m)
        return a if a["moat_smtp_connections"] == 0 else None
    after = wait_until(closed, 15, what="the sessions closed")
    assert delta(after, before, "moat_smtp_connections_total") == 4
    assert delta(after, before, 'moat_tls_inbound_total{version="TLSv1.3"}') == 1
    assert family_sum(after, "moat_tls_inbound_total") - family_sum(before, "moat_tls_inbound_total") == 1

    # message counters: fed by the tracking events (issue 11B)
    def delivered():
        a = scrape(m)
        return a if delta(a, before, 'moat_deliveries_total{role="inbound",result="delivered"}') >= 3 else None
    after = wait_until(delivered, 15, what="3 deliveries counted")
    assert delta(after, before, 'moat_smtp_transactions_total{role="inbound",outcome="accepted"}') == 3
    assert (family_sum(after, "moat_smtp_transactions_total")
            - family_sum(before, "moat_smtp_transactions_total")) == 3
    assert delta(after, before,
                 'moat_smtp_rejections_total{stage="rcpt",reason="relay_control"}') == 2
    assert (family_sum(after, "moat_smtp_rejections_total")
            - family_sum(before, "moat_smtp_rejections_total")) == 2
    assert delta(after, before, 'moat_deliveries_total{role="inbound",result="delivered"}') == 3
    assert (family_sum(after, "moat_tls_outbound_total")
            - family_sum(before, "moat_tls_outbound_total")) == 3
    assert delta(after, before, "moat_message_size_bytes_count") == 3
    assert delta(after, before, "moat_message_size_bytes_sum") >= sum(sizes)
    assert delta(after, before, 'moat_message_size_bytes_bucket{le="1024"}') == 3
    assert delta(after, before, "moat_delivery_latency_seconds_count") == 3
    assert delta(after, before, 'moat_delivery_latency_seconds_bucket{le="+Inf"}') == 3
    assert after["moat_queue_messages"] == 0
    assert after["moat_queue_oldest_seconds"] == 0

    # one message for a route nobody listens on: deferred once, then it waits in the queue
    send_one(m, "carol@example.net")

    def deferred():
        a = scrape(m)
        return a if delta(a, after, 'moat_deliveries_total{role="inbound",result="deferred"}') >= 1 else None
    later = wait_until(deferred, 15, what="the deferral counted")
    assert delta(later, after, 'moat_deliveries_total{role="inbound",result="deferred"}') == 1
    assert later["moat_queue_messages"] == 1
    assert 0 <= later["moat_queue_oldest_seconds"] < 60
    # no connection was made: no TLS outcome to count
    assert family_sum(later, "moat_tls_outbound_total") == family_sum(after, "moat_tls_outbound_total")


def test_access_control(world):
    m, _ = world
    # 127.0.0.1 is outside metrics_allow=127.0.0.2/32
    status, ctype, body = get(m, source="127.0.0.1")
    assert status == 403
    assert ctype == "application/json"
    err = json.loads(body)["error"]
    assert err["code"] == "forbidden" and err["field"] == "Authorization"
    assert "metrics_allow" in err["message"]
    # a wrong token, and an API token, are not the metrics token
    assert get(m, source="127.0.0.1", token="moat_metrics_" + "A" * 43)[0] == 403
    assert get(m, source="127.0.0.1", token=m.token)[0] == 403
    # from an allowed address any Authorization header is ignored
    assert get(m, source="127.0.0.2", token=m.token)[0] == 200

    # `moat metrics token`: shown once, then it opens /metrics from anywhere
    r = m.cli("metrics", "token", check=0)
    tok = re.search(r"moat_metrics_[A-Za-z0-9_-]{43}", r.stdout).group(0)
    assert "moat_smtp_connections_total" in scrape(m, source="127.0.0.1", token=tok)
    # the store keeps only its hash
    db = (m.state_dir / "moat.db").read_bytes()
    wal = m.state_dir / "moat.db-wal"
    if wal.exists():
        db += wal.read_bytes()
    assert tok.encode() not in db and tok[len("moat_metrics_"):].encode() not in db
    # a new token replaces the old one
    r = m.cli("metrics", "token", json_out=True, check=0)
    tok2 = r.json["token"]
    assert tok2 != tok
    assert get(m, source="127.0.0.1", token=tok)[0] == 403
    assert get(m, source="127.0.0.1", token=tok2)[0] == 200
    # without valid credentials no token is made
    r = m.cli("metrics", "token", token="moat_1_" + "A" * 43)
    assert r.returncode != 0


def test_bad_metrics_allow_is_refused(tmp_path):
    cc = subprocess.run([str(moatlib.MOATD), "--check-config", "--state-dir", str(tmp_path),
                         "-o", "metrics_allow=127.0.0.0/8,10.0.0.1/33"],
                        capture_output=True, text=True, timeout=30)
    assert cc.returncode == 78
    assert cc.stderr.startswith("moatd: metrics_allow: ")
    assert "prefix length" in cc.stderr
