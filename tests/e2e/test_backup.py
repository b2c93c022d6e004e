"""Backup and restore (issue 11 item 6): `moat backup FILE` while moatd runs,
`moat restore FILE --state-dir DIR --config PATH` on a stopped target.

One round trip: moatd A with a domain and its route, a user, an authorised
outbound host and a DKIM key (sealed in the store under STATE/secret.key),
started with a settings file; the backup is made while A serves; it is
restored into a new state directory; moatd B starts on it with the restored
settings file and must have A's configuration (the API lists), A's TLS
certificate, a DKIM key it can still unseal (B's signature verifies with the
record published for A's key) and must relay to smtp-sink.  A backup with one
octet flipped is refused with a clear message, and nothing is written.
"""

import shutil
import smtplib
import ssl
import tarfile

from dkim_verifier import verify
from moatlib import make_message, new_marker, run_cli
from test_dkim import crlf, keygen, publish

FAST = {"retry_schedule": "1s"}


def config_view(m):
    """what must survive a restore, from the API: names, routes, keys"""
    doms = m.cli("domain", "list", json_out=True, check=0).json
    users = m.cli("user", "list", json_out=True, check=0).json
    keys = m.cli("dkim", "list", json_out=True, check=0).json
    hosts = m.cli("outbound", "host", "list", json_out=True, check=0).json
    items = lambda v: v["items"] if isinstance(v, dict) else v   # noqa: E731
    return {
        "domains": sorted((d["name"], str(d.get("route"))) for d in items(doms)),
        "users": sorted(u["address"] for u in items(users)),
        "dkim": sorted((k["domain"], k["selector"], k.get("public_key") or k.get("dns_record", {})
                        .get("value", "")) for k in items(keys)),
        "outbound_hosts": sorted(h["cidr"] for h in items(hosts)),
    }


def server_cert(m):
    """the DER certificate moatd offers with STARTTLS"""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(m.host, m.port, timeout=10) as s:
        s.ehlo("client.ext.test")
        s.starttls(context=ctx)
        return s.sock.getpeercert(binary_form=True)


def restore(env, *args):
    return run_cli(env, "restore", *[str(a) for a in args])


def test_backup_restore_round_trip(moatd, sink, unbound, workdir):
    mx = sink(name="ext-mx")
    route = sink(name="route")
    conf_a = workdir / "a.conf"
    conf_a.write_text("# moatd A's settings file\nhostname = mx.example.com\n")
    opts = dict(FAST, delivery_port=mx.port)
    a = moatd(domains={"example.com": f"127.0.0.1:{route.port}"}, opts=opts,
              extra_args=["--config", str(conf_a)], name="a")
    a.cli("user", "add", "ann@example.com", "--name", "Ann", check=0)
    a.cli("outbound", "host", "add", "127.0.0.1/32", check=0)
    txt = publish(unbound, keygen(a, "example.com", "--algorithm", "ed25519", "--selector", "bk"))
    view_a, cert_a = config_view(a), server_cert(a)
    assert view_a["users"] == ["ann@example.com"] and view_a["dkim"], view_a
    assert str(route.port) in str(view_a["domains"]), view_a

    # the backup, made while A runs: a tar any tool reads, every member 0600
    tarpath = workdir / "moat-backup.tar"
    r = a.cli("backup", tarpath, json_out=True, check=0)
    names = [mb["name"] for mb in r.json["manifest"]["members"]]
    assert names == ["moat.db", "secret.key", "tls/cert.pem", "tls/key.pem", "moat.conf"], names
    assert tarpath.stat().st_mode & 0o777 == 0o600
    with tarfile.open(tarpath) as t:
        members = t.getmembers()
        assert [mb.name for mb in members] == ["manifest.json", *names, "manifest.sha256"]
        assert all(mb.mode == 0o600 and mb.isfile() for mb in members)
        db_offset = next(mb.offset_data for mb in members if mb.name == "moat.db")
    again = a.cli("backup", tarpath, check=1)
    assert "exists" in again.stderr
    # --with-archive adds the archive database (a consistent copy too)
    r = a.cli("backup", workdir / "with-archive.tar", "--with-archive", json_out=True, check=0)
    assert [mb["name"] for mb in r.json["manifest"]["members"]][-2:] == ["archive.db", "tracking.db"], r.json

    env = a.cli_env()
    state_b, conf_b = workdir / "restored" / "state", workdir / "restored" / "b.conf"
    (workdir / "restored").mkdir()

    # one octet flipped inside the store: refused before anything is written
    bad = workdir / "damaged.tar"
    data = bytearray(tarpath.read_bytes())
    data[db_offset + 4096] ^= 0x01
    bad.write_bytes(bytes(data))
    r = restore(env, bad, "--state-dir", state_b, "--config", conf_b)
    assert r.returncode == 1, r
    assert "moat.db is damaged: its SHA-256 does not match the manifest" in r.stderr, r.stderr
    assert "nothing was restored" in r.stderr
    assert not state_b.exists() and not conf_b.exists()

    # never into a state directory a running moatd holds
    r = restore(env, tarpath, "--state-dir", a.state_dir, "--force")
    assert r.returncode == 1 and "moatd is running on" in r.stderr, r

    r = restore(env, tarpath, "--state-dir", state_b, "--config", conf_b)
    assert r.returncode == 0, r
    assert (state_b / "secret.key").stat().st_mode & 0o777 == 0o600
    assert (state_b / "tls").stat().st_mode & 0o777 == 0o700
    text = conf_b.read_text()
    assert "hostname = mx.example.com" in text and f"state_dir = {state_b}" in text, text
    # a second restore over it needs --force
    r = restore(env, tarpath, "--state-dir", state_b)
    assert r.returncode == 1 and "is not empty" in r.stderr, r

    a.stop()
    # B: A's API token is in the restored store (hashed), so the same token works
    shutil.copy(str(a.state_dir) + ".token", str(state_b) + ".token")
    b = moatd(state_dir=state_b, opts=opts, extra_args=["--config", str(conf_b)], name="b")
    assert config_view(b) == view_a
    assert server_cert(b) == cert_a

    # inbound: relayed along the restored route to smtp-sink
    marker = new_marker()
    b.send("bill@remote.example.org", "ann@example.com",
           make_message(sender="bill@remote.example.org", to="ann@example.com", marker=marker))
    got = route.wait_marker(marker, timeout=20)
    assert got.rcpt_addrs() == ["ann@example.com"]
    # outbound: signed with A's DKIM key, unsealed with the restored secret.key
    marker = new_marker()
    b.send("ann@example.com", "bill@remote.example.org",
           make_message(sender="ann@example.com", to="bill@remote.example.org", marker=marker))
    ok, why = verify(crlf(mx.wait_marker(marker, timeout=20)), txt)
    assert ok, why
