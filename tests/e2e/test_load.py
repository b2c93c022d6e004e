"""Load: many simultaneous sessions, and Postfix's smtp-source as the client."""

import re
import shutil
import subprocess
import threading

import pytest

from moatlib import RawSMTP, make_message, queued_id, wait_until

N_CONCURRENT = 200


def test_200_concurrent_connections(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"},
              opts={"smtp_max_connections": 1000, "smtp_max_connections_per_ip": 1000})
    barrier = threading.Barrier(N_CONCURRENT, timeout=60)
    results = [None] * N_CONCURRENT

    def client(i):
        try:
            with RawSMTP(m.host, m.port, timeout=60) as c:
                greet = c.reply()
                if greet.code != 220:
                    results[i] = f"greeting {greet}"
                    return
                barrier.wait()          # all 200 are connected at the same time
                c.expect(f"EHLO c{i}.ext.test", 250)
                c.expect(f"MAIL FROM:<c{i}@ext.test>", 250)
                c.expect(f"RCPT TO:<u{i}@example.com>", 250)
                c.expect("DATA", 354)
                c.send(make_message(subject=f"load {i}", marker=f"LOAD-{i:03d}-END") + ".\r\n")
                r = c.reply()
                if r.code != 250:
                    results[i] = f"end of data {r}"
                    return
                results[i] = ("ok", queued_id(r.text))
                c.cmd("QUIT")
        except Exception as e:      # noqa: BLE001 - reported below
            results[i] = f"{type(e).__name__}: {e}"
            try:
                barrier.abort()
            except Exception:       # noqa: BLE001
                pass

    threads = [threading.Thread(target=client, args=(i,)) for i in range(N_CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    bad = [(i, r) for i, r in enumerate(results) if not (isinstance(r, tuple) and r[0] == "ok")]
    assert not bad, f"{len(bad)} of {N_CONCURRENT} sessions failed, e.g. {bad[:5]}"
    qids = {r[1].upper() for r in results}
    assert len(qids) == N_CONCURRENT, "queue ids are unique"

    wait_until(lambda: len(s.messages()) >= N_CONCURRENT or
               sum(len(x.rcpts) for x in s.messages()) >= N_CONCURRENT, 60,
               what=f"{N_CONCURRENT} deliveries (have {s.count()})")
    got = set()
    for x in s.messages():
        for mk in re.findall(rb"LOAD-(\d{3})-END", x.raw):
            got.add(int(mk))
    assert got == set(range(N_CONCURRENT)), f"missing: {sorted(set(range(N_CONCURRENT)) - got)[:20]}"


@pytest.mark.skipif(shutil.which("smtp-source") is None, reason="postfix's smtp-source not installed")
def test_smtp_source_100_messages_concurrency_10(moatd, sink):
    s = sink()
    m = moatd(domains={"example.com": f"127.0.0.1:{s.port}"})
    r = subprocess.run(["smtp-source", "-s", "10", "-m", "100", "-l", "4096",
                        "-f", "src@ext.test", "-t", "alice@example.com",
                        f"127.0.0.1:{m.port}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.strip() == "", r.stderr
    msgs = s.wait_count(100, timeout=60)
    assert len(msgs) == 100
    assert all(x.rcpt_addrs() == ["alice@example.com"] for x in msgs)
    assert all(x.sender() == "src@ext.test" for x in msgs)
    wait_until(lambda: not m.queue_ids(), 15, what="empty queue")
