"""The admin API end to end, over real HTTP (http.client) against a real moatd:
the role matrix over every route, sign-in, forced password change, CSRF,
lockout with 429 and Retry-After, tokens, the audit log, and hostile input."""

import json
import time

import pytest

from api_fixtures import (Api, api_moatd, list_routes, make_account, session_for,  # noqa: F401
                          token_for)

PROTECTED = {"accounts_manage", "message_content", "archive_export", "archive_admin",
             "backup"}


def allowed(role, perm):
    """The issue's role table: admin everything; basic_admin everything except the
    protected actions; nobody only public routes."""
    if perm == "public":
        return True
    if role == "admin":
        return True
    if role == "basic_admin":
        return perm not in PROTECTED
    return False


def concrete(pattern):
    """A path for a route pattern whose parameters name nothing that exists, so
    that allowed calls cannot destroy the callers used by the matrix."""
    p = pattern.replace("/queue/{id}", "/queue/0123456789ABCDEF")
    p = p.replace("{name}", "matrix-missing.example").replace("{id}", "999999")
    return p


def test_role_matrix_covers_every_route(api_moatd):
    m = api_moatd()
    routes = list_routes()
    callers = {
        "admin": m.admin(),
        "basic_admin": Api(m.http_port, token_for(m, "basic1", "basic_admin")),
        "nobody": m.api(),
    }
    # logout last: it may end the caller
    routes.sort(key=lambda r: r[1] == "/api/v1/auth/logout")
    checked = 0
    for role, api in callers.items():
        for method, pattern, perm in routes:
            body = {} if method in ("POST", "PUT", "PATCH") else None
            r = api.request(method, concrete(pattern), body=body)
            where = f"{role} {method} {pattern} ({perm}) -> {r}"
            assert r.status < 500, where
            assert r.json is None or "error" not in r.json or r.error.get("code"), where
            if allowed(role, perm):
                assert r.status != 401, where
                assert not (r.status == 403 and r.error.get("code") == "forbidden"), where
            elif role == "nobody":
                assert r.status == 401, where
                assert r.error["code"] == "unauthorized", where
            else:
                assert r.status == 403, where
                assert r.error["code"] == "forbidden", where
            checked += 1
    assert checked == 3 * len(routes)
    assert m.alive()


def test_every_response_is_json_with_safe_headers(api_moatd):
    m = api_moatd()
    for path, status in (("/api/v1/health", 200), ("/api/v1/domains", 401), ("/nope", 404)):
        r = m.api().get(path)
        assert r.status == status
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Type"] == "application/json"
    r = m.api().get("/api/v1/domains")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = m.admin().request("PATCH", "/api/v1/domains", body={})
    assert r.status == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "POST"}
    assert r.error["code"] == "method_not_allowed"
    r = m.admin().get("/api/v1/no/such/thing")
    assert r.status == 404 and r.error["code"] == "not_found"


def test_sign_in_session_cookie_and_logout(api_moatd):
    m = api_moatd()
    make_account(m.admin(), "alice", "admin", "alice-password-long-1")
    s = m.api()
    r = s.login("alice", "alice-password-long-1")
    assert r.status == 200, r
    cookie = [v for k, v in r.headers.items() if k.lower() == "set-cookie"][0]
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    assert "secure" not in attrs          # plain HTTP on loopback
    assert r.json["csrf_token"] and r.json["account"]["name"] == "alice"
    assert s.get("/api/v1/auth/me").status == 200
    assert s.get("/api/v1/domains").status == 200
    # one answer for a wrong password and an unknown name
    bad1 = m.api().login("alice", "wrong-password-xx")
    bad2 = m.api().login("nobody-here", "wrong-password-xx")
    assert bad1.status == bad2.status == 401
    assert bad1.error["message"] == bad2.error["message"]
    assert s.post("/api/v1/auth/logout").status in (200, 204)
    r = s.get("/api/v1/domains")
    assert r.status == 401, r


def test_csrf_refused_for_cookie_changes(api_moatd):
    m = api_moatd()
    s = session_for(m, "carol", "admin")
    r = s.post("/api/v1/domains", {"name": "csrf.example"}, csrf=False)
    assert r.status == 403 and r.error["code"] == "csrf", r
    r = s.post("/api/v1/domains", {"name": "csrf.example"},
               csrf=False, headers={"X-CSRF-Token": "0" * 64})
    assert r.status == 403 and r.error["code"] == "csrf", r
    assert m.admin().get("/api/v1/domains/csrf.example").status == 404
    r = s.post("/api/v1/domains", {"name": "csrf.example"})
    assert r.status == 201, r
    # reads need no CSRF token; bearer tokens never do
    assert s.get("/api/v1/domains/csrf.example").status == 200
    r = m.admin().request("DELETE", "/api/v1/domains/csrf.example")
    assert r.status == 204, r


def test_forced_password_change(api_moatd):
    m = api_moatd()
    r = m.admin().post("/api/v1/accounts", {"name": "dave", "role": "basic_admin"})
    assert r.status == 201, r
    one_time = r.json["password"]
    assert r.json["account"]["must_change_password"] is True
    s = m.api()
    r = s.login("dave", one_time)
    assert r.status == 200 and r.json["account"]["must_change_password"] is True, r
    r = s.get("/api/v1/domains")
    assert r.status == 403 and r.error["code"] == "password_change_required", r
    r = s.post("/api/v1/tokens", {"name": "sneaky"})
    assert r.status == 403 and r.error["code"] == "password_change_required", r
    assert s.get("/api/v1/auth/me").status == 200
    r = s.post("/api/v1/auth/password", {"current": one_time, "new": "short"})
    assert r.status == 400 and r.error["field"] == "new", r
    r = s.post("/api/v1/auth/password", {"current": one_time, "new": "a-much-better-password-9"})
    assert r.status == 204, r
    assert s.get("/api/v1/domains").status == 200
    assert m.api().login("dave", one_time).status == 401
    assert m.api().login("dave", "a-much-better-password-9").status == 200


def test_lockout_429_with_retry_after(api_moatd):
    m = api_moatd(opts={"login_max_failures": 3, "login_failure_window": "5m"})
    make_account(m.admin(), "erin", "admin", "erin-password-long-1")
    for _ in range(3):
        assert m.api().login("erin", "wrong-password-xx").status == 401
    r = m.api().login("erin", "wrong-password-xx")
    assert r.status == 429, r
    assert r.error["code"] == "rate_limited"
    ra = int(r.headers["Retry-After"])
    assert 0 < ra <= 300
    # even the right password waits
    r = m.api().login("erin", "erin-password-long-1")
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0
    assert "erin-password-long-1" not in m.log_text()
    assert "wrong-password-xx" not in m.log_text()


def test_token_create_use_revoke(api_moatd):
    m = api_moatd()
    admin = m.admin()
    r = admin.post("/api/v1/tokens", {"name": "automation", "role": "basic_admin"})
    assert r.status == 201, r
    tok, tid = r.json["token"], r.json["id"]
    assert tok.startswith("moat_")
    t = Api(m.http_port, tok)
    assert t.get("/api/v1/domains").status == 200
    r = t.get("/api/v1/accounts")
    assert r.status == 403 and r.error["code"] == "forbidden"     # scoped to basic_admin
    listed = [x for x in admin.get("/api/v1/tokens").json["items"] if x["id"] == tid][0]
    assert listed["last_used"], listed
    assert tok not in json.dumps(admin.get("/api/v1/tokens").json)  # shown once only
    assert admin.request("DELETE", f"/api/v1/tokens/{tid}").status == 204
    r = t.get("/api/v1/domains")
    assert r.status == 401, r
    assert Api(m.http_port, tok + "x").get("/api/v1/domains").status == 401
    assert Api(m.http_port, "not-a-token").get("/api/v1/domains").status == 401
    assert tok not in m.log_text()


def test_audit_records_every_change_without_secrets(api_moatd):
    m = api_moatd()
    a = m.admin()
    secret_pw = "frank-password-long-1"
    assert a.post("/api/v1/domains", {"name": "audit.example"}).status == 201
    assert a.request("PUT", "/api/v1/domains/audit.example/route",
                     body={"host": "mail.example.net", "port": 2525}).status == 200
    assert a.request("DELETE", "/api/v1/domains/audit.example/route").status == 204
    assert a.request("DELETE", "/api/v1/domains/audit.example").status == 204
    acc = make_account(a, "frank", "basic_admin", secret_pw)
    r = a.post("/api/v1/tokens", {"name": "t"})
    tok = r.json["token"]
    assert a.request("PATCH", f"/api/v1/accounts/{acc['id']}", body={"role": "admin"}).status == 200
    entries = a.get("/api/v1/audit?limit=1000").json["items"]
    actions = [e["action"] for e in entries]
    for want in ("domain.create", "route.set", "route.delete", "domain.delete",
                 "account.create", "token.create", "account.update"):
        assert any(x.startswith(want) for x in actions), (want, actions)
    route = [e for e in entries if e["action"] == "route.set"][0]
    assert route["before"] is None and route["after"]["port"] == 2525
    assert route["target"] == "audit.example"
    assert route["account"]["name"] == "admin" and route["client_ip"] == "127.0.0.1"
    assert route["ts"] > time.time() - 600
    text = json.dumps(entries)
    assert secret_pw not in text and tok not in text and m.token not in text
    # filters, and nothing may alter or delete the log
    only = a.get("/api/v1/audit?action=domain").json["items"]
    assert only and all(e["action"].startswith("domain") for e in only)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert a.request(method, "/api/v1/audit", body={} if method != "DELETE" else None).status == 405


def test_hostile_bodies_get_4xx_naming_the_field(api_moatd):
    m = api_moatd(opts={"http_max_body": "4k"})
    a = m.admin()
    cases = [
        (b'{"name": "x.example",', 400, "invalid_json", "body"),
        (b'{"name": "a.example", "name": "b.example"}', 400, "invalid_json", "body"),
        (b'["x.example"]', 400, "invalid_body", "body"),
        (b'{"name": "x.example", "admin": true}', 400, "unknown_field", "admin"),
        (b'{}', 400, "missing_field", "name"),
        (b'{"name": 42}', 400, "invalid_field", "name"),
        (b'{"name": "bad-.example"}', 400, "invalid_field", "name"),
        (b'{"name": "\xff\xfe"}', 400, "invalid_json", "body"),
        (b'{"name": "a\\u0000b.example"}', 400, "invalid_json", "body"),
        (b'{"name": "' + b'a' * 8000 + b'"}', 413, "body_too_large", "body"),
        (b'[' * 5000, 413, "body_too_large", "body"),
    ]
    for raw, status, code, field in cases:
        r = a.request("POST", "/api/v1/domains", raw=raw)
        assert (r.status, r.error.get("code"), r.error.get("field")) == (status, code, field), (raw[:40], r)
        assert r.error.get("message")
    r = a.request("POST", "/api/v1/domains", raw=b'{"name":"x.example"}', content_type="text/plain")
    assert r.status == 415 and r.error["field"] == "Content-Type"
    r = a.request("PUT", "/api/v1/domains/x.example/route", body={"host": "mx", "tsl": "strict"})
    assert r.status in (400, 404)
    assert a.post("/api/v1/domains", {"name": "ok.example"}).status == 201
    for body, field in (({"host": "mx.example", "port": 0}, "port"),
                        ({"host": "mx.example", "port": "25"}, "port"),
                        ({"host": "mx.example", "tls": "sometimes"}, "tls"),
                        ({"host": ""}, "host"),
                        ({"host": "mx.example", "tsl": "strict"}, "tsl"),
                        ({"port": 25}, "host")):
        r = a.request("PUT", "/api/v1/domains/ok.example/route", body=body)
        assert r.status == 400 and r.error["field"] == field, (body, r)
    for q, field in (("limit=0", "limit"), ("limit=1001", "limit"), ("limit=x", "limit"),
                     ("cursor=" + "a" * 300, "cursor")):
        r = a.get("/api/v1/domains?" + q)
        assert r.status == 400 and r.error["field"] == field, (q, r)
    r = a.get("/api/v1/queue/not-a-queue-id")
    assert r.status == 400 and r.error["field"] == "id"
    r = a.request("GET", "/api/v1/domains", raw=b'{"x":1}')
    assert r.status == 400 and r.error["field"] == "body"
    assert m.api().get("/api/v1/health").status == 200
    assert m.alive()


def test_domains_routes_and_pagination(api_moatd):
    m = api_moatd()
    a = m.admin()
    names = [f"d{i:02d}.example" for i in range(7)]
    for n in reversed(names):
        assert a.post("/api/v1/domains", {"name": n.upper()}).status == 201
    r = a.post("/api/v1/domains", {"name": names[0]})
    assert r.status == 409 and r.error["field"] == "name"
    seen, cursor = [], None
    while True:
        r = a.get("/api/v1/domains?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status == 200
        seen += [d["name"] for d in r.json["items"]]
        cursor = r.json["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    r = a.request("PUT", f"/api/v1/domains/{names[0]}/route",
                  body={"host": "mail.example.net", "port": 2525, "tls": "strict"})
    # tested before enforced: nothing answers there, so a strict route needs override
    assert r.status == 409 and r.error["code"] == "probe_failed" and r.error["field"] == "tls"
    r = a.request("PUT", f"/api/v1/domains/{names[0]}/route",
                  body={"host": "mail.example.net", "port": 2525, "tls": "strict", "override": True})
    assert r.json == {"host": "mail.example.net", "port": 2525, "tls": "strict"}
    # a new host keeps a strict route strict
    r = a.request("PUT", f"/api/v1/domains/{names[0]}/route",
                  body={"host": "127.0.0.5", "override": True})
    assert r.json["tls"] == "strict" and r.json["port"] == 25
    assert a.get(f"/api/v1/domains/{names[0]}").json["route"]["host"] == "127.0.0.5"
    r = a.get(f"/api/v1/domains/{names[1]}/route")
    assert r.status == 404 and r.error["code"] == "no_route"
    r = a.get("/api/v1/domains/missing.example")
    assert r.status == 404 and r.error["field"] == "name"
    r = a.get("/api/v1/settings")
    assert r.status == 200 and r.json["settings"]["http_max_body"]["value"] == "1M"
    assert r.json["settings"]["http_max_body"]["source"] == "default"
    assert r.json["settings"]["http_max_body"]["runtime"] is False
    st = a.get("/api/v1/status").json
    assert st["version"] and st["domains"] == 7
    assert a.get("/api/v1/queue").json == {"items": [], "next_cursor": None}
    r = a.post("/api/v1/queue/retry")
    assert r.status == 200 and r.json["scheduled"] == 0


def test_plain_http_refused_on_public_address(tmp_path):
    import subprocess
    from api_fixtures import MOATD, free_port
    r = subprocess.run([str(MOATD), "--foreground", "--state-dir", str(tmp_path / "s"),
                        "--smtp-listen", f"127.0.0.1:{free_port()}",
                        "--http-listen", f"0.0.0.0:{free_port()}", "--resolver", "127.0.0.1:9",
                        "-o", "run_user=root"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "http_listen" in r.stderr
