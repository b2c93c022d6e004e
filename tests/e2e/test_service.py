"""Issue 11: moatd as a service -- the sd_notify protocol (READY=1 once
listening, RELOADING=1 / READY=1 around a SIGHUP, STOPPING=1 at SIGTERM),
and what SIGHUP reloads: moat.conf (runtime settings apply, start-up
settings are logged as needing a restart, a broken file is ignored) and
the STARTTLS certificate (sessions already in TLS continue, new ones get
the new certificate, a broken one is refused and the old one kept).

One moatd for the module (CI time): the tests run in file order and the
last one stops it with SIGTERM."""
import os
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from moatlib import Moatd, make_message, new_marker, wait_until


def _chown_to_run_user(*paths):
    """moatd started as root drops to nobody (no moat user here) and reads
    the certificate again after that, as it would under User=moat."""
    if os.geteuid() != 0:
        return
    try:
        pw = pwd.getpwnam("moat")
    except KeyError:
        pw = pwd.getpwnam("nobody")
    for p in paths:
        os.chown(p, pw.pw_uid, pw.pw_gid)


def _new_cert(d, name):
    """A self-signed certificate for moat.example.test: (cert path, key path, DER)."""
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", f"/CN=moat.example.test/O={name}"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    der = ssl.PEM_cert_to_DER_cert(crt.read_text())
    return crt, key, der


def _install(src, dst):
    """Replace dst as an administrator would: write beside it, rename over it."""
    tmp = dst.with_suffix(".new")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o600 if dst.suffix == ".key" else 0o644)
    _chown_to_run_user(tmp)
    os.rename(tmp, dst)


class Notify:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET
    (an abstract name: moatd must handle the '@' form)."""

    def __init__(self):
        self.name = f"@moat-test-notify-{os.getpid()}-{os.urandom(4).hex()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])

    def expect(self, key, timeout=15.0):
        """The next datagram holding key=...; every datagram on the way is returned too."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key} notification within {timeout:g} s; got {seen}")
            self.sock.settimeout(left)
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in msg.split("\n") if "=" in line)
            seen.append(fields)
            if key in fields:
                return fields, seen


@pytest.fixture(scope="module")
def svc(tmp_path_factory, unbound):
    d = tmp_path_factory.mktemp("service")
    os.chmod(d, 0o755)
    cert, key, der = _new_cert(d, "first")
    live_crt, live_key = d / "live.crt", d / "live.key"
    _install(cert, live_crt)
    _install(key, live_key)
    conf = d / "moat.conf"
    base = f"tls_cert = {live_crt}\ntls_key = {live_key}\n"
    conf.write_text(base + "smtp_max_recipients = 200\n")
    notify = Notify()
    m = Moatd(d, unbound.port, extra_args=["--config", str(conf)], name="svc")
    m.pending.append(["domain", "add", "example.com", "--trust-unverified"])
    m.pending.append(["route", "set", "example.com", "127.0.0.1:9"])   # deliveries just wait
    os.environ["NOTIFY_SOCKET"] = notify.name
    try:
        m.start()
    finally:
        del os.environ["NOTIFY_SOCKET"]
    ns = type("Svc", (), {})()
    ns.m, ns.d, ns.conf, ns.base, ns.notify, ns.der = m, d, conf, base, notify, der
    ns.live_crt, ns.live_key = live_crt, live_key
    yield ns
    if m.running:
        m.stop()
    notify.sock.close()


def _hup(svc):
    """SIGHUP; RELOADING=1 then READY=1 (the reload is in use); the READY fields."""
    svc.m.proc.send_signal(signal.SIGHUP)
    rel, _ = svc.notify.expect("RELOADING")
    assert rel["RELOADING"] == "1"
    assert int(rel["MONOTONIC_USEC"]) > 0
    ready, _ = svc.notify.expect("READY")
    assert ready["READY"] == "1"
    return ready


def _setting(svc, key):
    r = svc.m.cli("settings", json_out=True, check=0)
    return r.json["settings"][key]


def _starttls(svc):
    s = svc.m.smtp()
    s.ehlo("client.ext.test")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx)
    s.ehlo("client.ext.test")
    return s, s.sock.getpeercert(binary_form=True)


def test_ready_after_listening(svc):
    ready, _ = svc.notify.expect("READY")
    assert ready["READY"] == "1"
    assert f"127.0.0.1:{svc.m.port}" in ready["STATUS"]
    # READY=1 is sent after the listeners are bound: a client gets the banner now
    s = svc.m.smtp()
    assert s.noop()[0] == 250
    s.quit()


def test_sighup_rereads_the_settings_file(svc):
    st = _setting(svc, "smtp_max_recipients")
    assert (st["value"], st["source"]) == ("200", "file")
    # a runtime setting changes; a start-up one is logged and ignored
    svc.conf.write_text(svc.base + "smtp_max_recipients = 150\nhttp_threads = 3\n")
    ready = _hup(svc)
    assert "settings reloaded" in ready["STATUS"]
    st = _setting(svc, "smtp_max_recipients")
    assert (st["value"], st["source"]) == ("150", "file")
    assert [e["key"] for e in svc.m.events("setting_needs_restart", since_start=True)] == ["http_threads"]
    assert _setting(svc, "http_threads")["value"] == "4"
    # a broken file: logged, the running settings kept, moatd keeps running
    svc.conf.write_text(svc.base + "smtp_max_recipients = banana\n")
    ready = _hup(svc)
    assert "settings file broken" in ready["STATUS"]
    failed = svc.m.events("settings_reload_failed", since_start=True)
    assert failed and failed[-1]["field"] == "smtp_max_recipients"
    assert _setting(svc, "smtp_max_recipients")["value"] == "150"
    assert svc.m.running
    # the key leaves the file: back to its default
    svc.conf.write_text(svc.base)
    _hup(svc)
    st = _setting(svc, "smtp_max_recipients")
    assert (st["value"], st["source"]) == ("1000", "default")


def test_sighup_reloads_the_certificate(svc):
    before, cert1 = _starttls(svc)
    assert cert1 == svc.der
    crt2, key2, der2 = _new_cert(svc.d, "second")
    _install(key2, svc.live_key)
    _install(crt2, svc.live_crt)
    ready = _hup(svc)
    assert "certificate reloaded" in ready["STATUS"], ready
    # the session in TLS since before the HUP continues on its own context
    marker = new_marker()
    before.sendmail("a@ext.test", ["u@example.com"], make_message(sender="a@ext.test", to="u@example.com",
                                                                  marker=marker))
    before.quit()
    after, cert2 = _starttls(svc)
    after.quit()
    assert cert2 == der2 != cert1
    # a broken certificate: refused, logged, the second one kept
    (svc.d / "junk.crt").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n"
                                    "-----END CERTIFICATE-----\n")
    _install(svc.d / "junk.crt", svc.live_crt)
    ready = _hup(svc)
    assert "certificate broken" in ready["STATUS"], ready
    assert svc.m.events("tls_reload_failed", since_start=True)
    s, cert3 = _starttls(svc)
    s.quit()
    assert cert3 == der2


def test_stopping_on_sigterm(svc):
    svc.m.proc.send_signal(signal.SIGTERM)
    stopping, _ = svc.notify.expect("STOPPING")
    assert stopping["STOPPING"] == "1"
    assert svc.m.wait_exit() == 0
