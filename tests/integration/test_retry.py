#!/usr/bin/env python3
"""Retries (api.retries: 3): one retryable fault, then success. 500, 503, 429 with Retry-After,
a dropped connection, a malformed 200 and an error object in a 200 each cost one extra call;
a truncated download is retried as a download, without a second generation."""

import os
import sys

import harness as h

# fault, expected generation calls, what it is
SCENARIOS = [
    ("500", 2, "HTTP 500 InternalServiceError"),
    ("503", 2, "HTTP 503"),
    ("429:ra=1", 2, "HTTP 429 ServerOverloaded with Retry-After: 1"),
    ("drop", 2, "connection closed without a response"),
    ("malformed", 2, "200 with a truncated JSON body"),
    ("error200", 2, "200 with a top-level error object"),
    ("truncdl", 1, "image download cut off halfway"),
]


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    version = ctx.version()
    for i, (fault, calls, what) in enumerate(SCENARIOS):
        tag = fault.split(":")[0]
        root, hot, out, state = ctx.folder("retry-%s" % tag)
        config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                                  folders=[{"path": hot}], retries=3)
        data = h.png_image(48, 32, 200 + i)
        sha = h.sha256_bytes(data)
        h.write_bytes(os.path.join(hot, "in.png"), data)
        n_gen, n_dl = len(api.generations()), len(api.downloads())
        api.add_faults([fault], replace=True)  # an unconsumed fault must not leak into the next case
        res = ctx.run_once(config, name="retry-%s" % tag, timeout=20)
        label = fault
        c.check(res.rc == 0 and not res.timed_out, "%s (%s): --once exits 0" % (fault, what), res.describe())
        c.require(not res.timed_out, "%s: --once finishes within 20 s" % label, "it was killed")
        gens = api.generations()[n_gen:]
        dls = api.downloads()[n_dl:]
        c.eq(len(gens), calls, "%s: %d generation call(s)" % (label, calls))
        c.problems(["call %d sent %s..." % (k + 1, (r.get("image_sha256") or "")[:12]) for k, r in enumerate(gens)
                    if r.get("image_sha256") != sha], "%s: every call sent this file" % label)
        c.eq([r.get("fault") for r in gens[:1]], [fault], "%s: the first call met the fault" % label)
        c.eq(sum(1 for r in gens if r.get("billed")), 1, "%s: billed exactly once" % label)
        ok = [r for r in gens if r.get("status") == 200 and r.get("billed")]
        sc_path = os.path.join(out, "in.json")
        if c.check(os.path.exists(sc_path), "%s: in.json written" % label, "found %s" % h.listing(out)):
            c.problems(h.success_sidecar_problems(h.read_json(sc_path), src_path=os.path.join(hot, "in.png"),
                                                  source="in.png", output="in.jpeg", attempts=calls,
                                                  version=version, record=ok[-1] if ok else None),
                       "%s: sidecar complete, attempts %d, request_id of the successful call" % (label, calls))
        c.problems(h.output_problems(os.path.join(out, "in.jpeg"), sha), "%s: in.jpeg is complete and right" % label)
        if fault.startswith("429") and len(gens) >= 2:
            gap = gens[1]["time"] - gens[0]["time"]
            c.check(gap >= 0.95, "%s: the retry waited for Retry-After (>= 1 s)" % label,
                    "the second call came %.2f s after the first" % gap)
        if fault == "truncdl":
            fid = gens[0].get("file_id") if gens else None
            c.eq([(d.get("file_id"), d.get("truncated")) for d in dls], [(fid, True), (fid, False)],
                 "%s: the download was retried (2 downloads of the same image, the first cut short)" % label)
            if gens and os.path.exists(os.path.join(out, "in.jpeg")):
                c.eq(h.sha256_output(os.path.join(out, "in.jpeg")), gens[0].get("output_sha256"),
                     "%s: in.jpeg is the whole image the API generated" % label)
        c.problems(h.leftovers(out), "%s: no hidden or temporary file left" % label)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
