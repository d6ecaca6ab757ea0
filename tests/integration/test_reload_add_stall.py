#!/usr/bin/env python3
"""A reload that adds a folder whose output share hangs: its temporary files are swept and its
done records read on a worker, not on the event loop.

Folder B was processed before (a --once run left b0's result and sidecar in its output). The
daemon runs with folder A only, under WATCHDOG_USEC; then every open under B's output stalls
(faultfs) and a reload adds B. Meanwhile the loop must keep feeding the watchdog, A's files must
keep flowing, STATUS= must name B as not answering and B's new file must not be sent (its
records are not in). Once the share answers, B starts: its new file is done, and b0 (done
before) is not paid for again.
"""

import hashlib
import os
import signal
import sys
import time

import harness as h

WATCHDOG_USEC = 4_000_000
STALL_S = 15  # past the 10 s after which a folder counts as not answering


def done(out, stem):
    return os.path.exists(os.path.join(out, stem + ".json"))


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    ffs = ctx.faultfs()
    notify = h.notify_socket(ctx)
    _, hot_a, out_a, state = ctx.folder("a")
    _, hot_b, out_b, _ = ctx.folder("b")
    sha = {}

    def drop(hot, name, seed):
        data = h.png_image(24, 24, seed)
        sha[name] = hashlib.sha256(data).hexdigest()
        tmp = os.path.join(hot, ".%s.part" % name)
        h.write_bytes(tmp, data)
        os.rename(tmp, os.path.join(hot, name))

    # B's earlier run: b0 is done, its sidecar in B's output
    config_b = ctx.write_config(os.path.join(ctx.tmp, "b.yaml"), api=api, state_dir=state,
                                folders=[{"path": hot_b}])
    drop(hot_b, "b0.png", 1)
    res = ctx.run(["-c", config_b, "--once"], timeout=60, name="once-b")
    c.require(res.rc == 0 and done(out_b, "b0"), "a --once run does b0 in folder B",
              "rc %s; %s" % (res.rc, res.stderr[-600:]))

    config = os.path.join(ctx.tmp, "config.yaml")
    ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot_a}])
    d = ctx.start_daemon(config, faultfs=ffs, notify=notify, watchdog_usec=WATCHDOG_USEC)
    c.require(d.wait_for(r"\bready\b", 30), "the daemon is ready", d.stderr_text()[-400:])
    drop(hot_a, "a0.png", 10)
    c.require(h.wait_until(lambda: done(out_a, "a0"), 30), "a0 is done before the reload")

    # the reload adds B, whose output does not answer
    drop(hot_b, "b1.png", 2)
    ffs.set("stall open %s" % out_b)
    ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot_a}, {"path": hot_b}])
    t_stall = time.monotonic()
    d.proc.send_signal(signal.SIGHUP)
    c.require(h.wait_until(lambda: any(out_b in line for line in ffs.applied()), 15),
              "the reload's look at B's output stalls (the shim blocks an open there)",
              "the shim log: %s; stderr: %s" % (ffs.applied()[-5:], d.stderr_text()[-600:]))
    c.check(d.wait_for(r"folder %s is now watched" % hot_b, 10),
            "the reload is applied while B's output hangs", d.stderr_text()[-600:])
    drop(hot_a, "a1.png", 11)
    c.check(h.wait_until(lambda: done(out_a, "a1"), 15), "A's new file is done during the stall",
            d.stderr_text()[-600:])
    naming = notify.wait(lambda m: "folder %s not answering for" % hot_b
                         in m["fields"].get("STATUS", ""), 0, STALL_S + 5)
    c.check(naming is not None, "STATUS= names B as not answering during the stall",
            " | ".join(m["fields"]["STATUS"] for m in notify.snapshot()
                       if "STATUS" in m["fields"])[-600:])
    time.sleep(max(0.0, STALL_S - (time.monotonic() - t_stall)))
    sent = {r.get("image_sha256") for r in api.generations()}
    c.check(sha["b1.png"] not in sent, "B's new file is not sent before its records are in")
    t_release = time.monotonic()
    gap, g0, g1 = h.longest_gap(h.watchdog_pings(notify.snapshot()), t_stall, t_release)
    c.check(gap < WATCHDOG_USEC / 1e6,
            "the watchdog is fed while B's output hangs (longest gap %.1f s)" % gap,
            "gap from %.1f s to %.1f s after the reload; systemd would have killed the daemon"
            % (g0 - t_stall, g1 - t_stall))
    c.check(d.proc.poll() is None, "the daemon still runs")
    ffs.clear()

    c.check(h.wait_until(lambda: done(out_b, "b1"), 30), "once the share answers, B's new file is done",
            d.stderr_text()[-800:])
    time.sleep(1)
    by_sha = {}
    for r in api.generations():
        by_sha[r.get("image_sha256")] = by_sha.get(r.get("image_sha256"), 0) + 1
    names = {v: k for k, v in sha.items()}
    problems = ["%s sent %d times" % (names.get(s, s), k) for s, k in by_sha.items() if k != 1]
    problems += ["%s never sent" % n for n, s in sha.items() if s not in by_sha]
    c.problems(problems, "each file is paid for once (b0 not again after the reload)")
    rc, took = d.terminate(30)
    c.eq(rc, 0, "the daemon stops cleanly on SIGTERM (took %.1f s)" % took)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
