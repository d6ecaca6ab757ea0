#!/usr/bin/env python3
"""A share that stops answering is a pause of its folder, not a frozen daemon (issue 10).

The output folder of one watched folder stops answering fsync (tests/shim/stall.c, loaded with
LD_PRELOAD, holds every fsync under it while a flag file exists: what an NFS hard mount does).
While it does:
- the other folder's files keep flowing (the loop is not waiting on the stalled share);
- STATUS= names the stalled folder and how long its storage has not answered (after 10 s);
- the watchdog keeps being fed (WATCHDOG_USEC of 2 s: no gap between pings near the limit);
- nothing is paid twice: once the share answers, the held results are written and no file of
  the stalled folder is generated again.
"""

import os
import sys
import time

import harness as h

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_systemd import NotifySocket  # noqa: E402
import subprocess  # noqa: E402


def outputs(out):
    if not os.path.isdir(out):
        return []
    return sorted(n for n in os.listdir(out) if n.endswith(".json") and not n.endswith(".error.json"))


def test(ctx):
    c = ctx.checks
    shim = os.path.join(os.path.dirname(os.path.abspath(ctx.binary)), "libseedreamd_stall.so")
    c.check(os.path.isfile(shim), "the stalling shim is built next to the binary", shim)
    if not os.path.isfile(shim):
        raise h.Abort("the shim")
    api = ctx.start_api(latency_ms=100)
    root = os.path.join(ctx.tmp, "stall")
    slow_hot, fast_hot = os.path.join(root, "slow"), os.path.join(root, "fast")
    slow_out, fast_out = slow_hot + "-out", fast_hot + "-out"
    state = os.path.join(root, "state")
    for d in (slow_hot, fast_hot, state, slow_out, fast_out):
        os.makedirs(d)
    flag = os.path.join(root, "stalled")
    cfg = os.path.join(root, "seedreamd.yaml")
    ctx.write_config(cfg, api=api, state_dir=state, max_in_flight=4,
                     folders=[{"path": slow_hot}, {"path": fast_hot}])
    notify = NotifySocket(root, "notify")
    env = ctx.env()
    env.update({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000",
                "LD_PRELOAD": shim, "SEEDREAMD_STALL_PREFIX": slow_out + "/",
                "SEEDREAMD_STALL_FLAG": flag})
    log_path = os.path.join(ctx.logdir, "stall.stderr")
    ctx.logs.append(log_path)
    log = open(log_path, "wb")
    proc = subprocess.Popen([ctx.binary, "-c", cfg], stdout=subprocess.DEVNULL, stderr=log,
                            stdin=subprocess.DEVNULL, env=env)
    ctx.processes.append(proc)

    def statuses():
        with notify.lock:
            return [m["fields"]["STATUS"] for m in notify.msgs if "STATUS" in m["fields"]]

    def pings():
        with notify.lock:
            return [m["mono"] for m in notify.msgs if m["fields"].get("WATCHDOG") == "1"]

    try:
        c.check(h.wait_until(lambda: any("READY=1" in m["raw"] for m in notify.msgs), 10),
                "the daemon is ready")
        with open(flag, "w") as f:
            f.write("stalled\n")
        t_stall = time.monotonic()
        for i in range(3):
            h.write_bytes(os.path.join(slow_hot, "s%d.png" % i), h.png_image(40 + i, 32, i))
            h.write_bytes(os.path.join(fast_hot, "f%d.png" % i), h.png_image(50 + i, 32, 10 + i))
        c.check(h.wait_until(lambda: len(outputs(fast_out)) == 3, 15),
                "the other folder's files are done while one output share does not answer",
                str(outputs(fast_out)))
        c.check(h.wait_until(lambda: any("storage of folder %s not answering" % slow_hot in s
                                         for s in statuses()), 20),
                "STATUS= names the folder whose storage does not answer",
                str(statuses()[-3:]))
        # Still flowing well after the stall was noticed.
        h.write_bytes(os.path.join(fast_hot, "f9.png"), h.png_image(61, 32, 19))
        c.check(h.wait_until(lambda: len(outputs(fast_out)) == 4, 15),
                "a file dropped into the other folder during the stall is done too",
                str(outputs(fast_out)))
        c.check(outputs(slow_out) == [], "nothing of the stalled folder is committed meanwhile",
                str(outputs(slow_out)))
        held = time.monotonic() - t_stall
        os.unlink(flag)
        c.check(h.wait_until(lambda: len(outputs(slow_out)) == 3, 20),
                "once the share answers, the stalled folder's results are written",
                str(outputs(slow_out)))
        c.check(h.wait_until(lambda: "not answering" not in (statuses() or [""])[-1], 5),
                "STATUS= no longer reports the stall", str(statuses()[-2:]))
        gens = api.generations()
        c.check(len(gens) == 7, "every file was generated once, none twice (%d generations for 7 "
                "files)" % len(gens), str(len(gens)))
        p = [t for t in pings() if t >= t_stall]
        gaps = [b - a for a, b in zip(p, p[1:])]
        c.check(len(p) >= int(held) // 2 and (not gaps or max(gaps) < 1.6),
                "the watchdog was fed through the %.0f s stall (%d pings, longest gap %.2f s)"
                % (held, len(p), max(gaps) if gaps else 0))
    finally:
        if os.path.exists(flag):
            os.unlink(flag)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        notify.closing = True


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
