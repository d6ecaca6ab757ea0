#!/usr/bin/env python3
"""Issue 10.4: the done-record cache in state_dir/index/. A clean stop writes it; the next start
takes the done records of every unchanged output directory from it, without reading a sidecar
(shown here by a sidecar damaged in place, which the cache still vouches for: its directory did not
change), while a directory that changed (a sidecar deleted while the daemon was stopped) is read
again and its file processed again; a damaged cache is ignored and the sidecars are read."""

import glob
import os
import time

import harness as h


def corrupt_in_place(path):
    """Overwrites the first bytes without a rename: the directory's mtime stays."""
    with open(path, "r+b") as f:
        f.write(b"XXXX")


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("cache")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    with open(config, "a", encoding="utf-8") as f:
        f.write("    recursive: true\n")
    os.makedirs(os.path.join(hot, "sub"))
    for i, rel in enumerate(["a.png", "b.png", "c.png", "sub/d.png", "sub/e.png"]):
        h.write_bytes(os.path.join(hot, rel), h.png_image(40 + i, 30, 70 + i))
    res = ctx.run_once(config, extra=["-v"], timeout=60)
    c.eq(res.rc, 0, "the first run processes the five files")
    c.eq(len(api.generations()), 5, "five generations")
    # Directories changed in the last 2 s are not trusted by a cache written now.
    time.sleep(2.2)
    res = ctx.run_once(config, extra=["-v"], timeout=60)
    c.eq((res.rc, len(api.generations())), (0, 5), "the second run pays nothing")
    caches = glob.glob(os.path.join(state, "index", "*.cache"))
    c.eq(len(caches), 1, "a clean stop wrote the done-record cache")
    if not caches:
        return
    cache = caches[0]

    corrupt_in_place(os.path.join(out, "a.json"))
    res = ctx.run_once(config, extra=["-v"], timeout=60)
    c.eq((res.rc, len(api.generations())), (0, 5),
         "with the cache, a.json is not read: nothing is paid (the cache was used)")
    c.check("2 folder(s) from the cache, 0 read, 0 sidecar(s) read" in res.stderr,
            "the log says both folders came from the cache", res.stderr[-1500:])

    os.unlink(os.path.join(out, "sub", "d.json"))  # while stopped: sub/ changes
    res = ctx.run_once(config, extra=["-v"], timeout=60)
    c.eq(res.rc, 0, "the run after a deleted sidecar exits 0")
    c.eq(len(api.generations()), 6, "sub/d.png is processed again (its sidecar is gone), nothing else")
    c.check(os.path.exists(os.path.join(out, "sub", "d.json")), "and d.json is written again")
    c.check("1 folder(s) from the cache, 1 read, 1 sidecar(s) read" in res.stderr,
            "only sub/ was read again", res.stderr[-1500:])

    time.sleep(2.2)
    res = ctx.run_once(config, extra=["-v"], timeout=60)  # a fresh cache with sub/ trusted again
    c.check(len(api.generations()) == 6, "nothing more is paid", res.stderr[-3000:])
    data = bytearray(h.read_bytes(cache))
    data[len(data) // 2] ^= 0x55
    h.write_bytes(cache, bytes(data))
    res = ctx.run_once(config, extra=["-v"], timeout=60)
    c.check("cache" in res.stderr and "not usable" in res.stderr,
            "a damaged cache is reported and not used", res.stderr[-1500:])
    c.eq(len(api.generations()), 7,
         "the sidecars are read instead: the damaged a.json is not a done record, a.png is paid again")
    c.eq(res.rc, 0, "and the run exits 0")


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
