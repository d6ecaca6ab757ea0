#!/usr/bin/env python3
"""b64_json with an output folder below min_free_space: nothing is paid, and waiting leaves no
temporary file and no open descriptor behind however often the daemon looks again."""

import os
import sys
import time

import harness as h


def test(ctx):
    c = ctx.checks
    root, hot, out, state = ctx.folder("space")
    api = ctx.start_hostile_api(script={"generation": []})
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "output": out}], response_format="b64_json")
    with open(config, "a", encoding="utf-8") as f:
        f.write("min_free_space: 1000TiB\n")
    daemon = ctx.start_daemon(config)
    c.require(daemon.wait_for(r"ready", 10), "the daemon is ready")
    h.write_bytes(os.path.join(hot, "photo.png"), h.sample("rings.png"))
    c.require(daemon.wait_for(r"photo\.png waits", 10), "the file waits for room")
    time.sleep(21)  # two more looks (every 10 s)
    fd_dir = "/proc/%d/fd" % daemon.proc.pid
    open_tmp = [os.readlink(os.path.join(fd_dir, x)) for x in os.listdir(fd_dir)]
    open_tmp = [p for p in open_tmp if p.endswith(".tmp")]
    daemon.terminate()
    c.eq(len(api.generations(valid_only=False)), 0, "no generation")
    c.eq(open_tmp, [], "no temporary file held open")
    c.problems(h.leftovers(out), "no temporary file left")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
