#!/usr/bin/env python3
"""A flood of control clients while files flow (issue 12): 200 clients at once, a client that
sends requests and never reads its replies, lines over 64 KiB, status requests in a loop. The
drop-to-request latency stays about the same as without the flood, the daemon's RSS does not
grow, and it still answers afterwards."""

import json
import os
import socket
import statistics
import threading
import time

import harness as h
from test_control import KEY, write_config, gens_of, drop, raw_request


def rss_kib(pid):
    with open("/proc/%d/status" % pid, encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def latencies(api, hot, tag, n):
    """Seconds from a file's drop to its generation request, for n files, one at a time."""
    out = []
    for i in range(n):
        data = h.png_image(36, 24, 1000 + (100 if tag == "flood" else 0) + i)
        sha = h.sha256_bytes(data)
        t0 = drop(hot, "%s-%d.png" % (tag, i), data)
        if not h.wait_until(lambda: gens_of(api, sha), 20):
            out.append(20.0)
            continue
        out.append(gens_of(api, sha)[0]["time"] - t0)
        h.wait_until(lambda: os.path.exists(os.path.join(hot + "-out", "%s-%d.json" % (tag, i))), 20)
    return out


def flood(sock, stop, counts):
    """200 clients at once, oversized lines, a client that never reads, and status in a loop."""
    def hog():
        # Sends requests and never reads: the daemon holds one reply, then drops it.
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            s.setblocking(False)
            while not stop.is_set():
                try:
                    s.send(b'{"v":1,"cmd":"status"}\n' * 100)
                except BlockingIOError:
                    pass
                except OSError:
                    counts["hog_dropped"] = counts.get("hog_dropped", 0) + 1
                    s.close()
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(sock)
                    s.setblocking(False)
                time.sleep(0.05)
            s.close()
        except OSError:
            pass

    def burst():
        while not stop.is_set():
            socks = []
            for _ in range(200):
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(sock)
                    socks.append(s)
                except OSError:
                    counts["refused"] = counts.get("refused", 0) + 1
            for i, s in enumerate(socks):
                try:
                    s.sendall(b"y" * (80 * 1024) if i % 3 == 0 else b'{"v":1,"cmd":"status"}\n')
                except OSError:
                    pass
            for s in socks:
                s.close()
            counts["bursts"] = counts.get("bursts", 0) + 1

    def status_loop():
        while not stop.is_set():
            try:
                raw_request(sock, b'{"v":1,"cmd":"status"}\n')
                counts["status"] = counts.get("status", 0) + 1
            except OSError:
                pass

    threads = [threading.Thread(target=f, daemon=True) for f in (hog, burst, status_loop)]
    for t in threads:
        t.start()
    return threads


def test_flood(c, api, sock, hot_b, daemon):
    base = latencies(api, hot_b, "base", 5)
    rss0 = rss_kib(daemon.proc.pid)
    stop = threading.Event()
    counts = {}
    threads = flood(sock, stop, counts)
    time.sleep(1.0)
    loaded = latencies(api, hot_b, "flood", 5)
    rss1 = rss_kib(daemon.proc.pid)
    time.sleep(3.0)
    rss2 = rss_kib(daemon.proc.pid)
    stop.set()
    for t in threads:
        t.join(10)
    mb, ml = statistics.median(base), statistics.median(loaded)
    print("     drop-to-request latency: without a flood median %.3f s (max %.3f), with it median %.3f s "
          "(max %.3f); flood: %s; RSS %d -> %d -> %d KiB" % (mb, max(base), ml, max(loaded), counts, rss0, rss1, rss2))
    c.check(counts.get("bursts", 0) >= 1 and counts.get("status", 0) >= 10, "the flood ran", h._short(counts))
    c.check(ml <= mb * 3 + 0.5, "flood: drop-to-request latency about the same (median <= 3x + 0.5 s)",
            "%.3f s without, %.3f s with" % (mb, ml))
    c.check(rss2 - rss0 < 64 * 1024, "flood: the daemon's RSS grows by less than 64 MiB",
            "%d -> %d KiB" % (rss0, rss2))
    c.check(daemon.proc.poll() is None, "flood: the daemon still runs")
    r = json.loads(raw_request(sock, b'{"v":1,"cmd":"status"}\n'))
    c.check(r.get("ok") is True, "flood: status answers afterwards")


def test(ctx):
    c = ctx.checks
    api = ctx.start_api(key=KEY)
    root, hot, _, state = ctx.folder("flood")
    sock = os.path.join(root, "control")
    config = write_config(ctx, os.path.join(root, "seedreamd.yaml"), api, state, [(hot, [])], sock)
    # Under AddressSanitizer freed memory waits in a quarantine (256 MB by default) before
    # reuse: a small one, so that RSS shows what the daemon keeps (no effect without ASan).
    asan = os.environ.get("ASAN_OPTIONS", "")
    daemon = ctx.start_daemon(config, key=KEY, env_extra={
        "ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=8"})
    c.require(daemon.wait_for(r"ready", 15), "the daemon starts", daemon.stderr_text()[-2000:])
    test_flood(c, api, sock, hot, daemon)


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
