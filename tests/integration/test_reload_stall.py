#!/usr/bin/env python3
"""A reload reads the configuration (and probes its reference images) on a worker: with a
reference whose open stalls (faultfs, a share that stopped answering), the loop keeps feeding the
watchdog through the reload; once the reference answers, the reload is applied."""

import os
import signal
import sys
import time

import harness as h

WATCHDOG_USEC = 2_000_000


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    fs = ctx.faultfs()
    notify = h.notify_socket(ctx)
    root, hot, out, state = ctx.folder("reload-stall")
    ref = os.path.join(root, "style.png")
    h.write_bytes(ref, h.png_image(24, 24, 3))
    path = os.path.join(root, "seedreamd.yaml")
    ctx.write_config(path, api=api, state_dir=state, folders=[{"path": hot, "references": [ref]}])
    daemon = ctx.start_daemon(path, faultfs=fs, notify=notify, watchdog_usec=WATCHDOG_USEC)
    c.require(daemon.wait_for(r"ready", 10), "daemon: ready")
    second = hot + "-2"
    os.makedirs(second)
    ctx.write_config(path, api=api, state_dir=state,
                     folders=[{"path": hot, "references": [ref]}, {"path": second}])
    fs.set("stall open %s" % ref)
    t0 = time.monotonic()
    daemon.proc.send_signal(signal.SIGHUP)
    stalled = h.wait_until(lambda: any("stall open" in l for l in fs.applied()), 10)
    c.check(stalled, "the reload's probe of the reference stalls", daemon.stderr_text()[-800:])
    time.sleep(3 * WATCHDOG_USEC / 1e6)
    t1 = time.monotonic()
    gap = h.longest_gap(h.watchdog_pings(notify.snapshot()), t0, t1)
    c.check(gap[0] < WATCHDOG_USEC / 1e6, "the watchdog is fed while the reload waits on the share",
            "longest gap %.2f s" % gap[0])
    c.check(daemon.proc.poll() is None, "the daemon is still running")
    fs.clear()
    c.check(daemon.wait_for(r"folder %s is now watched" % second, 10),
            "once the reference answers, the reload is applied", daemon.stderr_text()[-800:])
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "daemon: exits 0 on SIGTERM")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
