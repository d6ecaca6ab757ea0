#!/usr/bin/env python3
"""Two sources with the same stem (a.png, a.jpg): one result is a.jpeg/a.json, the other
a-2.jpeg/a-2.json, each sidecar naming its own source; reruns keep the pairing."""

import os
import sys
import time

import harness as h


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("collision")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    h.write_bytes(os.path.join(hot, "a.png"), h.sample("spiral.png"))
    h.write_bytes(os.path.join(hot, "a.jpg"), h.sample("blocks.jpg"))
    version = ctx.version()

    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "--once exits 0", res.describe())
    gens = api.generations()
    c.eq(len(gens), 2, "exactly 2 generation calls")
    c.same_names(h.listing(out), ["a.jpeg", "a.json", "a-2.jpeg", "a-2.json"],
                 "results a.jpeg/a.json and a-2.jpeg/a-2.json")

    def pairing():
        """{source: stem} read from the sidecars, with problems."""
        found, problems = {}, []
        for stem in ("a", "a-2"):
            path = os.path.join(out, stem + ".json")
            if not os.path.exists(path):
                problems.append("no %s.json" % stem)
                continue
            sc = h.read_json(path)
            src = sc.get("source")
            if src not in ("a.png", "a.jpg"):
                problems.append("%s.json names source %r" % (stem, src))
                continue
            if src in found:
                problems.append("both sidecars name %s" % src)
            found[src] = stem
            sha = h.sha256_file(os.path.join(hot, src))
            rec = next((r for r in api.generations() if r.get("image_sha256") == sha and r.get("billed")), None)
            problems += ["%s.json: %s" % (stem, p) for p in h.success_sidecar_problems(
                sc, src_path=os.path.join(hot, src), source=src, output=stem + ".jpeg", version=version,
                record=rec)]
            problems += h.output_problems(os.path.join(out, stem + ".jpeg"), sha)
        return found, problems

    first, problems = pairing()
    c.problems(problems, "each sidecar names its own source, and each output comes from that source")
    c.eq(sorted(first), ["a.jpg", "a.png"], "the two sidecars cover a.png and a.jpg")

    n = len(api.generations())
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "second --once exits 0", res.describe())
    c.eq(len(api.generations()) - n, 0, "second run: 0 calls")
    c.same_names(h.listing(out), ["a.jpeg", "a.json", "a-2.jpeg", "a-2.json"], "second run: no a-3.*")

    # a.jpg replaced: its result is rewritten under the stem it already had
    time.sleep(0.02)
    new = h.jpeg_image(56, 40, 11)
    h.write_bytes(os.path.join(hot, "a.jpg"), new)
    n = len(api.generations())
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "third --once (a.jpg replaced) exits 0", res.describe())
    c.eq(h.sent(api.generations()[n:], {h.sha256_bytes(new): "the new a.jpg"}), ["the new a.jpg"],
         "third run: exactly 1 call, for the new a.jpg")
    c.same_names(h.listing(out), ["a.jpeg", "a.json", "a-2.jpeg", "a-2.json"], "third run: still no a-3.*")
    second, problems = pairing()
    c.problems(problems, "third run: sidecars and outputs match their sources")
    c.eq(second, first, "third run: each source keeps its stem")
    c.problems(h.leftovers(out), "no hidden or temporary file left")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
