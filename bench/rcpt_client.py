#!/usr/bin/python3
"""rcpt_client.py - the SMTP client of bench/rcpt-lookup.sh (stdlib only).

    rcpt_client.py HOST PORT USERS CONNECTIONS RCPTS

CONNECTIONS worker processes each send their share of RCPTS recipients,
pipelined: MAIL FROM, 100 RCPT TO, RSET in one write, then read the 102
replies.  Half the recipients are known (userI@example.com and
aliasI@example.com, I < USERS, equally), half unknown (nobodyI@example.com),
in a fixed pseudo-random order.  A session carries at most 1000 RCPTs (500
rejected, below both servers' error limits as the script sets them), then
QUIT and a new connection.  The batches are built before the clock starts.

Prints one JSON object: rcpts, seconds, rcpt_per_s, the 250 / 550 / other
counts of the RCPT replies, the expected known / unknown counts, and
mismatches (RCPTs whose reply was not the one expected for that address).
"""
import json
import multiprocessing as mp
import random
import socket
import sys
import time

BATCH = 100          # RCPTs between MAIL and RSET (under both recipient limits)
SESSION = 1000       # RCPTs per connection, then QUIT and reconnect


def read_reply(sock, buf):
    """one complete (possibly multi-line) reply; returns (code, rest of buf)"""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line[3:4] != b"-":
                return line[:3], buf
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        buf += data


def worker(host, port, users, n, seed, barrier, out):
    rnd = random.Random(seed)
    batches = []           # (bytes, expected known flags)
    left = n
    while left > 0:
        k = min(BATCH, left)
        cmds = [b"MAIL FROM:<bench@ext.test>\r\n"]
        flags = []
        for j in range(k):
            u = rnd.randrange(users)
            kind = rnd.randrange(4)
            if kind == 0:
                a, known = "user%d@example.com" % u, True
            elif kind == 1:
                a, known = "alias%d@example.com" % u, True
            else:
                a, known = "nobody%d@example.com" % u, False
            cmds.append(b"RCPT TO:<" + a.encode() + b">\r\n")
            flags.append(known)
        cmds.append(b"RSET\r\n")
        batches.append((b"".join(cmds), flags))
        left -= k
    res = {"rcpts": 0, "c250": 0, "c550": 0, "other": 0, "mismatch": 0,
           "want_known": 0, "want_unknown": 0, "sessions": 0, "error": None,
           "examples": []}
    for _, flags in batches:
        res["want_known"] += sum(flags)
        res["want_unknown"] += len(flags) - sum(flags)
    barrier.wait()
    t0 = time.monotonic()
    sock, buf, in_session = None, b"", 0
    try:
        for data, flags in batches:
            if sock is None:
                sock = socket.create_connection((host, port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
                code, buf = read_reply(sock, buf)
                if code != b"220":
                    raise ConnectionError("greeting %r" % code)
                sock.sendall(b"EHLO client.bench.test\r\n")
                code, buf = read_reply(sock, buf)
                if code != b"250":
                    raise ConnectionError("EHLO answered %r" % code)
                res["sessions"] += 1
                in_session = 0
            sock.sendall(data)
            code, buf = read_reply(sock, buf)
            if code != b"250":
                raise ConnectionError("MAIL answered %r" % code)
            for known in flags:
                code, buf = read_reply(sock, buf)
                res["rcpts"] += 1
                if code == b"250":
                    res["c250"] += 1
                elif code == b"550":
                    res["c550"] += 1
                else:
                    res["other"] += 1
                if code != (b"250" if known else b"550"):
                    res["mismatch"] += 1
                    if len(res["examples"]) < 3:
                        res["examples"].append("%s for a %s address" %
                                               (code.decode(errors="replace"),
                                                "known" if known else "unknown"))
            code, buf = read_reply(sock, buf)
            if code != b"250":
                raise ConnectionError("RSET answered %r" % code)
            in_session += len(flags)
            if in_session >= SESSION:
                sock.sendall(b"QUIT\r\n")
                read_reply(sock, buf)
                sock.close()
                sock = None
        if sock is not None:
            sock.sendall(b"QUIT\r\n")
            read_reply(sock, buf)
            sock.close()
    except (OSError, ConnectionError) as e:
        res["error"] = str(e)
    res["t0"], res["t1"] = t0, time.monotonic()
    out.put(res)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    users, conns, rcpts = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(conns)
    out = ctx.Queue()
    procs = []
    for i in range(conns):
        share = rcpts // conns + (1 if i < rcpts % conns else 0)
        p = ctx.Process(target=worker, args=(host, port, users, share, 1000 + i, barrier, out))
        p.start()
        procs.append(p)
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    tot = {k: sum(r[k] for r in results)
           for k in ("rcpts", "c250", "c550", "other", "mismatch", "want_known",
                     "want_unknown", "sessions")}
    secs = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    tot["seconds"] = round(secs, 3)
    tot["rcpt_per_s"] = round(tot["rcpts"] / secs) if secs > 0 else 0
    tot["errors"] = [r["error"] for r in results if r["error"]]
    tot["examples"] = [e for r in results for e in r["examples"]][:3]
    print(json.dumps(tot))


if __name__ == "__main__":
    main()
