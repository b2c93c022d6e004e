"""connect_fixtures - real DNS and SMTP peers for the Connect end-to-end tests.

Standard library only; every peer runs in the foreground on loopback, is
started with Popen (so its PID is ours) and stopped by SIGTERM to that PID
until it is gone (/work/shared/PEERS.md):

  Unbound      a real unbound serving the test zones from local-data; tests
               change the data at run time through unbound-control
               (local_data / local_data_remove, TTL 0 so nothing is cached),
               make a zone time out (local_zone Z deny) or stop the server
  SmtpSink     Postfix's smtp-sink: no STARTTLS ("unsupported")
  Postfix      a private Postfix instance (never /etc/postfix): a mailbox
               server for one domain, optionally with STARTTLS (a
               self-signed certificate: "relaxed"; a certificate from the
               test CA that moatd trusts through SSL_CERT_FILE: "strict"),
               optionally refusing some client addresses at the greeting
  CertAuthority the test CA and the certificates

Every Postfix has default_transport = error:..., every unbound forwards "."
to a dead loopback port: nothing leaves loopback.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


from moatlib import free_port  # noqa: E402,F401  (one allocator for every fixture)


def wait_port(port, proc=None, timeout=15, host="127.0.0.1"):
    """until a connection to port gets a 220 greeting"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"peer exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"nothing answered 220 on {host}:{port}")


def stop_proc(proc, timeout=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peer_dir(prefix):
    """a fresh directory under /tmp that uid 65534 and postfix can traverse
    (pytest's tmp_path is 0700, which virtual(8) cannot enter)"""
    d = Path(tempfile.mkdtemp(prefix=f"/tmp/i4d-{prefix}-"))
    d.chmod(0o755)
    return d


# --- the test CA -------------------------------------------------------------

class CertAuthority:
    """CA + a server certificate for mail.example.test and 127.0.0.1, and a
    self-signed certificate for the same names (PEERS.md 0)."""

    def __init__(self, d):
        self.dir = Path(d)
        run = lambda *a: subprocess.run(a, cwd=self.dir, check=True, capture_output=True)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.crt", "-days", "30", "-subj", "/CN=Moat Test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=mail.example.test")
        (self.dir / "ext.cnf").write_text(
            "subjectAltName=DNS:mail.example.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "30", "-extfile", "ext.cnf")
        (self.dir / "chain.crt").write_bytes((self.dir / "server.crt").read_bytes() +
                                             (self.dir / "ca.crt").read_bytes())
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "self.key",
            "-out", "self.crt", "-days", "30", "-subj", "/CN=mail.example.test",
            "-addext", "subjectAltName=DNS:mail.example.test,IP:127.0.0.1")
        self.ca = self.dir / "ca.crt"
        self.key = self.dir / "server.key"
        self.chain = self.dir / "chain.crt"
        self.self_key = self.dir / "self.key"
        self.self_crt = self.dir / "self.crt"


@pytest.fixture(scope="session")
def test_ca():
    d = peer_dir("ca")
    try:
        yield CertAuthority(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- unbound -----------------------------------------------------------------

class Unbound:
    """A real unbound on 127.0.0.1:port serving `zones` (static local zones).

    Records are changed at run time with unbound-control; every record has
    TTL 0 so neither unbound nor moatd's libunbound serves an old answer."""

    def __init__(self, d, zones):
        self.dir = Path(d)
        self.port = free_port()
        self.zones = list(zones)
        self.conf = self.dir / "unbound.conf"
        self.proc = None
        lines = [
            "server:",
            f"  interface: 127.0.0.1", f"  port: {self.port}", "  do-ip6: no",
            "  do-daemonize: no", '  chroot: ""', '  username: ""', f'  directory: "{self.dir}"',
            f'  pidfile: "{self.dir}/unbound.pid"', "  use-syslog: no", '  logfile: ""',
            "  do-not-query-localhost: no", "  infra-cache-max-rtt: 300",
            # the built-in static zones (test., invalid., ...) would answer first
            '  local-zone: "test." nodefault',
        ]
        for z in self.zones:
            lines.append(f'  local-zone: "{z}." static')
            # a real zone has an SOA; without one, negative answers carry no
            # TTL and libunbound caches them for 5 s (NORR_TTL), so a record
            # published right after a check would look absent
            lines.append(f"  local-data: '{self._soa(z)}'")
        lines += ["forward-zone:", '  name: "."', "  forward-addr: 127.0.0.1@9",
                  "remote-control:", "  control-enable: yes",
                  f'  control-interface: "{self.dir}/control.sock"']
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def resolver(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.log = open(self.dir / "unbound.log", "ab")
        self.proc = subprocess.Popen(["unbound", "-c", str(self.conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"unbound exited: {(self.dir / 'unbound.log').read_text()}")
            if self.control("status", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise AssertionError("unbound did not come up")

    def stop(self):
        stop_proc(self.proc)
        if self.proc is not None:
            self.log.close()
        self.proc = None

    def control(self, *args, check=True, input=None):
        r = subprocess.run(["unbound-control", "-c", str(self.conf), *args], capture_output=True,
                           text=True, input=input, timeout=30)
        if check and (r.returncode != 0 or r.stdout.startswith("error")):
            raise AssertionError(f"unbound-control {args}: {r.stdout} {r.stderr}")
        return r

    @staticmethod
    def _soa(zone):
        # TTL 0 and negative TTL 0 (RFC 2308 3): nothing is cached
        return f"{zone}. 0 IN SOA ns.{zone}. hostmaster.{zone}. 1 0 0 0 0"

    def _remove(self, name):
        """local_data_remove drops every type at name; keep the apex SOA"""
        self.control("local_data_remove", name)
        if name.rstrip(".") in self.zones:
            self.control("local_data", self._soa(name.rstrip(".")))

    def set(self, name, rtype, *values):
        """replace every record of `name` (all types!) by these; TTL 0"""
        self._remove(name)
        for v in values:
            self.control("local_data", f"{name}. 0 IN {rtype} {v}")

    def add(self, name, rtype, value):
        self.control("local_data", f"{name}. 0 IN {rtype} {value}")

    def remove(self, name):
        self._remove(name)

    def deny(self, zone):
        """the resolver cannot answer for zone (REFUSED, whatever local data
        exists: plain 'deny' still answers from local data): unknown"""
        self.control("local_zone", zone, "always_refuse")

    def allow(self, zone):
        self.control("local_zone", zone, "static")

    def query(self, name, rtype):
        r = subprocess.run(["dig", "+short", "-p", str(self.port), "@127.0.0.1", name, rtype],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.split("\n")


# --- smtp-sink -----------------------------------------------------------------

class SmtpSink:
    """Postfix's smtp-sink on loopback: no STARTTLS; one dump file per message."""

    def __init__(self):
        self.dir = peer_dir("sink")
        (self.dir / "d").mkdir()
        shutil.chown(self.dir / "d", "nobody")
        self.port = free_port()
        self.proc = subprocess.Popen(["smtp-sink", "-u", "nobody", "-d", f"{self.dir}/d/%H%M%S.",
                                      f"127.0.0.1:{self.port}", "100"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def messages(self):
        return [p.read_bytes() for p in sorted((self.dir / "d").glob("*"))]

    def stop(self):
        stop_proc(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- a private Postfix ---------------------------------------------------------

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """The organisation's mail server: accepts mail for `rcpts` of `domain`
    into Maildirs under DIR/mail.  tls = (key, chain) offers STARTTLS with that
    certificate.  refuse = client addresses refused at the greeting:
    smtpd_client_restrictions with smtpd_delay_reject = no makes smtpd answer
    the connection itself with 554 (what the lockdown probe must see)."""

    def __init__(self, domain, rcpts, tls=None, refuse=(), hostname="mail.example.test"):
        self.dir = peer_dir("pf")
        self.port = free_port()
        self.domain = domain
        d = self.dir
        for sub in ("etc", "queue", "data", "mail"):
            (d / sub).mkdir()
        shutil.chown(d / "data", "postfix")
        shutil.chown(d / "mail", "nobody", "nogroup")
        (d / "maillog").write_text("")
        (d / "etc/rcpts").write_text(
            "".join(f"{r} {r.split('@')[1]}/{r.split('@')[0]}/\n" for r in rcpts))
        main = f"""\
config_directory = {d}/etc
queue_directory = {d}/queue
data_directory = {d}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
compatibility_level = 3.6
myhostname = {hostname}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtp_bind_address = 127.0.0.1
mynetworks = 127.0.0.0/8
mydestination =
alias_maps =
alias_database =
notify_classes =
local_transport = error:5.1.1 no local delivery
multi_instance_enable = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
virtual_mailbox_domains = {domain}
virtual_mailbox_maps = texthash:{d}/etc/rcpts
virtual_mailbox_base = {d}/mail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtpd_relay_restrictions = reject_unauth_destination
default_transport = error:5.7.1 no outbound
relay_transport = error:5.7.1 no relay
"""
        if tls:
            key, chain = tls
            shutil.copy(key, d / "etc/server.key")
            (d / "etc/server.key").chmod(0o600)
            shutil.copy(chain, d / "etc/chain.crt")
            main += (f"smtpd_tls_security_level = may\n"
                     f"smtpd_tls_chain_files = {d}/etc/server.key, {d}/etc/chain.crt\n")
        if refuse:
            (d / "etc/clients.cidr").write_text(
                "".join(f"{a}/32 REJECT lockdown: only Moat may connect\n" for a in refuse))
            main += ("smtpd_delay_reject = no\n"
                     f"smtpd_client_restrictions = check_client_access cidr:{d}/etc/clients.cidr\n")
        (d / "etc/main.cf").write_text(main)
        (d / "etc/master.cf").write_text(MASTER_CF.format(port=self.port))
        for args in (["post-install", "create-missing"], ["check"]):
            r = subprocess.run(["postfix", "-c", f"{d}/etc", *args], capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0, f"postfix {args}: {r.stderr}"
        self.proc = subprocess.Popen(["/usr/lib/postfix/sbin/master", "-c", f"{d}/etc", "-s"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def mailbox(self, addr, timeout=10):
        """the messages delivered to addr (waits up to timeout for at least one)"""
        local, dom = addr.split("@")
        new = self.dir / "mail" / dom / local / "new"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = sorted(new.glob("*")) if new.exists() else []
            if files:
                return [f.read_bytes() for f in files]
            time.sleep(0.1)
        return []

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            pid = self.proc.pid
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
            # master is a session leader: wait until its children are gone too
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                r = subprocess.run(["ps", "-o", "pid=", "-s", str(pid)], capture_output=True,
                                   text=True)
                if not r.stdout.strip():
                    break
                time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def peers():
    """Factory for peers that are all stopped at teardown, even on failure."""
    made = []

    class Factory:
        def unbound(self, zones):
            u = Unbound(peer_dir("unbound"), zones)
            made.append(u)
            return u.start()

        def sink(self):
            s = SmtpSink()
            made.append(s)
            return s

        def postfix(self, *a, **kw):
            p = Postfix(*a, **kw)
            made.append(p)
            return p

    yield Factory()
    for p in reversed(made):
        try:
            p.stop()
        finally:
            if isinstance(p, Unbound):
                shutil.rmtree(p.dir, ignore_errors=True)
