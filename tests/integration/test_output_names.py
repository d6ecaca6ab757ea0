#!/usr/bin/env python3
"""Output names of several outputs never replace another source's result: cat-1.png done first
(cat-1.jpeg + cat-1.json), then cat.png with max_images 3 must not write its first output over
cat-1.jpeg; and the other way round, cat.png's cat-1.jpeg survives a later cat-1.png."""

import os
import sys

import harness as h
from test_max_images import drop, visible, write_config


def outputs_listed(c, tag, out, sidecar, source):
    """The sidecar records `source`, and every output it lists exists."""
    sc = h.read_json(os.path.join(out, sidecar))
    c.eq(sc.get("source"), source, "%s: %s records %s" % (tag, sidecar, source))
    names = [o.get("output") for o in sc.get("outputs") or [] if "output" in o] or [sc.get("output")]
    c.check(all(n and os.path.exists(os.path.join(out, n)) for n in names),
            "%s: every output %s lists exists" % (tag, sidecar), str(names))
    return sc, names


def scenario(ctx, tag, first, first_n, second, second_n):
    c = ctx.checks
    api = ctx.start_api(tag)
    root, hot, out, state = ctx.folder(tag)
    path = os.path.join(root, "seedreamd.yaml")
    config = write_config(path, api, state, [{"path": hot, "max_images": first_n}])
    drop(hot, [first], seed=1)
    res = ctx.run_once(config, name=tag + "-first")
    c.check(res.rc == 0 and not res.timed_out, "%s: first run exits 0" % tag, res.describe())
    before = {n: h.read_bytes(os.path.join(out, n)) for n in visible(out)}
    first_stem = os.path.splitext(first)[0]
    _, first_names = outputs_listed(c, tag + " before", out, first_stem + ".json", first)

    config = write_config(path, api, state, [{"path": hot, "max_images": second_n}])
    drop(hot, [second], seed=7)
    res = ctx.run_once(config, name=tag + "-second")
    c.check(res.rc == 0 and not res.timed_out, "%s: second run exits 0" % tag, res.describe())
    c.eq(len(api.generations()), 2, "%s: one call per source" % tag)
    for n, data in before.items():
        c.check(os.path.exists(os.path.join(out, n)) and
                h.read_bytes(os.path.join(out, n)) == data,
                "%s: %s of %s keeps its bytes" % (tag, n, first))
    outputs_listed(c, tag + " after", out, first_stem + ".json", first)
    others = [n for n in visible(out) if n.endswith(".json") and n != first_stem + ".json"]
    c.eq(len(others), 1, "%s: one more sidecar, for %s" % (tag, second))
    if others:
        _, names = outputs_listed(c, tag + " second", out, others[0], second)
        c.eq(len(names), second_n, "%s: %s has its %d outputs" % (tag, second, second_n))
        c.check(not set(names) & set(first_names), "%s: no output shared" % tag, str(names))
    c.eq([n for n in visible(out) if n.endswith(".error.json")], [], "%s: no failure" % tag)


def test(ctx):
    scenario(ctx, "one-then-several", "cat-1.png", 1, "cat.png", 3)
    scenario(ctx, "several-then-one", "cat.png", 3, "cat-1.png", 1)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
