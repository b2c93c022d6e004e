"""DANE for outbound delivery (RFC 7672) against a DNSSEC-signed zone.

knotd signs dane.example and bogus-dane.example; the session's unbound
forwards to it (stub zones); moatd's libunbound validates with the anchor
file (dns_trust_anchor_file).  Mail to a test domain is a DSN to an
external sender (the delivery engine's MX path): an internal route that
rejects the recipient makes moatd bounce to bill@<test domain>.  See
dnssec_fixtures.py for the zones and servers.

Policy: `moat tls policy add DOMAIN dane --fallback F --override` (the TLS
policy table; --override because the probe's verdict is not under test here).
"""

import json
import os
import subprocess

import pytest

from dnssec_fixtures import DaneWorld, have_knot
from moatlib import build_dir, make_message, new_marker, sanitizer_env, wait_until

# CI installs knot (scripts/bootstrap.sh): there a missing knotd fails, never skips
pytestmark = pytest.mark.skipif(not have_knot() and not os.environ.get("CI"),
                                reason="knot is not installed (scripts/bootstrap.sh)")


@pytest.fixture(scope="module")
def dane_world(tmp_path_factory, certs, unbound):
    w = DaneWorld(tmp_path_factory.mktemp("dane"), certs, unbound).start()
    yield w
    w.stop()


@pytest.fixture
def world(dane_world):
    dane_world.reset()
    return dane_world


def dane_moatd(moatd, sink, monkeypatch, world, policies, anchor=True):
    """moatd delivering to world's servers with policy dane for each {domain: fallback}."""
    rejecting = sink(args=["-f", "RCPT", "-B", "554 5.7.1 no thanks"], name="rejecting")
    opts = {"retry_schedule": "1s", "delivery_port": world.port}
    if anchor:
        opts["dns_trust_anchor_file"] = str(world.anchor)
    m = moatd(domains={"example.com": f"127.0.0.1:{rejecting.port}"}, opts=opts)
    for dom, fb in policies.items():
        r = m.cli("tls", "policy", "add", dom, "dane", "--fallback", fb, "--override")
        assert r.returncode == 0, f"moat tls policy add {dom} dane: {r!r}"
    return m


def bounce_to(m, domain):
    """Make moatd send a DSN to bill@domain (through domain's MX); returns the marker."""
    marker = new_marker()
    m.send(f"bill@{domain}", "alice@example.com", make_message(sender=f"bill@{domain}", marker=marker))
    return marker


def outcome(m, domain, timeout=20):
    """The first delivered/deferred/bounced event for bill@domain."""
    rcpt = f"<bill@{domain}>"

    def find():
        for e in m.events():
            if e.get("rcpt") == rcpt and e.get("event") in ("delivered", "deferred", "bounced"):
                return e
        return None
    return wait_until(find, timeout, what=f"a delivery outcome for bill@{domain}")


def dane_events(m, mx):
    return [e for e in m.events("dane") if e.get("mx") == mx]


def test_dane_ee_match_delivered(moatd, sink, monkeypatch, world):
    m = dane_moatd(moatd, sink, monkeypatch, world, {"ee.dane.example": "encrypt"})
    marker = bounce_to(m, "ee.dane.example")
    e = outcome(m, "ee.dane.example")
    assert e["event"] == "delivered", e
    assert e["tls"].startswith("TLS"), e
    assert dane_events(m, "mx-ee.dane.example")[0]["state"] == "required"
    verified = m.events("dane_verified")
    assert verified and verified[0]["tlsa"].startswith("DANE-EE(3) 1 1 depth=0"), verified
    assert len(world.server_a.messages) == 1
    frm, rcpts, content, tls = world.server_a.messages[0]
    assert rcpts == ["bill@ee.dane.example"] and tls
    assert marker.encode() in content


def test_tlsa_mismatch_deferred_nothing_sent(moatd, sink, monkeypatch, world):
    m = dane_moatd(moatd, sink, monkeypatch, world, {"mismatch.dane.example": "opportunistic"})
    bounce_to(m, "mismatch.dane.example")
    e = outcome(m, "mismatch.dane.example")
    assert e["event"] == "deferred", e
    assert e["code"].startswith("4"), e
    assert 'TLS policy "dane" for mismatch.dane.example: TLSA mismatch at mx-mm.dane.example' in e["diag"], e
    assert "4.7.5" in e["diag"], e
    # the handshake happened, but not one SMTP command over it, and never in clear
    assert world.server_b.messages == []
    assert world.server_b.tls_seen == 0
    assert not m.events("dane_verified")


def test_mismatch_at_one_mx_tries_the_next(moatd, sink, monkeypatch, world):
    """twomx: MX 10 mx-mm (TLSA mismatch), MX 20 mx-ee (match): delivered by mx-ee."""
    m = dane_moatd(moatd, sink, monkeypatch, world, {"twomx.dane.example": "opportunistic"})
    bounce_to(m, "twomx.dane.example")
    e = outcome(m, "twomx.dane.example")
    assert e["event"] == "delivered", e
    assert e["relay"].startswith("mx-ee.dane.example["), e
    assert world.server_b.messages == [] and world.server_b.tls_seen == 0
    assert len(world.server_a.messages) == 1


def test_dane_ta_delivered_when_name_matches(moatd, sink, monkeypatch, world):
    m = dane_moatd(moatd, sink, monkeypatch, world, {"ta.dane.example": "opportunistic"})
    bounce_to(m, "ta.dane.example")
    e = outcome(m, "ta.dane.example")
    assert e["event"] == "delivered", e
    verified = m.events("dane_verified")
    assert verified and verified[0]["tlsa"].startswith("DANE-TA(2) 0 1 depth=1"), verified
    assert len(world.server_a.messages) == 1 and world.server_a.messages[0][3]


@pytest.mark.parametrize("domain, mx, base, tlsa", [
    ("alias.dane.example", "mx-alias.dane.example", "mx-ee.dane.example", "DANE-EE(3) 1 1 depth=0"),
    # DANE-TA: the certificate names the CNAME target (the TLSA base domain), not the alias
    ("aliasta.dane.example", "mx-alias-ta.dane.example", "mx-ta.dane.example", "DANE-TA(2) 0 1 depth=1"),
    # the target has no TLSA records: the MX host name's apply
    ("aliasown.dane.example", "mx-own.dane.example", "mx-own.dane.example", "DANE-EE(3) 1 1 depth=0"),
])
def test_cname_mx_host_tlsa_base_domain(moatd, sink, monkeypatch, world, domain, mx, base, tlsa):
    m = dane_moatd(moatd, sink, monkeypatch, world, {domain: "opportunistic"})
    bounce_to(m, domain)
    e = outcome(m, domain)
    assert e["event"] == "delivered", e
    ev = dane_events(m, mx)
    assert ev[0]["state"] == "required" and ev[0]["base"] == base, ev
    verified = m.events("dane_verified")
    assert verified and verified[0]["tlsa"] == tlsa, verified


def test_dane_ta_name_mismatch_deferred(moatd, sink, monkeypatch, world):
    """DANE-TA(2) needs the MX host's name in the certificate (RFC 7672 3.2.2)."""
    m = dane_moatd(moatd, sink, monkeypatch, world, {"taname.dane.example": "opportunistic"})
    bounce_to(m, "taname.dane.example")
    e = outcome(m, "taname.dane.example")
    assert e["event"] == "deferred", e
    assert "TLSA mismatch at mx-tn.dane.example" in e["diag"], e
    assert world.server_a.messages == [] and world.server_a.tls_seen == 0


def test_secure_denial_of_tlsa_uses_fallback(moatd, sink, monkeypatch, world):
    m = dane_moatd(moatd, sink, monkeypatch, world, {"notlsa.dane.example": "encrypt"})
    bounce_to(m, "notlsa.dane.example")
    e = outcome(m, "notlsa.dane.example")
    assert e["event"] == "delivered", e
    assert e["tls"].startswith("TLS"), e      # the fallback: encrypt
    ev = dane_events(m, "mx-nt.dane.example")
    # _PORT._tcp.mx-nt does not exist: a validated NXDOMAIN
    assert ev[0]["state"] == "not-applicable" and "(secure nxdomain)" in ev[0]["why"], ev
    assert not m.events("dane_verified")


def test_insecure_zone_falls_back_and_ignores_its_tlsa(moatd, sink, monkeypatch, world):
    """plain-dane.example is unsigned; its TLSA record (matching nothing) must not be used."""
    m = dane_moatd(moatd, sink, monkeypatch, world, {"plain-dane.example": "opportunistic"})
    bounce_to(m, "plain-dane.example")
    e = outcome(m, "plain-dane.example")
    assert e["event"] == "delivered", e
    ev = dane_events(m, "mx.plain-dane.example")
    assert ev[0]["state"] == "not-applicable" and "insecure" in ev[0]["why"], ev
    assert len(world.server_a.messages) == 1


def test_bogus_zone_deferred_never_clear(moatd, sink, monkeypatch, world):
    m = dane_moatd(moatd, sink, monkeypatch, world, {"bogus-dane.example": "opportunistic"})
    bounce_to(m, "bogus-dane.example")
    e = outcome(m, "bogus-dane.example")
    assert e["event"] == "deferred", e
    assert "DNSSEC validation failed" in e["diag"] or "bogus" in e["diag"], e
    assert world.server_a.messages == [] and world.server_a.tls_seen == 0


def test_unusable_tlsa_requires_encryption(moatd, sink, monkeypatch, world):
    """Only PKIX-EE(1) records: TLS is mandatory, unauthenticated (RFC 7672 2.2);
    the server offers no STARTTLS, so nothing is sent."""
    m = dane_moatd(moatd, sink, monkeypatch, world, {"pkix.dane.example": "opportunistic"})
    bounce_to(m, "pkix.dane.example")
    e = outcome(m, "pkix.dane.example")
    assert e["event"] == "deferred", e
    assert e["diag"].startswith('451 4.7.4 TLS policy "dane" for pkix.dane.example:'), e
    assert "STARTTLS" in e["diag"], e
    assert dane_events(m, "mx-px.dane.example")[0]["state"] == "encrypt-only"
    assert world.server_c.messages == []


def test_without_trust_anchor_dane_never_applies(moatd, sink, monkeypatch, world):
    """The default (no dns_trust_anchor_file): nothing validates, the fallback is used."""
    m = dane_moatd(moatd, sink, monkeypatch, world, {"ee.dane.example": "opportunistic"}, anchor=False)
    bounce_to(m, "ee.dane.example")
    e = outcome(m, "ee.dane.example")
    assert e["event"] == "delivered", e
    ev = dane_events(m, "mx-ee.dane.example")
    assert ev[0]["state"] == "not-applicable" and "insecure" in ev[0]["why"], ev
    assert not m.events("dane_verified")


def test_bad_trust_anchor_file_refused_at_start(moatd, workdir):
    m = moatd(opts={"dns_trust_anchor_file": str(workdir / "missing.ds")}, start=False)
    m.start(wait=False)
    assert m.wait_exit() != 0
    assert "dns_trust_anchor_file" in m.log_text()


def probe(world, domain):
    """deliver_dane_probe through its test driver (build/tests/unit/dane_probe)"""
    cp = subprocess.run([str(build_dir() / "tests" / "unit" / "dane_probe"),
                         f"127.0.0.1:{world.unbound.port}", str(world.anchor), str(world.port), domain],
                        capture_output=True, text=True, timeout=60, env=sanitizer_env())
    return cp.returncode, (json.loads(cp.stdout) if cp.stdout.strip() else None), cp.stderr


@pytest.mark.parametrize("domain, mx, result", [
    ("ee.dane.example", "mx-ee.dane.example", "TLSA match"),
    ("ta.dane.example", "mx-ta.dane.example", "TLSA match"),
    ("mismatch.dane.example", "mx-mm.dane.example", "TLSA mismatch"),
    ("taname.dane.example", "mx-tn.dane.example", "TLSA mismatch"),
    ("notlsa.dane.example", "mx-nt.dane.example", "insecure: fallback"),
    ("plain-dane.example", "mx.plain-dane.example", "insecure: fallback"),
    ("pkix.dane.example", "mx-px.dane.example", "encrypt only"),
])
def test_probe_reports_per_mx(world, domain, mx, result):
    rc, rows, err = probe(world, domain)
    assert rc == 0, (rows, err)
    assert [(r["mx"], r["result"]) for r in rows] == [(mx, result)], rows
    if result == "TLSA match":
        assert world.server_a.tls_seen == 1     # STARTTLS, EHLO, then QUIT: no mail
        assert world.server_a.messages == []
    if result == "TLSA mismatch":
        assert "4.7.5 TLSA mismatch" in rows[0]["detail"], rows


def test_probe_bogus_zone(world):
    rc, rows, err = probe(world, "bogus-dane.example")
    assert rc == 1, (rows, err)     # the MX lookup itself is bogus: no MX host
    assert "bogus" in json.dumps(rows), rows


def test_policy_is_probed_before_it_is_enforced(moatd, world):
    """moat tls policy add ... dane: the TLSA verdict of each MX decides; a
    mismatch is refused (409, report-only) unless overridden, audited"""
    opts = {"delivery_port": world.port, "dns_trust_anchor_file": str(world.anchor)}
    m = moatd(domains={"example.com": None}, opts=opts)
    ok = m.cli("tls", "policy", "add", "ee.dane.example", "dane", "--json")
    assert ok.returncode == 0, ok
    pol = json.loads(ok.stdout)
    assert pol["enforced"] is True and pol["probe"]["verdict"] == "strict", pol
    assert pol["probe"]["details"]["mx"][0]["dane"] == "TLSA match", pol
    bad = m.cli("tls", "policy", "add", "mismatch.dane.example", "dane")
    assert bad.returncode != 0
    assert "TLSA mismatch" in bad.stdout + bad.stderr, bad
    # nothing was said over the unauthenticated TLS session of the probe
    assert world.server_b.tls_seen == 0
    shown = json.loads(m.cli("tls", "policy", "show", "mismatch.dane.example", "--json").stdout)
    assert shown["enforced"] is False
    forced = m.cli("tls", "policy", "add", "mismatch.dane.example", "dane", "--override")
    assert forced.returncode == 0, forced
    assert "tls_policy.override" in m.cli("audit", "--json").stdout
