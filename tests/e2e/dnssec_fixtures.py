"""DNSSEC peers for the DANE tests (PEERS.md 4): knotd serving signed zones,
stub zones for them in the session's unbound, trust anchors for moatd's own
libunbound validation, and SMTP servers with STARTTLS to authenticate.

Zones (every record TTL 0, so nothing is cached between tests):
  dane.example        signed, its DS in the anchor file: secure answers
  bogus-dane.example  signed, a wrong DS in the anchor file: bogus answers
  plain-dane.example  unsigned, served by unbound's local data: insecure

The TLSA records are at _PORT._tcp.<mx host>, PORT being the port every
test SMTP server listens on (moatd's delivery_port): servers differ by
loopback address (127.0.0.1, 127.0.0.2, 127.0.0.3), not by port.
"""

import asyncio
import hashlib
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path

from moatlib import free_port, stop_process, spawn

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"
KNOTC = shutil.which("knotc") or "/usr/sbin/knotc"
KEYMGR = shutil.which("keymgr") or "/usr/sbin/keymgr"


def have_knot():
    return all(os.path.exists(p) for p in (KNOTD, KNOTC, KEYMGR))


def _openssl(d, *argv, input=None):
    return subprocess.run(["openssl", *argv], cwd=d, check=True, capture_output=True, input=input).stdout


def spki_sha256(cert):
    """TLSA 3 1 1 data: SHA-256 of the certificate's SubjectPublicKeyInfo (DER)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"], check=True,
                         capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, check=True,
                         capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


def cert_sha256(cert):
    """TLSA 2 0 1 data: SHA-256 of the whole certificate (DER)."""
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


def issue_cert(ca_dir, out_dir, name, sans):
    """A server certificate from the test CA (conftest `certs`) for the DNS names sans."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_dir = Path(ca_dir)
    _openssl(out, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={sans[0]}")
    (out / f"{name}.ext").write_text("subjectAltName=" + ",".join(f"DNS:{s}" for s in sans)
                                     + "\nextendedKeyUsage=serverAuth\n")
    _openssl(out, "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca_dir / "ca.crt"),
             "-CAkey", str(ca_dir / "ca.key"), "-CAcreateserial", "-out", f"{name}.crt",
             "-days", "30", "-extfile", f"{name}.ext")
    # DANE-TA(2): the server sends the trust anchor in its chain (RFC 7671 5.2.2)
    (out / f"{name}.chain").write_bytes((out / f"{name}.crt").read_bytes()
                                        + (ca_dir / "ca.crt").read_bytes())
    return out / f"{name}.chain", out / f"{name}.key", out / f"{name}.crt"


def self_signed(out_dir, name, cn):
    out = Path(out_dir)
    _openssl(out, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.crt", "-days", "30", "-subj", f"/CN={cn}",
             "-addext", f"subjectAltName=DNS:{cn}")
    return out / f"{name}.crt", out / f"{name}.key"


class Knot:
    """knotd on 127.0.0.1:port serving zones {name: (zone text, signed)}."""

    def __init__(self, d, zones):
        self.dir = Path(d)
        self.port = free_port()
        self.zones = zones
        self.conf = self.dir / "knot.conf"
        self.proc = None
        (self.dir / "db").mkdir(parents=True, exist_ok=True)
        (self.dir / "zones").mkdir(exist_ok=True)
        lines = ["server:", f'    rundir: "{self.dir}"', f"    listen: 127.0.0.1@{self.port}",
                 "log:", "  - target: stderr", "    any: info",
                 "database:", f'    storage: "{self.dir}/db"',
                 "control:", f'    listen: "{self.dir}/knot.sock"', "zone:"]
        for name, (text, signed) in zones.items():
            (self.dir / "zones" / f"{name}.zone").write_text(text)
            lines += [f"  - domain: {name}", f'    storage: "{self.dir}/zones"', '    file: "%s.zone"',
                      f"    dnssec-signing: {'on' if signed else 'off'}"]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self):
        self.log = open(self.dir / "knotd.log", "ab")
        self.proc = spawn([KNOTD, "-c", str(self.conf)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        pending = set(self.zones)
        while pending and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("knotd exited: " + (self.dir / "knotd.log").read_text())
            for z in list(pending):
                r = subprocess.run([KNOTC, "-c", str(self.conf), "zone-status", z], capture_output=True,
                                   text=True, timeout=10)
                if r.returncode == 0 and "serial: " in r.stdout and "serial: none" not in r.stdout:
                    pending.discard(z)
            time.sleep(0.1)
        if pending:
            raise AssertionError(f"knotd did not load {pending}: "
                                 + (self.dir / "knotd.log").read_text()[-2000:])
        return self

    def ds(self, zone):
        """The zone's DS records (SHA-256 digests), as text lines"""
        r = subprocess.run([KEYMGR, "-c", str(self.conf), zone, "ds"], capture_output=True, text=True,
                           timeout=10, check=True)
        return [l for l in r.stdout.splitlines() if len(l.split()) >= 5 and l.split()[4] == "2"]

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
            self.log.close()
        self.proc = None


class TlsSmtpServer:
    """python3-aiosmtpd on host:port offering STARTTLS with cert/key (or no
    STARTTLS when cert is None).  Keeps accepted messages; `tls_seen` counts
    the sessions that completed STARTTLS."""

    def __init__(self, host, port, cert=None, key=None):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP

        self.host, self.port = host, port
        self.messages = []
        self.sessions = 0
        self.tls_seen = 0
        outer = self

        class Handler:
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                session.host_name = hostname
                if server._tls_protocol is not None:
                    outer.tls_seen += 1
                return responses

            async def handle_DATA(self, server, session, envelope):
                outer.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                                       server._tls_protocol is not None))
                return "250 2.0.0 Ok"

        ctx = None
        if cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(cert), str(key))
        self.controller = Controller(Handler(), hostname=host, port=port, tls_context=ctx,
                                     require_starttls=False, decode_data=False)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()


def zone_text(origin, records):
    head = [f"$ORIGIN {origin}.", "$TTL 0",
            f"@ SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 0",
            f"@ NS ns.{origin}.", "ns A 127.0.0.1"]
    return "\n".join(head + records) + "\n"


class DaneWorld:
    """Everything a DANE test needs; built once per module (knotd takes ~2 s to stop)."""

    def __init__(self, d, certs, unbound):
        self.dir = Path(d)
        self.unbound = unbound
        self.port = free_port()
        cd = self.dir / "certs"
        # server A (127.0.0.1): a certificate from the test CA naming the MX hosts
        self.a_chain, self.a_key, self.a_crt = issue_cert(
            certs["dir"], cd, "mx", ["mx-ee.dane.example", "mx-ta.dane.example", "mx-nt.dane.example",
                                     "mx.plain-dane.example", "mx.bogus-dane.example"])
        # server B (127.0.0.2): self-signed, another key
        self.b_crt, self.b_key = self_signed(cd, "other", "mx-mm.dane.example")
        ee = spki_sha256(self.a_crt)
        ta = cert_sha256(certs["ca"])
        p = self.port
        self.zones = {
            "dane.example": (zone_text("dane.example", [
                # DANE-EE 3 1 1 matching server A's key
                "ee MX 10 mx-ee", "mx-ee A 127.0.0.1", f"_{p}._tcp.mx-ee TLSA 3 1 1 {ee}",
                # server B at 127.0.0.2 does not hold the key of the record: mismatch
                "mismatch MX 10 mx-mm", "mx-mm A 127.0.0.2", f"_{p}._tcp.mx-mm TLSA 3 1 1 {ee}",
                # a mismatch at the first MX host, a match at the second
                "twomx MX 10 mx-mm", "twomx MX 20 mx-ee",
                # the MX host is an alias (RFC 7672 2.2.2): TLSA at the CNAME target ...
                "alias MX 10 mx-alias", "mx-alias CNAME mx-ee",
                "aliasta MX 10 mx-alias-ta", "mx-alias-ta CNAME mx-ta",
                # ... or, where the target has none, at the MX host name
                "aliasown MX 10 mx-own", "mx-own CNAME mx-nt", f"_{p}._tcp.mx-own TLSA 3 1 1 {ee}",
                # DANE-TA 2 0 1: the test CA; the certificate names mx-ta
                "ta MX 10 mx-ta", "mx-ta A 127.0.0.1", f"_{p}._tcp.mx-ta TLSA 2 0 1 {ta}",
                # DANE-TA, but the certificate does not name mx-tn: no match
                "taname MX 10 mx-tn", "mx-tn A 127.0.0.1", f"_{p}._tcp.mx-tn TLSA 2 0 1 {ta}",
                # secure, no TLSA record (NODATA): the fallback applies
                "notlsa MX 10 mx-nt", "mx-nt A 127.0.0.1",
                # only PKIX-EE(1), unusable for SMTP: encrypt without authentication;
                # the server at 127.0.0.3 offers no STARTTLS
                "pkix MX 10 mx-px", "mx-px A 127.0.0.3", f"_{p}._tcp.mx-px TLSA 1 1 1 {ee}",
            ]), True),
            "bogus-dane.example": (zone_text("bogus-dane.example", [
                "@ MX 10 mx", "mx A 127.0.0.1", f"_{p}._tcp.mx TLSA 3 1 1 {ee}"]), True),
        }
        self.knot = Knot(self.dir / "knot", self.zones)
        self.servers = []
        self.anchor = self.dir / "anchor.ds"

    def _uc(self, *args, check=True):
        """unbound-control on the session's unbound"""
        r = self.unbound.control(*args)
        if check and (r.returncode != 0 or not r.stdout.startswith("ok")):
            raise AssertionError(f"unbound-control {args}: {r.stdout} {r.stderr}")
        return r

    def start(self):
        self.knot.start()
        good = self.knot.ds("dane.example")
        assert good, "keymgr gave no DS for dane.example"
        # a DS that matches no key of bogus-dane.example: its answers are bogus
        wrong = [" ".join(["bogus-dane.example."] + l.split()[1:]) for l in good]
        self.anchor.write_text("\n".join(good + wrong) + "\n")
        os.chmod(self.dir, 0o755)
        os.chmod(self.anchor, 0o644)
        for z in self.zones:
            self._uc("stub_add", z, f"127.0.0.1@{self.knot.port}")
        # the insecure zone: unbound's own static data, no signatures; a TLSA
        # record that matches nothing proves it is ignored
        self._uc("local_zone", "plain-dane.example", "static")
        for rr in ["plain-dane.example. 0 IN SOA ns.plain-dane.example. h.plain-dane.example. 1 0 0 0 0",
                   "plain-dane.example. 0 IN MX 10 mx.plain-dane.example.",
                   "mx.plain-dane.example. 0 IN A 127.0.0.1",
                   f"_{self.port}._tcp.mx.plain-dane.example. 0 IN TLSA 3 1 1 {'00' * 32}"]:
            self._uc("local_data", rr)
        self.server_a = TlsSmtpServer("127.0.0.1", self.port, self.a_chain, self.a_key).start()
        self.servers.append(self.server_a)
        self.server_b = TlsSmtpServer("127.0.0.2", self.port, self.b_crt, self.b_key).start()
        self.servers.append(self.server_b)
        self.server_c = TlsSmtpServer("127.0.0.3", self.port).start()   # no STARTTLS
        self.servers.append(self.server_c)
        return self

    def reset(self):
        for s in self.servers:
            s.messages.clear()
            s.tls_seen = 0

    def stop(self):
        for s in self.servers:
            try:
                s.stop()
            except Exception:
                pass
        for z in self.zones:
            self._uc("stub_remove", z, check=False)
        self._uc("local_zone_remove", "plain-dane.example", check=False)
        self.knot.stop()
