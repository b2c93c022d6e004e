#!/usr/bin/python3
"""smtp_load.py - SMTP load client for bench/relay.sh and bench/connections.sh (stdlib only).

  latency HOST:PORT -n N -c C -s SIZE [--bind ADDR]
      N messages, one per connection, C sessions at a time (like smtp-source);
      timestamps the write of the final "." and the reply to it; prints JSON:
      sent, ok (250 replies), msg/s, p50/p90/p99/max ms from end-of-data to "250",
      and the client's own CPU seconds (to tell whether the client is the bottleneck).
  idle HOST:PORT --pid PID --idle A --concurrent B [--per-ip K] [--session]
      opens A connections (spread over 127.0.1.x sources, K per address), reads
      each greeting, samples VmRSS of PID before and after; then B in total, and
      times one normal transaction on a new connection while they are all open;
      prints JSON.  --session: memory is the sum of Pss (proportional set size,
      shared pages split between the processes sharing them) of every process
      of PID's session instead (a Postfix master and its children).
"""
import argparse
import asyncio
import json
import os
import resource
import sys
import time

FROM = "from@ext.test"
RCPT = "rcpt@example.com"


def body(size):
    """A message of about SIZE octets: headers plus 72-character lines."""
    head = (f"From: <{FROM}>\r\nTo: <{RCPT}>\r\nSubject: bench\r\n"
            "Message-ID: <{mid}@ext.test>\r\nDate: Sun, 29 Nov 2026 04:00:00 +0000\r\n\r\n")
    line = ("x" * 70) + "\r\n"
    return head, line * max(1, size // len(line))


async def reply(reader):
    """One SMTP reply (all its lines); returns (code, last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


async def expect(reader, want, what):
    code, line = await reply(reader)
    if code != want:
        raise RuntimeError(f"{what}: {line}")


async def transaction(host, port, head, text, mid, bind=None):
    """One message on a new connection; returns seconds from "." to the 250."""
    local = (bind, 0) if bind else None
    reader, writer = await asyncio.open_connection(host, port, local_addr=local)
    try:
        await expect(reader, 220, "greeting")
        writer.write(b"EHLO client.ext.test\r\n")
        await expect(reader, 250, "EHLO")
        writer.write(f"MAIL FROM:<{FROM}>\r\n".encode())
        await expect(reader, 250, "MAIL")
        writer.write(f"RCPT TO:<{RCPT}>\r\n".encode())
        await expect(reader, 250, "RCPT")
        writer.write(b"DATA\r\n")
        await expect(reader, 354, "DATA")
        writer.write(head.format(mid=mid).encode() + text.encode())
        await writer.drain()
        writer.write(b".\r\n")
        t0 = time.monotonic()
        code, line = await reply(reader)
        t1 = time.monotonic()
        if code != 250:
            raise RuntimeError(f"end of data: {line}")
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return t1 - t0
    finally:
        writer.close()


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, int(round(p / 100.0 * (len(sorted_vals) - 1))))
    return round(sorted_vals[i] * 1000, 2)


async def latency(a):
    host, port = a.target.rsplit(":", 1)
    head, text = body(a.size)
    lat, errors = [], []
    todo = iter(range(a.n))

    async def worker():
        for i in todo:
            try:
                lat.append(await transaction(host, int(port), head, text, f"b{i}", a.bind))
            except Exception as e:  # counted and reported, never hidden
                errors.append(str(e))

    c0 = time.process_time()
    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(a.c)))
    wall = time.monotonic() - t0
    lat.sort()
    return {"sent": a.n, "ok": len(lat), "errors": len(errors), "first_error": errors[:1],
            "wall_s": round(wall, 3), "msg_per_s": round(len(lat) / wall, 1),
            "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
            "max_ms": pct(lat, 100), "client_cpu_s": round(time.process_time() - c0, 3)}


def vmrss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def session_pss_kib(leader):
    """Sum of Pss over every process whose session id is LEADER."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) != leader:      # field 6: session
                continue
            with open(f"/proc/{d}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


async def open_idle(host, port, start, count, per_ip, conns):
    """COUNT more connections from index START; each has read its 220."""
    async def one(i):
        src = f"127.0.{1 + (i // per_ip) // 250}.{1 + (i // per_ip) % 250}"
        r, w = await asyncio.open_connection(host, port, local_addr=(src, 0))
        await expect(r, 220, f"greeting of connection {i}")
        conns.append((r, w))
    sem = asyncio.Semaphore(200)      # do not flood the accept queue

    async def limited(i):
        async with sem:
            await one(i)
    await asyncio.gather(*(limited(i) for i in range(start, start + count)))


async def idle(a):
    host, port = a.target.rsplit(":", 1)
    port = int(port)
    out = {"memory": "session Pss" if a.session else "VmRSS"}
    mem = (lambda: session_pss_kib(a.pid)) if a.session else (lambda: vmrss_kib(a.pid))
    conns = []
    # one transaction first: warms moatd's caches and thread pools, so the
    # RSS difference is the connections' only
    head, text = body(4096)
    out["warmup_s"] = round(await transaction(host, port, head, text, "warm"), 4)
    await asyncio.sleep(0.5)
    rss0 = mem()
    t0 = time.monotonic()
    await open_idle(host, port, 0, a.idle, a.per_ip, conns)
    out["idle_open_s"] = round(time.monotonic() - t0, 2)
    await asyncio.sleep(1.0)
    rss1 = mem()
    out.update(idle=len(conns), rss_before_kib=rss0, rss_idle_kib=rss1,
               rss_per_conn_kib=round((rss1 - rss0) / max(1, len(conns)), 2))
    t0 = time.monotonic()
    await open_idle(host, port, a.idle, a.concurrent - a.idle, a.per_ip, conns)
    out["concurrent_open_s"] = round(time.monotonic() - t0, 2)
    out["concurrent"] = len(conns)
    out["rss_concurrent_kib"] = mem()
    # a new, normal transaction while they are all open: connect to the 250 after "."
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(transaction(host, port, head, text, "probe", "127.0.0.1"), 30)
        out["probe_s"] = round(time.monotonic() - t0, 4)
    except Exception as e:
        out["probe_error"] = str(e) or type(e).__name__
    os.kill(a.pid, 0)                 # raises if moatd died
    out["server_alive"] = True
    for _, w in conns:
        w.close()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    l = sub.add_parser("latency")
    l.add_argument("target")
    l.add_argument("-n", type=int, default=2000)
    l.add_argument("-c", type=int, default=50)
    l.add_argument("-s", "--size", type=int, default=4096)
    l.add_argument("--bind")
    i = sub.add_parser("idle")
    i.add_argument("target")
    i.add_argument("--pid", type=int, required=True)
    i.add_argument("--idle", type=int, default=5000)
    i.add_argument("--concurrent", type=int, default=10000)
    i.add_argument("--per-ip", type=int, default=50)
    i.add_argument("--session", action="store_true")
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    res = asyncio.run(latency(a) if a.mode == "latency" else idle(a))
    json.dump(res, sys.stdout)
    print()
    return 0 if res.get("errors", 0) == 0 and "probe_error" not in res else 1


if __name__ == "__main__":
    sys.exit(main())
