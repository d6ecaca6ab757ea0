#!/usr/bin/env python3
"""Groups get the same photo fitting as single files (issue 13 item 3, follow-up): a group's HEIC
(made here with heif-enc) or EXIF-rotated JPEG is converted on the fit workers before the request
is built and sent as an upright JPEG of the right size in its place in the image array, while
the group's other images go byte for byte; the sidecar's sources say per image what was fitted,
with the original's sha256 and bytes_sent as the API received them. A group with an image that
cannot be converted gets an .error.json naming it and costs no call; fit: never still refuses a
HEIC group; a restart and a file added to a done group cost nothing; a retried request sends the
same fitted bytes again without fitting again."""

import os
import re
import shutil

import harness as h
from test_fit import CORNER, corner_is_white, header, marked_png, run


def test(ctx):
    c = ctx.checks

    def check(cond, what, detail=""):
        c.check(cond, what, detail if isinstance(detail, str) else repr(detail))
    for tool in ("vips", "vipsheader", "heif-enc", "exiftool"):
        c.require(shutil.which(tool), "%s is installed (scripts/install-deps.sh)" % tool)
    tmp = os.path.join(ctx.tmp, "make")
    os.makedirs(tmp)
    seen = os.path.join(ctx.tmp, "seen")
    os.makedirs(seen)
    api = ctx.start_api(extra=["--save-images", seen])
    root, hot, out, state = ctx.folder("auto")
    _, never, never_out, _ = ctx.folder("never")
    made = []

    def marked(w=64, hh=48):
        p = os.path.join(tmp, "marked%d.png" % len(made))
        marked_png(p, w, hh, dark=20 + 5 * len(made))  # no two images alike
        made.append(p)
        return p

    def group(folder, name):
        d = os.path.join(folder, name)
        os.makedirs(d)
        return d

    # g1: a phone's HEIC first, then a plain JPEG.
    g1 = group(hot, "g1")
    run("heif-enc", "-q", "90", marked(), "-o", os.path.join(g1, "a.heic"))
    run("vips", "copy", marked(), os.path.join(g1, "b.jpg") + "[Q=90]")
    # g2: a plain PNG first, then a JPEG lying on its side (EXIF orientation 6) and a HEIC:
    # two fits in turn, neither of them the first image.
    g2 = group(hot, "g2")
    h.write_bytes(os.path.join(g2, "a.png"), h.png_image(40, 30, 9))
    rot = os.path.join(g2, "b-rot6.jpg")
    run("vips", "copy", marked(), rot + "[Q=95]")
    run("exiftool", "-q", "-overwrite_original", "-Orientation#=6", "-n", rot)
    run("heif-enc", "-q", "90", marked(), "-o", os.path.join(g2, "c.heic"))
    # g3: a HEIC whose header is fine but whose data is not: it fails when it is converted.
    g3 = group(hot, "g3")
    run("vips", "copy", marked(), os.path.join(g3, "good.jpg") + "[Q=90]")
    real = os.path.join(tmp, "real.heic")
    run("heif-enc", "-q", "90", marked(), "-o", real)
    data = h.read_bytes(real)
    h.write_bytes(os.path.join(g3, "broken.heic"), data[:40] + bytes(range(256)) * 16)
    # fit: never: a HEIC group is refused as before.
    g4 = group(never, "g4")
    shutil.copy(os.path.join(g1, "a.heic"), os.path.join(g4, "a.heic"))
    run("vips", "copy", marked(), os.path.join(g4, "b.jpg") + "[Q=90]")

    def sources(folder, names):
        return [(n, h.sha256_file(os.path.join(folder, n)), os.stat(os.path.join(folder, n)).st_size)
                for n in names]

    want1 = sources(g1, ["a.heic", "b.jpg"])
    want2 = sources(g2, ["a.png", "b-rot6.jpg", "c.heic"])
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "group": "subfolder"},
                                       {"path": never, "group": "subfolder", "fit": "never"}])
    res = ctx.run_once(config, timeout=60)
    check(res.rc == 1 and not res.timed_out,
            "--once exits 1 (two groups are refused, like failed files)", res.describe())
    gens = api.generations()
    c.eq(len(api.rejected()), 0, "no request refused by the API")
    c.eq(len(gens), 2, "two calls: g1 and g2; none for the broken g3 or the fit: never g4")

    def request_of(first_name, folder):
        """The generation whose result names what its first image was."""
        for g in gens:
            if g.get("images") and g["images"][0]["sha256"] == h.sha256_file(os.path.join(folder, first_name)):
                return g
        return None

    def sidecar(folder_out, name):
        p = os.path.join(folder_out, name)
        return h.read_json(p) if os.path.exists(p) else {}

    def saved(img):
        return os.path.join(seen, "%s.%s" % (img["sha256"], img["format"]))

    def check_sources(sc, want, fitted_reasons, req, label):
        srcs = sc.get("sources") or []
        c.eq([(s.get("name"), s.get("sha256"), s.get("size")) for s in srcs], want,
             "%s.json lists every source in order with the original's sha256 and size" % label)
        for i, s in enumerate(srcs):
            f = s.get("fitted")
            if want[i][0] not in fitted_reasons:
                check(f is None, "%s: %s was sent as it is: no fitted" % (label, want[i][0]), s)
                continue
            check(isinstance(f, dict) and str(f.get("to", "")).startswith("JPEG"),
                    "%s: %s fitted to JPEG" % (label, want[i][0]), s)
            if not isinstance(f, dict):
                continue
            for r in fitted_reasons[want[i][0]]:
                check(r in (f.get("reasons") or []), "%s: %s fitted for %s" % (label, want[i][0], r), f)
            if req and i < len(req.get("images") or []):
                c.eq(f.get("bytes_sent"), req["images"][i]["len"],
                     "%s: %s's bytes_sent is what the API received" % (label, want[i][0]))

    # ---- g1: the HEIC sent as an upright 64x48 JPEG, the JPEG byte for byte ----------------
    req = None
    for g in gens:
        imgs = g.get("images") or []
        if len(imgs) == 2 and imgs[1]["sha256"] == want1[1][1]:
            req = g
    check(req is not None, "g1: one request with two images, the second b.jpg's exact bytes",
            [g.get("images") for g in gens])
    if req:
        check(req.get("image_array") is True, "g1: the images are an array")
        first = req["images"][0]
        c.eq(first["format"], "jpeg", "g1: a.heic reached the API as a JPEG data URL")
        check(first["sha256"] != want1[0][1], "g1: what was sent for a.heic is not the HEIC")
        check(os.path.exists(saved(first)), "g1: the API received a.heic's fitted image", saved(first))
        if os.path.exists(saved(first)):
            f = header(saved(first))
            c.eq((f.get("width"), f.get("height")), ("64", "48"), "g1: the sent a.heic is 64x48")
            ok, whites = corner_is_white(saved(first), "tl")
            check(ok, "g1: the sent a.heic is upright (its marked corner top left)", whites)
    sc1 = sidecar(out, "g1.json")
    c.eq(sc1.get("source"), "g1", "g1.json: source is the subfolder")
    c.eq(sc1.get("source_sha256"), want1[0][1], "g1.json: source_sha256 is the original HEIC's")
    check("fitted" not in sc1, "g1.json: no top-level fitted (it is per source)", sc1.get("fitted"))
    check_sources(sc1, want1, {"a.heic": ["format"]}, req, "g1")
    check(((sc1.get("sources") or [{}])[0].get("fitted") or {}).get("from", "").startswith("HEIF 64x48"),
            "g1: a.heic's fitted.from says HEIF 64x48", sc1.get("sources"))

    # ---- g2: the first image as it is, the rotated JPEG upright 48x64, the HEIC a JPEG ----------
    req2 = request_of("a.png", g2)
    check(req2 is not None and len(req2.get("images") or []) == 3,
            "g2: one request with three images, the first a.png's exact bytes",
            req2 and req2.get("images"))
    if req2 and len(req2.get("images") or []) == 3:
        rot_sent, heic_sent = req2["images"][1], req2["images"][2]
        c.eq((rot_sent["format"], heic_sent["format"]), ("jpeg", "jpeg"),
             "g2: the rotated JPEG and the HEIC were sent as JPEG")
        check(rot_sent["sha256"] != want2[1][1], "g2: the rotated JPEG was re-encoded, not sent as it is")
        check(os.path.exists(saved(rot_sent)), "g2: the API received b-rot6.jpg's fitted image",
              saved(rot_sent))
        if os.path.exists(saved(rot_sent)):
            f = header(saved(rot_sent))
            c.eq((f.get("width"), f.get("height")), ("48", "64"), "g2: the sent b-rot6.jpg stands upright: 48x64")
            check("orientation" not in f or f["orientation"] == "1", "g2: it carries no rotation", f.get("orientation"))
            ok, whites = corner_is_white(saved(rot_sent), CORNER[6])
            check(ok, "g2: its marked corner shows %s" % CORNER[6], whites)
        check(os.path.exists(saved(heic_sent)) and header(saved(heic_sent)).get("width") == "64",
                "g2: the sent c.heic is a 64 px wide image")
    sc2 = sidecar(out, "g2.json")
    c.eq(sc2.get("source_sha256"), want2[0][1], "g2.json: source_sha256 is a.png's")
    check_sources(sc2, want2, {"b-rot6.jpg": ["orientation"], "c.heic": ["format"]}, req2, "g2")

    # ---- g3: broken.heic named, no call --------------------------------------------------------
    err = sidecar(out, "g3.error.json")
    e = err.get("error") or {}
    c.eq(e.get("code"), "Group.InvalidImage", "g3.error.json: Group.InvalidImage")
    check("broken.heic" in (e.get("message") or "") and "cannot be converted" in (e.get("message") or ""),
            "g3.error.json names broken.heic and says it could not be converted", e)
    c.eq(err.get("attempts"), 0, "g3: no API call")
    # ---- g4: fit: never refuses the HEIC as before ---------------------------------------------
    e = sidecar(never_out, "g4.error.json").get("error") or {}
    check(e.get("code") == "Group.InvalidImage" and "a.heic" in (e.get("message") or "")
            and "fit: never" in (e.get("message") or ""),
            "g4 (fit: never): Group.InvalidImage naming a.heic and fit: never", e)
    # The fitted bytes live in unnamed (O_TMPFILE) files in state_dir: nothing to list there. What
    # can be listed is a named temporary file (.name) of the send or the commit left behind.
    for d in (hot, g1, g2, out):
        c.eq([n for n in os.listdir(d) if n.startswith(".") and n != ".seedreamd.lock"], [],
             "no named temporary file (.*) left in %s" % os.path.relpath(d, ctx.tmp))

    # ---- restart: nothing again ---------------------------------------------------------------
    snap = {n: h.read_bytes(os.path.join(out, n)) for n in h.listing(out)}
    res = ctx.run_once(config, timeout=60)
    check(res.rc == 0, "second --once exits 0", res.describe())
    c.eq(len(api.generations()), 2, "restart: no new call")
    check("converted" not in res.stderr, "restart: nothing converted again", res.stderr[-800:])
    c.problems([n for n, d in snap.items() if h.read_bytes(os.path.join(out, n)) != d],
               "restart: no output or sidecar rewritten")

    # ---- a file added to the done group g1: costs nothing, said once ----------------------------
    run("heif-enc", "-q", "90", marked(), "-o", os.path.join(g1, "c.heic"))
    res = ctx.run_once(config, timeout=60)
    check(res.rc == 0, "--once after adding a HEIC to a done group exits 0", res.describe())
    c.eq(len(api.generations()), 2, "a HEIC added to a done group costs no call")
    check(len(re.findall(r"group \S*g1 changed after it was done", res.stderr)) == 1,
            "the log says once that g1 changed after it was done", res.stderr[-1500:])
    g1_json = os.path.join(out, "g1.json")
    c.eq(h.read_bytes(g1_json) if os.path.exists(g1_json) else None, snap.get("g1.json"),
         "g1.json is unchanged")


def test_retry(ctx):
    """A retried request sends the same fitted bytes again, without fitting again."""
    c = ctx.checks
    api = ctx.start_api(name="retry", faults=["500"])
    root, hot, out, state = ctx.folder("retry")
    g = os.path.join(hot, "g")
    os.makedirs(g)
    tmp = os.path.join(ctx.tmp, "make-retry")
    os.makedirs(tmp)
    png = os.path.join(tmp, "m.png")
    marked_png(png, 64, 48, dark=90)
    run("heif-enc", "-q", "90", png, "-o", os.path.join(g, "a.heic"))
    h.write_bytes(os.path.join(g, "b.png"), h.png_image(30, 30, 5))
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "group": "subfolder"}])
    res = ctx.run_once(config, timeout=60)
    c.check(res.rc == 0 and not res.timed_out, "retry: --once exits 0", res.describe())
    recs = api.records("generation")
    c.eq([r.get("status") for r in recs], [500, 200], "retry: a 500, then the retry succeeds")
    c.check(len(recs) == 2 and recs[0].get("images") == recs[1].get("images"),
            "retry: both requests carry the same images (the fitted JPEG, then b.png)",
            repr([r.get("images") for r in recs]))
    first = ((recs[-1].get("images") or [{}])[0]) if recs else {}
    c.eq(first.get("format"), "jpeg", "retry: a.heic was sent as a JPEG")
    c.check(first.get("sha256") not in (None, h.sha256_file(os.path.join(g, "a.heic"))),
            "retry: what was sent for a.heic is not the HEIC", repr(first))
    c.eq(len(re.findall(r"converted a\.heic", res.stderr)), 1, "retry: a.heic converted once")
    sc = h.read_json(os.path.join(out, "g.json")) if os.path.exists(os.path.join(out, "g.json")) else {}
    c.eq(sc.get("attempts"), 2, "retry: g.json says 2 attempts")
    c.eq(sc.get("source_sha256"), h.sha256_file(os.path.join(g, "a.heic")),
         "retry: source_sha256 is the original HEIC's")


def test_over_bytes(ctx):
    """A member over max_input_bytes (an API format, nothing else wrong with it) is fitted under
    the limit and sent, not refused."""
    c = ctx.checks
    api = ctx.start_api(name="bytes")
    root, hot, out, state = ctx.folder("bytes")
    g = os.path.join(hot, "g")
    make = os.path.join(ctx.tmp, "make-bytes")
    os.makedirs(os.path.join(make, "g"))
    h.write_bytes(os.path.join(make, "g", "a.png"), h.png_image(40, 30, 3))
    big = os.path.join(make, "g", "b-big.png")
    # Noise hardly compresses: a 500x500 PNG of it is ~320 KB, well over the 200 KiB limit.
    run("vips", "gaussnoise", big + ".v", "500", "500")
    run("vips", "bandjoin", "%s.v %s.v %s.v" % (big, big, big), big + "3.v")
    run("vips", "cast", big + "3.v", big, "uchar")
    for tmp in (big + ".v", big + "3.v"):
        os.unlink(tmp)
    limit = 200 * 1024
    size = os.stat(big).st_size
    c.require(size > limit, "b-big.png is over max_input_bytes", "%d bytes" % size)
    want = h.sha256_file(big)
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "group": "subfolder", "max_input_bytes": "200KiB"}])
    os.rename(os.path.join(make, "g"), g)
    res = ctx.run_once(config, timeout=60)
    c.check(res.rc == 0 and not res.timed_out, "bytes: --once exits 0", res.describe())
    gens = api.generations()
    c.eq(len(gens), 1, "bytes: one call")
    imgs = (gens[0].get("images") or []) if gens else []
    c.eq(len(imgs), 2, "bytes: both images sent")
    if len(imgs) == 2:
        c.eq(imgs[0].get("sha256"), h.sha256_file(os.path.join(g, "a.png")), "bytes: a.png as it is")
        sent_len = imgs[1].get("len") or 0
        c.check(0 < sent_len <= limit, "bytes: b-big.png was sent within max_input_bytes",
                "%s bytes" % imgs[1].get("len"))
        c.check(imgs[1].get("sha256") != want, "bytes: what was sent for b-big.png is not the file")
    sc = h.read_json(os.path.join(out, "g.json")) if os.path.exists(os.path.join(out, "g.json")) else {}
    srcs = sc.get("sources") or []
    fitted = (srcs[1].get("fitted") or {}) if len(srcs) == 2 else {}
    c.check("bytes" in (fitted.get("reasons") or []), "bytes: g.json says b-big.png was fitted for bytes",
            repr(srcs))
    c.eq(srcs[1].get("sha256") if len(srcs) == 2 else None, want,
         "bytes: g.json keeps b-big.png's original sha256")
    c.check(not os.path.exists(os.path.join(out, "g.error.json")), "bytes: no g.error.json")


def test_all(ctx):
    test(ctx)
    test_retry(ctx)
    test_over_bytes(ctx)


if __name__ == "__main__":
    raise SystemExit(h.main(test_all, __doc__))
