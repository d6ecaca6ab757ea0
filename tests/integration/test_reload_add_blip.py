#!/usr/bin/env python3
"""A reload adds a folder whose output share goes away while its done records are read: what
that read found (nothing: the output was away) is not trusted once the share is back.

Folder B was processed before (a --once run left b0's result and sidecar in its output, and
the output's identity in state_dir). The daemon runs with folder A; every open under B's output
stalls (faultfs) and a reload adds B, so B's intake hangs in its read. Meanwhile B's output goes
away (renamed: a share unmounted) and the watch says so; then the output comes back, the very
same directory, and the intake's read is let go but fails on b0's sidecar (EIO), so it finds no
record. B must read its records again before it starts: b0's image, dropped again under another
name (the original gone), reuses its result (only the records know it) instead of being paid for
again; B's new file is done once.
"""

import hashlib
import os
import shutil
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
    _, hot_a, _, state = ctx.folder("a")
    _, hot_b, out_b, _ = ctx.folder("b")
    away = out_b + ".away"
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

    # no done-record cache: B's records come from its sidecars
    shutil.rmtree(os.path.join(state, "index"), ignore_errors=True)
    config = os.path.join(ctx.tmp, "config.yaml")
    ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot_a}])
    d = ctx.start_daemon(config, faultfs=ffs, extra=("-v",))
    c.require(d.wait_for(r"\bready\b", 30), "the daemon is ready", d.stderr_text()[-400:])

    # the reload adds B; its intake hangs in its first open under B's output
    drop(hot_b, "b1.png", 2)
    # b0's very image again under another name, the original gone: only B's records know it
    # is done (its result is reused); the output holds no result of that name
    os.unlink(os.path.join(hot_b, "b0.png"))
    drop(hot_b, "b0-again.png", 1)
    ffs.set("stall open %s" % out_b)
    ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot_a}, {"path": hot_b}])
    d.proc.send_signal(signal.SIGHUP)
    c.require(h.wait_until(lambda: any(out_b in line for line in ffs.applied()), 15),
              "B's intake hangs in its read of the output (the shim blocks an open there)",
              "the shim log: %s; stderr: %s" % (ffs.applied()[-5:], d.stderr_text()[-600:]))
    c.require(d.wait_for(r"folder %s is now watched" % hot_b, 10), "the reload is applied",
              d.stderr_text()[-600:])

    # the share goes away during the read, and the watch sees it
    os.rename(out_b, away)
    c.require(d.wait_for(r"folder %s is paused .*output %s is missing" % (hot_b, out_b), 20),
              "the watch finds B's output missing during the intake", d.stderr_text()[-800:])
    # the very same directory comes back, and the read goes on where the share still fails
    # (b0's sidecar, once: the read skips what it cannot read)
    os.rename(away, out_b)
    sidecar = os.path.join(out_b, "b0.json")
    ffs.set("fail open %s EIO 1" % sidecar)
    c.require(h.wait_until(lambda: any(line.startswith("fail open " + sidecar)
                                       for line in ffs.applied()), 15),
              "the intake's read of b0's sidecar fails", "the shim log: %s" % ffs.applied()[-5:])

    c.check(h.wait_until(lambda: done(out_b, "b1") and done(out_b, "b0-again"), 40),
            "once back, B's new files are done", d.stderr_text()[-800:])
    time.sleep(2)
    by_sha = {}
    for r in api.generations():
        by_sha[r.get("image_sha256")] = by_sha.get(r.get("image_sha256"), 0) + 1
    names = {v: k for k, v in sha.items()}
    problems = ["%s sent %d times" % (names.get(s, s), k) for s, k in by_sha.items() if k != 1]
    problems += ["%s never sent" % n for n, s in sha.items() if s not in by_sha]
    c.problems(problems, "each image is paid for once (b0's not again after the blip)")
    rc, took = d.terminate(30)
    c.eq(rc, 0, "the daemon stops cleanly on SIGTERM (took %.1f s)" % took)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
