#!/usr/bin/env python3
"""Files whose done record matches what a scan sees are looked at in batches (is the sidecar
still there?) instead of one job each: a rescan sends none of them again, and a file whose
sidecar was deleted while the daemon runs is processed again at the next rescan (the deleted
sidecar means "do it again"), once."""

import os
import time

import harness as h


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("batch")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    with open(config, "a") as f:
        f.write("rescan_interval: 1s\n")
    names = ["p%02d.png" % i for i in range(12)]
    for i, name in enumerate(names):
        h.write_bytes(os.path.join(hot, name), h.png_image(40, 32, 100 + i))
    d = ctx.start_daemon(config, name="batch")
    c.require(d.wait_for(r"\bready\b", 15), "the daemon starts", d.stderr_text()[-600:])
    sidecars = [os.path.join(out, n[:-4] + ".json") for n in names]
    c.require(h.wait_until(lambda: all(os.path.exists(p) for p in sidecars), 60),
              "all 12 files are done", str(h.listing(out)))
    c.eq(len(api.generations()), 12, "12 generations for 12 files")
    time.sleep(3)  # a few rescans over 12 done files
    c.eq(len(api.generations()), 12, "rescans of done files send nothing again")

    os.unlink(sidecars[3])
    c.check(h.wait_until(lambda: os.path.exists(sidecars[3]), 30),
            "p03's deleted sidecar is written again after a rescan", str(h.listing(out)))
    time.sleep(2.5)
    gens = api.generations()
    c.eq(len(gens), 13, "exactly one more generation: p03 only, once")
    rc, _ = d.terminate(20)
    c.eq(rc, 0, "the daemon stops cleanly")


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
