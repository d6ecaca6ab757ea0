#!/usr/bin/env python3
"""A reload reads api_key_file on the worker that reads the configuration, not on the event loop:
with the key file on a share whose opens stall (faultfs), the loop keeps feeding the watchdog and
the other work goes on; once the file answers, the reload is applied (its mode warning still
logged) and the key is used: the file holds a new key by then, and the reload points at a stand-in
that accepts only that one."""

import json
import os
import signal
import sys
import time

import harness as h

WATCHDOG_USEC = 4_000_000
STALL_S = 8
NEW_KEY = "test-key-after-reload"


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    api_new = ctx.start_api("api-new", key=NEW_KEY)  # rejects the old key
    ffs = ctx.faultfs()
    notify = h.notify_socket(ctx)
    root, hot, out, state = ctx.folder("key")
    share = os.path.join(root, "share")
    os.makedirs(share)
    keyfile = os.path.join(share, "api_key")
    with open(keyfile, "w", encoding="utf-8") as f:
        f.write(h.DEFAULT_KEY + "\n")
    os.chmod(keyfile, 0o644)  # the reload must still say so
    extra = {"api_key_file": json.dumps(keyfile)}
    config = os.path.join(root, "seedreamd.yaml")
    ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot}], extra_api=extra)
    d = ctx.start_daemon(config, key=None, faultfs=ffs, notify=notify, watchdog_usec=WATCHDOG_USEC)
    c.require(d.wait_for(r"\bready\b", 30), "the daemon is ready", d.stderr_text()[-400:])
    second = hot + "-2"
    os.makedirs(second)
    ctx.write_config(config, api=api_new, state_dir=state,
                     folders=[{"path": hot}, {"path": second}], extra_api=extra)
    with open(keyfile, "w", encoding="utf-8") as f:  # keeps its mode
        f.write(NEW_KEY + "\n")
    ffs.set("stall open %s" % keyfile)
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGHUP)
    c.require(h.wait_until(lambda: any(keyfile in line for line in ffs.applied()), 10),
              "the reload's read of the key file stalls", d.stderr_text()[-600:])
    h.write_bytes(os.path.join(hot, "a.png"), h.png_image(24, 24, 5))
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(out, "a.json")), 15),
            "a file is done while the key file does not answer", d.stderr_text()[-600:])
    time.sleep(max(0.0, STALL_S - (time.monotonic() - t0)))
    t1 = time.monotonic()
    gap = h.longest_gap(h.watchdog_pings(notify.snapshot()), t0, t1)
    c.check(gap[0] < WATCHDOG_USEC / 1e6,
            "the watchdog is fed while the reload waits on the key file (longest gap %.1f s)" % gap[0],
            "systemd would have killed the daemon")
    c.check(d.proc.poll() is None, "the daemon still runs")
    ffs.clear()
    c.check(d.wait_for(r"folder %s is now watched" % second, 10),
            "once the key file answers, the reload is applied", d.stderr_text()[-800:])
    c.eq(d.stderr_text().count("is readable by group or others"), 2,
         "the key file's mode is warned about at the start and at the reload")
    h.write_bytes(os.path.join(second, "b.png"), h.png_image(24, 24, 6))
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(second + "-out", "b.json")), 20),
            "a file of the new folder is done with the key read at the reload",
            d.stderr_text()[-600:])
    h.write_bytes(os.path.join(hot, "c.png"), h.png_image(24, 24, 7))
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(out, "c.json")), 20),
            "a file of the first folder is done with it too", d.stderr_text()[-600:])
    c.eq(len(api_new.generations()), 2, "the new stand-in answered both (the new key)")
    c.eq(len(api.rejected()) + len(api_new.rejected()), 0,
         "the stand-ins rejected no request (the old key was not sent to the new one)")
    rc, _ = d.terminate()
    c.eq(rc, 0, "the daemon exits 0 on SIGTERM")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
