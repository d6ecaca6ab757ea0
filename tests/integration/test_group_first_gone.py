#!/usr/bin/env python3
"""A group whose first image is deleted after the group was checked and before it is sent is not
dropped: it settles again and goes out with the images it has then (one POST, two images)."""

import os
import sys

import harness as h
from test_groups import add_folder_lines


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    fs = ctx.faultfs()
    root, hot, out, state = ctx.folder("group-gone")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    add_folder_lines(config, ["group: subfolder"])
    g = os.path.join(hot, "g")
    fs.set("stall read %s" % os.path.join(g, "c.png"))  # the group's check reads c.png last
    daemon = ctx.start_daemon(config, faultfs=fs)
    c.require(daemon.wait_for(r"ready", 10), "daemon: ready")
    os.makedirs(g)
    for i, n in enumerate(("a.png", "b.png", "c.png")):
        h.write_bytes(os.path.join(g, n), h.png_image(30 + i, 30, i))
    stalled = h.wait_until(lambda: any("stall read" in l for l in fs.applied()), 20)
    c.check(stalled, "the group's check reads its last image", daemon.stderr_text()[-1500:])
    os.unlink(os.path.join(g, "a.png"))  # checked already: gone before the send opens it
    fs.clear()
    done = h.wait_until(lambda: os.path.exists(os.path.join(out, "g.json")), 20)
    c.check(done, "the group is done with the images it has", daemon.stderr_text()[-1500:])
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "daemon: exits 0 on SIGTERM")
    gens = api.generations()
    c.eq(len(gens), 1, "exactly one POST")
    if gens:
        c.eq(len(gens[0].get("images") or []), 2, "it carries the two images left")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
