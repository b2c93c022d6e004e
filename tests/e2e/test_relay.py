"""Relay control: recipients only under internal domains (and their subdomains)."""

import time

from moatlib import make_message, new_marker, wait_until


def rcpt_reply(m, rcpt, sender="sender@ext.test"):
    with m.raw() as c:
        c.greet()
        c.expect(f"MAIL FROM:<{sender}>", 250)
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        c.cmd("QUIT")
        return r


def test_external_recipient_refused(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    for rcpt in ("bob@other.test", "bob@example.com.evil.test", "bob@notexample.com",
                 "bob@EXAMPLE.org"):
        r = rcpt_reply(m, rcpt)
        assert r.code == 550 and r.enhanced == "5.7.1", f"{rcpt}: {r}"


def test_domain_match_is_case_insensitive(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    r = rcpt_reply(m, "Bob@Example.COM")
    assert r.code == 250, r


def test_refused_recipient_does_not_spoil_transaction(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    marker = new_marker()
    with m.smtp() as c:
        c.ehlo("mixed.ext.test")
        assert c.mail("sender@ext.test")[0] == 250
        code, resp = c.rcpt("eve@other.test")
        assert (code, resp[:5]) == (550, b"5.7.1")
        assert c.rcpt("alice@example.com")[0] == 250
        assert c.data(make_message(marker=marker).encode())[0] == 250
    got = s.wait_marker(marker)
    assert got.rcpt_addrs() == ["alice@example.com"]


def test_subdomain_of_internal_domain_accepted(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    marker = new_marker()
    m.send("sender@ext.test", "dave@eu.sales.example.com", make_message(marker=marker))
    got = s.wait_marker(marker)
    assert got.rcpt_addrs() == ["dave@eu.sales.example.com"]


def test_no_domains_refuses_everything(moatd):
    m = moatd()
    r = rcpt_reply(m, "alice@example.com")
    assert (r.code, r.enhanced) == (550, "5.7.1"), r


def test_domain_added_while_running_is_honoured_at_once(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    r = rcpt_reply(m, "zoe@new.test")
    assert (r.code, r.enhanced) == (550, "5.7.1"), r

    # a domain added without proof of ownership is not internal yet
    m.cli("domain", "add", "pending.test", check=0)
    m.cli("route", "set", "pending.test", f"127.0.0.1:{s.port}", check=0)
    time.sleep(0.3)
    r = rcpt_reply(m, "zoe@pending.test")
    assert (r.code, r.enhanced) == (550, "5.7.1"), r

    m.cli("domain", "add", "new.test", "--trust-unverified", check=0)
    m.cli("route", "set", "new.test", f"127.0.0.1:{s.port}", check=0)
    # "at once": the CLI tells the running daemon to reload; allow it one second
    t0 = time.monotonic()
    wait_until(lambda: rcpt_reply(m, "zoe@new.test").code == 250, 1.0,
               what="new.test accepted after `moat domain add`")
    assert time.monotonic() - t0 < 1.0

    marker = new_marker()
    m.send("sender@ext.test", "zoe@new.test", make_message(marker=marker))
    assert s.wait_marker(marker).rcpt_addrs() == ["zoe@new.test"]

    m.cli("domain", "remove", "new.test", check=0)
    wait_until(lambda: rcpt_reply(m, "zoe@new.test").code == 550, 1.0,
               what="new.test refused after `moat domain remove`")
    # the other domain is untouched
    assert rcpt_reply(m, "alice@example.com").code == 250


def test_route_change_while_running(moatd, sink):
    s1, s2 = sink(name="sink1"), sink(name="sink2")
    m = moatd(domains={"example.com": f"127.0.0.1:{s1.port}"})
    mk1 = new_marker()
    m.send("sender@ext.test", "alice@example.com", make_message(marker=mk1))
    s1.wait_marker(mk1)

    m.cli("route", "set", "example.com", f"127.0.0.1:{s2.port}", check=0)
    time.sleep(0.3)
    mk2 = new_marker()
    m.send("sender@ext.test", "alice@example.com", make_message(marker=mk2))
    s2.wait_marker(mk2)
    assert not s1.with_marker(mk2)


def test_domains_persist_across_restart(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    m.stop()
    m.start()
    assert rcpt_reply(m, "alice@example.com").code == 250
    assert m.cli("domain", "list", check=0).stdout.count("example.com") >= 1
