#!/usr/bin/env python3
"""Spend safety and what happens to originals: max_images_per_day (per folder and global,
rebuilt from the sidecars after a restart), images_per_minute, on_success move and delete."""

import json
import os
import time

import harness as h


def write_config(path, api, state, folders, top=None):
    q = json.dumps
    lines = ["api:", "  base_url: %s" % q(api.base_url), "  model: %s" % q(h.MODEL),
             "  timeout: 20s", "  max_in_flight: 4", "  retries: 2",
             "defaults:", "  settle: 200ms", "state_dir: %s" % q(state)]
    for k, v in (top or {}).items():
        lines.append("%s: %s" % (k, v))
    lines.append("folders:")
    for f in folders:
        lines.append("  - path: %s" % q(f["path"]))
        lines.append("    prompt: %s" % q(h.PROMPT))
        for k, v in f.items():
            if k != "path":
                lines.append("    %s: %s" % (k, v))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def drop(hot, names, seed=0):
    shas = {}
    for i, name in enumerate(names):
        data = h.png_image(40 + i, 30 + i, seed + i)
        h.write_bytes(os.path.join(hot, name), data)
        shas[name] = h.sha256_bytes(data)
    return shas


def test_limits(ctx):
    c = ctx.checks
    api = ctx.start_api("limits")
    root, hot, out, state = ctx.folder("limits")
    other = os.path.join(root, "other")
    os.makedirs(other)
    # Per folder: 2 a day for hot; other has no limit of its own.
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state,
                          [{"path": hot, "max_images_per_day": 2}, {"path": other}])
    drop(hot, ["a%d.png" % i for i in range(5)])
    drop(other, ["b%d.png" % i for i in range(2)], seed=50)
    res = ctx.run_once(config)
    c.eq(res.rc, 1, "--once held back by a daily limit exits 1")
    c.check("daily limit" in res.stderr, "the log says a daily limit holds files back",
            res.stderr[-400:])
    done_hot = [n for n in h.listing(out) if n.endswith(".json")]
    done_other = [n for n in h.listing(other + "-out") if n.endswith(".json")]
    c.eq(len(done_hot), 2, "the folder with max_images_per_day 2 got exactly 2 results")
    c.eq(len(done_other), 2, "the other folder is not held back by it")
    c.eq(len(api.generations()), 4, "exactly 4 generation calls")
    res = ctx.run_once(config)
    c.eq(len(api.generations()), 4, "a restart the same day makes no call: the count comes from "
         "the sidecars")
    c.eq(res.rc, 1, "and still exits 1 with files held back")

    # Global: 3 a day across both folders, whichever comes first.
    api2 = ctx.start_api("global")
    root, hot, out, state = ctx.folder("global")
    other = os.path.join(root, "other")
    os.makedirs(other)
    config = write_config(os.path.join(root, "seedreamd.yaml"), api2, state,
                          [{"path": hot}, {"path": other}], top={"max_images_per_day": 3})
    drop(hot, ["a%d.png" % i for i in range(4)], seed=70)
    drop(other, ["b%d.png" % i for i in range(4)], seed=80)
    res = ctx.run_once(config)
    done = [n for n in h.listing(out) + h.listing(other + "-out") if n.endswith(".json")]
    c.eq(res.rc, 1, "--once held back by the global daily limit exits 1")
    c.eq(len(api2.generations()), 3, "the global max_images_per_day 3 holds across folders")
    c.eq(len(done), 3, "3 results in all")


def test_per_minute(ctx):
    c = ctx.checks
    api = ctx.start_api("rate")
    root, hot, out, state = ctx.folder("rate")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state, [{"path": hot}],
                          top={"images_per_minute": 6})
    drop(hot, ["r%d.png" % i for i in range(7)], seed=100)
    res = ctx.run_once(config, timeout=40)
    c.eq(res.rc, 0, "--once with images_per_minute 6 finishes all 7 files")
    times = sorted(r["time"] for r in api.generations())
    c.eq(len(times), 7, "7 generation calls")
    if len(times) == 7:
        c.check(times[5] - times[0] < 3, "the first 6 go at once (a full bucket)",
                "spread %.2f s" % (times[5] - times[0]))
        c.check(times[6] - times[0] >= 8, "the 7th waits for a token (about 10 s)",
                "waited %.2f s" % (times[6] - times[0]))


def test_on_success(ctx):
    c = ctx.checks
    api = ctx.start_api("moves", faults=["ok", "ok", "ok", "400:InputImageSensitiveContentDetected"])
    root, hot, out, state = ctx.folder("moves")
    gone = os.path.join(root, "gone")
    os.makedirs(os.path.join(hot, "sub"))
    os.makedirs(gone)
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state,
                          [{"path": hot, "on_success": "move", "recursive": "true"},
                           {"path": gone, "on_success": "delete"}])
    drop(hot, ["m1.png", "sub/m2.png"])
    res = ctx.run_once(config)
    c.eq(res.rc, 0, "--once with on_success: move exits 0")
    c.check(not os.path.exists(os.path.join(hot, "m1.png")) and
            not os.path.exists(os.path.join(hot, "sub", "m2.png")), "the originals left the folder")
    c.check(os.path.isfile(os.path.join(out, "originals", "m1.png")) and
            os.path.isfile(os.path.join(out, "originals", "sub", "m2.png")),
            "and are in done_dir (<output>/originals), mirroring their paths",
            str(h.listing(out)))
    c.check(os.path.isfile(os.path.join(out, "sub", "m2.json")), "the sidecar is written first")

    # on_success: delete; a file that fails stays where it is.
    shas = drop(gone, ["d1.png", "d2.png"], seed=200)
    res = ctx.run_once(config)
    failed = [n for n in shas
              if os.path.exists(os.path.join(gone + "-out", n.replace(".png", ".error.json")))]
    kept = [n for n in shas if os.path.exists(os.path.join(gone, n))]
    c.eq(res.rc, 1, "--once with one rejected file exits 1")
    c.eq(kept, failed, "on_success: delete removes the succeeded original, keeps the failed one")
    c.eq(len(failed), 1, "exactly one of the two was rejected (and has its .error.json)")


def test(ctx):
    test_limits(ctx)
    test_on_success(ctx)
    test_per_minute(ctx)


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
