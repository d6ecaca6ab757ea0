#!/usr/bin/env python3
"""response_format b64_json: the image comes inside the JSON; outputs and sidecars are right and
nothing is downloaded."""

import os
import sys
import time

import harness as h


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("b64")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], response_format="b64_json")
    files = {"plasma.png": h.sample("plasma.png"), "blocks.jpg": h.sample("blocks.jpg"),
             "rings.png": h.sample("rings.png"), "made.jpeg": h.jpeg_image(64, 40, 9)}
    for name, data in files.items():
        h.write_bytes(os.path.join(hot, name), data)
    version = ctx.version()
    before = h.snapshot(hot)

    t0 = time.time()
    res = ctx.run_once(config)
    t1 = time.time()
    c.check(res.rc == 0 and not res.timed_out, "--once exits 0", res.describe())
    gens = api.generations()
    c.eq(len(gens), 4, "exactly 4 generation calls")
    c.problems(["%s asked for %r" % (r.get("request_id"), r.get("response_format")) for r in gens
                if r.get("response_format") != "b64_json"], "every request asks for response_format b64_json")
    c.eq(len(api.downloads()), 0, "no download requests recorded")
    try:
        c.eq(api.stats().get("downloads"), 0, "/_stats agrees: 0 downloads")
    except OSError as e:
        c.check(False, "/_stats agrees: 0 downloads", str(e))
    stems = [n.rsplit(".", 1)[0] for n in files]
    c.same_names(h.listing(out), [s + ".jpeg" for s in stems] + [s + ".json" for s in stems],
                 "one .jpeg and one .json per source")
    problems = []
    for name, data in files.items():
        s = name.rsplit(".", 1)[0]
        sha = h.sha256_bytes(data)
        problems += h.output_problems(os.path.join(out, s + ".jpeg"), sha)
        rec = next((r for r in gens if r.get("image_sha256") == sha), None)
        if rec and os.path.exists(os.path.join(out, s + ".jpeg")):
            if h.sha256_output(os.path.join(out, s + ".jpeg")) != rec.get("output_sha256"):
                problems.append("%s.jpeg differs from the image the API returned" % s)
        sc = os.path.join(out, s + ".json")
        if not os.path.exists(sc):
            problems.append("%s: no sidecar" % name)
            continue
        problems += ["%s: %s" % (name, p) for p in h.success_sidecar_problems(
            h.read_json(sc), src_path=os.path.join(hot, name), source=name, output=s + ".jpeg",
            response_format="b64_json", version=version, record=rec, window=(t0, t1))]
    c.problems(problems, "outputs are the decoded images, byte for byte; sidecars complete with "
               "response_format b64_json")
    c.problems(h.leftovers(out), "no hidden or temporary file left")
    c.problems(h.snapshot_problems(before, h.snapshot(hot)), "inputs untouched")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
