#!/usr/bin/env python3
"""A folder a reload adds whose done records take long to read, but are read steadily, is not
called "not answering": the read's progress counts, not when it started.

Folder B's output holds many sidecars (a --once run did b0; copies of its sidecar stand for
more results) and no done-record cache, and every open there takes a while (faultfs delay), so
the intake's read lasts well past the 10 s after which a look that makes no progress counts as
"not answering". STATUS= must never say so of B; once the records are in, B's new file is done
and b0's image, dropped again under another name (the original gone), reuses its result.
"""

import hashlib
import json
import os
import shutil
import signal
import sys
import time

import harness as h

SIDECARS = 120
DELAY_MS = 150  # per open: the read takes SIDECARS * DELAY_MS (18 s)


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
    side = h.read_json(os.path.join(out_b, "b0.json"))
    for i in range(SIDECARS):
        copy = dict(side, source="c%03d.png" % i)
        with open(os.path.join(out_b, "c%03d.json" % i), "w", encoding="utf-8") as f:
            json.dump(copy, f)
    os.unlink(os.path.join(hot_b, "b0.png"))
    shutil.rmtree(os.path.join(state, "index"), ignore_errors=True)

    config = os.path.join(ctx.tmp, "config.yaml")
    ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot_a}])
    d = ctx.start_daemon(config, faultfs=ffs, notify=notify)
    c.require(d.wait_for(r"\bready\b", 30), "the daemon is ready", d.stderr_text()[-400:])

    drop(hot_b, "b1.png", 2)
    drop(hot_b, "b0-again.png", 1)
    ffs.set("delay open %s %d" % (out_b, DELAY_MS))
    ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot_a}, {"path": hot_b}])
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGHUP)
    c.require(d.wait_for(r"folder %s is now watched" % hot_b, 10), "the reload is applied",
              d.stderr_text()[-600:])
    c.check(h.wait_until(lambda: done(out_b, "b1") and done(out_b, "b0-again"), 60),
            "once its records are in, B's new files are done", d.stderr_text()[-800:])
    took = time.monotonic() - t0
    read = sum(1 for line in ffs.applied() if line.startswith("delay open " + out_b))
    c.check(took > 12 and read >= SIDECARS,
            "the read of B's records was slow (%.1f s, %d delayed opens)" % (took, read))
    ffs.clear()
    said = [m["fields"]["STATUS"] for m in notify.snapshot()
            if "folder %s not answering" % hot_b in m["fields"].get("STATUS", "")]
    c.check(not said, "STATUS= never calls B not answering while its read goes on",
            " | ".join(said[:3]))
    sent = [r.get("image_sha256") for r in api.generations()]
    c.eq(sent.count(sha["b0.png"]), 1, "b0's image was paid for once (its records were read)")
    rc, took = d.terminate(30)
    c.eq(rc, 0, "the daemon stops cleanly on SIGTERM (took %.1f s)" % took)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
