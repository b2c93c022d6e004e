"""The outbound role (issue 6): authorised outbound hosts, SMTP AUTH accounts,
relay control, and the inbound TLS requirement, with real peers.

"The internet" is remote.example.org: its MX (the session's unbound) is
mx.remote.example.org -> 127.0.0.1, where an smtp-sink listens on the port
moatd uses for MX deliveries (delivery_port).  example.com is internal, routed
to another sink.  127.0.0.1 is the authorised host; 127.0.0.2 is a stranger.
"""

import json
import smtplib
import socket
import time

import pytest

from moatlib import have_ipv6_loopback, make_message, new_marker, tls_client_context

EXT = "remote.example.org"
PASSWORD = "correct-horse-battery-staple"
ACCOUNT = "scanner@example.com"


@pytest.fixture
def world(moatd, sink):
    """(moatd, internal sink, external MX sink); no outbound configuration yet."""
    inside = sink(name="inside")
    mx = sink(name="ext-mx")
    m = moatd(domains={"example.com": f"127.0.0.1:{inside.port}"},
              opts={"delivery_port": mx.port, "retry_schedule": "1s"})
    return m, inside, mx


def _pwfile(m, password=PASSWORD):
    p = m.dir / "pw.txt"
    p.write_text(password + "\n")
    return str(p)


def _smtp_from(m, src, timeout=20):
    return smtplib.SMTP(m.host, m.port, timeout=timeout, source_address=(src, 0))


def _tls(c):
    c.ehlo("client.ext.test")
    assert c.starttls(context=tls_client_context())[0] == 220
    c.ehlo("client.ext.test")


def _nothing_delivered(sink_, settle=1.5):
    time.sleep(settle)
    return sink_.count() == 0


# --- authorised hosts ---------------------------------------------------------

def test_authorised_host_relays_external_by_mx(world):
    m, inside, mx = world
    m.cli("outbound", "host", "add", "127.0.0.1", "--comment", "on-prem server", check=0)
    marker = new_marker()
    qid = m.send("app@example.com", f"bob@{EXT}", make_message(sender="app@example.com",
                                                             marker=marker))
    got = mx.wait_marker(marker, timeout=20)
    assert got.rcpt_addrs() == [f"bob@{EXT}"]
    assert got.sender() == "app@example.com"
    assert inside.count() == 0
    assert qid


def test_stranger_cannot_relay_and_nothing_is_delivered(world):
    m, inside, mx = world
    m.cli("outbound", "host", "add", "127.0.0.1/32", check=0)
    with _smtp_from(m, "127.0.0.2") as c:
        c.ehlo("stranger.ext.test")
        assert c.mail("app@example.com")[0] == 250
        code, text = c.rcpt(f"bob@{EXT}")
        assert code == 550 and text.startswith(b"5.7.1"), (code, text)
        assert c.rcpt("alice@example.com")[0] == 250
        assert c.data(make_message(sender="app@example.com").encode())[0] == 250
    inside.wait_count(1)
    assert _nothing_delivered(mx)


def test_range_covers_other_loopback_addresses_and_removal_applies_at_once(world):
    m, _, mx = world
    r = m.cli("outbound", "host", "add", "127.0.0.0/29", json_out=True, check=0)
    assert r.json["cidr"] == "127.0.0.0/29"
    with _smtp_from(m, "127.0.0.2") as c:
        c.ehlo("host2.example.com")
        c.mail("app@example.com")
        assert c.rcpt(f"carol@{EXT}")[0] == 250
    m.cli("outbound", "host", "remove", "127.0.0.0/29", check=0)
    with _smtp_from(m, "127.0.0.2") as c:
        c.ehlo("host2.example.com")
        c.mail("app@example.com")
        code, text = c.rcpt(f"carol@{EXT}")
        assert (code, text[:5]) == (550, b"5.7.1")


@pytest.mark.skipif(not have_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_loopback_authorised(moatd, sink):
    mx = sink(name="ext-mx")
    m = moatd(listen=[f"[::1]:{_free6()}"],
              opts={"delivery_port": mx.port})
    m.cli("outbound", "host", "add", "::1", check=0)
    marker = new_marker()
    with smtplib.SMTP("::1", m.port, timeout=20) as c:
        c.ehlo("v6.example.com")
        assert c.mail("app@example.com")[0] == 250
        assert c.rcpt(f"dave@{EXT}")[0] == 250
        assert c.data(make_message(sender="app@example.com", marker=marker).encode())[0] == 250
    mx.wait_marker(marker, timeout=20)
    # an IPv4 range does not authorise ::1
    m.cli("outbound", "host", "remove", "::1/128", check=0)
    m.cli("outbound", "host", "add", "127.0.0.1", check=0)
    with smtplib.SMTP("::1", m.port, timeout=20) as c:
        c.ehlo("v6.example.com")
        c.mail("app@example.com")
        assert c.rcpt(f"dave@{EXT}")[0] == 550


def _free6():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.bind(("::1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_internal_domain_from_outbound_host_goes_to_route(world):
    m, inside, mx = world
    m.cli("outbound", "host", "add", "127.0.0.1", check=0)
    marker = new_marker()
    m.send("app@example.com", ["alice@example.com", f"erin@{EXT}"],
           make_message(sender="app@example.com", marker=marker))
    a = inside.wait_marker(marker, timeout=20)
    b = mx.wait_marker(marker, timeout=20)
    assert a.rcpt_addrs() == ["alice@example.com"]
    assert b.rcpt_addrs() == [f"erin@{EXT}"]


# --- SMTP AUTH ----------------------------------------------------------------

@pytest.fixture
def authworld(world):
    m, inside, mx = world
    m.cli("outbound", "account", "add", ACCOUNT, "--password-file", _pwfile(m), check=0)
    return m, inside, mx


@pytest.mark.parametrize("mech,initial", [("PLAIN", True), ("PLAIN", False),
                                          ("LOGIN", True), ("LOGIN", False)])
def test_auth_relays_from_unauthorised_address(authworld, mech, initial):
    m, _, mx = authworld
    marker = new_marker()
    with _smtp_from(m, "127.0.0.2") as c:
        _tls(c)
        assert "auth" in c.esmtp_features and "PLAIN" in c.esmtp_features["auth"].upper()
        c.user, c.password = ACCOUNT, PASSWORD
        meth = c.auth_plain if mech == "PLAIN" else c.auth_login
        code, text = c.auth(mech, meth, initial_response_ok=initial)
        assert (code, text[:5]) == (235, b"2.7.0"), (code, text)
        assert c.mail("scanner@example.com")[0] == 250
        assert c.rcpt(f"frank@{EXT}")[0] == 250
        assert c.data(make_message(sender="scanner@example.com", marker=marker).encode())[0] == 250
    got = mx.wait_marker(marker, timeout=20)
    assert "with ESMTPSA" in got.text, got.text[:600]
    assert any(e.get("auth") == ACCOUNT and e.get("result") == "ok" for e in m.events("auth"))


def test_auth_wrong_password_535_and_no_relay(authworld):
    m, _, mx = authworld
    with _smtp_from(m, "127.0.0.2") as c:
        _tls(c)
        with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
            c.login(ACCOUNT, "wrong-password-123")
        assert ei.value.smtp_code == 535 and ei.value.smtp_error.startswith(b"5.7.8")
        c.mail("scanner@example.com")
        code, _ = c.rcpt(f"gina@{EXT}")
        assert code == 550
    # the password never reaches the log
    assert "wrong-password-123" not in m.log_text()
    assert PASSWORD not in m.log_text()


def test_auth_unknown_account_535(authworld):
    m, _, _ = authworld
    with _smtp_from(m, "127.0.0.2") as c:
        _tls(c)
        with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
            c.login("nobody@example.com", PASSWORD)
        assert ei.value.smtp_code == 535


def test_auth_rate_limited_after_failures(moatd, sink):
    mx = sink(name="ext-mx")
    m = moatd(domains={"example.com": None},
              opts={"delivery_port": mx.port, "smtp_auth_max_failures": 3})
    m.cli("outbound", "account", "add", ACCOUNT, "--password-file", _pwfile(m), check=0)
    with _smtp_from(m, "127.0.0.3") as c:
        _tls(c)
        for _ in range(3):
            code, text = c.docmd("AUTH", "PLAIN " + _plain(ACCOUNT, "bad-guess-000000"))
            assert (code, text[:5]) == (535, b"5.7.8"), (code, text)
        code, text = c.docmd("AUTH", "PLAIN " + _plain(ACCOUNT, PASSWORD))
        assert (code, text[:5]) == (454, b"4.7.0"), (code, text)
    # a new connection from the same address, right password: still refused
    with _smtp_from(m, "127.0.0.3") as c:
        _tls(c)
        code, text = c.docmd("AUTH", "PLAIN " + _plain(ACCOUNT, PASSWORD))
        assert (code, text[:5]) == (454, b"4.7.0"), (code, text)
    # the account itself is limited too: another address cannot hammer it
    with _smtp_from(m, "127.0.0.4") as c:
        _tls(c)
        code, _ = c.docmd("AUTH", "PLAIN " + _plain(ACCOUNT, PASSWORD))
        assert code == 454
    assert any(e.get("result") == "limited" for e in m.events("auth"))


def _plain(user, pw):
    import base64
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


def test_auth_before_tls_538_and_not_advertised(authworld):
    m, _, _ = authworld
    with _smtp_from(m, "127.0.0.2") as c:
        c.ehlo("client.ext.test")
        assert "auth" not in c.esmtp_features
        code, text = c.docmd("AUTH", "PLAIN " + _plain(ACCOUNT, PASSWORD))
        assert (code, text[:6]) == (538, b"5.7.11"), (code, text)


def test_auth_protocol_errors(authworld):
    m, _, _ = authworld
    with _smtp_from(m, "127.0.0.2") as c:
        _tls(c)
        code, text = c.docmd("AUTH", "CRAM-MD5")
        assert (code, text[:5]) == (504, b"5.5.4")
        code, _ = c.docmd("AUTH", "PLAIN")
        assert code == 334
        code, text = c.docmd("*")
        assert (code, text[:5]) == (501, b"5.0.0"), (code, text)
        code, text = c.docmd("AUTH", "PLAIN not*base64")
        assert (code, text[:5]) == (501, b"5.5.2"), (code, text)
        code, text = c.docmd("AUTH", "PLAIN " + _plain(ACCOUNT, PASSWORD))
        assert code == 235, text
        code, text = c.docmd("AUTH", "PLAIN " + _plain(ACCOUNT, PASSWORD))
        assert (code, text[:5]) == (503, b"5.5.1"), (code, text)


def test_auth_inside_transaction_503(authworld):
    m, _, _ = authworld
    with _smtp_from(m, "127.0.0.2") as c:
        _tls(c)
        c.mail("x@ext.test")
        code, text = c.docmd("AUTH", "PLAIN " + _plain(ACCOUNT, PASSWORD))
        assert (code, text[:5]) == (503, b"5.5.1"), (code, text)


def test_authenticated_external_sender_refused_553(authworld):
    m, _, _ = authworld
    with _smtp_from(m, "127.0.0.2") as c:
        _tls(c)
        c.login(ACCOUNT, PASSWORD)
        code, text = c.mail(f"someone@{EXT}")
        assert (code, text[:5]) == (553, b"5.7.1"), (code, text)
        assert b"sender not allowed for this account" in text
        assert c.mail("")[0] == 250      # <> is allowed (bounces)
    assert any(e.get("auth") == ACCOUNT and e.get("code") == "553" for e in m.events("reject"))


def test_client_disconnects_during_verification(authworld):
    """The session goes away while argon2id runs: the job is orphaned, moatd lives on."""
    m, _, mx = authworld
    for _ in range(3):
        c = _smtp_from(m, "127.0.0.2")
        _tls(c)
        c.send(f"AUTH PLAIN {_plain(ACCOUNT, PASSWORD)}\r\n".encode())
        c.sock.close()
    time.sleep(1.0)
    with _smtp_from(m, "127.0.0.2") as c:
        _tls(c)
        assert c.login(ACCOUNT, PASSWORD)[0] == 235
    assert m.running


def test_removed_account_cannot_authenticate(authworld):
    m, _, _ = authworld
    m.cli("outbound", "account", "remove", ACCOUNT, check=0)
    with _smtp_from(m, "127.0.0.2") as c:
        _tls(c)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login(ACCOUNT, PASSWORD)


# --- inbound TLS requirement ----------------------------------------------------

def test_inbound_tls_required_530_in_clear_accepted_after_starttls(world):
    m, inside, _ = world
    m.cli("tls", "inbound", "add", "partner.test", check=0)
    with _smtp_from(m, "127.0.0.2") as c:
        c.ehlo("mx.partner.test")
        code, text = c.mail("x@mail.partner.test")      # a subdomain counts
        assert (code, text[:5]) == (530, b"5.7.0"), (code, text)
        assert c.mail("x@other.test")[0] == 250          # others are not affected
    marker = new_marker()
    with _smtp_from(m, "127.0.0.2") as c:
        _tls(c)
        assert c.mail("x@partner.test")[0] == 250
        assert c.rcpt("alice@example.com")[0] == 250
        assert c.data(make_message(sender="x@partner.test", marker=marker).encode())[0] == 250
    inside.wait_marker(marker, timeout=20)
    assert any("tls_inbound" in (e.get("reason") or "") for e in m.events("reject"))
    m.cli("tls", "inbound", "remove", "partner.test", check=0)
    with _smtp_from(m, "127.0.0.2") as c:
        c.ehlo("mx.partner.test")
        assert c.mail("x@partner.test")[0] == 250


# --- a real Postfix relays outbound through Moat --------------------------------------

def test_postfix_relays_outbound_through_moat(world, postfix):
    m, _, mx = world
    m.cli("outbound", "host", "add", "127.0.0.1/32", check=0)
    pf = postfix(["--role", "relay", "--domain", EXT, "--relay-to", f"127.0.0.1:{m.port}"])
    marker = new_marker()
    with smtplib.SMTP("127.0.0.1", pf.port, timeout=20) as c:
        c.ehlo("app.example.com")
        assert c.mail("app@example.com")[0] == 250
        assert c.rcpt(f"henry@{EXT}")[0] == 250
        assert c.data(make_message(sender="app@example.com", marker=marker).encode())[0] == 250
    got = mx.wait_marker(marker, timeout=40)
    assert got.rcpt_addrs() == [f"henry@{EXT}"]
    assert "(Moat)" in got.text


# --- CLI and API round trips --------------------------------------------------------

def test_cli_round_trips_and_errors(world):
    m, _, _ = world
    r = m.cli("outbound", "host", "add", "192.0.2.0/24", "--comment", "office", json_out=True,
              check=0)
    hid = r.json["id"]
    m.cli("outbound", "host", "add", "2001:db8::/32", check=0)
    m.cli("outbound", "host", "add", "::ffff:198.51.100.7", check=0)
    lst = m.cli("outbound", "host", "list", json_out=True, check=0).json
    cidrs = {h["cidr"] for h in lst}
    assert cidrs == {"192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32"}
    human = m.cli("outbound", "host", "list", check=0).stdout
    assert "192.0.2.0/24" in human and "office" in human
    dup = m.cli("outbound", "host", "add", "192.0.2.0/24")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad = m.cli("outbound", "host", "add", "192.0.2.1/24")
    assert bad.returncode == 1 and "host bits" in bad.stderr
    bad = m.cli("outbound", "host", "add", "300.1.1.1")
    assert bad.returncode == 1 and "not an IPv4 or IPv6 address" in bad.stderr
    m.cli("outbound", "host", "remove", str(hid), check=0)
    m.cli("outbound", "host", "remove", "2001:db8::/32", check=0)
    gone = m.cli("outbound", "host", "remove", "2001:db8::/32")
    assert gone.returncode == 1

    add = m.cli("outbound", "account", "add", "Relay@Example.com", json_out=True, check=0)
    generated = add.json["password"]
    assert len(generated) >= 20
    lst = m.cli("outbound", "account", "list", json_out=True, check=0).json
    assert [a["name"] for a in lst] == ["relay@example.com"]
    assert "password" not in lst[0] and "password_hash" not in json.dumps(lst)
    new = m.cli("outbound", "account", "passwd", "relay@example.com", check=0).stdout
    assert "password:" in new and generated not in new
    bad = m.cli("outbound", "account", "add", "has space")
    assert bad.returncode == 1 and "name" in bad.stderr
    short = m.dir / "short.txt"
    short.write_text("short\n")
    bad = m.cli("outbound", "account", "add", "x@example.com", "--password-file", str(short))
    assert bad.returncode == 1 and "password" in bad.stderr
    m.cli("outbound", "account", "remove", "relay@example.com", check=0)
    assert m.cli("outbound", "account", "remove", "relay@example.com").returncode == 1

    m.cli("tls", "inbound", "add", "Partner.Test", check=0)
    assert m.cli("tls", "inbound", "list", check=0).stdout.split() == ["partner.test"]
    bad = m.cli("tls", "inbound", "add", "not a domain")
    assert bad.returncode == 1 and "domain" in bad.stderr
    m.cli("tls", "inbound", "remove", "partner.test", check=0)
    assert m.cli("tls", "inbound", "list", json_out=True, check=0).json == []
    usage = m.cli("outbound", "host", "frobnicate", "x")
    assert usage.returncode == 2


def test_api_errors_and_audit(world):
    import urllib.request
    import urllib.error
    m, _, _ = world
    base = f"http://127.0.0.1:{m.http_port}"

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {m.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    st, b = call("POST", "/api/v1/outbound/hosts", {"cidr": "10.0.0.0/33"})
    assert st == 400 and b["error"]["field"] == "cidr"
    # never an open relay: a range as wide as most of the internet is refused
    for wide in ("0.0.0.0/0", "::/0", "64.0.0.0/2"):
        st, b = call("POST", "/api/v1/outbound/hosts", {"cidr": wide})
        assert st == 400 and b["error"]["field"] == "cidr", (wide, b)
        assert "open relay" in b["error"]["message"], b
    st, b = call("POST", "/api/v1/outbound/hosts", {"cidr": "10.0.0.0/8", "extra": 1})
    assert st == 400 and b["error"]["field"] == "extra"
    st, b = call("POST", "/api/v1/outbound/hosts", {"cidr": "10.0.0.0/8"})
    assert st == 201 and b["cidr"] == "10.0.0.0/8"
    st, _ = call("POST", "/api/v1/outbound/hosts", {"cidr": "10.0.0.0/8"})
    assert st == 409
    st, _ = call("DELETE", f"/api/v1/outbound/hosts/{b['id']}")
    assert st == 204
    st, b = call("DELETE", "/api/v1/outbound/hosts/424242")
    assert st == 404
    st, b = call("POST", "/api/v1/outbound/accounts", {"name": "a" * 129})
    assert st == 400 and b["error"]["field"] == "name"
    st, b = call("POST", "/api/v1/outbound/accounts", {"name": "ok@example.com", "password": "short"})
    assert st == 400 and b["error"]["field"] == "password"
    st, b = call("POST", "/api/v1/outbound/accounts",
                 {"name": "ok@example.com", "password": "long-enough-password"})
    assert st == 201 and "password" not in b
    st, _ = call("POST", "/api/v1/outbound/accounts", {"name": "OK@example.com"})
    assert st == 409
    st, b = call("POST", "/api/v1/outbound/accounts/nobody@example.com/password", {})
    assert st == 404
    st, b = call("POST", "/api/v1/tls/inbound", {"domain": "bad..domain"})
    assert st == 400 and b["error"]["field"] == "domain"
    st, b = call("DELETE", "/api/v1/tls/inbound/never.test")
    assert st == 404
    audit = m.cli("audit", json_out=True, check=0).json
    text = json.dumps(audit)
    assert "outbound_host.create" in text and "smtp_account.create" in text
    assert "long-enough-password" not in text and "$argon2id$" not in text
