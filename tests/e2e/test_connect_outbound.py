"""End-to-end tests of Connect's outbound task against real peers: a real
unbound serving the SPF and DKIM records the tests publish and the MX of an
external domain, an smtp-sink standing for the other organisation's server,
and moatd's own listener probed from an authorised and an unauthorised
loopback address (127.0.0.1 and 127.0.0.2 on Linux are both local).

Run: MOAT_BUILD_DIR=... /usr/bin/python3 -m pytest tests/e2e/test_connect_outbound.py
"""

import time

import pytest

from api_fixtures import api_moatd  # noqa: F401  (fixture)
from connect_fixtures import peers  # noqa: F401  (fixture)

MOAT_IPS = ["192.0.2.10", "2001:db8::25"]


@pytest.fixture
def outbound(api_moatd, peers):
    """moatd with an internal domain acme.example, and partner.example outside
    whose MX points at an smtp-sink on loopback (delivery_port)"""
    sink = peers.sink()
    u = peers.unbound(["acme.example", "partner.example"])
    u.set("partner.example", "MX", "10 mx.partner.example.")
    u.set("mx.partner.example", "A", "127.0.0.1")
    m = api_moatd(opts={"resolver": u.resolver, "delivery_port": str(sink.port)})
    r = m.admin().request("PATCH", "/api/v1/organisation", body={
        "environment": "smtp", "name": "Acme", "contact_name": "Ops",
        "contact_email": "ops@outside.example", "public_hosts": ["mx1.moat.example"],
        "public_ips": MOAT_IPS})
    assert r.status == 200, r
    r = m.admin().post("/api/v1/domains", {"name": "acme.example", "trust_unverified": True})
    assert r.status == 201, r
    return m, u, sink


def check(m):
    r = m.admin().post("/api/v1/connect/outbound/check")
    assert r.status == 200, r
    return r.json


def legs(res):
    return {leg["leg"]: leg for leg in res["result"]["details"]["relay"]}


def test_nothing_authorised_fails(outbound):
    m, u, sink = outbound
    res = check(m)
    assert res["result"]["outcome"] == "fail", res
    assert "Nothing may relay" in res["result"]["message"]
    # the stranger is refused all the same: Moat is not an open relay
    s = legs(res)["stranger"]
    assert s["source"] == "127.0.0.1" and s["connected"] and not s["accepted"]
    assert s["reply"].startswith("550 5.7.1"), s


def test_relay_test_spf_pending_then_done(outbound):
    m, u, sink = outbound
    assert m.cli("outbound", "host", "add", "127.0.0.1/32").returncode == 0
    r = m.admin().request("PUT", "/api/v1/connect/outbound/input",
                          body={"test_recipient": "bob@partner.example"})
    assert r.status == 200, r
    res = check(m)
    # relaying works both ways, but no SPF record is published yet
    assert res["result"]["outcome"] == "pending", res
    assert res["state"] == "waiting"
    lg = legs(res)
    assert lg["stranger"]["source"] == "127.0.0.2"
    assert lg["stranger"]["reply"].startswith("550 5.7.1"), lg
    assert lg["authorised"]["source"] == "127.0.0.1" and lg["authorised"]["accepted"], lg
    spf = {d["domain"]: d for d in res["result"]["details"]["spf"]}
    assert spf["acme.example"]["status"] == "missing"
    assert spf["acme.example"]["publish"] == "v=spf1 ip4:192.0.2.10 ip6:2001:db8::25 ~all"
    # the test message really left through Moat to the other organisation's server
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
            b"Moat Connect: outbound test" in msg for msg in sink.messages()):
        time.sleep(0.2)
    got = [msg for msg in sink.messages() if b"Moat Connect: outbound test" in msg]
    assert got, "the test message was not delivered to partner.example's MX"
    assert b"bob@partner.example" in got[0]

    # an existing record without Moat: the merge keeps it and adds Moat before -all
    u.set("acme.example", "TXT", '"v=spf1 mx ip4:198.51.100.0/24 -all"')
    res = check(m)
    spf = {d["domain"]: d for d in res["result"]["details"]["spf"]}
    assert spf["acme.example"]["status"] == "incomplete"
    assert spf["acme.example"]["publish"] == \
        "v=spf1 mx ip4:198.51.100.0/24 ip4:192.0.2.10 ip6:2001:db8::25 -all"
    assert res["result"]["outcome"] == "pending"

    # publish what Moat asked for: the task is done
    u.set("acme.example", "TXT", f'"{spf["acme.example"]["publish"]}"')
    res = check(m)
    assert res["result"]["outcome"] == "pass", res
    assert res["state"] == "done"


def test_spf_covered_by_range_and_two_records(outbound):
    m, u, sink = outbound
    assert m.cli("outbound", "host", "add", "127.0.0.1/32").returncode == 0
    u.set("acme.example", "TXT", '"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all"')
    res = check(m)
    spf = res["result"]["details"]["spf"][0]
    assert spf["status"] == "ok" and spf["missing"] == [], spf
    # without a test recipient the authorised leg is a probe (MAIL and RCPT only)
    assert legs(res)["authorised"]["accepted"]
    assert res["result"]["outcome"] == "pass", res
    # two SPF records are an error receivers punish (RFC 7208 4.5)
    u.set("acme.example", "TXT", '"v=spf1 ip4:192.0.2.10 -all"', '"v=spf1 mx -all"')
    res = check(m)
    assert res["result"]["details"]["spf"][0]["status"] == "multiple"
    assert res["result"]["outcome"] == "pending"


def test_resolver_failure_is_unknown(outbound):
    m, u, sink = outbound
    assert m.cli("outbound", "host", "add", "127.0.0.1/32").returncode == 0
    u.set("acme.example", "TXT", '"v=spf1 ip4:192.0.2.10 ip6:2001:db8::25 -all"')
    assert check(m)["state"] == "done"
    u.deny("acme.example")
    res = check(m)
    assert res["result"]["outcome"] == "unknown", res
    assert res["state"] == "done"


def test_input_validation(outbound):
    m, u, sink = outbound
    a = m.admin()
    r = a.request("PUT", "/api/v1/connect/outbound/input", body={"test_recipient": "not-an-address"})
    assert r.status == 400 and r.error["field"] == "test_recipient", r
    r = a.request("PUT", "/api/v1/connect/outbound/input", body={"recipient": "a@b.example"})
    assert r.status == 400 and r.error["field"] == "recipient", r
    r = a.request("PUT", "/api/v1/connect/outbound/input", body={"test_sender": "a@acme.example"})
    assert r.status == 400 and r.error["field"] == "test_recipient", r
    # a recipient under the organisation's own domain never leaves through Moat
    assert m.cli("outbound", "host", "add", "127.0.0.1/32").returncode == 0
    out = m.cli("connect", "input", "outbound", "--test-recipient", "alice@acme.example")
    assert out.returncode == 0, out.stderr
    res = check(m)
    assert res["result"]["outcome"] == "fail"
    assert "under your own domain" in res["result"]["message"]


def test_instructions_follow_the_environment(outbound):
    m, u, sink = outbound
    t = m.admin().get("/api/v1/connect/outbound").json
    arts = {a["title"]: a["content"] for a in t["artefacts"]}
    assert "relayhost = [mx1.moat.example]:25" in arts["Postfix: send through Moat"]
    assert "ip4:192.0.2.10 ip6:2001:db8::25" in arts["SPF: the terms that authorise Moat"]


def test_dkim_record_must_be_published(outbound):
    m, u, sink = outbound
    assert m.cli("outbound", "host", "add", "127.0.0.1/32").returncode == 0
    u.set("acme.example", "TXT", '"v=spf1 ip4:192.0.2.10 ip6:2001:db8::25 -all"')
    r = m.admin().post("/api/v1/dkim/keys", {"domain": "acme.example", "selector": "s1",
                                             "algorithm": "ed25519"})
    assert r.status == 201, r
    value = r.json["dns_record"]["value"]
    res = check(m)
    dk = res["result"]["details"]["dkim"][0]
    assert dk["domain"] == "acme.example" and dk["status"] == "missing", dk
    assert res["result"]["outcome"] == "pending"
    # a record for another key: a mismatch, said so
    other = m.admin().post("/api/v1/dkim/keys", {"domain": "acme.example", "selector": "s0",
                                                 "algorithm": "ed25519", "activate": False})
    assert other.status == 201, other
    u.set("s1._domainkey.acme.example", "TXT", f'"{other.json["dns_record"]["value"]}"')
    res = check(m)
    dk = res["result"]["details"]["dkim"][0]
    assert dk["status"] == "mismatch" and dk["reason"], dk
    # the right record: done
    u.set("s1._domainkey.acme.example", "TXT", f'"{value}"')
    res = check(m)
    assert res["result"]["outcome"] == "pass", res
    assert "DKIM" in res["result"]["message"]
