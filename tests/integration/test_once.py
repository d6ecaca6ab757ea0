#!/usr/bin/env python3
"""seedreamd --once over 20 images: outputs, sidecars, ignored names, restart, a replaced file."""

import os
import sys
import time

import harness as h


def build_inputs(hot):
    """20 images (some renamed, a PNG named .jpg) -> {name: expected data URL format}."""
    files = {
        "Sunset View.PNG": h.sample("sunset.png"),
        "mandel.png": h.sample("mandelbrot.png"),
        "plasma-really-a-png.jpg": h.sample("plasma.png"),  # format must come from magic bytes
        "bubbles.png": h.sample("bubbles.png"),
        "rings.Png": h.sample("rings.png"),
        "truchet.png": h.sample("truchet.png"),
        "aurora.png": h.sample("aurora.png"),
        "café spiral.png": h.sample("spiral.png"),
        "blocks.JPEG": h.sample("blocks.jpg"),
        "dusk.jpg": h.sample("dusk.jpg"),
        "edge-15px.png": h.png_image(15, 15, 1),  # the smallest size the API takes
    }
    for i in range(2, 8):
        files["gen-%02d.png" % i] = h.png_image(24 + 9 * i, 20 + 5 * i, i)
    files["photo-1.jpg"] = h.jpeg_image(64, 48, 1)
    files["photo-2.jpeg"] = h.jpeg_image(40, 72, 2)
    files["photo-3.Jpg"] = h.jpeg_image(33, 17, 3)
    assert len(files) == 20, len(files)
    for name, data in files.items():
        h.write_bytes(os.path.join(hot, name), data)
    return {name: h.magic_format(data) for name, data in files.items()}


IGNORED = {
    ".hidden.png": lambda: h.png_image(32, 32, 101),
    "x.png.part": lambda: h.png_image(32, 32, 102),
    "notes.txt": lambda: b"not an image\n",
    "~$a.png": lambda: h.png_image(32, 32, 103),
    "._b.png": lambda: h.png_image(32, 32, 104),
    "c.png.tmp": lambda: h.png_image(32, 32, 105),
    "d.png.crdownload": lambda: h.png_image(32, 32, 106),
    "e.jpg.filepart": lambda: h.jpeg_image(32, 32, 107),
    "f.svg": lambda: b"<svg xmlns='http://www.w3.org/2000/svg'/>\n",
}


def stem(name):
    return name.rsplit(".", 1)[0]


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("once")
    formats = build_inputs(hot)
    for name, make in IGNORED.items():
        h.write_bytes(os.path.join(hot, name), make())
    ignored_shas = {h.sha256_file(os.path.join(hot, n)) for n in IGNORED}
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    version = ctx.version()
    c.check(version is not None, "--version prints 'seedreamd <version>' and exits 0")
    before = h.snapshot(hot)

    # ---- first run ----------------------------------------------------------------------
    t0 = time.time()
    res = ctx.run_once(config)
    t1 = time.time()
    c.check(res.rc == 0 and not res.timed_out, "first --once exits 0", res.describe())

    gens = api.generations()
    c.eq(len(gens), 20, "first run: exactly 20 generation calls")
    c.eq(len(api.rejected()), 0, "first run: no request rejected by the API (auth, JSON, data URL)")
    src_sha = {name: h.sha256_file(os.path.join(hot, name)) for name in formats}
    by_sha = {}
    for r in gens:
        by_sha.setdefault(r.get("image_sha256"), []).append(r)
    c.problems(["%s sent %d times" % (n, len(by_sha.get(s, []))) for n, s in src_sha.items()
                if len(by_sha.get(s, [])) != 1], "every source was sent exactly once")
    c.check(not (ignored_shas & set(by_sha)), "ignored names cost nothing (.hidden, .part, ~$, ._, "
            ".tmp, .crdownload, .filepart, .txt, .svg)",
            "sent: %s" % [n for n in IGNORED if h.sha256_file(os.path.join(hot, n)) in by_sha])
    c.problems(["%s sent as image/%s, magic says %s" % (n, by_sha[s][0].get("image_format"), formats[n])
                for n, s in src_sha.items() if by_sha.get(s) and by_sha[s][0].get("image_format") != formats[n]],
               "the data URL format comes from magic bytes (a PNG named .jpg is sent as image/png)")
    c.problems(["%s: model %r prompt %r size %r watermark %r response_format %r" %
                (r.get("request_id"), r.get("model"), r.get("prompt"), r.get("size"), r.get("watermark"),
                 r.get("response_format")) for r in gens
                if (r.get("model"), r.get("prompt"), r.get("size"), r.get("watermark"), r.get("response_format"))
                != (h.MODEL, h.PROMPT, "2K", False, "url")],
               "every request carries the configured model, prompt, size, watermark and response_format")
    c.eq(len(api.downloads()), 20, "first run: 20 image downloads")

    expected = sorted([stem(n) + ".jpeg" for n in formats] + [stem(n) + ".json" for n in formats])
    c.same_names(h.listing(out), expected, "output folder holds exactly one .jpeg and one .json per source")
    c.require(h.listing(out), "first run wrote outputs (the rest checks them)", "the output folder is empty")
    sidecar_problems, image_problems = [], []
    for name in formats:
        image_problems += h.output_problems(os.path.join(out, stem(name) + ".jpeg"), src_sha[name])
        sc_path = os.path.join(out, stem(name) + ".json")
        if not os.path.exists(sc_path):
            sidecar_problems.append("%s: no sidecar" % name)
            continue
        sc = h.read_json(sc_path)
        rec = by_sha.get(src_sha[name], [None])[0]
        sidecar_problems += ["%s: %s" % (name, p) for p in h.success_sidecar_problems(
            sc, src_path=os.path.join(hot, name), source=name, output=stem(name) + ".jpeg",
            version=version, record=rec, window=(t0, t1))]
    c.problems(sidecar_problems, "every sidecar has every field with the right type and value")
    c.problems(image_problems, "every output is a complete JPEG generated from its own source (COM sha256)")
    c.problems(h.leftovers(out), "no hidden or temporary file left in the output folder")
    c.problems(h.snapshot_problems(before, h.snapshot(hot)),
               "inputs untouched (content, size, mtime; nothing moved or added)")

    # ---- second run: everything is done -------------------------------------------------
    sidecars_before = {n: h.read_bytes(os.path.join(out, n)) for n in h.listing(out) if n.endswith(".json")}
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "second --once exits 0", res.describe())
    c.eq(len(api.generations()) - len(gens), 0, "second run: 0 new generation calls")
    c.same_names(h.listing(out), expected, "second run: the output folder is unchanged")
    c.problems([n for n, data in sidecars_before.items()
                if not os.path.exists(os.path.join(out, n)) or h.read_bytes(os.path.join(out, n)) != data],
               "second run: no sidecar rewritten")

    # ---- third run: one source replaced with new content ---------------------------------
    n_before = len(api.generations())
    target = "gen-03.png"
    new_data = h.png_image(50, 44, 303)
    time.sleep(0.02)
    h.write_bytes(os.path.join(hot, target), new_data)
    new_sha = h.sha256_bytes(new_data)
    before = h.snapshot(hot)
    t0 = time.time()
    res = ctx.run_once(config)
    t1 = time.time()
    c.check(res.rc == 0 and not res.timed_out, "third --once (one source replaced) exits 0", res.describe())
    new = api.generations()[n_before:]
    c.eq(h.sent(new, {new_sha: "the new gen-03.png"}), ["the new gen-03.png"],
         "third run: exactly 1 new call, for the new content")
    sc_path = os.path.join(out, stem(target) + ".json")
    if os.path.exists(sc_path):
        c.problems(h.success_sidecar_problems(h.read_json(sc_path), src_path=os.path.join(hot, target),
                                              source=target, output=stem(target) + ".jpeg", version=version,
                                              record=new[0] if new else None, window=(t0, t1)),
                   "third run: the replaced source's sidecar describes the new content")
    else:
        c.check(False, "third run: the replaced source's sidecar describes the new content", "no " + sc_path)
    c.problems(h.output_problems(os.path.join(out, stem(target) + ".jpeg"), new_sha),
               "third run: its output was regenerated from the new content")
    c.same_names(h.listing(out), expected, "third run: same names (the old result replaced, no gen-03-2.*)")
    c.problems(h.leftovers(out), "third run: no hidden or temporary file left")
    c.problems(h.snapshot_problems(before, h.snapshot(hot)), "third run: inputs untouched")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
