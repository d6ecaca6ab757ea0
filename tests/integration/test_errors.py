#!/usr/bin/env python3
"""Failures: an API 400 gives an .error.json after one call; local validation failures (empty,
text named .jpg, 10x10) give LocalValidation.* error sidecars with zero calls; deleting the API
error sidecar makes the next run retry that file."""

import os
import sys

import harness as h

LOCAL = {
    # name: (content, the code image.h names for it)
    "empty.png": (b"", "LocalValidation.Empty"),
    "text.jpg": (b"This is a text file, not a JPEG.\n" * 4, "LocalValidation.UnsupportedFormat"),
    "tiny.png": (None, "LocalValidation.TooSmall"),  # 10x10, filled in below
}


def test(ctx):
    c = ctx.checks
    api = ctx.start_api(faults=["400:InputImageSensitiveContentDetected"])
    root, hot, out, state = ctx.folder("errors")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    bad = h.sample("aurora.png")
    h.write_bytes(os.path.join(hot, "bad.png"), bad)
    for name, (data, _) in LOCAL.items():
        h.write_bytes(os.path.join(hot, name), h.png_image(10, 10, 7) if data is None else data)
    version = ctx.version()
    before = h.snapshot(hot)

    res = ctx.run_once(config)
    c.check(res.rc == 1 and not res.timed_out, "--once with failures exits 1", res.describe())
    gens = api.generations()
    names = {h.sha256_file(os.path.join(hot, n)): n for n in os.listdir(hot)}
    c.eq(h.sent(gens, names), ["bad.png"], "exactly 1 API call, for bad.png (the local failures cost nothing)")
    rec = gens[0] if gens else None

    want = ["bad.error.json"] + [n.rsplit(".", 1)[0] + ".error.json" for n in LOCAL]
    c.same_names(h.listing(out), want, "only error sidecars in the output folder (no image, no .json)")

    path = os.path.join(out, "bad.error.json")
    if c.check(os.path.exists(path), "bad.png: bad.error.json exists"):
        c.problems(h.error_sidecar_problems(h.read_json(path), src_path=os.path.join(hot, "bad.png"),
                                            source="bad.png", http_status=400,
                                            code="InputImageSensitiveContentDetected", attempts=1,
                                            version=version, record=rec),
                   "bad.error.json: http_status 400, code InputImageSensitiveContentDetected, attempts 1, "
                   "request_id, every field")
    for name, (_, code) in LOCAL.items():
        path = os.path.join(out, name.rsplit(".", 1)[0] + ".error.json")
        if not c.check(os.path.exists(path), "%s: %s exists" % (name, os.path.basename(path))):
            continue
        sc = h.read_json(path)
        c.problems(h.error_sidecar_problems(sc, src_path=os.path.join(hot, name), source=name, http_status=None,
                                            code_prefix="LocalValidation.", attempts=0, version=version),
                   "%s: a LocalValidation.* error, http_status null, attempts 0, every field" % name)
        found = (sc.get("error") or {}).get("code") if isinstance(sc.get("error"), dict) else None
        c.eq(found, code, "%s: the code is %s" % (name, code))
    c.problems(h.leftovers(out), "no hidden or temporary file left")
    c.problems(h.snapshot_problems(before, h.snapshot(hot)), "inputs untouched (never modified or moved)")

    # again, unchanged: failures are remembered, nothing is sent
    n = len(api.generations())
    res = ctx.run_once(config)
    c.check(not res.timed_out, "second --once finishes", res.describe())
    c.eq(len(api.generations()) - n, 0, "second run: 0 calls (error sidecars count as done)")

    # delete the API error sidecar: the next run retries bad.png (and only it)
    c.require(os.path.exists(os.path.join(out, "bad.error.json")), "bad.error.json is there to delete")
    os.unlink(os.path.join(out, "bad.error.json"))
    n = len(api.generations())
    res = ctx.run_once(config)
    c.check(not res.timed_out, "third --once (bad.error.json deleted) finishes", res.describe())
    new = api.generations()[n:]
    c.eq(h.sent(new, names), ["bad.png"], "third run: exactly 1 call, retrying bad.png")
    sc_path = os.path.join(out, "bad.json")
    if c.check(os.path.exists(sc_path), "third run: bad.json written (the retry succeeded)", "found %s" % h.listing(out)):
        c.problems(h.success_sidecar_problems(h.read_json(sc_path), src_path=os.path.join(hot, "bad.png"),
                                              source="bad.png", output="bad.jpeg", version=version,
                                              record=new[0] if new else None),
                   "third run: bad.json is complete")
    c.problems(h.output_problems(os.path.join(out, "bad.jpeg"), h.sha256_bytes(bad)),
               "third run: bad.jpeg generated from bad.png")
    c.check(not os.path.exists(os.path.join(out, "bad.error.json")), "third run: no bad.error.json")
    c.same_names(h.listing(out), ["bad.jpeg", "bad.json"] + want[1:],
                 "third run: the local error sidecars stay, bad has its result")
    c.problems(h.snapshot_problems(before, h.snapshot(hot)), "inputs still untouched")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
