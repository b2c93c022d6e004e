"""Outbound TLS policies (issue 6): delivery per policy, "tested before
enforced" probes (API and CLI), route probes, and Connect's tls_policies task.

Peers, all on loopback: python3-aiosmtpd servers with and without STARTTLS
(certificates from the test CA naming their MX host, a self-signed one, one
naming another host) bound to 127.0.0.x on one port, which is moatd's
delivery_port; a real Postfix with smtpd_tls for a verify case; a real
unbound (connect_fixtures) serving MX and A records set at run time.  moatd
trusts the test CA through the tls_ca_file setting.

Mail towards an external domain is produced the way the current build can:
a message from sender@<external domain> to an internal recipient whose
mail server refuses it permanently; the bounce (DSN) is delivered to the
external domain's MX under its TLS policy.

Run: MOAT_BUILD_DIR=... /usr/bin/python3 -m pytest -q tests/e2e/test_tls_policies.py
"""

import json
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from api_fixtures import api_moatd  # noqa: F401  (fixture)
from connect_fixtures import peers, test_ca, free_port  # noqa: F401  (fixtures)

ZONE = "tlsp.example"


def issue_cert(ca, names, ips=(), tag=None):
    """a server certificate from the test CA for names (DNS) and ips; (key, chain)"""
    tag = tag or names[0].replace(".", "_")
    d = Path(ca.dir)
    run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{tag}.key",
        "-out", f"{tag}.csr", "-subj", f"/CN={names[0]}")
    san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{i}" for i in ips])
    (d / f"{tag}.cnf").write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", f"{tag}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{tag}.crt", "-days", "30", "-extfile", f"{tag}.cnf")
    (d / f"{tag}.chain").write_bytes((d / f"{tag}.crt").read_bytes() + (d / "ca.crt").read_bytes())
    (d / f"{tag}.key").chmod(0o600)
    return d / f"{tag}.key", d / f"{tag}.chain"


class Peer:
    """aiosmtpd on host:port; tls = (key, chain) offers STARTTLS.  Records
    every DATA in .messages and every connection's commands in .commands."""

    def __init__(self, host, port, tls=None, max_tls12=False):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP
        self.host, self.port = host, port
        self.messages = []
        self.sessions = 0
        outer = self

        class Handler:
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                outer.sessions += 1
                session.host_name = hostname
                return responses

            async def handle_DATA(self, server, session, envelope):
                outer.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                       envelope.content, session.ssl is not None))
                return "250 2.0.0 Ok"

        ctx = None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[1]), str(tls[0]))
            if max_tls12:
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.controller = Controller(Handler(), hostname=host, port=port, tls_context=ctx,
                                     require_starttls=False, decode_data=False,
                                     ready_timeout=10)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()


class Refuser:
    """the organisation's mail server for example.com: refuses every recipient (5xx),
    so moatd bounces the message to its (external) sender"""

    def __init__(self):
        from aiosmtpd.controller import Controller
        self.port = free_port()

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, opts):
                return "550 5.1.1 no such user here"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()


@pytest.fixture
def world(api_moatd, peers, test_ca, request):
    """unbound serving ZONE, peers on delivery_port, a moatd trusting the test CA"""
    port = free_port()
    u = peers.unbound([ZONE])
    started = []

    def peer(ip, tls=None, **kw):
        p = Peer(ip, port, tls, **kw).start()
        started.append(p)
        return p

    refuser = Refuser().start()
    started.append(refuser)

    class W:
        pass
    w = W()
    w.port, w.u, w.ca, w.peer, w.refuser = port, u, test_ca, peer, refuser

    def moat(**opts):
        o = {"resolver": u.resolver, "delivery_port": port, "tls_ca_file": str(test_ca.ca),
             "retry_schedule": "1s", "delivery_timeout_connect": "3s"}
        o.update(opts)
        m = api_moatd(opts=o)
        a = m.admin()
        assert a.post("/api/v1/domains", {"name": "example.com", "trust_unverified": True}).status == 201
        r = a.request("PUT", "/api/v1/domains/example.com/route",
                      body={"host": "127.0.0.1", "port": refuser.port})
        assert r.status == 200, r
        w.m = m
        return m
    w.moat = moat

    def mx(domain, *hosts):
        """domain's MX: hosts = [(pref, name, ip)]"""
        w.u.set(domain, "MX", *[f"{p} {n}." for p, n, _ in hosts])
        for _, n, ip in hosts:
            if ip:
                w.u.set(n, "A", ip)
    w.mx = mx
    yield w
    for p in started:
        p.stop()


def bounce_via(m, sender_domain, marker):
    """a message from bill@sender_domain that example.com refuses: its DSN
    goes to sender_domain's MX"""
    msg = (f"From: bill@{sender_domain}\r\nTo: alice@example.com\r\n"
           f"Subject: {marker}\r\nMessage-ID: <{marker}@{sender_domain}>\r\n\r\n{marker}\r\n")
    with smtplib.SMTP("127.0.0.1", m.smtp_port, timeout=10) as c:
        c.ehlo("client.ext.test")
        c.sendmail(f"bill@{sender_domain}", ["alice@example.com"], msg)


def wait_for(pred, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def log_lines(m, needle):
    return [l for l in m.log_text().splitlines() if needle in l]


def add_policy(m, domain, mode, **kw):
    body = {"domain": domain, "mode": mode}
    body.update(kw)
    return m.admin().post("/api/v1/tls/policies", body)


def dsn_deferred_with(m, text):
    return [l for l in log_lines(m, "event=deferred") if "rcpt=<bill@" in l and text in l]


# --------------------------------------------------------------------------- delivery

def test_opportunistic_to_no_starttls_delivers(world):
    w = world
    plain = w.peer("127.0.0.2")
    w.mx("plain.tlsp.example", (10, "mx-plain.tlsp.example", "127.0.0.2"))
    m = w.moat()
    bounce_via(m, "plain.tlsp.example", "opp1")
    wait_for(lambda: plain.messages, what="the DSN at the plain peer")
    assert plain.messages[0][1] == ["bill@plain.tlsp.example"]
    assert plain.messages[0][3] is False   # in clear: no policy asked for more


def test_encrypt_to_no_starttls_defers_and_sends_nothing(world):
    w = world
    plain = w.peer("127.0.0.2")
    w.mx("plain.tlsp.example", (10, "mx-plain.tlsp.example", "127.0.0.2"))
    m = w.moat()
    r = add_policy(m, "plain.tlsp.example", "encrypt", override=True)
    assert r.status == 201, r
    assert r.json["enforced"] is True and r.json["override"] is True
    bounce_via(m, "plain.tlsp.example", "enc1")
    lines = wait_for(lambda: dsn_deferred_with(m, 'TLS policy \\"encrypt\\" for plain.tlsp.example'),
                     what="a deferral naming the policy")
    assert "4.7.5" in lines[0] and "mx-plain.tlsp.example" in lines[0], lines[0]
    time.sleep(1.5)   # a retry happens meanwhile (retry_schedule 1s)
    assert plain.messages == [], "sent in clear despite the encrypt policy"
    assert plain.sessions >= 1, "the peer was never tried"


def test_encrypt_to_self_signed_delivers(world):
    w = world
    peer = w.peer("127.0.0.3", tls=(w.ca.self_key, w.ca.self_crt))
    w.mx("self.tlsp.example", (10, "mx-self.tlsp.example", "127.0.0.3"))
    m = w.moat()
    r = add_policy(m, "self.tlsp.example", "encrypt")
    assert r.status == 201, r
    assert r.json["probe"]["verdict"] == "relaxed"
    bounce_via(m, "self.tlsp.example", "enc2")
    wait_for(lambda: peer.messages, what="the DSN over TLS")
    assert peer.messages[0][3] is True, "delivered without TLS"


def test_verify_untrusted_and_mismatch_defer_matching_delivers(world):
    w = world
    selfp = w.peer("127.0.0.3", tls=(w.ca.self_key, w.ca.self_crt))
    bad = w.peer("127.0.0.5", tls=issue_cert(w.ca, ["other.tlsp.example"]))
    good = w.peer("127.0.0.4", tls=issue_cert(w.ca, ["mx-good.tlsp.example"]))
    w.mx("self.tlsp.example", (10, "mx-self.tlsp.example", "127.0.0.3"))
    w.mx("mismatch.tlsp.example", (10, "mx-mismatch.tlsp.example", "127.0.0.5"))
    w.mx("good.tlsp.example", (10, "mx-good.tlsp.example", "127.0.0.4"))
    m = w.moat()
    assert add_policy(m, "self.tlsp.example", "verify", override=True).status == 201
    assert add_policy(m, "mismatch.tlsp.example", "verify", override=True).status == 201
    r = add_policy(m, "good.tlsp.example", "verify")
    assert r.status == 201 and r.json["enforced"] and not r.json["override"], r
    bounce_via(m, "self.tlsp.example", "ver1")
    bounce_via(m, "mismatch.tlsp.example", "ver2")
    bounce_via(m, "good.tlsp.example", "ver3")
    wait_for(lambda: good.messages, what="delivery to the trusted, matching MX")
    assert good.messages[0][3] is True
    un = wait_for(lambda: dsn_deferred_with(m, 'TLS policy \\"verify\\" for self.tlsp.example'),
                  what="untrusted deferral")
    assert "4.7.5" in un[0]
    mm = wait_for(lambda: dsn_deferred_with(m, 'TLS policy \\"verify\\" for mismatch.tlsp.example'),
                  what="mismatch deferral")
    assert "mx-mismatch.tlsp.example" in mm[0]
    assert selfp.messages == [] and bad.messages == []


def test_second_mx_is_tried_when_the_first_refuses(world):
    w = world
    good = w.peer("127.0.0.4", tls=issue_cert(w.ca, ["mx-b.tlsp.example"], tag="mxb"))
    # mx-a (preference 10) has nothing listening on 127.0.0.6: connection refused
    w.mx("two.tlsp.example", (10, "mx-a.tlsp.example", "127.0.0.6"),
         (20, "mx-b.tlsp.example", "127.0.0.4"))
    m = w.moat()
    bounce_via(m, "two.tlsp.example", "two1")
    wait_for(lambda: good.messages, what="delivery through the second MX")
    fails = [l for l in log_lines(m, "event=connect_failed") if "two.tlsp.example" in l]
    assert fails, "the first MX was not tried first"


def test_verify_with_real_postfix(world, peers):
    w = world
    key, chain = issue_cert(w.ca, ["mx-pf.tlsp.example"], tag="pf")
    # the Postfix listens on 127.0.0.1:<its port>; make that moatd's delivery_port
    pf = peers.postfix("pf.tlsp.example", ["bill@pf.tlsp.example"], tls=(key, chain),
                       hostname="mx-pf.tlsp.example")
    w.mx("pf.tlsp.example", (10, "mx-pf.tlsp.example", "127.0.0.1"))
    m = w.moat(delivery_port=pf.port)
    r = add_policy(m, "pf.tlsp.example", "verify")
    assert r.status == 201, r
    mx = r.json["probe"]["details"]["mx"]
    assert mx[0]["verdict"] == "strict", mx
    bounce_via(m, "pf.tlsp.example", "pf1")
    got = pf.mailbox("bill@pf.tlsp.example", timeout=20)
    assert got, "the DSN did not arrive at Postfix"
    d = [l for l in log_lines(m, "event=delivered") if "rcpt=<bill@pf.tlsp.example>" in l]
    assert d and "tls=TLSv1." in d[0], d


def test_report_only_policy_delivers_and_logs(world):
    w = world
    plain = w.peer("127.0.0.2")
    w.mx("plain.tlsp.example", (10, "mx-plain.tlsp.example", "127.0.0.2"))
    m = w.moat()
    r = add_policy(m, "plain.tlsp.example", "verify")
    assert r.status == 409, r
    assert r.error["code"] == "probe_failed" and r.error["field"] == "mode"
    assert r.json["policy"]["enforced"] is False
    bounce_via(m, "plain.tlsp.example", "rep1")
    wait_for(lambda: plain.messages, what="delivery under a report-only policy")
    rep = wait_for(lambda: log_lines(m, "event=tls_policy_report"), what="the report line")
    assert "would_refuse=yes" in rep[0] and "policy=verify" in rep[0], rep[0]


# --------------------------------------------------------------------------- probes

def test_probe_verdicts_api_and_cli(world):
    w = world
    w.peer("127.0.0.2")
    w.peer("127.0.0.3", tls=(w.ca.self_key, w.ca.self_crt))
    w.peer("127.0.0.4", tls=issue_cert(w.ca, ["mx-good.tlsp.example"]))
    w.peer("127.0.0.5", tls=issue_cert(w.ca, ["other.tlsp.example"]))
    w.mx("mixed.tlsp.example", (10, "mx-good.tlsp.example", "127.0.0.4"),
         (20, "mx-self.tlsp.example", "127.0.0.3"), (30, "mx-plain.tlsp.example", "127.0.0.2"),
         (40, "mx-mismatch.tlsp.example", "127.0.0.5"))
    m = w.moat()
    r = add_policy(m, "mixed.tlsp.example", "encrypt")
    assert r.status == 409, r
    mx = {x["host"]: x for x in r.json["probe"]["mx"]}
    assert mx["mx-good.tlsp.example"]["verdict"] == "strict"
    assert mx["mx-self.tlsp.example"]["verdict"] == "relaxed"
    assert "not trusted" in mx["mx-self.tlsp.example"]["reason"]
    assert mx["mx-mismatch.tlsp.example"]["verdict"] == "relaxed"
    assert "does not match" in mx["mx-mismatch.tlsp.example"]["reason"]
    assert mx["mx-plain.tlsp.example"]["verdict"] == "unsupported"
    assert "STARTTLS" in mx["mx-plain.tlsp.example"]["reason"]
    assert r.json["probe"]["verdict"] == "unsupported"
    # stored report-only, shown by GET
    g = m.admin().get("/api/v1/tls/policies/mixed.tlsp.example")
    assert g.status == 200 and g.json["enforced"] is False
    # the CLI: human output per MX, non-zero exit without --override
    out = m.cli("tls", "policy", "add", "mixed.tlsp.example", "verify")
    assert out.returncode == 1, out
    assert "mx-plain.tlsp.example" in out.stdout and "unsupported" in out.stdout, out.stdout
    assert "mx-self.tlsp.example" in out.stdout and "relaxed" in out.stdout
    assert "report-only" in out.stdout
    assert "probe_failed" in out.stderr or "does not meet" in out.stderr, out.stderr
    # a domain whose every MX is strict: verify passes (exit 0), JSON output
    w.mx("good.tlsp.example", (10, "mx-good.tlsp.example", "127.0.0.4"))
    out = m.cli("--json", "tls", "policy", "add", "good.tlsp.example", "verify")
    assert out.returncode == 0, out.stderr
    j = json.loads(out.stdout)
    assert j["enforced"] is True and j["probe"]["verdict"] == "strict"
    out = m.cli("tls", "policy", "list")
    assert out.returncode == 0 and "good.tlsp.example" in out.stdout and "mixed.tlsp.example" in out.stdout
    out = m.cli("tls", "policy", "probe", "good.tlsp.example")
    assert out.returncode == 0 and "strict" in out.stdout, out
    out = m.cli("tls", "policy", "remove", "good.tlsp.example")
    assert out.returncode == 0
    assert m.admin().get("/api/v1/tls/policies/good.tlsp.example").status == 404
    # bad input is named
    r = add_policy(m, "good.tlsp.example", "paranoid")
    assert r.status == 400 and r.error["field"] == "mode"
    r = add_policy(m, "good.tlsp.example", "verify", fallback="encrypt")
    assert r.status == 400 and r.error["field"] == "fallback"
    r = add_policy(m, "not a domain", "verify")
    assert r.status == 400 and r.error["field"] == "domain"
    assert m.cli("tls", "policy", "frobnicate").returncode == 2


def test_override_is_audited_and_reprobe_enforces(world):
    w = world
    w.peer("127.0.0.2")
    w.mx("late.tlsp.example", (10, "mx-late.tlsp.example", "127.0.0.2"))
    m = w.moat()
    r = add_policy(m, "late.tlsp.example", "encrypt")
    assert r.status == 409
    audit = m.admin().get("/api/v1/audit?action=tls_policy.override").json["items"]
    assert audit == []
    r = add_policy(m, "late.tlsp.example", "encrypt", override=True)
    assert r.status == 200 and r.json["enforced"] and r.json["override"], r
    audit = m.admin().get("/api/v1/audit?action=tls_policy.override").json["items"]
    assert [a["target"] for a in audit] == ["late.tlsp.example"]
    assert "unsupported" in json.dumps(audit[0])
    # the MX now offers TLS: a re-probe passes and enforces without override
    w.peer("127.0.0.7", tls=(w.ca.self_key, w.ca.self_crt))
    w.mx("late.tlsp.example", (10, "mx-late2.tlsp.example", "127.0.0.7"))
    r = m.admin().post("/api/v1/tls/policies/late.tlsp.example/probe")
    assert r.status == 200, r
    assert r.json["enforced"] and not r.json["override"] and r.json["probe"]["verdict"] == "relaxed"


def test_route_strict_probe_failure_needs_override(world):
    w = world
    selfp = w.peer("127.0.0.3", tls=(w.ca.self_key, w.ca.self_crt))
    m = w.moat()
    a = m.admin()
    body = {"host": "127.0.0.3", "port": w.port, "tls": "strict"}
    r = a.request("PUT", "/api/v1/domains/example.com/route", body=body)
    assert r.status == 409 and r.error["code"] == "probe_failed" and r.error["field"] == "tls", r
    assert r.json["probe"]["verdict"] == "relaxed"
    # nothing changed
    assert a.get("/api/v1/domains/example.com/route").json["port"] == w.refuser.port
    r = a.request("PUT", "/api/v1/domains/example.com/route", body={**body, "tls": "relaxed"})
    assert r.status == 200, r
    r = a.request("PUT", "/api/v1/domains/example.com/route", body={**body, "override": True})
    assert r.status == 200 and r.json["tls"] == "strict", r
    audit = a.get("/api/v1/audit?action=route.tls_override").json["items"]
    assert [x["target"] for x in audit] == ["example.com"]
    # the CLI says why and fails without --override
    out = m.cli("route", "set", "example.com", f"127.0.0.3:{w.port}", "--tls", "strict")
    assert out.returncode == 1 and "relaxed" in out.stderr, out


# --------------------------------------------------------------------------- Connect

def test_connect_tls_policies_task(world):
    w = world
    w.peer("127.0.0.3", tls=(w.ca.self_key, w.ca.self_crt))
    w.peer("127.0.0.2")
    w.mx("plain.tlsp.example", (10, "mx-plain.tlsp.example", "127.0.0.2"))
    m = w.moat()
    a = m.admin()
    # the route: relaxed against a self-signed server meets its mode
    r = a.request("PUT", "/api/v1/domains/example.com/route",
                  body={"host": "127.0.0.3", "port": w.port, "tls": "relaxed"})
    assert r.status == 200, r
    assert add_policy(m, "plain.tlsp.example", "encrypt").status == 409   # report-only
    r = a.post("/api/v1/connect/tls_policies/check")
    assert r.status == 200, r
    res = r.json["result"]
    assert res["outcome"] == "pass", res
    pol = res["details"]["policies"]
    assert pol[0]["domain"] == "plain.tlsp.example" and pol[0]["enforced"] is False
    assert pol[0]["probe_verdict"] == "unsupported"
    assert res["details"]["routes"][0]["verdict"] == "relaxed"
    # an overridden route that does not meet strict fails the task
    r = a.request("PUT", "/api/v1/domains/example.com/route",
                  body={"host": "127.0.0.3", "port": w.port, "tls": "strict", "override": True})
    assert r.status == 200
    res = a.post("/api/v1/connect/tls_policies/check").json["result"]
    assert res["outcome"] == "fail" and "blocks enforcement" in res["message"], res
    ins = json.dumps(a.get("/api/v1/connect/tls_policies").json)
    assert "plain.tlsp.example: encrypt (report only)" in ins


# --------------------------------------------------------------------------- MTA-STS

class PolicyServer:
    """https://mta-sts.<domain>:<port>/.well-known/mta-sts.txt on 127.0.0.1
    (Python's http.server, a test-CA certificate for mta-sts.<domain>)"""

    def __init__(self, ca, domains, text):
        import http.server
        import threading
        self.text = text
        self.hits = 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                body = outer.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        key, chain = issue_cert(ca, [f"mta-sts.{d}" for d in domains], tag="sts")
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(chain), str(key))
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def stop(self):
        if self.srv is not None:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None


@pytest.fixture
def sts_world(world):
    made = []

    def server(domains, text):
        s = PolicyServer(world.ca, domains, text)
        made.append(s)
        for d in domains:
            world.u.set(f"mta-sts.{d}", "A", "127.0.0.1")
        return s
    world.sts_server = server
    yield world
    for s in made:
        s.stop()


POLICY = "version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"


def test_mta_sts_enforce_only_matching_verified_mx(sts_world):
    w = sts_world
    good = w.peer("127.0.0.4", tls=issue_cert(w.ca, ["mx-good.tlsp.example"]))
    other = w.peer("127.0.0.8", tls=issue_cert(w.ca, ["mx-other.tlsp.example"]))
    selfp = w.peer("127.0.0.3", tls=(w.ca.self_key, w.ca.self_crt))
    srv = w.sts_server(["sts.tlsp.example", "sts2.tlsp.example"],
                       POLICY.format(mode="enforce", mx="mx-good.tlsp.example"))
    # sts: the preferred MX is not in the policy; sts2: the only MX is untrusted
    w.mx("sts.tlsp.example", (5, "mx-other.tlsp.example", "127.0.0.8"),
         (10, "mx-good.tlsp.example", "127.0.0.4"))
    w.u.set("_mta-sts.sts.tlsp.example", "TXT", '"v=STSv1; id=1;"')
    srv2_text = POLICY.format(mode="enforce", mx="mx-self.tlsp.example")
    w.mx("sts2.tlsp.example", (10, "mx-self.tlsp.example", "127.0.0.3"))
    w.u.set("_mta-sts.sts2.tlsp.example", "TXT", '"v=STSv1; id=7;"')
    m = w.moat(mta_sts_port=srv.port)
    r = add_policy(m, "sts.tlsp.example", "mta-sts")
    assert r.status == 201, r
    mx = {x["host"]: x for x in r.json["probe"]["details"]["mx"]}
    assert mx["mx-good.tlsp.example"]["verdict"] == "strict"
    assert mx["mx-other.tlsp.example"]["verdict"] == "excluded"
    assert r.json["probe"]["details"]["mta_sts"]["mode"] == "enforce"
    bounce_via(m, "sts.tlsp.example", "sts1")
    wait_for(lambda: good.messages, what="delivery to the MX the policy names")
    assert good.messages[0][3] is True
    assert other.messages == [], "delivered to an MX host the MTA-STS policy does not name"
    # sts2: one server serves both names' policies; this one names mx-self (self-signed)
    srv.text = srv2_text
    r = add_policy(m, "sts2.tlsp.example", "mta-sts")
    assert r.status == 409 and r.json["probe"]["verdict"] == "relaxed", r
    assert add_policy(m, "sts2.tlsp.example", "mta-sts", override=True).status == 200
    bounce_via(m, "sts2.tlsp.example", "sts2")
    wait_for(lambda: dsn_deferred_with(m, 'TLS policy \\"mta-sts\\" for sts2.tlsp.example'),
             what="a deferral naming the mta-sts policy")
    assert selfp.messages == []


def test_mta_sts_testing_delivers_and_logs(sts_world):
    w = sts_world
    plain = w.peer("127.0.0.2")
    srv = w.sts_server(["test.tlsp.example"],
                       POLICY.format(mode="testing", mx="mx-elsewhere.tlsp.example"))
    w.mx("test.tlsp.example", (10, "mx-plain.tlsp.example", "127.0.0.2"))
    w.u.set("_mta-sts.test.tlsp.example", "TXT", '"v=STSv1; id=t1;"')
    m = w.moat(mta_sts_port=srv.port)
    assert add_policy(m, "test.tlsp.example", "mta-sts", override=True).status in (200, 201)
    bounce_via(m, "test.tlsp.example", "stst")
    wait_for(lambda: plain.messages, what="delivery under MTA-STS testing")
    rep = log_lines(m, "event=tls_policy_report")
    assert any("policy=mta-sts" in l and "mode=testing" in l and "would_refuse=yes" in l
               for l in rep), rep


def test_mta_sts_cached_policy_when_server_down(sts_world):
    w = sts_world
    good = w.peer("127.0.0.4", tls=issue_cert(w.ca, ["mx-good.tlsp.example"]))
    other = w.peer("127.0.0.8", tls=issue_cert(w.ca, ["mx-other.tlsp.example"]))
    srv = w.sts_server(["sts.tlsp.example"],
                       POLICY.format(mode="enforce", mx="mx-good.tlsp.example"))
    w.mx("sts.tlsp.example", (5, "mx-other.tlsp.example", "127.0.0.8"),
         (10, "mx-good.tlsp.example", "127.0.0.4"))
    w.u.set("_mta-sts.sts.tlsp.example", "TXT", '"v=STSv1; id=1;"')
    m = w.moat(mta_sts_port=srv.port)
    assert add_policy(m, "sts.tlsp.example", "mta-sts").status == 201
    bounce_via(m, "sts.tlsp.example", "c1")
    wait_for(lambda: len(good.messages) == 1, what="the first delivery")
    hits = srv.hits
    assert hits >= 1
    # the policy server goes away and the TXT id changes: the fetch fails,
    # the stored policy (not expired) still applies -- across a restart too
    srv.stop()
    w.u.set("_mta-sts.sts.tlsp.example", "TXT", '"v=STSv1; id=2;"')
    assert m.stop() == 0
    m.start()
    bounce_via(m, "sts.tlsp.example", "c2")
    wait_for(lambda: len(good.messages) == 2, what="delivery under the cached policy")
    assert other.messages == []
    lines = log_lines(m, "event=mta_sts ")
    assert any("cached policy id 1 applies" in l for l in lines), lines


def test_null_mx_is_permanent_and_probe_says_so(world):
    w = world
    w.u.set("null.tlsp.example", "MX", "0 .")
    m = w.moat()
    r = add_policy(m, "null.tlsp.example", "encrypt")
    assert r.status == 409 and "null MX" in r.json["probe"]["reason"], r
    bounce_via(m, "null.tlsp.example", "null1")
    # the bounce (a DSN itself) cannot be delivered: permanent at once, no retry
    lines = wait_for(lambda: [l for l in log_lines(m, "event=bounced") if "null.tlsp.example" in l],
                     what="a permanent failure")
    assert "5.1.10" in lines[0], lines[0]
    assert not dsn_deferred_with(m, "null.tlsp.example")


def test_tls_min_version_applies_to_probe_and_delivery(world):
    w = world
    old = w.peer("127.0.0.9", tls=issue_cert(w.ca, ["mx-old.tlsp.example"]), max_tls12=True)
    w.mx("old.tlsp.example", (10, "mx-old.tlsp.example", "127.0.0.9"))
    m = w.moat(tls_min_version="1.3")
    r = add_policy(m, "old.tlsp.example", "encrypt")
    assert r.status == 409, r
    mx = r.json["probe"]["mx"][0]
    assert mx["verdict"] == "unsupported" and "handshake" in mx["reason"], mx
    assert add_policy(m, "old.tlsp.example", "encrypt", override=True).status == 200
    bounce_via(m, "old.tlsp.example", "old1")
    wait_for(lambda: dsn_deferred_with(m, 'TLS policy \\"encrypt\\" for old.tlsp.example'),
             what="a deferral: TLS 1.2 only is below tls_min_version")
    assert old.messages == []
