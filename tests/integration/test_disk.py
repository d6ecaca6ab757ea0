#!/usr/bin/env python3
"""An output disk below min_free_space: nothing is paid for (a result that could not be written
would be money spent in vain), no file is failed, STATUS= says why, and once there is room again
the image is generated once and written. (A disk that fills up after the API was paid is in
test_storage_faults.py: that result is kept and written later.)"""

import os
import signal
import subprocess
import sys
import time

import harness as h

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_systemd import NotifySocket  # noqa: E402  (systemd's end of NOTIFY_SOCKET)


def statuses(notify):
    with notify.lock:
        return [m["fields"]["STATUS"] for m in notify.msgs if "STATUS" in m["fields"]]


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("disk")
    config = os.path.join(root, "seedreamd.yaml")

    def write(min_free):
        ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot}])
        with open(config, "a", encoding="utf-8") as fh:
            fh.write("min_free_space: %s\n" % min_free)

    write("1000TiB")  # more than any disk here: no result could be written
    notify = NotifySocket(root)
    env = ctx.env()
    env["NOTIFY_SOCKET"] = notify.path
    log = open(os.path.join(ctx.logdir, "disk.stderr"), "wb")
    ctx.logs.append(log.name)
    proc = subprocess.Popen([ctx.binary, "-c", config], stdout=subprocess.DEVNULL, stderr=log,
                            stdin=subprocess.DEVNULL, env=env)
    ctx.processes.append(proc)
    try:
        c.require(h.wait_until(lambda: any("queued" in s for s in statuses(notify)), 10),
                  "the daemon starts and reports STATUS=")
        h.write_bytes(os.path.join(hot, "a.png"), h.png_image(50, 40, 3))
        said = h.wait_until(lambda: any("less free space than min_free_space" in s
                                        for s in statuses(notify)), 15)
        c.check(said, "STATUS= says the output has less free space than min_free_space",
                str(statuses(notify)[-3:]))
        time.sleep(2.5)
        c.eq(len(api.generations()), 0, "nothing is paid for while there is no room")
        c.check(not os.path.exists(os.path.join(out, "a.error.json")), "no .error.json: the job is not failed")
        c.check(not os.path.exists(os.path.join(out, "a.json")), "and no sidecar yet")

        write("0")  # room again (0 turns the check off), applied by a reload
        proc.send_signal(signal.SIGHUP)
        done = h.wait_until(lambda: os.path.exists(os.path.join(out, "a.json")), 90)
        c.check(done, "after the reload the output and its sidecar appear", str(h.listing(out)))
        c.eq(len(api.generations()), 1, "exactly one generation")
        c.check(h.wait_until(lambda: not any("min_free_space" in s
                                             for s in statuses(notify)[-1:]), 5),
                "STATUS= no longer reports the disk problem", str(statuses(notify)[-1:]))
        c.problems(h.leftovers(out), "no hidden or temporary file left")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        notify.closing = True


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
