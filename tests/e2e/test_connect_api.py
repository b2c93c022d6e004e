"""Connect through the API and the CLI: the checklist on a fresh install, the
organisation (strict PATCH, validation naming each field, audit), skip rules,
tasks whose checks arrive later, and Connect following the live
configuration (a domain added with the CLI is checked by the timer; with no
resolver answering the outcome is "unknown" and nothing moves back).

The checks against real DNS and SMTP peers (domains, inbound, mx, lockdown)
are in test_connect_dns.py and friends; here moatd's resolver is a closed
port (127.0.0.1:9), so every look-up is a resolver error.
"""

import time

from api_fixtures import Api, api_moatd, token_for  # noqa: F401

TASKS = ["organisation", "domains", "directory", "users", "authentication", "inbound",
         "outbound", "permitted_senders", "recipient_validation", "mx", "antispoof_bypass",
         "tls_policies", "journaling", "admins", "forwarding", "lockdown"]

ORG = {"name": "Example Ltd", "environment": "microsoft365", "contact_name": "Ann Admin",
       "contact_email": "ann@example.net", "contact_phone": "+44 20 7946 0000",
       "public_hosts": ["mx1.moat.example.net", "mx2.moat.example.net"],
       "public_ips": ["192.0.2.25", "2001:db8::25"]}


def tasks_by_id(overview):
    return {t["id"]: t for t in overview["tasks"]}


def test_fresh_checklist(api_moatd):
    m = api_moatd()
    r = m.admin().get("/api/v1/connect")
    assert r.status == 200, r
    assert [t["id"] for t in r.json["tasks"]] == TASKS
    t = tasks_by_id(r.json)
    assert t["organisation"]["state"] == "todo"
    assert all(t[i]["state"] == "locked" for i in TASKS[1:])
    assert t["domains"]["blocked_by"] == ["organisation"]
    assert t["recipient_validation"]["blocked_by"] == ["directory|users"]
    assert t["mx"]["blocked_by"] == ["inbound", "recipient_validation"]
    assert t["lockdown"]["blocked_by"][0] == "mx" and "mx_age" in t["lockdown"]["blocked_by"]
    assert t["forwarding"]["optional"] and not t["mx"]["optional"]
    assert t["directory"]["checkable"] and not t["directory"].get("later_issue")
    assert not t["authentication"]["checkable"] and t["authentication"]["later_issue"]
    assert t["journaling"]["checkable"] and not t["journaling"].get("later_issue")
    assert all(x["next_step"] for x in r.json["tasks"])
    assert r.json["summary"] == {"total": 16, "done_or_skipped": 0, "mandatory": 12,
                                 "mandatory_done": 0}
    assert r.json["warnings"] == []

    out = m.cli("connect")
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == 16
    assert lines[0].startswith("[ ] todo") and "organisation" in lines[0]
    assert "(blocked by: inbound, recipient_validation)" in lines[9]
    assert "(blocked by: directory or users)" in lines[8]

    d = m.admin().get("/api/v1/connect/mx")
    assert d.status == 200
    assert [p["requires"] for p in d.json["prerequisites"]] == ["inbound", "recipient_validation"]
    assert m.admin().get("/api/v1/connect/nonesuch").status == 404


def test_organisation_patch_validates_and_audits(api_moatd):
    m = api_moatd()
    a = m.admin()
    bad = [({"environment": "lotus"}, "environment"),
           ({"contact_email": "nobody"}, "contact_email"),
           ({"public_hosts": ["mx1"]}, "public_hosts"),
           ({"public_hosts": "mx1.example.com"}, "public_hosts"),
           ({"public_ips": ["192.0.2.256"]}, "public_ips"),
           ({"probe_source": "not-an-ip"}, "probe_source"),
           ({"colour": "blue"}, "colour")]
    for body, field in bad:
        r = a.request("PATCH", "/api/v1/organisation", body=body)
        assert r.status == 400, (body, r)
        assert r.error["field"] == field, (body, r)
    assert a.get("/api/v1/organisation").json["environment"] == ""

    r = a.request("PATCH", "/api/v1/organisation", body={"environment": "exchange"})
    assert r.status == 200, r
    t = tasks_by_id(a.get("/api/v1/connect").json)
    assert t["organisation"]["state"] == "in_progress"
    assert "contact" in t["organisation"]["next_step"]

    r = a.request("PATCH", "/api/v1/organisation", body=ORG)
    assert r.status == 200, r
    assert r.json["public_ips"] == ["192.0.2.25", "2001:db8::25"]
    assert r.json["updated_by"] == "admin"
    t = tasks_by_id(a.get("/api/v1/connect").json)
    assert t["organisation"]["state"] == "done"
    assert t["organisation"]["changed_by"] == "admin"
    assert t["domains"]["state"] == "todo"

    audit = a.get("/api/v1/audit?action=organisation").json["items"]
    assert audit and audit[0]["action"] == "organisation.update"
    assert audit[0]["after"]["contact_email"] == "ann@example.net"

    # a basic administrator may change the configuration too
    basic = Api(m.http_port, token_for(m, "basic1", "basic_admin"))
    assert basic.request("PATCH", "/api/v1/organisation",
                         body={"contact_phone": "+44 20 7946 0001"}).status == 200


def test_skip_and_later_tasks(api_moatd):
    m = api_moatd()
    a = m.admin()
    r = a.post("/api/v1/connect/mx/skip")
    assert r.status == 409 and r.error["field"] == "task" and "mandatory" in r.error["message"]
    r = a.post("/api/v1/connect/forwarding/skip")
    assert r.status == 200 and r.json["state"] == "skipped"
    assert a.post("/api/v1/connect/forwarding/skip", body={"why": 1}).status == 400
    audit = a.get("/api/v1/audit?action=connect.skip").json["items"]
    assert audit[0]["target"] == "forwarding" and audit[0]["after"]["state"] == "skipped"

    r = a.post("/api/v1/connect/authentication/check")
    assert r.status == 200, r
    assert r.json["result"]["outcome"] == "unavailable"
    assert r.json["state"] == "locked" and r.json["recorded_state"] == "todo"

    out = m.cli("connect", "skip", "lockdown")
    assert out.returncode == 1 and "mandatory" in out.stderr

    # task inputs: only inbound takes one (the test message's mailbox)
    r = a.request("PUT", "/api/v1/connect/mx/input", body={"test_address": "a@example.com"})
    assert r.status == 400 and r.error["field"] == "task"
    r = a.request("PUT", "/api/v1/connect/inbound/input", body={"test_address": "nobody"})
    assert r.status == 400 and r.error["field"] == "test_address"
    out = m.cli("connect", "input", "inbound", "--test-address", "postmaster@example.com")
    assert out.returncode == 0, out.stderr
    assert a.get("/api/v1/connect/inbound").json["input"] == {"test_address":
                                                              "postmaster@example.com"}
    # lockdown is optional for a hybrid environment
    assert a.request("PATCH", "/api/v1/organisation", body={"environment": "hybrid"}).status == 200
    out = m.cli("connect", "skip", "lockdown")
    assert out.returncode == 0 and "lockdown: skipped" in out.stdout


def test_cli_org_set_and_show(api_moatd):
    m = api_moatd()
    out = m.cli("org", "set", "--environment", "google", "--contact-name", "Ann Admin",
                "--contact-email", "ann@example.net", "--public-host", "mx1.moat.example.net",
                "--public-host", "MX2.moat.example.net.", "--public-ip", "192.0.2.25")
    assert out.returncode == 0, out.stderr
    assert "mx1.moat.example.net, mx2.moat.example.net" in out.stdout
    assert "Task organisation: done." in out.stdout
    out = m.cli("org", "set", "--public-ip", "192.0.2.999")
    assert out.returncode == 1 and "public_ips" in out.stderr
    out = m.cli("org", "set", "--environment", "google", "--environment", "smtp")
    assert out.returncode == 2 and "given twice" in out.stderr
    out = m.cli("--json", "org", "show")
    assert '"environment": "google"' in out.stdout
    out = m.cli("connect", "show", "organisation")
    assert out.returncode == 0 and "State:       done" in out.stdout
    out = m.cli("connect", "check", "organisation")
    assert out.returncode == 0 and out.stdout.startswith("organisation: pass, now done")


def test_live_configuration_and_unknown(api_moatd):
    """A domain added with the CLI is checked by the timer within seconds; the
    resolver does not answer, so the outcome is unknown and the task stays put."""
    m = api_moatd()
    a = m.admin()
    assert a.request("PATCH", "/api/v1/organisation", body=ORG).status == 200
    out = m.cli("domain", "add", "example.com")
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 30
    lc = None
    while time.monotonic() < deadline:
        d = a.get("/api/v1/connect/domains").json
        lc = d["last_check"]
        if lc is not None:
            break
        time.sleep(0.3)
    assert lc is not None, m.log_tail()
    assert lc["outcome"] == "unknown", lc
    assert d["state"] == "todo" and d["changed_by"] in ("", None)
    assert "by=timer" in m.log_text()
    # asked again by hand: still unknown, still nothing moves
    r = a.post("/api/v1/connect/domains/check")
    assert r.status == 200 and r.json["result"]["outcome"] == "unknown"
    assert r.json["state"] == "todo"
