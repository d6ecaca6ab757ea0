#!/usr/bin/env python3
"""Issues 9.17 and 9.2 on the reuse path: a copy of a done image reuses the earlier sidecar's
fields. An earlier sidecar without "created" (NaN to the reader: a cast that was undefined
behaviour) gives created 0, and one that was tampered with (a huge usage and model) is carried
over bounded like a server's answer, so the new sidecar is always read back."""

import json
import os

import harness as h


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("reused")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    data = h.png_image(48, 32, 11)
    h.write_bytes(os.path.join(hot, "a.png"), data)
    res = ctx.run_once(config)
    c.eq(len(api.generations()), 1, "one generation for a.png")
    side = os.path.join(out, "a.json")
    c.require(os.path.exists(side), "a.json written")
    doc = h.read_json(side)
    doc.pop("created", None)
    doc["model"] = "m" * 100000
    doc["usage"] = {"generated_images": 1, "total_tokens": 7,
                    "blob": {"k%06d" % i: i for i in range(30000)}}
    with open(side, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.utime(side, None)

    h.write_bytes(os.path.join(hot, "b.png"), data)
    res = ctx.run_once(config)
    c.eq(res.rc, 0, "the run with a copy exits 0")
    c.eq(len(api.generations()), 1, "the copy reuses the result: no API call")
    new = os.path.join(out, "b.json")
    c.require(os.path.exists(new), "b.json written", " ".join(h.listing(out)))
    sc = h.read_json(new)
    c.eq(sc.get("reused_from"), "a.png", "b.json reuses a.png's result")
    c.eq(sc.get("created"), 0, "a missing created is carried over as 0")
    c.check(len(sc.get("model") or "") <= 256, "the model is carried over capped",
            "%d characters" % len(sc.get("model") or ""))
    usage = sc.get("usage") or {}
    c.check(usage.get("truncated") is True and usage.get("total_tokens") == 7,
            "the oversized usage is carried over as its top-level numbers", repr(usage)[:200])
    c.check(os.path.getsize(new) < 64 * 1024, "the new sidecar is small",
            "%d bytes" % os.path.getsize(new))


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
