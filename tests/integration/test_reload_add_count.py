#!/usr/bin/env python3
"""A folder a reload adds counts what it paid today once its done records are really in, even
when its intake could not read them and the watch read them later.

Folder B was processed before today (a --once run did b0). The daemon runs with folder A; a reload
adds B with max_images_per_day: 1, and the intake's look at B's output fails (faultfs: EIO on
its first two opens there, the sweep's and the read's). The records stay stale, the watch reads
them once the output answers, and b0 (paid today) counts then: B's new file b1 is held by the
folder's daily limit, not sent.
"""

import hashlib
import os
import signal
import sys
import time

import harness as h


def done(out, stem):
    return os.path.exists(os.path.join(out, stem + ".json"))


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    ffs = ctx.faultfs()
    notify = h.notify_socket(ctx)
    _, hot_a, _, state = ctx.folder("a")
    _, hot_b, out_b, _ = ctx.folder("b")
    sha = {}

    def drop(hot, name, seed):
        data = h.png_image(24, 24, seed)
        sha[name] = hashlib.sha256(data).hexdigest()
        tmp = os.path.join(hot, ".%s.part" % name)
        h.write_bytes(tmp, data)
        os.rename(tmp, os.path.join(hot, name))

    config_b = ctx.write_config(os.path.join(ctx.tmp, "b.yaml"), api=api, state_dir=state,
                                folders=[{"path": hot_b}])
    drop(hot_b, "b0.png", 1)
    res = ctx.run(["-c", config_b, "--once"], timeout=60, name="once-b")
    c.require(res.rc == 0 and done(out_b, "b0"), "a --once run does b0 in folder B",
              "rc %s; %s" % (res.rc, res.stderr[-600:]))

    config = os.path.join(ctx.tmp, "config.yaml")
    ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot_a}])
    d = ctx.start_daemon(config, faultfs=ffs, notify=notify)
    c.require(d.wait_for(r"\bready\b", 30), "the daemon is ready", d.stderr_text()[-400:])

    drop(hot_b, "b1.png", 2)
    ffs.set("fail open %s EIO 2" % out_b)
    ctx.write_config(config, api=api, state_dir=state,
                     folders=[{"path": hot_a}, {"path": hot_b, "max_images_per_day": 1}])
    d.proc.send_signal(signal.SIGHUP)
    c.require(d.wait_for(r"folder %s: cannot read the output folder %s: Input/output error"
                         % (hot_b, out_b), 15),
              "the intake cannot read B's records (EIO)",
              "the shim log: %s; stderr: %s" % (ffs.applied()[-5:], d.stderr_text()[-800:]))
    held = notify.wait(lambda m: "folder %s reached its daily limit" % hot_b
                       in m["fields"].get("STATUS", ""), 0, 20)
    c.check(held is not None, "once its records are read, B's daily limit holds b1 back",
            d.stderr_text()[-800:])
    time.sleep(2)
    sent = [r.get("image_sha256") for r in api.generations()]
    c.check(sha["b1.png"] not in sent, "b1 is not sent (b0, paid today, counts)")
    c.eq(sent.count(sha["b0.png"]), 1, "b0 was paid for once")
    rc, took = d.terminate(30)
    c.eq(rc, 0, "the daemon stops cleanly on SIGTERM (took %.1f s)" % took)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
