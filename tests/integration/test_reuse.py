#!/usr/bin/env python3
"""Never paid for twice by content: a copy of an image already done in the folder reuses its
result (no API call, a sidecar with reused_from); with other settings it is generated anew."""

import os

import harness as h


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("reuse")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    data = h.png_image(48, 32, 11)
    h.write_bytes(os.path.join(hot, "a.png"), data)
    res = ctx.run_once(config)
    c.eq(res.rc, 0, "the first run exits 0")
    c.eq(len(api.generations()), 1, "one generation for a.png")

    h.write_bytes(os.path.join(hot, "copy of a.png"), data)
    res = ctx.run_once(config)
    c.eq(res.rc, 0, "the run with a copy exits 0")
    c.eq(len(api.generations()), 1, "the copy costs no API call")
    sc = h.read_json(os.path.join(out, "copy of a.json")) if os.path.exists(
        os.path.join(out, "copy of a.json")) else {}
    c.eq(sc.get("reused_from"), "a.png", "its sidecar says whose result it reuses")
    c.eq(sc.get("source"), "copy of a.png", "and names its own source")
    c.eq(sc.get("attempts"), 0, "with 0 attempts")
    c.eq(sc.get("source_sha256"), h.sha256_bytes(data), "and the file's own sha256")
    same = (os.path.exists(os.path.join(out, "copy of a.jpeg")) and
            h.sha256_file(os.path.join(out, "copy of a.jpeg")) == h.sha256_file(os.path.join(out, "a.jpeg")))
    c.check(same, "its output is the same image as a.jpeg", str(h.listing(out)))
    c.problems(h.leftovers(out), "no hidden or temporary file left")

    # Another prompt: the old result does not fit, so the copy is generated anew.
    config2 = ctx.write_config(os.path.join(root, "seedreamd2.yaml"), api=api, state_dir=state,
                               folders=[{"path": hot, "prompt": "Something else entirely"}])
    h.write_bytes(os.path.join(hot, "third.png"), data)
    res = ctx.run_once(config2)
    c.eq(res.rc, 0, "the run with another prompt exits 0")
    c.eq(len(api.generations()), 2, "with another prompt the same image is generated anew")
    sc = h.read_json(os.path.join(out, "third.json")) if os.path.exists(os.path.join(out, "third.json")) else {}
    c.check("reused_from" not in sc and sc.get("prompt") == "Something else entirely",
            "and its sidecar is an ordinary one with the new prompt", str(sc)[:300])


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
