#!/usr/bin/env python3
"""Combined limits (issue 13): the API takes at most 15 images in and out together. --check refuses
references + the dropped image + max_images over 15 (file:line:column of max_images), in a group
folder too, and a global max_images_per_day below a folder's max_images (no request could ever
start). At run time a group whose images + references + max_images are over 15 gets its
.error.json (Group.TooManyImages, saying the limit counts outputs too) with no API call, while a
group that just fits is sent."""

import os
import re
import sys

import harness as h


def check_config(ctx, root, name, lines, expect_rc, pattern, what):
    c = ctx.checks
    path = os.path.join(root, name + ".yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    res = ctx.run(["-c", path, "--check"], timeout=15)
    c.eq(res.rc, expect_rc, "%s: --check exits %d" % (what, expect_rc))
    if pattern:
        c.check(re.search(r"seedreamd: error: %s:%s" % (re.escape(path), pattern), res.stderr),
                "%s: file:line:column and why" % what, res.stderr[-400:])


def test_check(ctx):
    root = os.path.join(ctx.tmp, "check")
    hot, state, refdir = (os.path.join(root, n) for n in ("hot", "state", "refs"))
    for d in (hot, state, refdir):
        os.makedirs(d)
    refs = []
    for i in range(11):
        refs.append(os.path.join(refdir, "r%02d.png" % i))
        h.write_bytes(refs[-1], h.png_image(16 + i, 16, 300 + i))
    top = ["api:", "  base_url: http://127.0.0.1:9/v1", "  model: %s" % h.MODEL,
           "state_dir: %s" % state]
    folder = ["folders:", "  - path: %s" % hot, "    prompt: \"Paint it\"",
              "    references:"] + ["      - %s" % r for r in refs]
    n = len(top) + len(folder)  # max_images goes on line n + 1
    check_config(ctx, root, "over", top + folder + ["    max_images: 4"], 1,
                 r"%d:17: max_images: 4 outputs, 11 references and the dropped image are more than "
                 r"the API's 15 images" % (n + 1), "11 references + 1 + max_images 4")
    check_config(ctx, root, "fits", top + folder + ["    max_images: 3"], 0, None,
                 "11 references + 1 + max_images 3 (15)")
    check_config(ctx, root, "group", top + folder + ["    group: subfolder", "    max_images: 4"], 1,
                 r"%d:17: max_images: 4 outputs, 11 references and the group's images" % (n + 2),
                 "group: 11 references + max_images 4")
    plain = ["folders:", "  - path: %s" % hot, "    prompt: \"Paint it\"", "    max_images: 3"]
    check_config(ctx, root, "daily", top + ["max_images_per_day: 2"] + plain, 1,
                 r"%d:21: max_images_per_day 2 is less than max_images 3 of folder" % (len(top) + 1),
                 "global max_images_per_day 2 below a folder's max_images 3")
    check_config(ctx, root, "daily-ok", top + ["max_images_per_day: 3"] + plain, 0, None,
                 "global max_images_per_day 3 with max_images 3")


def test_group(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("glimit")
    big, fits = os.path.join(hot, "big"), os.path.join(hot, "fits")
    for d, n, seed in ((big, 12, 500), (fits, 11, 600)):
        os.makedirs(d)
        for i in range(n):
            h.write_bytes(os.path.join(d, "i%02d.png" % i), h.png_image(20 + i, 20, seed + i))
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "group": "subfolder", "max_images": 4}])
    res = ctx.run_once(config, timeout=60)
    c.check(res.rc == 1 and not res.timed_out, "--once exits 1 (a group was refused)", res.describe())
    gens = api.generations()
    c.eq(len(api.rejected()), 0, "the API refused no request")
    c.eq([len(r.get("images") or []) for r in gens], [11],
         "one POST: the group of 11 (11 + 4 outputs = 15); none for the group of 12")
    c.check(all(len(r.get("images") or []) + int(r.get("max_images") or 1) <= 15
                for r in api.records("generation")) and all(r.get("max_images") == 4 for r in gens),
            "no request reached the API with inputs + max_images over 15")
    path = os.path.join(out, "big.error.json")
    if c.check(os.path.exists(path), "big.error.json written", repr(h.listing(out))):
        err = h.read_json(path)
        e = err.get("error") or {}
        c.eq(e.get("code"), "Group.TooManyImages", "big.error.json: Group.TooManyImages")
        msg = e.get("message") or ""
        c.check("12 images" in msg and "at most 11" in msg and "outputs" in msg and
                "max_images 4" in msg, "the message says 12 images, at most 11, and that outputs count",
                msg)
        c.eq(err.get("attempts"), 0, "big.error.json: no API call")
    c.check(os.path.exists(os.path.join(out, "fits.json")), "the group of 11 is done (fits.json)",
            repr(h.listing(out)))


def test(ctx):
    test_check(ctx)
    test_group(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
