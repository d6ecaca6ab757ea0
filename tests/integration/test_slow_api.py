#!/usr/bin/env python3
"""A generation that takes longer than a minute (as large sizes do) is waited for up to
api.timeout, not cut short and retried: cutting it would pay for the image twice."""

import os

import harness as h


def test(ctx):
    c = ctx.checks
    api = ctx.start_api(faults=["slow:ms=65000"])
    root, hot, out, state = ctx.folder("slow")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], timeout="150s", retries=3)
    h.write_bytes(os.path.join(hot, "big.png"), h.png_image(64, 48, 5))
    res = ctx.run_once(config, timeout=140)
    c.eq(res.rc, 0, "--once succeeds after a 65 s generation")
    c.eq(len(api.generations()), 1, "exactly one generation: the slow answer was waited for")
    sc = h.read_json(os.path.join(out, "big.json")) if os.path.exists(os.path.join(out, "big.json")) else {}
    c.eq(sc.get("attempts"), 1, "the sidecar records 1 attempt")
    c.check(isinstance(sc.get("elapsed_ms"), (int, float)) and sc["elapsed_ms"] >= 65000,
            "elapsed_ms covers the 65 s", str(sc.get("elapsed_ms")))


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
