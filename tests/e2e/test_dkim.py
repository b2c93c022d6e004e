"""DKIM signing of outbound mail (issue 6 item 5).

Keys are made with `moat dkim keygen`; the record Moat prints is published in
the test unbound and read back with dig (so the split into <= 255-octet strings
is what a resolver returns); every signature is checked by dkim_verifier.py,
an independent verifier (standard library + the openssl command line), never
by libopendkim.

How mail reaches an external domain here: a bounce.  Moat's host name is
mx.example.com, a subdomain of the internal domain example.com, so the DSN
Moat sends to an external sender (by MX, to smtp-sink on delivery_port) is
From: MAILER-DAEMON@mx.example.com and must be signed with example.com's key.
The relay of an authorised outbound host (`moat outbound host add`) is
covered by test_outbound_relay_signed, which runs once that command exists.
"""

import re
import subprocess

import pytest

from dkim_verifier import parse_tags, verify
from moatlib import make_message, new_marker, wait_until

FAST = {"retry_schedule": "1s"}
HOSTNAME = "mx.example.com"


def dig_txt(unbound, name):
    """the TXT value at name through the test resolver, its strings concatenated"""
    r = subprocess.run(["dig", "+short", "-p", str(unbound.port), "@127.0.0.1", name, "TXT"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip()
    assert out, f"no TXT at {name}"
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', out))


def publish(unbound, key):
    """publish the record as Moat printed it (the zone form: quoted strings)"""
    rec = key["dns_record"]
    strings = rec["strings"]
    assert all(len(s) <= 255 for s in strings), [len(s) for s in strings]
    assert "".join(strings) == rec["value"]
    # the zone line carries exactly these strings
    assert re.findall(r'"([^"]*)"', rec["zone"]) == strings, rec["zone"]
    # the session's unbound (moatlib.Unbound): a name outside its zones gets a
    # transparent local zone of its own; TTL 0, so nothing is cached
    unbound.control("local_data_remove", rec["name"])
    r = unbound.control("local_data", f'{rec["name"]}. 0 IN TXT ' +
                        " ".join(f'"{s}"' for s in strings))
    assert r.returncode == 0 and "error" not in r.stdout, r.stdout + r.stderr
    return dig_txt(unbound, rec["name"])


def keygen(m, domain, *args):
    r = m.cli("dkim", "keygen", domain, *args, json_out=True, check=0)
    return r.json


def crlf(sink_msg):
    """the message as sent (smtp-sink dumps LF lines); smtp-sink's own Received first"""
    return re.sub(rb"\r?\n", b"\r\n", sink_msg.data)


def bounce_through_mx(moatd, sink, unbound, hostname=HOSTNAME, opts=None):
    bad = sink(args=["-f", "RCPT", "-B", "550 5.1.1 no such user"], name="route")
    mx = sink(name="ext-mx")
    m = moatd(domains={"example.com": f"127.0.0.1:{bad.port}"},
              opts=dict(FAST, delivery_port=mx.port, hostname=hostname, **(opts or {})))
    return m, mx


def provoke_dsn(m, mx, n=1):
    """the n-th DSN: a bounce for ghost@example.com, found by the marker it returns"""
    marker = new_marker()
    m.send("bill@remote.example.org", "ghost@example.com",
           make_message(sender="bill@remote.example.org", marker=marker))
    return mx.wait_marker(marker, timeout=20)


@pytest.mark.parametrize("alg,a_tag", [("rsa", "rsa-sha256"), ("ed25519", "ed25519-sha256")])
def test_dsn_to_external_domain_is_signed(moatd, sink, unbound, alg, a_tag):
    m, mx = bounce_through_mx(moatd, sink, unbound)
    key = keygen(m, "example.com", "--algorithm", alg, "--selector", f"t{alg}")
    assert key["active"] is True and key["algorithm"] == alg
    txt = publish(unbound, key)
    assert txt == key["dns_record"]["value"]
    dsn = provoke_dsn(m, mx)
    raw = crlf(dsn)
    sig = dsn.msg["DKIM-Signature"]
    assert sig, "the DSN to an external domain carries no DKIM-Signature:\n" + dsn.text[:2000]
    tags = parse_tags(re.sub(r"\s+", " ", sig))
    assert tags["a"] == a_tag and tags["d"] == "example.com" and tags["s"] == f"t{alg}"
    assert tags["c"] == "relaxed/relaxed" and "l" not in tags and "t" in tags
    signed = [h.strip().lower() for h in tags["h"].split(":")]
    assert signed.count("from") == 2, f"From must be oversigned: h={tags['h']}"
    for h in ("subject", "date", "message-id", "to", "mime-version", "content-type"):
        assert h in signed, f"{h} not signed: h={tags['h']}"
    ok, why = verify(raw, txt)
    assert ok, why
    # the verifier can fail: a changed body, a changed header, another key
    assert verify(raw.replace(b"Delivery", b"Delivary", 1), txt)[0] is False
    body_at = raw.index(b"\r\n\r\n")
    tampered = raw[:body_at + 4] + raw[body_at + 4:].replace(b"ghost", b"ghast", 1)
    ok, why = verify(tampered, txt)
    assert not ok and "body hash" in why
    other = keygen(m, "example.com", "--algorithm", alg, "--selector", "other", "--inactive")
    assert verify(raw, other["dns_record"]["value"])[0] is False
    assert any(e.get("event") == "dkim_signed" for e in m.events())


def test_unsigned_without_key_and_for_foreign_from(moatd, sink, unbound):
    """No key: unsigned.  A key for another internal domain: still unsigned (the
    DSN's From is under example.com, the key is for corp.example.net)."""
    bad = sink(args=["-f", "RCPT", "-B", "550 5.1.1 no such user"], name="route")
    mx = sink(name="ext-mx")
    m = moatd(domains={"example.com": f"127.0.0.1:{bad.port}", "corp.example.net": None},
              opts=dict(FAST, delivery_port=mx.port, hostname=HOSTNAME))
    dsn = provoke_dsn(m, mx, 1)
    assert dsn.msg["DKIM-Signature"] is None
    keygen(m, "corp.example.net")
    dsn = provoke_dsn(m, mx, 2)
    assert dsn.msg["DKIM-Signature"] is None


def test_internal_delivery_is_not_signed(moatd, sink, unbound):
    """Mail to the organisation's own route is not DKIM-signed (only external MX)."""
    route = sink(name="route")
    m = moatd(domains={"example.com": f"127.0.0.1:{route.port}"}, opts=FAST)
    keygen(m, "example.com")
    marker = new_marker()
    m.send("bill@remote.example.org", "alice@example.com",
           make_message(sender="bill@remote.example.org", marker=marker))
    got = route.wait_marker(marker)
    assert got.msg["DKIM-Signature"] is None


def test_rotation_activate_and_remove(moatd, sink, unbound):
    m, mx = bounce_through_mx(moatd, sink, unbound)
    first = keygen(m, "example.com", "--selector", "one")
    txt1 = publish(unbound, first)
    second = keygen(m, "example.com", "--selector", "two", "--inactive")
    assert second["active"] is False
    listed = m.cli("dkim", "list", "example.com", json_out=True, check=0).json
    state = {k["selector"]: k["active"] for k in listed}
    assert state == {"one": True, "two": False}, listed
    assert all("private" not in str(k).lower() and "BEGIN" not in str(k) for k in listed)
    ok, why = verify(crlf(provoke_dsn(m, mx, 1)), txt1)
    assert ok, why
    # publish the new record first, then switch
    txt2 = publish(unbound, second)
    out = m.cli("dkim", "activate", "example.com", "two", check=0).stdout
    assert "two" in out and "_domainkey.example.com" in out
    dsn = provoke_dsn(m, mx, 2)
    assert "s=two" in re.sub(r"\s+", "", dsn.msg["DKIM-Signature"])
    ok, why = verify(crlf(dsn), txt2)
    assert ok, why
    # removing the active key stops signing
    m.cli("dkim", "remove", "example.com", "two", check=0)
    dsn = provoke_dsn(m, mx, 3)
    assert dsn.msg["DKIM-Signature"] is None
    audit = m.cli("audit", json_out=True, check=0).json
    actions = [e.get("action") for e in (audit["items"] if isinstance(audit, dict) else audit)]
    for a in ("dkim.keygen", "dkim.activate", "dkim.delete"):
        assert a in actions, actions


def test_keys_survive_restart_encrypted(moatd, sink, unbound):
    """The private key is stored sealed (no PEM in the database) and signs after a restart."""
    m, mx = bounce_through_mx(moatd, sink, unbound)
    key = keygen(m, "example.com", "--selector", "keep")
    txt = publish(unbound, key)
    db = next(m.state_dir.glob("*.db"), None) or next(m.state_dir.rglob("*.db"))
    data = db.read_bytes()
    for wal in m.state_dir.rglob("*.db-wal"):
        data += wal.read_bytes()
    assert b"PRIVATE KEY" not in data, "the private key is in the database in the clear"
    m.stop()
    m.start()
    ok, why = verify(crlf(provoke_dsn(m, mx, 1)), txt)
    assert ok, why


def test_cli_keygen_output_and_errors(moatd, unbound):
    m = moatd(domains={"example.com": None}, opts=FAST)
    r = m.cli("dkim", "keygen", "example.com", check=0)
    # the zone form: SEL._domainkey.example.com. IN TXT ( "..." "..." ), and the unsplit value
    zm = re.search(r'^(moat\d{6})\._domainkey\.example\.com\. IN TXT \( "v=DKIM1; k=rsa; p=',
                   r.stdout, re.M)
    assert zm, r.stdout
    for s in re.findall(r'"([^"]*)"', r.stdout):
        assert len(s) <= 255
    assert re.search(r"^  value: v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{300,}$", r.stdout, re.M), r.stdout
    # a second default keygen in the same month gets another selector
    r2 = m.cli("dkim", "keygen", "example.com", json_out=True, check=0).json
    assert r2["selector"] == zm.group(1) + "a"
    rec = m.cli("dkim", "record", "example.com", check=0).stdout
    assert r2["selector"] + "._domainkey.example.com" in rec
    # an Ed25519 record carries the 32-octet raw key (RFC 8463)
    ed = m.cli("dkim", "keygen", "example.com", "--algorithm", "ed25519", json_out=True, check=0).json
    import base64
    p = parse_tags(ed["dns_record"]["value"])["p"]
    assert len(base64.b64decode(p)) == 32 and "k=ed25519" in ed["dns_record"]["value"]
    # errors: non-zero exit and the field named
    bad = m.cli("dkim", "keygen", "remote.example.org", check=1)
    assert "not an internal domain" in bad.stderr
    bad = m.cli("dkim", "keygen", "example.com", "--algorithm", "dsa", check=1)
    assert "algorithm" in bad.stderr
    bad = m.cli("dkim", "keygen", "example.com", "--selector", "bad_sel!", check=1)
    assert "selector" in bad.stderr
    bad = m.cli("dkim", "keygen", "example.com", "--selector", ed["selector"], check=1)
    assert "already" in bad.stderr
    bad = m.cli("dkim", "remove", "example.com", "nosuch", check=1)
    assert "nosuch" in bad.stderr
    bad = m.cli("dkim", "activate", "example.com", "nosuch", check=1)
    assert "nosuch" in bad.stderr
    # a subdomain of an internal domain is fine
    sub = m.cli("dkim", "keygen", "news.example.com", json_out=True, check=0).json
    assert sub["dns_record"]["name"].endswith("._domainkey.news.example.com")


def test_outbound_relay_signed(moatd, sink, unbound):
    """The final path: an authorised outbound host relays to the internet, signed."""
    mx = sink(name="ext-mx")
    route = sink(name="route")
    m = moatd(domains={"example.com": f"127.0.0.1:{route.port}"},
              opts=dict(FAST, delivery_port=mx.port))
    r = m.cli("outbound", "host", "add", "127.0.0.1/32", check=None)
    if r.returncode != 0:
        pytest.skip("no outbound relay yet (moat outbound host add: %s)" % r.stderr.strip()[:100])
    key = keygen(m, "example.com", "--algorithm", "ed25519", "--selector", "out")
    txt = publish(unbound, key)
    marker = new_marker()
    m.send("ann@example.com", "bill@remote.example.org",
           make_message(sender="ann@example.com", to="bill@remote.example.org", marker=marker,
                        body="line with trailing space \r\n\r\n\r\nend"))
    got = mx.wait_marker(marker, timeout=20)
    ok, why = verify(crlf(got), txt)
    assert ok, why
