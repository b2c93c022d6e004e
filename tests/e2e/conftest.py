"""Fixtures for Moat's end-to-end tests (real peers on loopback; see
/work/shared/PEERS.md).  Run with Debian's python: /usr/bin/python3 -m pytest tests/e2e.

Session: a test CA + server certificate, one unbound serving the test zones.
Per test: factories for moatd, smtp-sink, aiosmtpd and private Postfix
instances; everything they start is stopped at teardown (moatd by SIGTERM,
asserting exit 0), and killed if anything goes wrong.
"""

import atexit
import os
import shutil
import signal
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import moatlib  # noqa: E402
from moatlib import (Aiosmtpd, Moatd, Postfix, Sink, Unbound, make_test_ca,  # noqa: E402
                     )

# Test zones.  Not under .test: libunbound, like unbound, answers the RFC 6761
# names (test., invalid., onion., localhost.) NXDOMAIN itself, without asking
# the forwarder.  mail.example.net is a route host; remote.example.org is
# "the internet": its MX points at 127.0.0.1, reached on moatd's delivery_port.
ZONE_DATA = [
    ("example.net.", "mail.example.net. 0 IN A 127.0.0.1"),
    ("example.net.", "moat.example.net. 0 IN A 127.0.0.1"),
    ("example.org.", "remote.example.org. 0 IN MX 10 mx.remote.example.org."),
    ("example.org.", "mx.remote.example.org. 0 IN A 127.0.0.1"),
]


def _require_build():
    # a missing build is a failure, not a skip: nothing here can pass without it
    missing = [str(p) for p in (moatlib.MOATD, moatlib.MOAT) if not p.exists()]
    if missing:
        pytest.fail(f"not built: {', '.join(missing)} (set MOAT_BUILD_DIR)", pytrace=False)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


_OWN_BASETEMP = None


@pytest.hookimpl(tryfirst=True)    # before the tmp_path plugin reads basetemp
def pytest_configure(config):
    # smtp-sink and moatd drop privileges to nobody, so their directories must
    # be reachable by others.  pytest resets /tmp/pytest-of-USER to 0700 at
    # every session start, which breaks a run that happens at the same time:
    # use a base directory of our own instead (kept when something failed).
    global _OWN_BASETEMP
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        _OWN_BASETEMP = tempfile.mkdtemp(prefix="moat-e2e-")
        config.option.basetemp = _OWN_BASETEMP


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    # after the runner's own sessionfinish, which tears the fixtures down
    moatlib.kill_all_processes()
    if _OWN_BASETEMP:
        if exitstatus == 0:
            shutil.rmtree(_OWN_BASETEMP, ignore_errors=True)
        else:
            print(f"\ntest directories (moatd logs, sink dumps) kept in {_OWN_BASETEMP}")


def _terminated(signum, frame):
    # SIGTERM (e.g. from `timeout`): unwind like Ctrl-C so every fixture's
    # teardown runs and no peer outlives the run
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminated)
atexit.register(moatlib.kill_all_processes)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def unbound(tmp_path_factory):
    u = Unbound(tmp_path_factory.mktemp("unbound"), ZONE_DATA).start()
    yield u
    u.stop()


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    setup = getattr(request.node, "rep_setup", None)
    return (rep is not None and rep.failed) or (setup is not None and setup.failed)


@pytest.fixture
def workdir(tmp_path):
    moatlib._ensure_world_traversable(tmp_path)
    return tmp_path


@pytest.fixture
def moatd(request, workdir, unbound):
    """Factory: moatd(opts={...}, domains={"example.com": "127.0.0.1:PORT"}, start=True).

    Domains and routes are added through the CLI (and so the API) as soon as
    the daemon is up, before the factory returns.  At teardown each running instance gets
    SIGTERM and must exit 0; a crash at any time is reported."""
    _require_build()
    made = []

    def factory(opts=None, domains=None, start=True, listen=None, state_dir=None,
                extra_args=(), tls=None, name="moatd"):
        m = Moatd(workdir, unbound.port, opts=opts or {}, listen=listen,
                  state_dir=state_dir, extra_args=extra_args, name=name)
        made.append(m)
        for dom, route in (domains or {}).items():
            m.pending.append(["domain", "add", dom, "--trust-unverified"])
            if route:
                args = ["route", "set", dom, route]
                if tls:
                    # routes a test sets up to fail its TLS mode need the override
                    # (tested before enforced, issue 6)
                    args += ["--tls", tls, "--override"]
                m.pending.append(args)
        if start:
            m.start()
        return m

    yield factory

    problems = []
    for m in made:
        if m.proc is None:
            continue
        if m.proc.poll() is not None:
            if m.exits and m.exits[-1][2] is m.proc:
                continue    # an exit the test caused and checked
            problems.append(f"{m.name} died on its own with status {m.proc.returncode}")
        else:
            try:
                m.stop()
            except AssertionError as e:
                problems.append(str(e).splitlines()[0])
    if problems or _failed(request):
        for m in made:
            print(f"----- {m.name} log ({m.logfile}) -----")
            print(m.log_tail(80))
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def sink(workdir):
    """Factory: sink(port=None, args=(), start=True) -> smtp-sink instance."""
    made = []

    def factory(port=None, args=(), start=True, name="sink"):
        s = Sink(workdir, port=port, args=args, name=name)
        made.append(s)
        if start:
            s.start()
        return s

    yield factory
    for s in made:
        s.stop()


@pytest.fixture
def aiosmtpd_server():
    made = []

    def factory(**kw):
        s = Aiosmtpd(**kw).start()
        made.append(s)
        return s

    yield factory
    for s in made:
        s.stop()


@pytest.fixture
def postfix(workdir):
    """Factory: postfix(create_args=[...]) -> running private Postfix instance."""
    if not moatlib.IS_ROOT:
        pytest.skip("a private Postfix instance needs root (its master starts as root)")
    made = []

    def factory(create_args=(), port=None, name="postfix"):
        p = Postfix(workdir, port=port, create_args=create_args, name=name)
        made.append(p)
        return p.start()

    yield factory
    for p in made:
        p.stop()


@pytest.fixture
def cli(moatd):
    """The moat CLI against a running moatd with no domains yet (through its API)."""
    m = moatd()

    def run(*args, **kw):
        return m.cli(*args, **kw)
    run.moatd = m
    return run
