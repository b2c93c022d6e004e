"""The moat CLI over the API: every skeleton command, accounts, tokens, audit,
`moat login` writing cli.conf (0600), --json, and errors with the API's message."""

import json
import os

from api_fixtures import api_moatd  # noqa: F401


def test_cli_domains_routes_status(api_moatd):
    m = api_moatd()
    r = m.cli("domain", "add", "Example.COM")
    assert r.returncode == 0, r.stderr
    assert m.cli("route", "set", "example.com", "mail.example.net:2525", "--tls", "strict",
                 "--override").returncode == 0
    r = m.cli("--json", "domain", "list")
    data = json.loads(r.stdout)
    assert [d["name"] for d in data] == ["example.com"]
    assert data[0]["route"] == {"host": "mail.example.net", "port": 2525, "tls": "strict"}
    assert "mail.example.net:2525" in m.cli("route", "show").stdout
    assert "example.com -> mail.example.net:2525 (tls strict)" in m.cli("route", "show", "example.com").stdout
    r = m.cli("domain", "add", "example.com")
    assert r.returncode == 1 and "already exists" in r.stderr and r.stdout == ""
    r = m.cli("domain", "add", "bad-.example")
    assert r.returncode == 1 and "field: name" in r.stderr
    assert m.cli("status").returncode == 0
    assert json.loads(m.cli("--json", "status").stdout)["version"]
    assert "the queue is empty" in m.cli("queue", "list").stdout
    r = m.cli("queue", "show", "0123456789ABCDEF")
    assert r.returncode == 1 and "no message" in r.stderr
    assert m.cli("queue", "retry", "--all").returncode == 0
    assert m.cli("domain", "remove", "example.com").returncode == 0
    assert json.loads(m.cli("--json", "domain", "list").stdout) == []


def test_cli_errors_and_help(api_moatd):
    m = api_moatd()
    r = m.cli("domain", "list", token="moat_bogus")
    assert r.returncode == 1 and "HTTP 401" in r.stderr
    r = m.cli("status", env={"MOAT_URL": "http://127.0.0.1:9"})
    assert r.returncode == 1 and "cannot reach moatd" in r.stderr
    assert m.cli("--help").returncode == 0
    for cmd in (["domain", "add"], ["account", "add"], ["token", "create"], ["audit"], ["login"]):
        h = m.cli(*cmd, "--help")
        assert h.returncode == 0 and h.stdout.startswith("usage: moat"), cmd
    assert m.cli("frobnicate").returncode == 2


def test_cli_accounts_tokens_audit_and_login(api_moatd):
    m = api_moatd()
    r = m.cli("--json", "account", "add", "grace", "--role", "basic_admin")
    assert r.returncode == 0, r.stderr
    one_time = json.loads(r.stdout)["password"]
    assert "grace" in m.cli("account", "list").stdout
    assert m.cli("account", "role", "grace", "admin").returncode == 0
    assert json.loads(m.cli("--json", "account", "list").stdout)[1]["role"] == "admin"
    # moat login: forced change, token, cli.conf 0600; then commands use it
    env = {"MOAT_TOKEN": "", "MOAT_PASSWORD": one_time,
           "MOAT_NEW_PASSWORD": "grace-new-password-1"}
    r = m.cli("login", "--name", "grace", token="", env=env)
    assert r.returncode == 0, r.stderr
    conf = m.dir / ".config" / "moat" / "cli.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    assert "token = moat_" in conf.read_text()
    r = m.cli("domain", "add", "grace.example", token="", env={"MOAT_URL": ""})
    assert r.returncode == 0, r.stderr
    entries = json.loads(m.cli("--json", "audit", "--account", "grace").stdout)
    assert any(e["action"] == "domain.create" for e in entries)
    assert one_time not in json.dumps(entries) and "grace-new-password-1" not in json.dumps(entries)
    # tokens
    r = m.cli("--json", "token", "create", "ci", "--role", "basic_admin")
    tok = json.loads(r.stdout)
    assert m.cli("domain", "list", token=tok["token"]).returncode == 0
    assert m.cli("account", "list", token=tok["token"]).returncode == 1
    assert "ci" in m.cli("token", "list").stdout
    assert m.cli("token", "revoke", str(tok["id"])).returncode == 0
    assert m.cli("domain", "list", token=tok["token"]).returncode == 1
    assert m.cli("account", "remove", "grace").returncode == 0
    assert "audit" in m.cli("audit", "--limit", "5").stdout or m.cli("audit", "--limit", "5").returncode == 0
