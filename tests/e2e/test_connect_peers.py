"""End-to-end tests of Connect's domains, inbound, mx and lockdown checks
against real peers (connect_fixtures.py): a real unbound whose data the
tests change through unbound-control, smtp-sink, private Postfix instances
with and without STARTTLS.  moatd resolves through the test unbound
(-o resolver=...) and trusts the test CA through SSL_CERT_FILE.

Run: MOAT_BUILD_DIR=... /usr/bin/python3 -m pytest tests/e2e/test_connect_peers.py
"""

import json

import pytest

from api_fixtures import api_moatd  # noqa: F401  (fixture)
from connect_fixtures import peers, test_ca  # noqa: F401  (fixtures)

MOAT_HOSTS = ["mx1.moat.example", "mx2.moat.example"]


def org(m, **kw):
    body = {"environment": "exchange", "name": "Acme", "contact_name": "Ops",
            "contact_email": "ops@outside.example", "public_hosts": MOAT_HOSTS,
            "public_ips": ["192.0.2.10", "192.0.2.11"]}
    body.update(kw)
    r = m.admin().request("PATCH", "/api/v1/organisation", body=body)
    assert r.status == 200, r


def check(m, task):
    r = m.admin().post(f"/api/v1/connect/{task}/check")
    assert r.status == 200, r
    return r.json


def task(m, name):
    r = m.admin().get(f"/api/v1/connect/{name}")
    assert r.status == 200, r
    return r.json


def domain(m, name):
    r = m.admin().get(f"/api/v1/domains/{name}")
    assert r.status == 200, r
    return r.json


@pytest.fixture
def moat(api_moatd, peers, monkeypatch):
    """a started moatd resolving through a fresh unbound serving the test zones"""
    def make(zones, ca=None, **opts):
        u = peers.unbound(zones)
        if ca is not None:
            # OpenSSL's default verify paths honour SSL_CERT_FILE: moatd trusts the test CA
            monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        m = api_moatd(opts={"resolver": u.resolver, **opts})
        return m, u
    return make


def test_domain_add_issues_token_and_txt_record(moat):
    m, u = moat(["acme.example"])
    org(m)
    r = m.admin().post("/api/v1/domains", {"name": "Acme.Example"})
    assert r.status == 201, r
    d = r.json
    assert d["status"] == "pending" and d["verified"] is False
    assert len(d["token"]) == 32
    assert d["txt_record"] == {"name": "acme.example", "type": "TXT",
                               "value": f"moat-verification={d['token']}"}
    # a domain cannot be added twice
    assert m.admin().post("/api/v1/domains", {"name": "acme.example"}).status == 409
    # the CLI prints the record to publish, and the status
    out = m.cli("domain", "add", "beta.example")
    assert out.returncode == 0, out.stderr
    assert "moat-verification=" in out.stdout and "TXT" in out.stdout
    out = m.cli("domain", "list")
    assert "pending" in out.stdout


def test_domains_todo_waiting_done_and_subdomains(moat):
    m, u = moat(["acme.example"])
    org(m)
    tok = m.admin().post("/api/v1/domains", {"name": "acme.example"}).json["token"]
    assert task(m, "domains")["state"] in ("todo", "locked")
    res = check(m, "domains")
    assert res["result"]["outcome"] == "pending"
    assert res["state"] == "waiting"
    # the record appears: verify now through the API
    u.set("acme.example", "TXT", f'"moat-verification={tok}"')
    r = m.admin().post("/api/v1/domains/acme.example/verify")
    assert r.status == 200, r
    assert r.json["status"] == "verified" and r.json["verified_at"]
    assert task(m, "domains")["state"] == "done"
    # a subdomain of a verified domain needs no proof
    r = m.admin().post("/api/v1/domains", {"name": "mail.acme.example"})
    assert r.status == 201 and r.json["status"] == "verified", r


def test_resolver_down_is_unknown_and_changes_nothing(moat):
    m, u = moat(["acme.example", "beta.example"])
    org(m)
    m.admin().post("/api/v1/domains", {"name": "acme.example"})
    assert check(m, "domains")["state"] == "waiting"
    u.stop()
    res = check(m, "domains")
    assert res["result"]["outcome"] == "unknown", res
    assert res["state"] == "waiting"
    assert domain(m, "acme.example")["status"] == "pending"


def test_trust_unverified_is_audited_and_warned(moat):
    m, u = moat(["lab.example"])
    org(m)
    r = m.admin().post("/api/v1/domains", {"name": "lab.example", "trust_unverified": True})
    assert r.status == 201 and r.json["status"] == "trusted_unverified", r
    assert m.admin().post("/api/v1/domains", {"name": "x.example",
                                              "trust_unverified": "yes"}).status == 400
    audit = m.admin().get("/api/v1/audit?action=domain.add_trusted_unverified").json["items"]
    assert [a["target"] for a in audit] == ["lab.example"]
    res = check(m, "domains")
    assert res["result"]["outcome"] == "pass"
    assert "warning" in res["result"]["message"].lower()
    out = m.cli("domain", "add", "lab2.example", "--trust-unverified")
    assert out.returncode == 0 and "WARNING" in out.stdout, out


def test_mx_found_versus_expected_and_since(moat):
    m, u = moat(["acme.example"])
    org(m)
    m.admin().post("/api/v1/domains", {"name": "acme.example", "trust_unverified": True})
    u.set("acme.example", "MX", "10 mail.acme.example.")
    res = check(m, "mx")["result"]
    assert res["outcome"] == "pending", res
    d = res["details"]["domains"][0]
    assert d["found"] == [{"preference": 10, "host": "mail.acme.example"}]
    assert d["not_moat"] == ["mail.acme.example"] and d["missing"] == MOAT_HOSTS
    assert domain(m, "acme.example")["mx_only_moat_since"] is None
    u.set("acme.example", "MX", "10 mx1.moat.example.", "20 mx2.moat.example.")
    res = check(m, "mx")
    assert res["result"]["outcome"] == "pass", res
    since = domain(m, "acme.example")["mx_only_moat_since"]
    assert since
    was_done = res["state"] == "done"
    state = res["state"]
    # resolver trouble: unknown, and nothing changes.  Last in this test:
    # libunbound keeps a forwarder that answered REFUSED marked as failing
    # for a while, so the zone is not handed back afterwards.
    u.deny("acme.example")
    res = check(m, "mx")
    assert res["result"]["outcome"] == "unknown", res
    assert res["state"] == state
    assert domain(m, "acme.example")["mx_only_moat_since"] == since


def test_mx_changed_back_is_noticed(moat):
    m, u = moat(["acme.example"])
    org(m)
    m.admin().post("/api/v1/domains", {"name": "acme.example", "trust_unverified": True})
    u.set("acme.example", "MX", "10 mx1.moat.example.", "20 mx2.moat.example.")
    res = check(m, "mx")
    assert res["result"]["outcome"] == "pass", res
    was_done = res["state"] == "done"
    # MX changed back: no longer only Moat
    u.set("acme.example", "MX", "10 mail.acme.example.")
    res = check(m, "mx")
    assert res["result"]["outcome"] == "pending"
    assert domain(m, "acme.example")["mx_only_moat_since"] is None
    if was_done:
        assert res["state"] == "attention"
    # the instructions name Moat's hosts, never placeholders
    ins = json.dumps(task(m, "mx"))
    assert "acme.example. 3600 IN MX 10 mx1.moat.example." in ins


def test_inbound_tls_classes_and_test_message(moat, peers, test_ca):
    m, u = moat(["acme.example"], ca=test_ca.ca)
    org(m)
    sink = peers.sink()
    relaxed = peers.postfix("relaxed.example", ["alice@relaxed.example"],
                            tls=(test_ca.self_key, test_ca.self_crt))
    strict = peers.postfix("strict.example", ["bob@strict.example"],
                           tls=(test_ca.key, test_ca.chain))
    for name, p in (("sink.example", sink), ("relaxed.example", relaxed),
                    ("strict.example", strict)):
        assert m.admin().post("/api/v1/domains", {"name": name,
                                                  "trust_unverified": True}).status == 201
        r = m.admin().request("PUT", f"/api/v1/domains/{name}/route",
                              body={"host": "127.0.0.1", "port": p.port})
        assert r.status == 200, r
    res = check(m, "inbound")["result"]
    routes = {r["port"]: r for r in res["details"]["routes"]}
    assert routes[sink.port]["tls"] == "unsupported"
    assert "STARTTLS" in routes[sink.port]["tls_reason"]
    assert routes[relaxed.port]["tls"] == "relaxed"
    assert "not trusted" in routes[relaxed.port]["tls_reason"]
    assert routes[strict.port]["tls"] == "strict"
    assert res["outcome"] == "fail" and "test message" in res["message"]

    r = m.admin().request("PUT", "/api/v1/connect/inbound/input",
                          body={"test_address": "bob@strict.example"})
    assert r.status == 200, r
    res = check(m, "inbound")
    assert res["result"]["outcome"] == "pass", res
    assert res["state"] == "done"
    msgs = strict.mailbox("bob@strict.example")
    assert msgs and b"Moat Connect" in msgs[0]

    # a mailbox the route does not know: the route's 550 is shown
    m.admin().request("PUT", "/api/v1/connect/inbound/input",
                      body={"test_address": "nobody@strict.example"})
    res = check(m, "inbound")["result"]
    assert res["outcome"] == "fail" and "550 5.1.1" in res["message"]
    # bad input names the field
    r = m.admin().request("PUT", "/api/v1/connect/inbound/input", body={"test_address": "x"})
    assert r.status == 400 and r.error.get("field") == "test_address"


def test_lockdown_probe_refused_and_not(moat, peers):
    m, u = moat(["acme.example"])
    refusing = peers.postfix("acme.example", ["alice@acme.example"], refuse=["127.0.0.3"])
    org(m, environment="smtp")
    m.admin().post("/api/v1/domains", {"name": "acme.example", "trust_unverified": True})
    m.admin().request("PUT", "/api/v1/domains/acme.example/route",
                      body={"host": "127.0.0.1", "port": refusing.port})
    res = check(m, "lockdown")["result"]
    assert res["outcome"] == "pass" and "no probe source" in res["message"].lower()
    org(m, environment="smtp", probe_source="127.0.0.3")
    res = check(m, "lockdown")["result"]
    assert res["outcome"] == "pass", res
    assert "554" in res["details"]["routes"][0]["message"]
    open_pf = peers.postfix("acme.example", ["alice@acme.example"])
    m.admin().request("PUT", "/api/v1/domains/acme.example/route",
                      body={"host": "127.0.0.1", "port": open_pf.port})
    res = check(m, "lockdown")["result"]
    assert res["outcome"] == "fail" and "127.0.0.3" in res["message"], res
    ins = json.dumps(task(m, "lockdown"))
    assert "192.0.2.10" in ins and "check_client_access" in ins
