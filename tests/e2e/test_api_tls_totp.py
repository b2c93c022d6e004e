"""The admin API over HTTPS, its plain-HTTP refusals, TOTP sign-in end to end,
and an IPv6 listener, against a real moatd.

Standard library only.  The HTTPS tests make a test CA and server certificate
in tmp_path (PEERS.md 0, through moatlib.make_test_ca) and verify the server
with ssl.create_default_context(cafile=ca.crt).  The TOTP test computes RFC
6238 codes itself (HMAC-SHA1, 30 s steps, 6 digits) from the secret the API
returns.  Every moatd started here is stopped with SIGTERM at teardown, and
must exit 0, even when the test fails.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import urllib.parse
import warnings

import pytest

from api_fixtures import MOATD, Api, ApiMoatd, Response, free_port, make_account
from moatlib import make_test_ca

PASSWORD = "correct-horse-battery-1"


# ------------------------------------------------------------------ clients

class Client(Api):
    """api_fixtures.Api over any transport: plain or TLS, IPv4 or IPv6."""

    def __init__(self, host, port, token=None, tls=None):
        super().__init__(port, token)
        self.host = host
        self.tls = tls          # an ssl.SSLContext, or None for plain HTTP
        self.last_tls = None    # (version, peer certificate) of the last TLS request

    def request(self, method, path, body=None, raw=None, headers=None, csrf=True,
                content_type="application/json"):
        h = {}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if self.cookie:
            h["Cookie"] = self.cookie
            if csrf and self.csrf and method in ("POST", "PUT", "PATCH", "DELETE"):
                h["X-CSRF-Token"] = self.csrf
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None and content_type:
            h["Content-Type"] = content_type
        h.update(headers or {})
        if self.tls is not None:
            c = http.client.HTTPSConnection(self.host, self.port, timeout=30, context=self.tls)
        else:
            c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            c.request(method, path, body=data, headers=h)
            if self.tls is not None:
                self.last_tls = (c.sock.version(), c.sock.getpeercert())
            r = c.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            c.close()


def set_cookies(r):
    return [v for k, v in r.headers.items() if k.lower() == "set-cookie"]


def cookie_attrs(cookie):
    return [a.strip().lower() for a in cookie.split(";")]


# ------------------------------------------------------------------ moatd

class Moatd(ApiMoatd):
    """ApiMoatd with a chosen HTTP listen address and, if given, TLS toward it."""

    def __init__(self, workdir, opts=None, host="127.0.0.1", tls=None):
        super().__init__(workdir, opts)
        self.host = host
        self.tls = tls
        if ":" in host:
            self.http_port = free_port(host)

    def listen(self):
        return f"[{self.host}]:{self.http_port}" if ":" in self.host else \
            f"{self.host}:{self.http_port}"

    def argv(self):
        a = super().argv()
        i = a.index("--http-listen")
        a[i + 1] = self.listen()
        return a

    def client(self, token=None, tls=None):
        return Client(self.host, self.http_port, token, self.tls if tls is None else tls)

    def admin(self):
        return self.client(self.token)

    def api(self, token=None):
        return self.client(token)

    def start(self):
        self.log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"moatd exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.client().get("/api/v1/health").status == 200:
                    return self
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise AssertionError("moatd's API did not come up:\n" + self.log_tail())


@pytest.fixture
def moatds(tmp_path):
    """Factory: moatds(opts=..., host=..., tls=ctx) -> a started Moatd with an
    admin token.  Teardown stops each with SIGTERM and requires exit 0."""
    if not MOATD.exists():
        pytest.fail(f"not built: {MOATD} (set MOAT_BUILD_DIR)", pytrace=False)
    made = []

    def factory(opts=None, host="127.0.0.1", tls=None):
        m = Moatd(tmp_path / f"m{len(made)}", opts, host, tls)
        m.dir.mkdir(parents=True)
        m.init_admin()
        made.append(m)
        m.start()
        return m

    yield factory
    problems = []
    for m in made:
        if m.proc is None:
            continue
        if m.proc.poll() is not None:
            problems.append(f"moatd died with status {m.proc.returncode}")
            continue
        try:
            rc = m.stop()
        except AssertionError as e:
            problems.append(str(e))
            continue
        if rc != 0:
            problems.append(f"moatd exited {rc} at SIGTERM")
    if problems:
        for m in made:
            print(m.log_tail(80))
        pytest.fail("; ".join(problems), pytrace=False)


def run_moatd_expect_refusal(state, opts, listen="127.0.0.1"):
    """moatd that must refuse to start: (returncode, stderr).  Runs under a
    timeout, and is killed (by its own PID) should it start after all."""
    argv = [str(MOATD), "--foreground", "--state-dir", str(state),
            "--smtp-listen", f"127.0.0.1:{free_port()}",
            "--http-listen", listen, "--resolver", "127.0.0.1:9", "-o", "run_user=root"]
    for k, v in opts.items():
        argv += ["-o", f"{k}={v}"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
        raise AssertionError(f"moatd started with {opts} on {listen}; it should have refused")
    return p.returncode, out + err


@pytest.fixture
def certs(tmp_path):
    return make_test_ca(tmp_path / "ca")


def tls_opts(certs, key=None):
    # the chain (server certificate first), so that clients get the CA too
    return {"http_tls_cert": str(certs["chain"]), "http_tls_key": str(key or certs["key"])}


def verifying_context(certs):
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


# ------------------------------------------------------------------ HTTPS

def test_https_listener_verifies_and_serves_the_api(moatds, certs):
    ctx = verifying_context(certs)
    m = moatds(opts=tls_opts(certs), tls=ctx)

    c = m.client()
    r = c.get("/api/v1/health")
    assert r.status == 200, r
    assert r.json["status"] == "ok"
    assert r.headers["Content-Type"] == "application/json"
    version, peer = c.last_tls
    assert version in ("TLSv1.2", "TLSv1.3"), version
    assert ("IP Address", "127.0.0.1") in peer["subjectAltName"], peer
    assert dict(x[0] for x in peer["subject"])["commonName"] == "mail.example.test"

    # the certificate really is checked: without the test CA it does not verify
    with pytest.raises(ssl.SSLCertVerificationError):
        m.client(tls=ssl.create_default_context()).get("/api/v1/health")
    # nor for a name the certificate does not carry
    with pytest.raises(ssl.SSLCertVerificationError):
        Client("localhost", m.http_port, tls=ctx).get("/api/v1/health")

    # TLS 1.2 is served; TLS 1.0/1.1 are refused by the server (the same
    # client settings with 1.2 allowed connect, so the refusal is moatd's)
    def legacy_client(max_version):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(str(certs["ca"]))
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = max_version
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        return m.client(tls=ctx)

    c12 = legacy_client(ssl.TLSVersion.TLSv1_2)
    assert c12.get("/api/v1/health").status == 200
    assert c12.last_tls[0] == "TLSv1.2"
    with pytest.raises(OSError):   # ssl.SSLError is an OSError
        legacy_client(ssl.TLSVersion.TLSv1_1).get("/api/v1/health")

    # the bearer token works over HTTPS
    a = m.admin()
    assert a.get("/api/v1/auth/me").status == 200
    assert a.get("/api/v1/domains").status == 200
    assert "event=http_listening" in m.log_text() and "tls=yes" in m.log_text()


def test_https_session_cookie_is_secure(moatds, certs):
    m = moatds(opts=tls_opts(certs), tls=verifying_context(certs))
    make_account(m.admin(), "sam", "admin", PASSWORD)
    s = m.client()
    r = s.login("sam", PASSWORD)
    assert r.status == 200, r
    cookies = set_cookies(r)
    assert len(cookies) == 1, cookies
    attrs = cookie_attrs(cookies[0])
    assert attrs[0].startswith("moat_session=") and len(attrs[0]) > len("moat_session=") + 16
    for a in ("secure", "httponly", "samesite=strict", "path=/"):
        assert a in attrs, (a, cookies[0])
    assert r.json["csrf_token"] and r.json["account"]["name"] == "sam"

    # the session works over HTTPS, with CSRF for changes
    me = s.get("/api/v1/auth/me")
    assert me.status == 200 and me.json["account"]["name"] == "sam", me
    r = s.post("/api/v1/tokens", {"name": "sam-token"}, csrf=False)
    assert r.status == 403 and r.error["code"] == "csrf", r
    r = s.post("/api/v1/tokens", {"name": "sam-token"})
    assert r.status == 201 and r.json["token"], r

    # logout clears the cookie, with the same attributes
    r = s.post("/api/v1/auth/logout")
    assert r.status in (200, 204), r
    gone = set_cookies(r)
    assert gone, r.headers
    attrs = cookie_attrs(gone[0])
    assert attrs[0] == "moat_session=" and "secure" in attrs and "max-age=0" in attrs, gone
    assert s.get("/api/v1/auth/me").status == 401


def test_plain_http_to_the_https_port_gets_no_answer_in_clear(moatds, certs):
    m = moatds(opts=tls_opts(certs), tls=verifying_context(certs))
    make_account(m.admin(), "pat", "admin", PASSWORD)
    body = json.dumps({"name": "pat", "password": PASSWORD}).encode()
    for req in (b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: " +
                str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body):
        got = b""
        with socket.create_connection(("127.0.0.1", m.http_port), timeout=10) as s:
            s.sendall(req)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            except (ConnectionResetError, socket.timeout):
                pass
        assert b"HTTP/" not in got, got
        assert b"{" not in got and b"moat_session" not in got and b"status" not in got, got
    # http.client sees no HTTP answer either
    with pytest.raises((http.client.HTTPException, OSError)):
        r = Client("127.0.0.1", m.http_port).get("/api/v1/health")
        raise AssertionError(f"plain HTTP answered on the HTTPS port: {r}")
    # and the listener still serves TLS afterwards
    assert m.client().get("/api/v1/health").status == 200
    assert m.alive()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660], ids=["0640", "0604", "0660"])
def test_https_key_readable_by_others_is_refused(tmp_path, certs, mode):
    key = tmp_path / "loose.key"
    shutil.copyfile(certs["key"], key)
    os.chmod(key, mode)
    rc, out = run_moatd_expect_refusal(tmp_path / "state", tls_opts(certs, key),
                                       f"127.0.0.1:{free_port()}")
    assert rc != 0, out
    assert "http_tls_key" in out, out
    assert "chmod 600" in out or "group or others" in out, out


def test_https_half_configured_is_refused(tmp_path, certs):
    rc, out = run_moatd_expect_refusal(tmp_path / "s1", {"http_tls_cert": str(certs["chain"])},
                                       f"127.0.0.1:{free_port()}")
    assert rc != 0 and "http_tls_key" in out, out
    rc, out = run_moatd_expect_refusal(tmp_path / "s2", {"http_tls_key": str(certs["key"])},
                                       f"127.0.0.1:{free_port()}")
    assert rc != 0 and "http_tls_cert" in out, out


# ------------------------------------------------------------------ plain HTTP rules

def test_plain_http_refused_on_ipv6_any_address(tmp_path):
    """[::] without a certificate and without http_allow_plain: refused before
    any socket is bound (the 0.0.0.0 case is in test_api.py)."""
    rc, out = run_moatd_expect_refusal(tmp_path / "s", {}, f"[::]:{free_port()}")
    assert rc != 0, out
    assert "http_listen" in out and "http_allow_plain" in out, out


def test_plain_http_on_all_of_127_8_is_loopback(moatds):
    """Loopback is 127.0.0.0/8, not just 127.0.0.1: plain HTTP is allowed there."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
    except OSError as e:
        pytest.skip(f"127.0.0.2 not usable here: {e}")
    m = moatds(host="127.0.0.2")
    r = m.client().get("/api/v1/health")
    assert r.status == 200 and r.json["status"] == "ok", r
    # a session cookie on plain HTTP carries no Secure (a browser would drop it)
    make_account(m.admin(), "lou", "admin", PASSWORD)
    r = m.client().login("lou", PASSWORD)
    assert r.status == 200
    assert "secure" not in cookie_attrs(set_cookies(r)[0])


# ------------------------------------------------------------------ TOTP

def b32decode(secret):
    s = secret.strip().replace(" ", "").upper()
    return base64.b32decode(s + "=" * (-len(s) % 8))


def hotp(key, counter, digits=6):
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    v = struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF
    return f"{v % 10 ** digits:0{digits}d}"


def totp(key, step):
    return hotp(key, step)


def test_rfc6238_reference_vectors():
    """The test's own TOTP (RFC 6238 Appendix B, SHA-1): checked before it is trusted."""
    key = b"12345678901234567890"
    for t, want in ((59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
                    (1234567890, "89005924"), (2000000000, "69279037")):
        assert hotp(key, t // 30, 8) == want


def fresh_step(min_left=12.0):
    """The current 30 s step, with at least min_left seconds of it still to run,
    so a short sequence of requests stays inside one step (the server accepts
    one step of drift either way, so step-1 .. step+1 are all live)."""
    left = 30 - time.time() % 30
    if left < min_left:
        time.sleep(left + 0.3)
    return int(time.time() // 30)


def wrong_code(key, step):
    live = {totp(key, s) for s in range(step - 2, step + 3)}
    c = int(totp(key, step))
    while f"{c:06d}" in live:
        c = (c + 1) % 1000000
    return f"{c:06d}"


def test_totp_enrol_confirm_sign_in_replay_and_disable(moatds):
    m = moatds()
    make_account(m.admin(), "tina", "admin", PASSWORD)
    s = m.client()
    assert s.login("tina", PASSWORD).status == 200

    # enrolment needs the session's CSRF token
    r = s.post("/api/v1/auth/totp", {}, csrf=False)
    assert r.status == 403 and r.error["code"] == "csrf", r
    r = s.post("/api/v1/auth/totp", {})
    assert r.status == 201, r
    secret, uri = r.json["secret"], r.json["uri"]
    key = b32decode(secret)
    assert len(key) >= 16, secret
    u = urllib.parse.urlparse(uri)
    q = dict(urllib.parse.parse_qsl(u.query))
    assert u.scheme == "otpauth" and u.netloc == "totp", uri
    assert urllib.parse.unquote(u.path) == "/Moat:tina", uri
    assert q == {"secret": secret, "issuer": "Moat", "algorithm": "SHA1",
                 "digits": "6", "period": "30"}, uri

    # pending, not active: a password alone still signs in
    me = s.get("/api/v1/auth/me").json
    assert me["account"]["totp_enabled"] is False, me
    assert m.client().login("tina", PASSWORD).status == 200

    t = fresh_step()
    # a wrong code does not confirm
    r = s.post("/api/v1/auth/totp/confirm", {"code": wrong_code(key, t)})
    assert r.status == 400 and r.error["field"] == "code", r
    assert s.get("/api/v1/auth/me").json["account"]["totp_enabled"] is False
    # one step of drift is accepted: confirm with the previous step's code
    r = s.post("/api/v1/auth/totp/confirm", {"code": totp(key, t - 1)}, csrf=False)
    assert r.status == 403 and r.error["code"] == "csrf", r
    r = s.post("/api/v1/auth/totp/confirm", {"code": totp(key, t - 1)})
    assert r.status == 204, r
    assert s.get("/api/v1/auth/me").json["account"]["totp_enabled"] is True
    # enrolling again while active is refused (disable first)
    r = s.post("/api/v1/auth/totp", {})
    assert r.status == 409 and r.error["code"] == "totp_active", r

    # sign-in now needs the code
    r = m.client().login("tina", PASSWORD)
    assert r.status == 401, r
    assert r.error["code"] == "totp_required" and r.error["field"] == "totp", r
    assert not set_cookies(r)
    # the wrong password with no code must not say that TOTP is on
    r = m.client().login("tina", "not-the-password-1")
    assert r.status == 401 and r.error["code"] == "invalid_credentials", r
    assert r.error.get("field") != "totp", r
    # a wrong code
    r = m.client().login("tina", PASSWORD, totp=wrong_code(key, t))
    assert r.status == 401 and r.error["code"] == "invalid_credentials", r
    assert r.error["field"] == "totp" and not set_cookies(r), r
    # the code that confirmed enrolment is spent: it cannot sign in
    r = m.client().login("tina", PASSWORD, totp=totp(key, t - 1))
    assert r.status == 401 and r.error["field"] == "totp", r
    # the right code
    s2 = m.client()
    r = s2.login("tina", PASSWORD, totp=totp(key, t))
    assert r.status == 200, r
    assert "moat_session=" in set_cookies(r)[0] and s2.csrf
    assert s2.get("/api/v1/auth/me").json["account"]["name"] == "tina"
    # the same code again, inside its window: a replay, refused
    r = m.client().login("tina", PASSWORD, totp=totp(key, t))
    assert r.status == 401 and r.error["code"] == "invalid_credentials", r
    assert r.error["field"] == "totp" and not set_cookies(r), r
    assert time.time() // 30 == t, "the sequence ran past its 30 s step; timing too slow"

    # disabling needs a valid code (or the password), in a POST body: never
    # in a query string, which proxies and logs keep
    base = "/api/v1/auth/totp/disable"
    r = s2.request("POST", base, body={})
    assert r.status == 400 and r.error["code"] == "missing_field", r
    r = s2.request("POST", f"{base}?code={totp(key, t + 1)}", body={})
    assert r.status == 400 and r.error["code"] == "missing_field", r   # the query is ignored
    r = s2.request("POST", base, body={"code": wrong_code(key, t)})
    assert r.status == 403 and r.error["field"] == "code", r
    r = s2.request("POST", base, body={"code": totp(key, t)})
    assert r.status == 403 and r.error["field"] == "code", r       # spent at sign-in
    r = s2.request("POST", base, body={"code": "12345"})
    assert r.status == 403 and r.error["field"] == "code", r
    r = s2.request("POST", base, body={"password": "not-the-password-123"})
    assert r.status == 403 and r.error["field"] == "password", r
    r = s2.request("POST", base, body={"code": totp(key, t + 1)}, csrf=False)
    assert r.status == 403 and r.error["code"] == "csrf", r
    assert s2.get("/api/v1/auth/me").json["account"]["totp_enabled"] is True
    # a code is still needed at sign-in while it is on
    assert m.client().login("tina", PASSWORD).error["code"] == "totp_required"
    r = s2.request("POST", base, body={"password": PASSWORD})
    assert r.status == 204, r
    assert s2.get("/api/v1/auth/me").json["account"]["totp_enabled"] is False
    r = s2.request("POST", base, body={"code": totp(key, t + 1)})
    assert r.status == 409 and r.error["code"] == "totp_not_enrolled", r

    # a password alone signs in again
    r = m.client().login("tina", PASSWORD)
    assert r.status == 200, r

    # the audit log has the three changes; the secret is in no log
    entries = m.admin().get("/api/v1/audit?limit=1000").json["items"]
    actions = [e.get("action") for e in entries]
    for a in ("account.totp_enroll", "account.totp_enable", "account.totp_disable"):
        assert a in actions, actions
    dump = json.dumps(entries)
    assert secret not in dump and secret.lower() not in dump
    log = m.log_text()
    assert secret not in log and secret.lower() not in log
    assert "code=" not in log, "a TOTP code from the query string reached the log"
    for step in range(t - 1, t + 2):
        assert totp(key, step) not in dump and f"code={totp(key, step)}" not in log


# ------------------------------------------------------------------ IPv6

def ipv6_loopback_usable():
    if not socket.has_ipv6:
        return "Python has no IPv6"
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError as e:
        return f"cannot bind ::1: {e}"
    return None


def test_api_on_ipv6_loopback(moatds):
    why = ipv6_loopback_usable()
    if why:
        pytest.skip(why)
    m = moatds(host="::1")
    assert m.listen().startswith("[::1]:")
    r = m.client().get("/api/v1/health")
    assert r.status == 200 and r.json["status"] == "ok", r
    assert m.admin().get("/api/v1/domains").status == 200
    # the IPv6 socket is IPv6 only: nothing on 127.0.0.1 at that port
    with pytest.raises(OSError):
        Client("127.0.0.1", m.http_port).get("/api/v1/health")
    # a session from ::1 works, and its client address is the IPv6 one
    make_account(m.admin(), "vic", "admin", PASSWORD)
    s = m.client()
    assert s.login("vic", PASSWORD).status == 200
    assert s.get("/api/v1/auth/me").status == 200
    assert "client=::1" in m.log_text() or "client=\"::1\"" in m.log_text(), m.log_tail()


def test_https_on_ipv6_loopback(moatds, certs):
    why = ipv6_loopback_usable()
    if why:
        pytest.skip(why)
    ctx = verifying_context(certs)
    m = moatds(opts=tls_opts(certs), host="::1", tls=ctx)
    c = m.client()
    r = c.get("/api/v1/health")
    assert r.status == 200, r
    assert ("IP Address", "0:0:0:0:0:0:0:1") in c.last_tls[1]["subjectAltName"] or \
        ("IP Address", "::1") in c.last_tls[1]["subjectAltName"], c.last_tls[1]
