"""moatlib - helpers for Moat's end-to-end tests: real peers on loopback.

Everything here starts real processes (moatd, smtp-sink, Postfix, unbound)
on 127.0.0.1 / ::1 ports and stops them by their own PID.  Every process is
registered in PROCESSES so that conftest.py can kill whatever a failing test
left behind.  Standard library only (Debian's /usr/bin/python3).
"""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_dir():
    """The build tree under test: $MOAT_BUILD_DIR (relative to the repo) or build/."""
    d = Path(os.environ.get("MOAT_BUILD_DIR", "build"))
    return d if d.is_absolute() else REPO / d


MOATD = build_dir() / "moatd"
MOAT = build_dir() / "moat"
POSTFIX_INSTANCE = REPO / "bench" / "postfix-instance.sh"
IS_ROOT = os.geteuid() == 0

QID_RE = re.compile(r"\b[0-9A-Fa-f]{16}\b")
QUEUED_RE = re.compile(r"^2\.0\.0 Ok: queued as ([0-9A-Fa-f]{16})$")

# every child process we started, so a failing test cannot leave one behind
PROCESSES = []

# Ports come from below the kernel's ephemeral range (32768-60999 by
# default), so an outgoing connection of any process can never take a port
# between the moment it is chosen here and the moment a server binds it; each
# pytest-xdist worker (PYTEST_XDIST_WORKER=gwN) draws from its own block, so
# two workers never hand out the same port.
PORT_BASE, PORT_BLOCK = 20000, 3000
_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_next_port = PORT_BASE + PORT_BLOCK * (int(_worker[2:]) % 4 if _worker[2:].isdigit() else 0)
_port_end = _next_port + PORT_BLOCK


def free_port(host="127.0.0.1"):
    """A TCP port free on host right now, never handed out twice in a run."""
    global _next_port
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    while _next_port < _port_end:
        port = _next_port
        _next_port += 1
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue   # in use, or still in TIME_WAIT from an earlier run
        return port
    raise RuntimeError("no free port left in this worker's block")


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def wait_until(pred, timeout=10.0, interval=0.05, what="condition"):
    """Poll pred() until it returns a true value; return it or fail."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def spawn(argv, **kw):
    """Popen registered for the safety net."""
    p = subprocess.Popen([str(a) for a in argv], **kw)
    PROCESSES.append(p)
    return p


def stop_process(p, sig=signal.SIGTERM, timeout=10.0):
    """Send sig, wait; SIGKILL after timeout.  Returns (returncode, killed)."""
    if p.poll() is not None:
        return p.returncode, False
    try:
        p.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return p.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait(), True


def kill_all_processes():
    for p in PROCESSES:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _ensure_world_traversable(path):
    """smtp-sink and moatd may drop privileges: let them reach their directories."""
    p = Path(path).resolve()
    for parent in [p] + list(p.parents):
        if str(parent) in ("/", "/tmp"):
            break
        try:
            mode = parent.stat().st_mode
            if mode & 0o001 == 0:
                os.chmod(parent, mode | 0o011)
        except PermissionError:
            break


# --------------------------------------------------------------------- SMTP

def read_banner(host, port, timeout=5.0):
    """Connect and return the greeting line ('220 ...'), then close politely."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        f = s.makefile("rb")
        line = f.readline()
        try:
            s.sendall(b"QUIT\r\n")
            f.readline()
        except OSError:
            pass
        return line.decode("latin-1").rstrip("\r\n")


def wait_smtp_ready(host, port, timeout=10.0, proc=None, what="SMTP server", greeting="220"):
    """Wait until a connect to host:port gets a 220 greeting (or the one given)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited with status {proc.returncode} before it was ready")
        try:
            line = read_banner(host, port, timeout=2.0)
            if line.startswith(greeting):
                return line
            last = line
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"{what} on {host}:{port} not ready after {timeout} s (last: {last!r})")


class Reply:
    """One SMTP reply: code, lines (text after the code and separator)."""

    def __init__(self, code, lines):
        self.code = code
        self.lines = lines

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enhanced(self):
        """The enhanced status code (RFC 3463) at the start of the first line, or ''."""
        m = re.match(r"^([245]\.\d{1,3}\.\d{1,3})\b", self.lines[0] if self.lines else "")
        return m.group(1) if m else ""

    def __repr__(self):
        return f"Reply({self.code}, {self.lines!r})"


class RawSMTP:
    """A byte-exact SMTP client for protocol tests: send exactly what we say."""

    def __init__(self, host, port, timeout=10.0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.host = host
        self.buf = b""
        self.transcript = []

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.transcript.append(("C", data))
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server")
        self.transcript.append(("S", chunk))
        self.buf += chunk

    def readline(self):
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        """Read one (possibly multi-line) reply."""
        lines = []
        while True:
            line = self.readline()
            if len(line) < 3 or not line[:3].isdigit():
                raise AssertionError(f"malformed reply line {line!r}")
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return Reply(int(line[:3]), lines)
            if line[3] != "-":
                raise AssertionError(f"malformed reply line {line!r}")

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def expect(self, line, code):
        r = self.cmd(line)
        assert r.code == code, f"{line!r}: expected {code}, got {r}"
        return r

    def pending(self, wait=0.5):
        """Bytes the server sent within `wait` seconds (b'' if none)."""
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            self._fill()
        except (socket.timeout, TimeoutError):
            pass
        except (ConnectionError, OSError):
            pass
        finally:
            self.sock.settimeout(old)
        data, self.buf = self.buf, b""
        return data

    def closed_by_peer(self, timeout=5.0):
        """True when the server closes the connection within timeout."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(old)

    def starttls(self, context, server_hostname=None):
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def greet(self, name="client.ext.test"):
        r = self.reply()
        assert r.code == 220, f"greeting: {r}"
        r = self.cmd(f"EHLO {name}")
        assert r.code == 250, f"EHLO: {r}"
        return r


def queued_id(reply_text):
    """The QID of a '250 2.0.0 Ok: queued as QID' reply, or fail."""
    if isinstance(reply_text, bytes):
        reply_text = reply_text.decode("utf-8", "replace")
    m = QUEUED_RE.match(reply_text.strip())
    assert m, f"not a 'queued as QID' reply: {reply_text!r}"
    return m.group(1)


def make_message(subject="test", body="hello", sender="sender@ext.test",
                 to="alice@example.com", extra_headers=(), marker=None):
    """A small RFC 5322 message (str, CRLF line ends); marker ends the body."""
    lines = [f"From: <{sender}>", f"To: <{to}>", f"Subject: {subject}",
             "Date: Sat, 28 Nov 2026 12:00:00 +0000",
             f"Message-ID: <{os.urandom(8).hex()}@ext.test>"]
    lines += list(extra_headers)
    lines += ["", body]
    if marker:
        lines.append(marker)
    return "\r\n".join(lines) + "\r\n"


def new_marker():
    return "MARKER-" + os.urandom(8).hex()


# ------------------------------------------------------------------ peers

class SinkMessage:
    """One smtp-sink dump file: envelope (X-* lines), then the message as received."""

    def __init__(self, path):
        self.path = Path(path)
        raw = self.path.read_bytes()
        self.raw = raw
        env = {}
        rest = raw
        while rest.startswith(b"X-"):
            line, rest = rest.split(b"\n", 1)
            k, _, v = line.decode("utf-8", "replace").partition(": ")
            env.setdefault(k, []).append(v)
        self.envelope = env
        self.data = rest   # smtp-sink's own Received header + the message
        self.mail_from = env.get("X-Mail-Args", [""])[0]
        self.rcpts = env.get("X-Rcpt-Args", [])
        self.helo = env.get("X-Helo-Args", [""])[0]
        self.proto = env.get("X-Client-Proto", [""])[0]
        # smtp-sink writes LF line ends
        self.msg = message_from_bytes(rest, policy=compat32)

    @property
    def text(self):
        return self.data.decode("utf-8", "replace")

    def sender(self):
        """MAIL FROM address without <>, and without parameters."""
        m = re.match(r"^<([^>]*)>", self.mail_from)
        return m.group(1) if m else self.mail_from

    def rcpt_addrs(self):
        out = []
        for r in self.rcpts:
            m = re.match(r"^<([^>]*)>", r)
            out.append(m.group(1) if m else r)
        return out

    def __repr__(self):
        return f"SinkMessage({self.path.name}, from={self.mail_from!r}, rcpts={self.rcpts!r})"


class Sink:
    """Postfix's smtp-sink on 127.0.0.1:port, one dump file per message."""

    def __init__(self, workdir, port=None, args=(), name="sink"):
        self.dir = Path(workdir) / f"{name}-{os.urandom(3).hex()}"
        self.dump = self.dir / "d"
        self.dump.mkdir(parents=True)
        os.chmod(self.dump, 0o777)
        _ensure_world_traversable(self.dump)
        self.port = port or free_port()
        self.args = list(args)
        self.proc = None
        self.name = name

    def start(self, greeting="220"):
        """greeting: the reply code it starts with (421 for one run with -r CONNECT)."""
        argv = ["smtp-sink"]
        if IS_ROOT:
            argv += ["-u", "nobody"]
        argv += self.args + ["-d", f"{self.dump}/%H%M%S.", f"127.0.0.1:{self.port}", "100"]
        self.log = open(self.dir / "sink.log", "ab")
        self.proc = spawn(argv, stdout=self.log, stderr=subprocess.STDOUT)
        wait_smtp_ready("127.0.0.1", self.port, proc=self.proc, what=self.name, greeting=greeting)
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=5)
            self.proc = None
            self.log.close()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def files(self):
        return sorted(p for p in self.dump.iterdir() if p.is_file())

    def messages(self, settle=0.1):
        """Parsed dump files that have not changed for `settle` seconds."""
        now = time.time()
        out = []
        for p in self.files():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            if st.st_size > 0 and now - st.st_mtime >= settle:
                out.append(SinkMessage(p))
        return out

    def count(self):
        return len(self.files())

    def wait_count(self, n, timeout=15.0):
        """Wait until exactly-or-more n complete messages are there; return them."""
        wait_until(lambda: len(self.messages()) >= n, timeout,
                   what=f"{n} message(s) at {self.name} (have {self.count()})")
        return self.messages()

    def wait_marker(self, marker, timeout=15.0):
        """The message whose body contains marker (complete once the marker is written)."""
        def find():
            for m in self.messages(settle=0.05):
                if marker.encode() in m.raw:
                    return m
            return None
        return wait_until(find, timeout, what=f"message {marker} at {self.name}")

    def with_marker(self, marker):
        return [m for m in self.messages(settle=0) if marker.encode() in m.raw]


class Aiosmtpd:
    """A Python SMTP server (python3-aiosmtpd) answering per recipient.

    rcpt_replies maps an address (lower case) to a reply string like
    '550 5.1.1 User unknown'; others get 250.  Accepted messages are kept in
    .messages as (mail_from, rcpts, content bytes)."""

    def __init__(self, port=None, rcpt_replies=None, data_reply=None, enable_smtputf8=False):
        from aiosmtpd.controller import Controller

        self.port = port or free_port()
        self.messages = []
        self.rcpt_seen = []
        outer = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                outer.rcpt_seen.append(address)
                r = (rcpt_replies or {}).get(address.lower())
                if r:
                    return r
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 Ok"

            async def handle_DATA(self, server, session, envelope):
                if data_reply:
                    return data_reply
                outer.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
                return "250 2.0.0 Ok"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     enable_SMTPUTF8=enable_smtputf8, decode_data=False)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()


class Postfix:
    """A private Postfix instance (bench/postfix-instance.sh) in the foreground."""

    def __init__(self, workdir, port=None, create_args=(), name="postfix"):
        self.dir = Path(workdir) / f"{name}-{os.urandom(3).hex()}"
        self.port = port or free_port()
        self.name = name
        self.proc = None
        subprocess.run(["bash", str(POSTFIX_INSTANCE), "create", str(self.dir),
                        "--port", str(self.port)] + [str(a) for a in create_args],
                       check=True, capture_output=True, text=True)
        _ensure_world_traversable(self.dir)

    def start(self):
        self.proc = spawn(["bash", str(POSTFIX_INSTANCE), "start", str(self.dir)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_smtp_ready("127.0.0.1", self.port, timeout=20, proc=self.proc, what=self.name)
        return self

    def stop(self):
        if self.proc is None:
            return
        # The master is our child (reap it ourselves, else it stays a zombie
        # in its session); then wait until its children are gone too.
        pid = self.proc.pid
        stop_process(self.proc, timeout=10)
        self.proc = None

        def session_gone():
            r = subprocess.run(["ps", "-o", "pid=", "-s", str(pid)], capture_output=True, text=True)
            return not r.stdout.strip()
        try:
            wait_until(session_gone, 10, interval=0.1, what=f"{self.name} processes to exit")
        except AssertionError:
            r = subprocess.run(["ps", "-o", "pid=", "-s", str(pid)], capture_output=True, text=True)
            for p in r.stdout.split():
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            raise

    def maildir(self, addr):
        local, dom = addr.split("@")
        return self.dir / "mail" / dom / local / "new"

    def mailbox_files(self, addr):
        d = self.maildir(addr)
        return sorted(d.iterdir()) if d.is_dir() else []

    def maillog(self):
        p = self.dir / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""


class Unbound:
    """unbound on 127.0.0.1:port serving test zones; '.' forwards to a dead port."""

    def __init__(self, workdir, local_data):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "unbound.conf"
        zones = sorted({z for z, _ in local_data})
        lines = [
            "server:",
            "  interface: 127.0.0.1",
            f"  port: {self.port}",
            "  do-ip6: no",
            "  do-daemonize: no",
            '  chroot: ""',
            '  username: ""',
            f'  directory: "{self.dir}"',
            f'  pidfile: "{self.dir}/unbound.pid"',
            "  use-syslog: no",
            '  logfile: ""',
            "  do-not-query-localhost: no",
            "  infra-cache-max-rtt: 300",
            '  local-zone: "test." nodefault',
        ]
        for z in zones:
            lines.append(f'  local-zone: "{z}" static')
        for _, rr in local_data:
            lines.append(f"  local-data: '{rr}'")
        lines += [
            "forward-zone:",
            '  name: "."',
            "  forward-addr: 127.0.0.1@9",
            "remote-control:",
            "  control-enable: yes",
            f'  control-interface: "{self.dir}/control.sock"',
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        chk = subprocess.run(["unbound-checkconf", str(self.conf)], capture_output=True, text=True)
        if chk.returncode != 0:
            raise RuntimeError(f"unbound-checkconf: {chk.stdout}{chk.stderr}")
        self.log = open(self.dir / "unbound.log", "ab")
        self.proc = spawn(["unbound", "-c", str(self.conf)], stdout=self.log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"unbound exited {self.proc.returncode}")
            return self.control("status").returncode == 0
        wait_until(ready, 15, what="unbound")
        return self

    def control(self, *args, input=None):
        return subprocess.run(["unbound-control", "-c", str(self.conf)] + list(args),
                              capture_output=True, text=True, input=input)

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
            self.proc = None
            self.log.close()


def make_test_ca(d):
    """The test CA and a server certificate for mail.example.test / 127.0.0.1 (PEERS.md 0)."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)

    def run(*argv):
        subprocess.run(argv, cwd=d, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "30", "-subj", "/CN=Moat Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=mail.example.test")
    (d / "ext.cnf").write_text("subjectAltName=DNS:mail.example.test,DNS:moat.example.test,"
                               "IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "30", "-extfile", "ext.cnf")
    (d / "chain.crt").write_bytes((d / "server.crt").read_bytes() + (d / "ca.crt").read_bytes())
    os.chmod(d / "server.key", 0o600)   # moatd refuses a key others can read
    _ensure_world_traversable(d)
    return {"dir": d, "ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key",
            "chain": d / "chain.crt"}


# ------------------------------------------------------------------ moatd

def parse_log_line(line):
    """'ts=... level=info event=ready k="v w"' -> dict."""
    out = {}
    for m in re.finditer(r'(\w[\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)', line):
        v = m.group(2)
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[m.group(1)] = v
    return out


class Moatd:
    """One moatd process: tmp state dir, loopback listener, test resolver."""

    def __init__(self, workdir, resolver_port, opts=(), listen=None, state_dir=None,
                 hostname="moat.example.test", name="moatd", extra_args=()):
        self.dir = Path(workdir) / f"{name}-{os.urandom(3).hex()}"
        self.dir.mkdir(parents=True)
        self.state_dir = Path(state_dir) if state_dir else self.dir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _ensure_world_traversable(self.state_dir)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.listen = listen or [f"127.0.0.1:{self.port}"]
        if listen:
            m = re.match(r"^\[?([^\]]+?)\]?:(\d+)$", listen[0])
            self.host, self.port = m.group(1), int(m.group(2))
        self.http_port = free_port()
        self.resolver_port = resolver_port
        self.opts = {"hostname": hostname, "smtp_timeout_shutdown": "3s",
                     "retry_schedule": "1s", "log_level": "debug",
                     # issue 7: default-on screening the existing tests do not expect
                     # (they send internal senders from 127.0.0.1); their own tests turn it on
                     "antispoof": "no", "spf_check": "no", "dkim_verify": "no", "dmarc_check": "no"}
        # issue 7: greylisting is on by default; tests that want it turn it on
        self.opts["greylisting"] = "no"
        self.opts.update(dict(opts))
        self.extra_args = list(extra_args)
        self.logfile = self.dir / "moatd.log"
        self.proc = None
        self.name = name
        self.exits = []     # (returncode, how, proc) of every exit we caused
        self.pending = []   # CLI commands to run once the daemon is up (domains, routes)
        self.token = self._admin_token()

    def _admin_token(self):
        """The administrator's API token for this state dir: made once with
        `moatd --init-admin` on a fresh state dir, kept beside it (a restart
        on the same state dir reuses it)."""
        tokfile = Path(str(self.state_dir) + ".token")
        if not tokfile.exists():
            cp = subprocess.run([str(MOATD), "--state-dir", str(self.state_dir),
                                 "-o", "run_user=root", "--init-admin", "admin",
                                 "--token-file", str(tokfile)],
                                capture_output=True, text=True, timeout=60, env=sanitizer_env())
            assert cp.returncode == 0, f"moatd --init-admin failed: {cp.stderr}"
        return tokfile.read_text().strip()

    def cli_env(self, token=None):
        env = sanitizer_env()
        env["MOAT_URL"] = f"http://127.0.0.1:{self.http_port}"
        env["MOAT_TOKEN"] = self.token if token is None else token
        env["HOME"] = str(self.dir)     # no stray ~/.config/moat/cli.conf
        return env

    def argv(self):
        a = [MOATD, "--foreground", "--state-dir", self.state_dir,
             "--resolver", f"127.0.0.1:{self.resolver_port}",
             "--http-listen", f"127.0.0.1:{self.http_port}"]
        for l in self.listen:
            a += ["--smtp-listen", l]
        for k, v in self.opts.items():
            a += ["-o", f"{k}={v}"]
        return a + self.extra_args

    def start(self, wait=True):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.logfile, "ab") as log:
            log.write(f"### start {' '.join(map(str, self.argv()))}\n".encode())
            self.proc = spawn(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=sanitizer_env())
        self.log_offset = self.logfile.stat().st_size
        if wait:
            self.wait_ready()
            pending, self.pending = self.pending, []
            for args in pending:
                self.cli(*args, check=0)
        return self

    def wait_ready(self, timeout=15.0):
        wait_until(lambda: self._ready_or_dead(), timeout, what=f"{self.name} event=ready")
        wait_smtp_ready(self.host, self.port, timeout=timeout, proc=self.proc, what=self.name)

    def _ready_or_dead(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode} before ready:\n"
                                 + self.log_tail())
        return any(e.get("event") == "ready" for e in self.events(since_start=True))

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15.0):
        """SIGTERM; assert a clean exit 0."""
        rc, killed = stop_process(self.proc, signal.SIGTERM, timeout)
        self.exits.append((rc, "SIGTERM", self.proc))
        assert not killed, f"{self.name} ignored SIGTERM for {timeout} s:\n{self.log_tail()}"
        assert rc == 0, f"{self.name} exited {rc} after SIGTERM:\n{self.log_tail()}"
        return rc

    def kill9(self):
        rc, _ = stop_process(self.proc, signal.SIGKILL, 5)
        self.exits.append((rc, "SIGKILL", self.proc))

    def wait_exit(self, timeout=15.0):
        """Wait for an exit the test expects (e.g. a refused setting); returns the status."""
        rc = self.proc.wait(timeout=timeout)
        self.exits.append((rc, "expected", self.proc))
        return rc

    def restart(self):
        return self.start()

    def log_text(self):
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def events(self, event=None, since_start=False):
        text = self.log_text()
        if since_start:
            text = text[getattr(self, "log_offset", 0):]
        out = []
        for line in text.splitlines():
            if "event=" not in line:
                continue
            e = parse_log_line(line)
            if event is None or e.get("event") == event:
                out.append(e)
        return out

    # --- clients
    def smtp(self, timeout=10):
        import smtplib
        # passing the host here sets smtplib's _host, the TLS server_hostname
        return smtplib.SMTP(self.host, self.port, timeout=timeout)

    def raw(self, timeout=10):
        return RawSMTP(self.host, self.port, timeout)

    def send(self, sender, rcpts, msg, ehlo="client.ext.test"):
        """MAIL/RCPT/DATA with smtplib; returns the QID from the 250 reply."""
        s = self.smtp()
        try:
            s.ehlo(ehlo)
            code, resp = s.mail(sender)
            assert code == 250, f"MAIL FROM:<{sender}>: {code} {resp!r}"
            for r in ([rcpts] if isinstance(rcpts, str) else rcpts):
                code, resp = s.rcpt(r)
                assert code == 250, f"RCPT TO:<{r}>: {code} {resp!r}"
            code, resp = s.data(msg.encode("utf-8") if isinstance(msg, str) else msg)
            assert code == 250, f"DATA: {code} {resp!r}"
            qid = queued_id(resp)
            s.quit()
            return qid
        finally:
            s.close()

    def cli(self, *args, check=None, json_out=False, timeout=30, token=None):
        """The moat CLI against this daemon's API (MOAT_URL, MOAT_TOKEN)."""
        return run_cli(self.cli_env(token), *args, check=check, json_out=json_out, timeout=timeout)

    def queue_ids(self):
        """QIDs listed by `moat queue list --json`."""
        r = self.cli("queue", "list", json_out=True, check=0)
        return set(find_qids(r.json))


def sanitizer_env():
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    return env


class CliResult:
    def __init__(self, cp, argv):
        self.argv = argv
        self.returncode = cp.returncode
        self.stdout = cp.stdout
        self.stderr = cp.stderr
        self._json = None

    @property
    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.stdout)
            except ValueError as e:
                raise AssertionError(f"{self.argv}: --json output does not parse ({e}):\n"
                                     f"{self.stdout!r}\nstderr: {self.stderr!r}")
        return self._json

    def __repr__(self):
        return (f"CliResult({' '.join(self.argv)} -> {self.returncode}, "
                f"stdout={self.stdout!r}, stderr={self.stderr!r})")


def run_cli(env, *args, check=None, json_out=False, timeout=30):
    """Run build/moat [--json] ARGS with env (MOAT_URL, MOAT_TOKEN); check = expected exit status."""
    argv = [str(MOAT)]
    if json_out:
        argv.append("--json")
    argv += [str(a) for a in args]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    r = CliResult(cp, argv[1:])
    if check is not None:
        assert r.returncode == check, f"expected exit {check}: {r!r}"
    return r


def find_qids(obj):
    """Every 16-hex-digit string anywhere in a JSON value."""
    out = []
    if isinstance(obj, dict):
        for v in obj.values():
            out += find_qids(v)
    elif isinstance(obj, list):
        for v in obj:
            out += find_qids(v)
    elif isinstance(obj, str) and re.fullmatch(r"[0-9A-Fa-f]{16}", obj):
        out.append(obj.upper())
    return out


def tls_client_context(ca=None):
    if ca:
        return ssl.create_default_context(cafile=str(ca))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def have(cmd):
    return shutil.which(cmd) is not None
