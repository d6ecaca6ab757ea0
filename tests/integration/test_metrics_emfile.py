#!/usr/bin/env python3
"""The metrics listener out of descriptors (issue 12 review): with RLIMIT_NOFILE lowered on the
running daemon (prlimit) and scrapers holding connections until accept4 fails with EMFILE, the
pending connection must not spin the loop (level-triggered epoll): the listener rests and is
enabled again by a timer. The daemon's CPU time over 2 s stays low (from /proc/PID/stat); once
descriptors are free again, a scrape answers."""

import os
import resource
import socket
import time

import harness as h
from test_metrics import free_port, http, write_config

KEY = "sk-metrics-emfile-4b1d"


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid, encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def test(ctx):
    c = ctx.checks
    api = ctx.start_api(key=KEY)
    root, hot, _, state = ctx.folder("emfile")
    port = free_port()
    config = write_config(ctx, root, api, hot, state, 'metrics_listen: "127.0.0.1:%d"\n' % port)
    d = ctx.start_daemon(config, key=KEY)
    c.require(d.wait_for(r"serving metrics on", 10), "the daemon serves metrics")
    c.require(http(port)[0] == 200, "a scrape answers")
    pid = d.proc.pid
    time.sleep(0.5)
    in_use = len(os.listdir("/proc/%d/fd" % pid))
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    # Room for 3 more descriptors: the fourth connection finds none.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 3, old[1]))
    held = []
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.append(s)
    c.check(d.wait_for(r"metrics_listen: cannot accept: .*(descriptors|Too many open files)", 5),
            "the daemon says it cannot accept (out of descriptors)", d.stderr_text()[-1000:])
    t0 = cpu_ticks(pid)
    time.sleep(2.0)
    used = (cpu_ticks(pid) - t0) / os.sysconf("SC_CLK_TCK")
    print("     CPU time over 2 s with a connection pending and no descriptor: %.2f s" % used)
    c.check(used < 0.5, "out of descriptors, the daemon does not spin (CPU < 0.5 s over 2 s)", "%.2f s" % used)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
    for s in held:
        s.close()
    c.check(h.wait_until(lambda: http(port, timeout=3)[0] == 200, 10),
            "descriptors free again: a scrape answers (the listener listens again)")
    rc, _ = d.terminate(timeout=20)
    c.eq(rc, 0, "SIGTERM: exit 0")


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
