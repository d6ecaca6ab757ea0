#!/usr/bin/env python3
"""A watched folder on a share that goes away (issue 9, finding 10). The folder is a tmpfs mount;
after one result it is unmounted, leaving the bare (empty) mount point: the folder is paused with a
reason in STATUS= and the log, rather than taken for an empty folder. When a share is mounted there
again (a new tmpfs, another device) holding the old file and a new one, the new one is processed
within seconds (not at the next rescan_interval) and the old one is not paid again. Needs root."""

import os
import shutil
import subprocess
import sys
import time

import harness as h
from test_systemd import NotifySocket


def test(ctx):
    c = ctx.checks
    if os.geteuid() != 0:
        print("skip - needs root to mount tmpfs (run as root, as CI does)")
        return
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("hotmount")
    mounted = False
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", hot], check=True)
        mounted = True
        cfg = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                               folders=[{"path": hot}])
        notify = NotifySocket(ctx.tmp)
        env = ctx.env()
        env["NOTIFY_SOCKET"] = notify.path
        d = h.Daemon(ctx, [ctx.binary, "-c", cfg], env, "hotmount")
        c.require(d.wait_for(r"\bready\b", 15), "the daemon starts", d.stderr_text()[-600:])
        old = os.path.join(hot, "old.png")
        h.write_bytes(old, h.png_image(44, 40, 5))
        c.require(h.wait_until(lambda: os.path.exists(os.path.join(out, "old.json")), 15),
                  "the first image is processed", h.listing(out))
        saved = os.path.join(root, "old.png.saved")
        shutil.copy2(old, saved)

        seen = notify.count()
        subprocess.run(["umount", "-l", hot], check=True)
        mounted = False
        time.sleep(7)  # longer than any look-again period: the bare mount point is seen by now
        st = [m["fields"].get("STATUS", "") for m in notify.snapshot()[seen:]]
        c.check(bool(st) and "paused" in st[-1] and hot in st[-1],
                "STATUS= says the watched folder is paused while its share is not mounted",
                "; ".join(st) or "no STATUS= since the unmount")
        err = d.stderr_text()
        c.check("not mounted" in err, "the log says the folder is not mounted", err[-600:])

        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", hot], check=True)
        mounted = True
        shutil.copy2(saved, old)
        h.write_bytes(os.path.join(hot, "new.png"), h.png_image(52, 40, 6))
        t0 = time.monotonic()
        done = h.wait_until(lambda: os.path.exists(os.path.join(out, "new.json")), 12)
        c.check(done, "the file on the share mounted again is processed within 12 s "
                "(rescan_interval is 10 min)", "after %.1f s: %s" % (time.monotonic() - t0, h.listing(out)))
        time.sleep(1)
        c.eq(len(api.generations()), 2, "two generations in all: old.png was not paid again")
        st = notify.snapshot()
        c.check(bool(st) and "paused" not in st[-1]["fields"].get("STATUS", "paused"),
                "STATUS= no longer says paused", st[-1]["raw"] if st else "none")
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")
        notify.close()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", hot], check=False)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
