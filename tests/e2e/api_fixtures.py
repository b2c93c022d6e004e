"""api_fixtures - a real moatd with its HTTP API for the API end-to-end tests.

Standard library only.  `api_moatd` starts moatd from the build under test
($MOAT_BUILD_DIR, else build/) on free loopback ports after
`moatd --init-admin admin --token-file FILE`, and stops it at teardown with
SIGTERM, asserting exit status 0 (a crash fails the test).  `Api` is a tiny
HTTP client (http.client) that keeps a session cookie and CSRF token when
asked to.
"""

import http.client
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def build_dir():
    d = Path(os.environ.get("MOAT_BUILD_DIR", "build"))
    return d if d.is_absolute() else REPO / d


MOATD = build_dir() / "moatd"
MOAT = build_dir() / "moat"


from moatlib import free_port  # noqa: E402,F401  (one allocator for every fixture)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.raw = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def error(self):
        return (self.json or {}).get("error") or {}

    def __repr__(self):
        return f"Response({self.status}, {self.raw[:300]!r})"


class Api:
    """One caller: a bearer token, a session (cookie + CSRF), or nobody."""

    def __init__(self, port, token=None):
        self.port = port
        self.token = token
        self.cookie = None
        self.csrf = None

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
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def login(self, name, password, totp=None):
        body = {"name": name, "password": password}
        if totp:
            body["totp"] = totp
        r = self.post("/api/v1/auth/login", body)
        if r.status == 200:
            for k, v in r.headers.items():
                if k.lower() == "set-cookie" and v.startswith("moat_session="):
                    self.cookie = v.split(";", 1)[0]
            self.csrf = r.json.get("csrf_token")
        return r


class ApiMoatd:
    def __init__(self, workdir, opts=None):
        self.dir = Path(workdir)
        self.state = self.dir / "state"
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.logfile = self.dir / "moatd.log"
        self.token_file = self.dir / "admin.token"
        # issue 7: default-on screening off unless a test turns it on
        self.opts = {"antispoof": "no", "spf_check": "no", "dkim_verify": "no", "dmarc_check": "no",
                     **dict(opts or {})}
        self.opts.setdefault("greylisting", "no")
        self.proc = None

    def argv(self):
        a = [str(MOATD), "--foreground", "--state-dir", str(self.state),
             "--smtp-listen", f"127.0.0.1:{self.smtp_port}",
             "--http-listen", f"127.0.0.1:{self.http_port}",
             "--resolver", "127.0.0.1:9", "-o", "run_user=root"]
        for k, v in self.opts.items():
            a += ["-o", f"{k}={v}"]
        return a

    def init_admin(self):
        r = subprocess.run([str(MOATD), "--state-dir", str(self.state), "--init-admin", "admin",
                            "--token-file", str(self.token_file)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert self.token_file.stat().st_mode & 0o777 == 0o600
        self.token = self.token_file.read_text().strip()
        return r

    def start(self):
        self.log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"moatd exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if Api(self.http_port).get("/api/v1/health").status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("moatd's API did not come up:\n" + self.log_tail())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("moatd did not stop within 30 s of SIGTERM")
        finally:
            self.log.close()
        return rc

    def log_tail(self, n=60):
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_text(self):
        return self.logfile.read_text(errors="replace")

    def api(self, token=None):
        return Api(self.http_port, token)

    def admin(self):
        return Api(self.http_port, self.token)

    def cli(self, *args, token=None, env=None, input=None):
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir),
             "MOAT_URL": f"http://127.0.0.1:{self.http_port}",
             "MOAT_TOKEN": self.token if token is None else token}
        e.update(env or {})
        return subprocess.run([str(MOAT), *args], capture_output=True, text=True, env=e,
                              input=input, timeout=60)


def list_routes():
    """(method, pattern, permission) of every route, from `moatd --list-routes`."""
    out = subprocess.run([str(MOATD), "--list-routes"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    routes = []
    for line in out.splitlines():
        m, p, perm = line.split()
        routes.append((m, p, perm))
    assert routes, "moatd --list-routes printed nothing"
    return routes


@pytest.fixture
def api_moatd(tmp_path):
    """Factory: api_moatd(opts={...}) -> a started ApiMoatd with an admin token."""
    if not MOATD.exists():
        pytest.fail(f"not built: {MOATD} (set MOAT_BUILD_DIR)", pytrace=False)
    made = []

    def factory(opts=None, start=True):
        m = ApiMoatd(tmp_path / f"m{len(made)}", opts)
        m.dir.mkdir(parents=True)
        made.append(m)
        m.init_admin()
        if start:
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
        rc = m.stop()
        if rc != 0:
            problems.append(f"moatd exited {rc} at SIGTERM")
    if problems:
        for m in made:
            print(m.log_tail(80))
        pytest.fail("; ".join(problems), pytrace=False)


def make_account(admin, name, role, password="correct-horse-battery-1"):
    """An account with a known password that need not be changed."""
    r = admin.post("/api/v1/accounts", {"name": name, "role": role, "password": password})
    assert r.status == 201, r
    return r.json["account"]


def session_for(m, name, role, password="correct-horse-battery-1"):
    make_account(m.admin(), name, role, password)
    s = m.api()
    r = s.login(name, password)
    assert r.status == 200, r
    return s


def token_for(m, name, role):
    s = session_for(m, name, role)
    r = s.post("/api/v1/tokens", {"name": f"{name}-token"})
    assert r.status == 201, r
    return r.json["token"]
