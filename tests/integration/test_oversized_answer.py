#!/usr/bin/env python3
"""A successful answer too large to keep (5 MiB of JSON around a URL, over the 4 MiB cap) was
generated, so it was paid for: it fails the file once (ResponseTooLarge) instead of being asked
for again (and paid again) api.retries times. A 503 that is too large is still retried."""

import json
import os
import sys

import harness as h


def test(ctx):
    c = ctx.checks
    big = os.path.join(ctx.tmp, "big.json")
    with open(big, "w", encoding="utf-8") as f:
        json.dump({"model": h.MODEL, "created": 1, "padding": "x" * (5 << 20),
                   "data": [{"url": "http://127.0.0.1:1/files/none", "size": "2048x2048"}]}, f)
    api = ctx.start_hostile_api(script={"generation": [{"status": 200, "body_file": big}]})
    root, hot, out, state = ctx.folder("big")
    h.write_bytes(os.path.join(hot, "a.png"), h.png_image(40, 30, 1))
    cfg = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                           folders=[{"path": hot}], retries=3)
    r = ctx.run_once(cfg, timeout=60)
    c.eq(r.rc, 1, "--once exits 1: the file failed")
    c.eq(len(api.generations()), 1, "one generation: an oversized success is not asked for again")
    err = os.path.join(out, "a.error.json")
    c.check(os.path.exists(err) and h.read_json(err)["error"]["code"] == "ResponseTooLarge",
            "an .error.json with ResponseTooLarge", str(h.listing(out)))

    api2 = ctx.start_hostile_api("big503", script={"generation": [{"status": 503, "body_file": big}]})
    root2, hot2, out2, state2 = ctx.folder("big503")
    h.write_bytes(os.path.join(hot2, "b.png"), h.png_image(40, 30, 2))
    cfg2 = ctx.write_config(os.path.join(root2, "seedreamd.yaml"), api=api2, state_dir=state2,
                            folders=[{"path": hot2}], retries=1)
    r = ctx.run_once(cfg2, timeout=60)
    c.eq(len(api2.generations()), 2, "an oversized 503 (nothing generated) is retried")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
