#!/usr/bin/env python3
"""Fitting: real files made here with real tools (vips, heif-enc, exiftool) that the API would
refuse or read sideways are converted before any money is spent, each sent once as a valid image
within the API's limits, upright; the sidecar says what was done and keeps the original's hash.
Camera raws are refused by name with no API call; fit: never keeps the old refusals. While big
fits run, a small file in another folder still reaches the API at once."""

import os
import re
import shutil
import struct
import subprocess
import time
import zlib

import harness
from harness import sha256_file, read_json

MAX_PIXELS = 36000000
MAX_BYTES = 10 * 1024 * 1024


def run(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def marked_png(path, w, h, dark=30):
    """Dark grey, with a white block in the stored top-left corner."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            v = 255 if (x < w // 4 and y < h // 4) else dark
            px += bytes((v, v, v))
    harness.write_bytes(path, harness.make_samples.encode_png(w, h, bytes(px), 2))


def point(path, x, y):
    out = subprocess.run(["vips", "getpoint", path, str(x), str(y)], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0])


def header(path):
    out = subprocess.run(["vipsheader", "-a", path], check=True, capture_output=True,
                         text=True).stdout
    fields = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    return fields


# Where the stored top-left corner shows for each EXIF orientation (w x h stored, 64x48).
CORNER = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "tr", 7: "br", 8: "bl"}


def corner_is_white(path, corner):
    f = header(path)
    w, h = int(f["width"]), int(f["height"])
    at = {"tl": (2, 2), "tr": (w - 3, 2), "br": (w - 3, h - 3), "bl": (2, h - 3)}
    whites = [c for c, (x, y) in at.items() if point(path, x, y) > 200]
    return whites == [corner], whites


def fitted_folder(ctx, c, tmp):
    root, hot, out, state = ctx.folder("auto")
    _, hot_never, out_never, _ = ctx.folder("never")
    seen = os.path.join(ctx.tmp, "seen")
    os.makedirs(seen)
    api = ctx.start_api(extra=["--save-images", seen])
    files = {}
    made = []

    def marked():
        """A marked PNG of its own for each file, so that no two send the same bytes."""
        p = os.path.join(tmp, "marked%d.png" % len(made))
        marked_png(p, 64, 48, dark=20 + 4 * len(made))
        made.append(p)
        return p

    def add(name, folder=hot):
        files[name] = os.path.join(folder, name)
        return files[name]

    # HEIC from a phone, AVIF: not formats the API takes.
    run("heif-enc", "-q", "90", marked(), "-o", add("phone.heic"))
    run("heif-enc", "-A", "-q", "90", marked(), "-o", add("phone2.avif"))
    # A 48 MP camera JPEG (8000x6000): over the pixel limit.
    run("vips", "black", os.path.join(tmp, "b.v"), "8000", "6000", "--bands", "3")
    run("vips", "linear", os.path.join(tmp, "b.v"), add("camera48.jpg") + "[Q=80]", "1", "60",
        "--uchar")
    # A 30 MB uncompressed TIFF (within the pixels, over max_input_bytes).
    run("vips", "black", os.path.join(tmp, "t.v"), "3400", "3000", "--bands", "3")
    run("vips", "linear", os.path.join(tmp, "t.v"), add("scan.tif"), "1", "90", "--uchar")
    # JPEGs with each EXIF orientation.
    for o in range(1, 9):
        p = add("rot%d.jpg" % o)
        run("vips", "copy", marked(), p + "[Q=95]")
        run("exiftool", "-q", "-overwrite_original", "-Orientation#=%d" % o, "-n", p)
    run("vips", "icc_transform", marked(), add("cmyk.jpg"), "cmyk")
    run("vips", "colourspace", marked(), add("deep.png"), "rgb16")
    run("vips", "icc_transform", marked(), add("p3.jpg"), "p3")
    # Camera raws: a CR3 (an ISO BMFF "crx " brand) and a NEF (a TIFF made by NIKON).
    harness.write_bytes(add("IMG_0001.CR3"), b"\0\0\0\x18ftypcrx \0\0\0\x01crx isom" + b"\0" * 4000)
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 271, 2, 18, 26) + b"\0\0\0\0"
    harness.write_bytes(add("DSC_0001.NEF"), b"II*\0" + struct.pack("<I", 8) + ifd +
                        b"NIKON CORPORATION\0" + b"\0" * 4000)
    # A PNG whose header claims 7000x6000 with no pixel data behind it: the fit must not send
    # a grey image for it.
    ihdr = struct.pack(">IIBBBBB", 7000, 6000, 8, 2, 0, 0, 0)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    harness.write_bytes(add("hollow.png"), b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                        chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    # fit: never: today's refusals, and a rotated JPEG sent as it is.
    shutil.copy(files["phone.heic"], add("phone.heic", hot_never))
    shutil.copy(files["rot6.jpg"], add("rot6.jpg", hot_never))
    shutil.copy(files["camera48.jpg"], add("camera48.jpg", hot_never))
    return api, seen, files, (root, hot, out, state), (hot_never, out_never)


def test(ctx):
    c = ctx.checks
    tmp = os.path.join(ctx.tmp, "make")
    os.makedirs(tmp)
    for tool in ("vips", "vipsheader", "heif-enc", "exiftool"):
        c.require(shutil.which(tool), "%s is installed (scripts/install-deps.sh)" % tool)
    api, seen, files, (root, hot, out, state), (hot_never, out_never) = fitted_folder(ctx, c, tmp)
    src_sha = {p: sha256_file(p) for p in files.values()}
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}, {"path": hot_never}])
    text = open(config).read().replace('- path: "%s"\n' % hot_never,
                                       '- path: "%s"\n    fit: never\n' % hot_never)
    harness.write_bytes(config, text.encode())
    t0 = time.monotonic()
    res = ctx.run_once(config, timeout=120)
    c.check(not res.timed_out, "the --once run finishes (%.1f s)" % (time.monotonic() - t0))
    c.eq(res.rc, 1, "--once exits 1 (some files are refused; no sanitizer report)")
    gens = api.generations()
    by_sha = {}
    for g in gens:
        by_sha.setdefault(g["image_sha256"], []).append(g)
    c.eq(len(gens), len({g["image_sha256"] for g in gens}), "each image is sent once")
    for g in gens:
        c.check(g["image_len"] <= MAX_BYTES and g["image_format"] in ("jpeg", "png"),
                "sent %s (%d bytes) is a JPEG or PNG within max_input_bytes" %
                (g["image_format"], g["image_len"]))

    def sidecar(folder_out, name):
        p = os.path.join(folder_out, os.path.splitext(name)[0] + ".json")
        return read_json(p) if os.path.exists(p) else None

    def error(folder_out, name):
        p = os.path.join(folder_out, os.path.splitext(name)[0] + ".error.json")
        return read_json(p) if os.path.exists(p) else None

    def check_fitted(name, reasons, to_format="JPEG", upright=None):
        sc = sidecar(out, name)
        c.check(sc is not None, "%s: a success sidecar" % name,
                error(out, name) or res.stderr[-2000:])
        if not sc:
            return
        f = sc.get("fitted") or {}
        c.eq(sc.get("source_sha256"), src_sha[files[name]], "%s: source_sha256 is the original's" % name)
        for r in reasons:
            c.check(r in f.get("reasons", []), "%s: fitted.reasons has %s" % (name, r), f)
        c.check(str(f.get("to", "")).startswith(to_format), "%s: fitted to %s" % (name, to_format), f)
        # The stand-in's result names the sha256 of the image it received.
        m = re.search(rb"sha256=([0-9a-f]{64})", harness.read_bytes(os.path.join(out, sc["output"])))
        sent = [g for g in gens if m and g["image_sha256"] == m.group(1).decode()]
        c.check(len(sent) == 1 and sent[0]["image_len"] == f.get("bytes_sent"),
                "%s: bytes_sent matches what the API received" % name, str(f))
        if not sent:
            return
        img = os.path.join(seen, "%s.%s" % (sent[0]["image_sha256"], sent[0]["image_format"]))
        h = header(img)
        w, hh = int(h["width"]), int(h["height"])
        c.check(w * hh <= MAX_PIXELS and w > 14 and hh > 14,
                "%s: the sent image (%dx%d) is within the pixel limit" % (name, w, hh))
        c.eq(h.get("interpretation"), "srgb", "%s: the sent image is sRGB" % name)
        c.eq(h.get("format"), "uchar", "%s: the sent image is 8-bit" % name)
        c.check("orientation" not in h or h["orientation"] == "1",
                "%s: the sent image carries no rotation" % name, h.get("orientation"))
        c.check("exif-data" not in h, "%s: EXIF metadata is stripped" % name)
        if upright:
            ok, whites = corner_is_white(img, upright)
            c.check(ok, "%s: upright (the marked corner shows %s)" % (name, upright), str(whites))
        return f

    f = check_fitted("phone.heic", ["format"])
    c.check(f and f.get("from", "").startswith("HEIF 64x48"), "phone.heic: from says HEIF 64x48", f)
    f = check_fitted("phone2.avif", ["format"])
    c.check(f and f.get("from", "").startswith("AVIF 64x48"), "phone2.avif: from says AVIF 64x48", f)
    f = check_fitted("camera48.jpg", ["pixels"])
    c.check(f and f.get("from") == "JPEG 8000x6000", "camera48.jpg: from says JPEG 8000x6000", f)
    check_fitted("scan.tif", ["bytes"])
    check_fitted("cmyk.jpg", ["cmyk"], upright="tl")
    check_fitted("deep.png", ["depth"], upright="tl")
    check_fitted("p3.jpg", ["profile"], upright="tl")
    for o in range(2, 9):
        f = check_fitted("rot%d.jpg" % o, ["orientation"], upright=CORNER[o])
        c.check(f and ("orientation %d" % o) in f.get("from", ""), "rot%d.jpg: from names it" % o, f)
    # Orientation 1: the API takes it as it is: byte for byte, no "fitted".
    sc = sidecar(out, "rot1.jpg")
    c.check(sc is not None and "fitted" not in sc, "rot1.jpg: sent as it is, no fitted", sc)
    c.check(src_sha[files["rot1.jpg"]] in by_sha, "rot1.jpg: the API received its exact bytes")
    for name, what in (("IMG_0001.CR3", "Canon CR3 camera raw"), ("DSC_0001.NEF", "Nikon NEF camera raw")):
        e = error(out, name) or {}
        err = e.get("error") or {}
        c.eq(err.get("code"), "LocalValidation.UnsupportedFormat", "%s: refused as unsupported" % name)
        c.check(what in str(err.get("message")), "%s: the message names a %s" % (name, what), err)
        c.eq(e.get("attempts"), 0, "%s: no API call" % name)
    e = error(out, "hollow.png") or {}
    c.eq((e.get("error") or {}).get("code"), "LocalValidation.Corrupt",
         "a PNG claiming 7000x6000 without its pixels is refused as Corrupt")
    c.eq(e.get("attempts"), 0, "hollow.png: no API call")
    # fit: never.
    e = (error(out_never, "phone.heic") or {}).get("error") or {}
    c.eq(e.get("code"), "LocalValidation.UnsupportedFormat", "fit: never: HEIC is refused")
    e = (error(out_never, "camera48.jpg") or {}).get("error") or {}
    c.eq(e.get("code"), "LocalValidation.TooLarge", "fit: never: a 48 MP JPEG is refused as before")
    sc = sidecar(out_never, "rot6.jpg")
    c.check(sc is not None and "fitted" not in sc, "fit: never: a rotated JPEG is sent as it is", sc)
    c.check(src_sha[files["rot6.jpg"]] in by_sha, "fit: never: its exact bytes reached the API")
    c.eq(len(gens), 15 + 1, "15 fitted or sent in the auto folder, 1 in the never folder")
    for d in (hot, out, hot_never, out_never):
        c.eq([n for n in os.listdir(d) if n.startswith(".")], [],
             "no temporary file next to the user's files in %s" % os.path.basename(d))
    responsive(ctx, c, tmp)


def responsive(ctx, c, tmp):
    """While 48 MP images are being fitted, a small PNG renamed into another folder reaches the
    API at once."""
    root, big, _, state = ctx.folder("busy")
    _, small, small_out, _ = ctx.folder("small")
    api = ctx.start_api(name="busy")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": big}, {"path": small}])
    d = ctx.start_daemon(config)
    d.wait_for(r"ready", 20)
    stage = os.path.join(tmp, "stage")
    os.makedirs(stage)
    run("vips", "gaussnoise", os.path.join(tmp, "n.v"), "8000", "6000")
    for i in range(5):
        p = os.path.join(stage, "big%d.jpg" % i)
        run("vips", "linear", os.path.join(tmp, "n.v"), p + "[Q=85]", "1", str(i), "--uchar")
    for i in range(4):
        os.rename(os.path.join(stage, "big%d.jpg" % i), os.path.join(big, "big%d.jpg" % i))
    time.sleep(0.3)  # the fits are under way
    # big0 is rewritten in place while it is being fitted: that fit is dropped, the new
    # version settles and is fitted and sent instead (once).
    with open(os.path.join(stage, "big4.jpg"), "rb") as f:
        newer = f.read()
    harness.write_bytes(os.path.join(big, "big0.jpg"), newer)
    png = os.path.join(stage, "small.png")
    harness.write_bytes(png, harness.png_image(64, 64, 7))
    sha = sha256_file(png)
    t_drop = time.time()
    os.rename(png, os.path.join(small, "small.png"))
    harness.wait_until(lambda: any(g["image_sha256"] == sha for g in api.generations()), 20)
    rec = [g for g in api.generations() if g["image_sha256"] == sha]
    c.check(rec, "the small PNG reached the API")
    if rec:
        latency = rec[0]["time"] - t_drop
        big_done = [g for g in api.generations() if g["image_sha256"] != sha]
        c.check(latency < 1.0, "drop-to-request of the small PNG while 4 fits of 48 MP run: "
                "%.3f s (< 1 s; %d of the big ones sent before it)" % (latency, len(big_done)))
    harness.wait_until(lambda: len(api.generations()) >= 5 and
                       os.path.exists(os.path.join(big + "-out", "big0.json")), 120)
    time.sleep(1)
    c.eq(len(api.generations()), 5, "the four big ones are fitted and sent too, once each")
    sc = os.path.join(big + "-out", "big0.json")
    c.check(os.path.exists(sc) and read_json(sc)["source_sha256"] == harness.sha256_bytes(newer),
            "big0.jpg, rewritten during its fit: the sent version is the new one")
    c.check("changed while it was being converted" in d.stderr_text(),
            "the daemon says the fit of the old version was dropped")
    d.terminate()


if __name__ == "__main__":
    raise SystemExit(harness.main(test, __doc__))
