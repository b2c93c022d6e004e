"""The directory's LDAP / Active Directory sync against a real slapd
(ldap_fixtures.py, PEERS.md 3): test connection, preview, apply, paging
past the server's size limit, changes and deletions, the safety stop,
StartTLS and ldaps with the test CA, a wrong bind password, addresses
under unvalidated domains, the schedule, the CLI and the Connect check.

Run: MOAT_BUILD_DIR=... /usr/bin/python3 -m pytest tests/e2e/test_ldap_sync.py
"""

import sqlite3
import time

import pytest

from api_fixtures import api_moatd  # noqa: F401
from ldap_fixtures import (BASE, SYNC_DN, SYNC_PW, ldap_ca, slapd,  # noqa: F401
                           user_entry)


def moat_with_domain(api_moatd, *domains):
    m = api_moatd()
    for d in domains or ("example.com",):
        r = m.admin().post("/api/v1/domains", {"name": d, "trust_unverified": True})
        assert r.status in (200, 201), r
    return m


def configure(m, s, **over):
    body = {"url": s.url, "bind_dn": SYNC_DN, "password": SYNC_PW, "base_dn": BASE,
            "preset": "active_directory", "filter": "(objectClass=moatADUser)",
            "group_filter": "(objectClass=groupOfNames)", "schedule": ""}
    body.update(over)
    r = m.admin().request("PUT", "/api/v1/directory/source", body=body)
    assert r.status == 200, r
    return r.json


def sync(m, confirm=False, expect=200):
    body = {"wait": True}
    if confirm:
        body["confirm"] = True
    r = m.admin().post("/api/v1/directory/sync", body)
    assert r.status == expect, r
    return r


def directory(m):
    """{primary: (name, kind, [aliases])} of the directory-sourced entries, read
    from the database (read-only) so the test does not depend on other routes."""
    con = sqlite3.connect(f"file:{m.state}/moat.db?mode=ro", uri=True, timeout=10)
    try:
        out = {}
        rows = con.execute("SELECT e.id, e.primary_addr, e.name, e.kind FROM dir_entries e"
                           " WHERE e.source = 'directory'").fetchall()
        ids = {}
        for eid, primary, name, kind in rows:
            out[primary] = [name, kind, set()]
            ids[eid] = primary
        for addr, eid, prim in con.execute("SELECT address, entry_id, is_primary"
                                           " FROM dir_addresses"):
            if eid in ids and not prim:
                out[ids[eid]][2].add(addr)
        members = {}
        for g, mem in con.execute("SELECT group_id, member_id FROM dir_members"):
            if g in ids and mem in ids:
                members.setdefault(ids[g], set()).add(ids[mem])
        return out, members
    finally:
        con.close()


# --- the big one: 10,000 users through paging, then changes ---------------

def test_sync_10000_users_through_paging_then_changes(api_moatd, slapd):
    s = slapd(10000, n_groups=3, size_limit=500)
    # the sync account really is limited: a plain search stops at 500
    r = s.search_as_sync("(objectClass=moatADUser)", "dn")
    assert r.returncode == 4 and "Size limit exceeded" in r.stdout + r.stderr
    m = moat_with_domain(api_moatd)
    src = configure(m, s, page_size=400)
    assert src["password_set"] is True and "password" not in src
    assert src["attributes"]["proxy_addresses"] == "proxyAddresses"

    t = m.admin().post("/api/v1/directory/test").json
    assert t["ok"] is True, t
    assert t["bind"]["ok"] is True
    assert t["paging"]["supported"] is True
    assert t["search"]["users_sampled"] == 5 and t["search"]["groups_sampled"] == 3

    p = m.admin().post("/api/v1/directory/preview")
    assert p.status == 200, p
    p = p.json
    assert p["entries"] == 10003 and p["created"] == 10003, p
    assert p["removed"] == 0 and p["safety_stop"] is False
    assert directory(m)[0] == {}            # a preview changes nothing

    t0 = time.monotonic()
    r = sync(m)
    last = r.json["last"]
    assert last["outcome"] == "ok", last
    assert last["created"] == 10003 and last["entries"] == 10003
    print(f"synced 10003 entries in {time.monotonic() - t0:.1f} s")
    d, members = directory(m)
    assert len(d) == 10003
    name, kind, aliases = d["user42@example.com"]
    assert (name, kind) == ("User Number 42", "user")
    # SMTP: primary, smtp: aliases lower-cased, X500: and the UPN ignored
    assert aliases == {"u42@example.com", "user.42@example.com"}
    assert d["group2@example.com"][1] == "group"
    assert d["group2@example.com"][2] == {"g2@example.com"}
    assert members["group2@example.com"] == {f"user{i}@example.com" for i in range(1, 1001, 4)}

    # the run is recorded and readable
    st = m.admin().get("/api/v1/directory/sync").json
    assert st["running"] is False and st["runs"][0]["outcome"] == "ok"

    # change one user, add an alias to another, delete a third, add a fourth
    s.modify(f"dn: uid=user5,ou=people,{BASE}\nchangetype: modify\nreplace: displayName\n"
             "displayName: Five Renamed\n\n"
             f"dn: uid=user6,ou=people,{BASE}\nchangetype: modify\nadd: proxyAddresses\n"
             "proxyAddresses: smtp:six@example.com\n\n"
             f"dn: uid=user7,ou=people,{BASE}\nchangetype: delete\n\n"
             + user_entry(20001).replace("objectClass: inetOrgPerson",
                                         "changetype: add\nobjectClass: inetOrgPerson"))
    # updated: user5, user6, and group1, which lost its member user7
    p = m.admin().post("/api/v1/directory/preview").json
    assert (p["created"], p["updated"], p["removed"]) == (1, 3, 1), p
    r = sync(m)
    last = r.json["last"]
    assert (last["created"], last["updated"], last["removed"]) == (1, 3, 1), last
    d, members = directory(m)
    assert d["user5@example.com"][0] == "Five Renamed"
    assert "six@example.com" in d["user6@example.com"][2]
    assert "user7@example.com" not in d
    assert "user20001@example.com" in d
    assert len(d) == 10003
    assert "user7@example.com" not in members["group1@example.com"]


# --- the safety stop -------------------------------------------------------

def test_safety_stop_refuses_then_confirm_applies(api_moatd, slapd):
    s = slapd(40, n_groups=0)
    m = moat_with_domain(api_moatd)
    configure(m, s, group_filter="")
    assert sync(m).json["last"]["created"] == 40
    s.delete(*[f"uid=user{i},ou=people,{BASE}" for i in range(1, 9)])   # 20 %
    p = m.admin().post("/api/v1/directory/preview").json
    assert p["removed"] == 8 and p["safety_stop"] is True, p
    r = sync(m, expect=409)
    assert r.error["code"] == "safety_stop" and r.error["field"] == "confirm"
    assert "--confirm" in r.error["message"]
    assert len(directory(m)[0]) == 40            # nothing changed
    runs = m.admin().get("/api/v1/directory/sync").json["runs"]
    assert runs[0]["outcome"] == "refused"
    # a share above the limit is allowed when the limit says so
    r = sync(m, confirm=True)
    assert r.json["last"]["removed"] == 8
    assert len(directory(m)[0]) == 32


# --- bind password: wrong, encrypted at rest, never returned ---------------

def test_wrong_password_keeps_the_directory(api_moatd, slapd):
    s = slapd(20, n_groups=1)
    m = moat_with_domain(api_moatd)
    configure(m, s)
    assert sync(m).json["last"]["outcome"] == "ok"
    before = directory(m)
    configure(m, s, password="not-the-password")
    t = m.admin().post("/api/v1/directory/test").json
    assert t["ok"] is False and t["bind"]["ok"] is False
    assert "Invalid credentials (49)" in t["bind"]["error"], t
    r = sync(m, expect=502)
    assert "Invalid credentials (49)" in r.error["message"]
    assert SYNC_DN in r.error["message"]
    assert directory(m) == before                 # the previous directory is intact
    last = m.admin().get("/api/v1/directory/sync").json["last"]
    assert last["outcome"] == "error" and "Invalid credentials" in last["message"]
    # the Connect check still passes on the last applied sync, and says the latest failed
    c = m.admin().post("/api/v1/connect/directory/check").json["result"]
    assert c["outcome"] == "pass" and "did not apply" in c["message"]


def test_password_encrypted_and_redacted(api_moatd, slapd):
    s = slapd(3, n_groups=0)
    m = moat_with_domain(api_moatd)
    secret = "Very-Secret-Bind-Password-42"
    src = configure(m, s, password=secret, group_filter="")
    assert src["password_set"] is True
    g = m.admin().get("/api/v1/directory/source")
    assert secret not in g.raw.decode() and g.json["password_set"] is True
    db = b""
    for suffix in ("", "-wal"):
        try:
            db += (m.state / f"moat.db{suffix}").read_bytes()
        except FileNotFoundError:
            pass
    assert secret.encode() not in db
    audit = m.admin().get("/api/v1/audit?action=directory.source").json["items"]
    assert audit and secret not in str(audit)
    assert m.admin().post("/api/v1/directory/test").json["bind"]["ok"] is False  # wrong password
    configure(m, s)                                # the right one, and it works after a restart
    m.stop()
    m.start()
    assert m.admin().post("/api/v1/directory/test").json["ok"] is True
    # clearing it: anonymous bind, which this slapd lets read nothing
    r = m.admin().request("PUT", "/api/v1/directory/source", body={"password": None})
    assert r.json["password_set"] is False


def test_source_validation_names_the_field(api_moatd):
    m = api_moatd()
    a = m.admin()
    for body, field in [({"url": "http://x"}, "url"), ({"url": "ldapi:///"}, "url"),
                        ({"base_dn": "not a dn"}, "base_dn"), ({"filter": "uid=x"}, "filter"),
                        ({"page_size": 0}, "page_size"), ({"schedule": "25:00"}, "schedule"),
                        ({"max_remove_share": 2}, "max_remove_share"),
                        ({"preset": "novell"}, "preset"), ({"ca_file": "rel.pem"}, "ca_file"),
                        ({"url": "ldaps://h", "starttls": True}, "starttls"),
                        ({"attributes": {"colour": "x"}}, "attributes"),
                        ({"nonsense": 1}, "nonsense")]:
        r = a.request("PUT", "/api/v1/directory/source", body=body)
        assert r.status == 400 and r.error["field"] == field, (body, r)
    g = a.get("/api/v1/directory/source").json
    assert g["configured"] is False and g["schedule"] == "06:00,12:00,18:00"
    assert g["max_remove_share"] == pytest.approx(0.10)
    r = a.post("/api/v1/directory/sync", {"wait": True})
    assert r.status == 502 and "not configured" in r.error["message"]


# --- TLS ---------------------------------------------------------------------

def test_starttls_and_ldaps_with_the_test_ca(api_moatd, slapd, ldap_ca):
    s = slapd(10, n_groups=1)
    m = moat_with_domain(api_moatd)
    ca = str(ldap_ca.ca)
    configure(m, s, url=s.ldaps_url, ca_file=ca)
    t = m.admin().post("/api/v1/directory/test").json
    assert t["ok"] is True and t["tls"] == "ldaps", t
    assert sync(m).json["last"]["created"] == 11
    configure(m, s, url=s.url, starttls=True, ca_file=ca)
    t = m.admin().post("/api/v1/directory/test").json
    assert t["ok"] is True and t["tls"] == "starttls", t
    assert sync(m).json["last"]["unchanged"] == 11
    # without the CA (the system trust store does not know the test CA) both fail
    configure(m, s, url=s.url, starttls=True, ca_file="")
    t = m.admin().post("/api/v1/directory/test").json
    assert t["ok"] is False and "StartTLS" in t["bind"]["error"], t
    configure(m, s, url=s.ldaps_url, starttls=False, ca_file="")
    t = m.admin().post("/api/v1/directory/test").json
    assert t["ok"] is False and "Can't contact LDAP server" in t["bind"]["error"], t
    r = sync(m, expect=502)
    assert len(directory(m)[0]) == 11
    # a CA file that is not there is named
    configure(m, s, url=s.ldaps_url, ca_file="/nonexistent/ca.pem")
    t = m.admin().post("/api/v1/directory/test").json
    assert t["bind"]["field"] == "ca_file"


def test_fallback_server(api_moatd, slapd):
    from ldap_fixtures import free_port
    s = slapd(5, n_groups=0)
    m = moat_with_domain(api_moatd)
    configure(m, s, url=f"ldap://127.0.0.1:{free_port()}", fallback_url=s.url, group_filter="",
              timeout=3)
    t = m.admin().post("/api/v1/directory/test").json
    assert t["ok"] is True and t["server"] == s.url, t
    assert sync(m).json["last"]["created"] == 5


# --- addresses under domains that are not validated ---------------------------

def test_unvalidated_domains_reported_not_imported(api_moatd, slapd):
    extra = user_entry(900, domain="elsewhere.example.org")
    s = slapd(5, n_groups=0, extra=extra)
    m = moat_with_domain(api_moatd)
    configure(m, s, group_filter="")
    p = m.admin().post("/api/v1/directory/preview").json
    assert p["skipped_unvalidated"] >= 1, p
    assert any(u["address"] == "user900@elsewhere.example.org" for u in p["unvalidated"]), p
    r = sync(m)
    assert r.json["last"]["skipped_unvalidated"] >= 1
    d, _ = directory(m)
    assert "user900@elsewhere.example.org" not in d and len(d) == 5
    rep = r.json["last_report"]["unvalidated"]
    assert any(u["address"] == "user900@elsewhere.example.org" for u in rep)


def test_openldap_preset(api_moatd, slapd):
    s = slapd(5, n_groups=1)
    m = moat_with_domain(api_moatd)
    configure(m, s, preset="openldap", filter=None, group_filter=None)
    src = m.admin().get("/api/v1/directory/source").json
    assert src["filter"] == "(&(objectClass=inetOrgPerson)(mail=*))"
    assert src["attributes"]["alias"] == "mailAlternativeAddress"
    assert sync(m).json["last"]["created"] == 6
    d, members = directory(m)
    assert d["user3@example.com"][2] == {"alt3@example.com"}
    assert d["user3@example.com"][0] == "User 3"       # cn
    assert members["group1@example.com"] == {f"user{i}@example.com" for i in (1, 4)}


# --- schedule, progress --------------------------------------------------------

def test_scheduled_sync_runs_at_its_time(api_moatd, slapd):
    s = slapd(30, n_groups=0)
    m = moat_with_domain(api_moatd)
    at = time.localtime(time.time() + 4)
    configure(m, s, group_filter="", schedule=time.strftime("%H:%M:%S", at))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = m.admin().get("/api/v1/directory/sync").json
        if st["last"] is not None:
            break
        time.sleep(0.5)
    assert st["last"]["trigger"] == "schedule" and st["last"]["outcome"] == "ok", st
    assert len(directory(m)[0]) == 30


def test_sync_progress_and_conflict(api_moatd, slapd):
    # enough small pages that the sync is still running when it is polled,
    # however fast the machine (3000 entries in pages of 50 once finished
    # between two polls)
    s = slapd(10000, n_groups=0, size_limit=100)
    m = moat_with_domain(api_moatd)
    configure(m, s, group_filter="", page_size=10)
    r = m.admin().post("/api/v1/directory/sync", {})
    assert r.status == 202 and r.json["running"] is True
    r2 = m.admin().post("/api/v1/directory/sync", {})
    assert r2.status == 409 and r2.error["field"] == "sync"
    seen = []
    while True:
        st = m.admin().get("/api/v1/directory/sync").json
        if not st["running"]:
            break
        seen.append(st["progress"])
        time.sleep(0.01)
    assert st["last"]["outcome"] == "ok" and st["last"]["created"] == 10000
    assert any(p["done"] > 0 for p in seen), seen


# --- CLI ---------------------------------------------------------------------

def test_cli_directory_commands(api_moatd, slapd, ldap_ca):
    s = slapd(60, n_groups=2)
    m = moat_with_domain(api_moatd)
    out = m.cli("directory", "set", "--ldap-url", s.ldaps_url, "--ca-file", str(ldap_ca.ca),
                "--bind-dn", SYNC_DN, "--base-dn", BASE, "--filter", "(objectClass=moatADUser)",
                "--group-filter", "(objectClass=groupOfNames)", "--schedule", "",
                "--max-remove-share", "5%", "--password-stdin", input=SYNC_PW + "\n")
    assert out.returncode == 0, out.stderr
    assert SYNC_PW not in out.stdout and "password           set" in out.stdout
    out = m.cli("directory", "show")
    assert "max removals       5 %" in out.stdout and SYNC_PW not in out.stdout
    out = m.cli("directory", "test")
    assert out.returncode == 0 and "supported (RFC 2696)" in out.stdout, out.stdout
    out = m.cli("directory", "preview")
    assert out.returncode == 0 and "create 62" in out.stdout, out.stdout
    out = m.cli("directory", "sync")
    assert out.returncode == 0 and "created 62" in out.stdout, out.stdout + out.stderr
    s.delete(*[f"uid=user{i},ou=people,{BASE}" for i in range(1, 6)])
    out = m.cli("directory", "sync")
    assert out.returncode == 1 and "REFUSED" in out.stdout and "--confirm" in out.stdout
    out = m.cli("directory", "sync", "--confirm")
    assert out.returncode == 0 and "removed 5" in out.stdout, out.stdout
    out = m.cli("--json", "directory", "sync", "--status")
    assert out.returncode == 0 and '"outcome": "ok"' in out.stdout
    out = m.cli("directory", "set", "--starttls", "--no-starttls")
    assert out.returncode == 2


# --- Connect -------------------------------------------------------------------

def test_connect_directory_check(api_moatd, slapd):
    s = slapd(12, n_groups=1)
    m = moat_with_domain(api_moatd)
    a = m.admin()
    d = a.get("/api/v1/connect/directory").json
    assert d["instructions"] and any(x["kind"] == "shell" for x in d["artefacts"]), d
    c = a.post("/api/v1/connect/directory/check").json["result"]
    assert c["outcome"] == "fail" and "moat directory set" in c["message"]
    configure(m, s)
    c = a.post("/api/v1/connect/directory/check").json["result"]
    assert c["outcome"] == "pending" and "moat directory sync" in c["message"]
    configure(m, s, password="wrong-password-1")
    sync(m, expect=502)
    c = a.post("/api/v1/connect/directory/check").json["result"]
    assert c["outcome"] == "fail" and "Invalid credentials" in c["message"]
    configure(m, s)
    sync(m)
    r = a.post("/api/v1/connect/directory/check").json
    assert r["result"]["outcome"] == "pass", r
    assert "13 entries read; 13 created" in r["result"]["message"]
    assert r["state"] == "done"
