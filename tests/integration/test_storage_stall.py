#!/usr/bin/env python3
"""A stalled share is a pause, not a crash (issue 10): one folder's output stops answering (an NFS
hard mount that hangs) for 90 s while the daemon runs under a watchdog of 10 s.

Two watched folders, A and B, each with its own output folder; NOTIFY_SOCKET is the test's
(test_systemd.NotifySocket) with WATCHDOG_USEC=10 s, so the daemon pings every 5 s. Once A has
files going, every call under A's output folder blocks (faultfs `stall all <A's output>`) for
STORAGE_STALL_SECONDS (default 90; CI uses the default). Meanwhile files dropped into B must
complete, no gap between WATCHDOG=1 pings may reach the watchdog interval (systemd would kill the
daemon and every generation in flight would be paid again), and a STATUS= during the stall must
name A's folder. After the release A's files complete, the stand-in saw exactly one generation per
file, and the daemon stops cleanly.
"""

import hashlib
import os
import sys
import time

import harness as h

STALL_S = float(os.environ.get("STORAGE_STALL_SECONDS", "90"))
WATCHDOG_USEC = 10_000_000
N_A = 3
B_EVERY_S = min(10.0, max(1.0, STALL_S / 9))


def done(out, stem):
    return os.path.exists(os.path.join(out, stem + ".json"))


def test(ctx):
    c = ctx.checks
    api = ctx.start_api(latency_ms=300)
    ffs = ctx.faultfs()
    notify = h.notify_socket(ctx)
    _, hot_a, out_a, state = ctx.folder("a")
    _, hot_b, out_b, _ = ctx.folder("b")
    config = ctx.write_config(os.path.join(ctx.tmp, "config.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot_a}, {"path": hot_b}], max_in_flight=8,
                              timeout="30s")
    d = ctx.start_daemon(config, faultfs=ffs, notify=notify, watchdog_usec=WATCHDOG_USEC)
    c.require(d.wait_for(r"\bready\b", 30), "the daemon is ready", d.stderr_text()[-400:])
    t_ready = time.monotonic()
    sha = {}

    def drop(hot, name, seed):
        data = h.png_image(24, 24, seed)
        sha[name] = hashlib.sha256(data).hexdigest()
        tmp = os.path.join(hot, ".%s.part" % name)
        h.write_bytes(tmp, data)
        os.rename(tmp, os.path.join(hot, name))

    # A: its output folder stops answering before the results can be written there
    ffs.set("stall all %s" % out_a)
    a_names = ["a%d.png" % i for i in range(N_A)]
    for i, name in enumerate(a_names):
        drop(hot_a, name, 100 + i)
    c.require(h.wait_until(lambda: any(out_a in line for line in ffs.applied()), 30),
              "A's files reach its stalled output folder (the shim blocks a call there)",
              "nothing touched %s within 30 s; the shim log: %s" % (out_a, ffs.applied()[-5:]))
    t_stall = time.monotonic()
    print("     stalled: %s" % ffs.applied()[0], flush=True)

    # B goes on meanwhile
    b_drops = []  # (name, dropped at, done at or None)
    i = 0
    while time.monotonic() - t_stall < STALL_S:
        if not b_drops or time.monotonic() - b_drops[-1][1] >= B_EVERY_S:
            name = "b%02d.png" % i
            drop(hot_b, name, 200 + i)
            b_drops.append([name, time.monotonic(), None])
            i += 1
        for rec in b_drops:
            if rec[2] is None and done(out_b, rec[0][:-4]):
                rec[2] = time.monotonic()
        time.sleep(0.1)
    t_release = time.monotonic()
    ffs.clear()
    # the last B file, if dropped just now, is given until the release + its own share of time
    late = [r for r in b_drops if r[2] is None and t_release - r[1] > 15]
    c.check(not late, "B's files complete within 15 s while A's output is stalled (%d dropped "
            "over %.0f s)" % (len(b_drops), STALL_S),
            "%d of %d not done during the stall: %s" % (len(late), len(b_drops),
                                                        ", ".join(r[0] for r in late[:6])))
    b_waits = [r[2] - r[1] for r in b_drops if r[2] is not None]
    print("     B during the stall: %d of %d done, drop-to-done %s" %
          (len(b_waits), len(b_drops), ("max %.1f s" % max(b_waits)) if b_waits else "-"), flush=True)

    msgs = notify.snapshot()
    statuses = [m["fields"]["STATUS"] for m in msgs
                if "STATUS" in m["fields"] and t_stall <= m["mono"] <= t_release]
    naming = [s for s in statuses if hot_a in s]
    c.check(naming, "a STATUS= during the stall names A's folder (%s)" % hot_a,
            "%d STATUS= during the stall, none names it; the last: %s" %
            (len(statuses), " | ".join(statuses[-3:]) or "(none)"))
    if naming:
        print("     STATUS during the stall: %s" % naming[-1], flush=True)

    # after the release
    c.check(h.wait_until(lambda: all(done(out_a, n[:-4]) for n in a_names), 60),
            "A's files complete within 60 s of the release",
            "done: %s" % [n for n in a_names if done(out_a, n[:-4])])
    c.check(h.wait_until(lambda: all(done(out_b, r[0][:-4]) for r in b_drops), 60),
            "every B file complete after the release")
    t_end = time.monotonic()

    msgs = notify.snapshot()
    pings = h.watchdog_pings(msgs)
    gap, g0, g1 = h.longest_gap(pings, t_ready, t_end)
    c.check(gap < WATCHDOG_USEC / 1e6,
            "no gap between WATCHDOG=1 pings reaches the watchdog interval (%.0f s)" % (WATCHDOG_USEC / 1e6),
            "the longest gap: %.1f s, from %.1f s to %.1f s after ready (the stall: %.1f s to %.1f s); "
            "systemd would have killed the daemon" % (gap, g0 - t_ready, g1 - t_ready,
                                                      t_stall - t_ready, t_release - t_ready))
    print("     watchdog: %d pings, the longest gap %.1f s (%.1f-%.1f s after ready; stall %.1f-%.1f s)"
          % (len(pings), gap, g0 - t_ready, g1 - t_ready, t_stall - t_ready, t_release - t_ready),
          flush=True)

    gens = api.generations()
    by_sha = {}
    for r in gens:
        by_sha[r.get("image_sha256")] = by_sha.get(r.get("image_sha256"), 0) + 1
    names_by_sha = {v: k for k, v in sha.items()}
    problems = ["%s sent %d times" % (names_by_sha.get(s, s), k) for s, k in by_sha.items() if k != 1]
    problems += ["%s never sent" % n for n, s in sha.items() if s not in by_sha]
    c.problems(problems, "the stand-in saw exactly one generation per file (%d files)" % len(sha))

    rc, took = d.terminate(30)
    c.eq(rc, 0, "the daemon stops cleanly on SIGTERM (took %.1f s)" % took)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
