#!/usr/bin/env python3
"""seedreamctl retry of a failed group: a group of 15 images is refused (Group.TooManyImages, no
call); after two images are taken out, `seedreamctl retry <folder>/<sub>` requeues it, it is done,
with exactly one POST carrying its 13 images."""

import os
import sys

import harness as h
from test_control import Ctl, write_config


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("group-retry")
    sock = os.path.join(ctx.tmp, "ctl.sock")
    config = write_config(ctx, os.path.join(root, "seedreamd.yaml"), api, state,
                          [(hot, ["group: subfolder"])], sock)
    g = os.path.join(hot, "g")
    os.makedirs(g)
    for i in range(15):
        h.write_bytes(os.path.join(g, "p%02d.png" % i), h.png_image(20 + i, 20, i))
    daemon = ctx.start_daemon(config)
    c.require(daemon.wait_for(r"ready", 10), "daemon: ready")
    err = os.path.join(out, "g.error.json")
    c.require(h.wait_until(lambda: os.path.exists(err), 20), "the group of 15 fails",
              daemon.stderr_text()[-1500:])
    c.eq(h.read_json(err).get("error", {}).get("code"), "Group.TooManyImages",
         "g.error.json: Group.TooManyImages")
    for i in (13, 14):
        os.unlink(os.path.join(g, "p%02d.png" % i))
    ctl = Ctl(ctx, sock)
    rc, reply, out_text, stderr = ctl.run("retry", g)
    c.eq(rc, 0, "seedreamctl retry <folder>/g exits 0")
    c.check(reply and any(i.get("result") == "requeued" for i in reply.get("items") or []),
            "the reply says the group was requeued", out_text + stderr)
    done = h.wait_until(lambda: os.path.exists(os.path.join(out, "g.json")), 20)
    c.check(done, "the group is done after the retry", daemon.stderr_text()[-1500:])
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "daemon: exits 0 on SIGTERM")
    gens = api.generations()
    c.eq(len(gens), 1, "exactly one POST")
    if gens:
        c.eq(len(gens[0].get("images") or []), 13, "it carries the 13 images")
    c.check(not os.path.exists(err), "the error record is gone")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
