"""The moat CLI and moatd's command line."""

import json
import os
import re
import subprocess
import time

import pytest

import moatlib
from moatlib import free_port, make_message, wait_until


def domain_names(res):
    """Domain names in `moat --json domain list` output, whatever the wrapper."""
    data = res.json
    if isinstance(data, dict):
        for k in ("domains", "result", "items"):
            if k in data:
                data = data[k]
                break
    assert isinstance(data, list), f"domain list --json is not a list: {res.stdout!r}"
    out = []
    for d in data:
        out.append(d if isinstance(d, str) else d.get("name"))
    return out


def test_domain_add_list_remove(cli):
    cli("domain", "add", "example.com", check=0)
    cli("domain", "add", "Example.ORG", check=0)
    res = cli("domain", "list", json_out=True, check=0)
    assert sorted(domain_names(res)) == ["example.com", "example.org"], res
    text = cli("domain", "list", check=0).stdout
    assert "example.com" in text and "example.org" in text

    dup = cli("domain", "add", "example.com", check=1)
    assert "example.com" in dup.stderr and dup.stderr.strip(), dup
    assert dup.stdout == ""

    cli("domain", "remove", "example.org", check=0)
    assert domain_names(cli("domain", "list", json_out=True, check=0)) == ["example.com"]
    gone = cli("domain", "remove", "example.org", check=1)
    assert "example.org" in gone.stderr, gone


@pytest.mark.parametrize("bad", ["bad-.example", "exa mple.com", "a..b", "x" * 64 + ".com", ""])
def test_domain_add_rejects_bad_names(cli, bad):
    r = cli("domain", "add", bad)
    assert r.returncode == 1, r
    assert r.stderr.strip(), r
    assert domain_names(cli("domain", "list", json_out=True, check=0)) == []


def test_usage_errors_exit_2(cli):
    for args in (["frobnicate"], ["domain"], ["domain", "add"], ["route", "set", "example.com"],
                 ["queue", "explode"]):
        r = cli(*args)
        assert r.returncode == 2, r
        assert r.stderr.strip(), r


def test_route_set_show(cli):
    cli("domain", "add", "example.com", check=0)
    cli("route", "set", "example.com", "mail.example.test:2526", check=0)
    r = cli("route", "show", "example.com", json_out=True, check=0)
    blob = json.dumps(r.json)
    assert "mail.example.test" in blob and "2526" in blob
    assert "opportunistic" in blob, "the default TLS mode is opportunistic"
    cli("route", "set", "example.com", "127.0.0.6", "--tls", "strict", "--override", check=0)
    r = cli("route", "show", "example.com", json_out=True, check=0)
    blob = json.dumps(r.json)
    assert "127.0.0.6" in blob and "strict" in blob and "mail.example.test" not in blob
    assert re.search(r'"port":\s*25\b', blob) or ":25" in blob, f"default port 25: {blob}"
    # all routes
    text = cli("route", "show", check=0).stdout
    assert "example.com" in text and "127.0.0.6" in text
    # errors
    r = cli("route", "set", "unknown.test", "10.1.2.3")
    assert r.returncode == 1 and "unknown.test" in r.stderr, r
    r = cli("route", "set", "example.com", "10.1.2.3", "--tls", "sometimes")
    assert r.returncode in (1, 2) and r.stderr.strip(), r
    r = cli("route", "set", "example.com", "10.1.2.3:99999")
    assert r.returncode in (1, 2) and r.stderr.strip(), r


def test_url_and_token_from_cli_conf(cli):
    """Without MOAT_URL/MOAT_TOKEN the CLI reads ~/.config/moat/cli.conf, and
    refuses one that others can read (it holds a token)."""
    m = cli.moatd
    home = m.dir / "home"
    conf = home / ".config" / "moat" / "cli.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"url = http://127.0.0.1:{m.http_port}\ntoken = {m.token}\n")
    conf.chmod(0o600)
    env = moatlib.sanitizer_env()
    env.pop("MOAT_URL", None)
    env.pop("MOAT_TOKEN", None)
    env["HOME"] = str(home)
    r = moatlib.run_cli(env, "domain", "add", "conf.example", check=0)
    assert "conf.example" in domain_names(cli("domain", "list", json_out=True, check=0))
    conf.chmod(0o644)
    r = moatlib.run_cli(env, "domain", "list")
    assert r.returncode == 1 and "cli.conf" in r.stderr, r


def test_queue_commands(moatd, sink):
    port = free_port()
    route = sink(port=port, start=False)
    m = moatd(domains={"example.com": f"127.0.0.1:{port}"}, opts={"retry_schedule": "1h"})
    q1 = m.send("a@ext.test", "alice@example.com", make_message(subject="one"))
    q2 = m.send("b@ext.test", "bob@example.com", make_message(subject="two"))
    q3 = m.send("c@ext.test", "carol@example.com", make_message(subject="three"))

    res = m.cli("queue", "list", json_out=True, check=0)
    assert {q1.upper(), q2.upper(), q3.upper()} <= set(moatlib.find_qids(res.json)), res
    text = m.cli("queue", "list", check=0).stdout
    assert q1.upper() in text.upper() and "alice@example.com" in text

    show = m.cli("queue", "show", q2, json_out=True, check=0)
    blob = json.dumps(show.json)
    assert "bob@example.com" in blob and "b@ext.test" in blob
    r = m.cli("queue", "show", "0123456789ABCDEF")
    assert r.returncode == 1 and r.stderr.strip(), r

    # delete q3: gone, never delivered
    m.cli("queue", "delete", q3, check=0)
    assert q3.upper() not in m.queue_ids()

    # retry one now (retry_schedule is 1 h, so only the command can make it go)
    route.start()
    m.cli("queue", "retry", q1, check=0)
    wait_until(lambda: any(x.rcpt_addrs() == ["alice@example.com"] for x in route.messages()), 10,
               what="q1 delivered after `moat queue retry`")
    assert q2.upper() in m.queue_ids()
    m.cli("queue", "retry", "--all", check=0)
    wait_until(lambda: any(x.rcpt_addrs() == ["bob@example.com"] for x in route.messages()), 10,
               what="q2 delivered after `moat queue retry --all`")
    wait_until(lambda: not m.queue_ids(), 10, what="empty queue")
    time.sleep(0.5)
    assert not any(x.rcpt_addrs() == ["carol@example.com"] for x in route.messages())


def test_status(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    r = m.cli("status", json_out=True, check=0)
    assert isinstance(r.json, dict), r
    assert m.cli("status", check=0).stdout.strip()
    m.stop()
    r = m.cli("status")
    assert r.returncode == 1 and r.stderr.strip(), f"status without a daemon: {r}"


def test_commands_without_a_daemon_fail_clearly(cli):
    env = cli.moatd.cli_env()
    env["MOAT_URL"] = f"http://127.0.0.1:{moatlib.free_port()}"
    for args in (["queue", "list"], ["domain", "add", "x.example"], ["status"]):
        r = moatlib.run_cli(env, *args)
        assert r.returncode == 1, r
        assert r.stderr.strip(), r


def write_conf(tmp_path, body):
    p = tmp_path / "moat.conf"
    p.write_text(body)
    return p


def check_config(path, *extra):
    return subprocess.run([str(moatlib.MOATD), "--config", str(path), "--check-config"] + list(extra),
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("line3,key", [
    ("smtp_max_command_line = 100", "smtp_max_command_line"),    # below the RFC minimum
    ("message_size_limit = lots", "message_size_limit"),
    ("retry_schedule = 1s,never", "retry_schedule"),
    ("no_such_setting = 1", "no_such_setting"),
    ("smtp_timeout_command = 5 parsecs", "smtp_timeout_command"),
])
def test_check_config_bad_line(workdir, line3, key):
    if not moatlib.MOATD.exists():
        pytest.fail(f"not built: {moatlib.MOATD}")
    conf = write_conf(workdir, f"# moat.conf\nstate_dir = {workdir}/state\n{line3}\nlog_level = info\n")
    r = check_config(conf)
    assert r.returncode == 78, r
    assert key in r.stderr, r.stderr
    assert re.search(r"(:3\b|line 3\b)", r.stderr), f"line number missing: {r.stderr!r}"


def test_check_config_good_and_override(workdir):
    if not moatlib.MOATD.exists():
        pytest.fail(f"not built: {moatlib.MOATD}")
    conf = write_conf(workdir, f"state_dir = {workdir}/state\nmessage_size_limit = 10M\n")
    r = check_config(conf)
    assert r.returncode == 0, r
    r = check_config(conf, "-o", "smtp_max_recipients=5")
    assert r.returncode == 78 and "smtp_max_recipients" in r.stderr, r


def test_version(workdir):
    if not moatlib.MOATD.exists():
        pytest.fail(f"not built: {moatlib.MOATD}")
    r = subprocess.run([str(moatlib.MOATD), "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and re.search(r"\d+\.\d+\.\d+", r.stdout + r.stderr), r


def test_moatd_bad_override_exits_78(moatd):
    m = moatd(opts={"smtp_max_errors": "zero"}, start=False)
    m.start(wait=False)
    rc = m.wait_exit()
    assert rc == 78
    assert "smtp_max_errors" in m.log_text()


def test_moatd_port_in_use_fails_cleanly(moatd, sink):
    s = sink()
    m = moatd(start=False, listen=[f"127.0.0.1:{s.port}"])
    m.start(wait=False)
    rc = m.wait_exit()
    assert rc != 0
    assert str(s.port) in m.log_text()
