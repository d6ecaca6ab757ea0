#!/usr/bin/env python3
"""The hostile folder, with the daemon watching in the background: an empty file, text named
.jpg, a truncated PNG (failed only after incomplete_timeout), 10x10, 20x400, a header claiming
7000x6000, an 11 MiB file, a FIFO named x.png, a symlink to an image outside the folder, a name
with a newline and non-ASCII letters, a 240-character name. Good files are processed under safe
output names; each bad one gets its LocalValidation.* error sidecar and costs no call; the FIFO
and the symlink neither hang the daemon nor get an output; nothing is written outside the
output folder; the daemon stays up and exits 0 on SIGTERM."""

import json
import os
import struct
import sys
import time
import zlib

import harness as h

INCOMPLETE_TIMEOUT = 2.0


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png_claiming(w, h_, idat=b""):
    """A structurally whole PNG (IHDR, IDAT, IEND) whose header claims w x h."""
    ihdr = struct.pack(">IIBBBBB", w, h_, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", idat or zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def png_padded(data, total):
    """A valid PNG grown to `total` bytes by a private ancillary chunk before IEND."""
    iend = data[-12:]
    assert iend[4:8] == b"IEND"
    pad = total - len(data) - 12
    return data[:-12] + png_chunk(b"prVt", b"\x00" * pad) + iend


def yaml_config(path, *, api, state_dir, hot):
    lines = ["api:",
             "  base_url: %s" % json.dumps(api.base_url),
             "  model: %s" % json.dumps(h.MODEL),
             "  timeout: 20s",
             "  max_in_flight: 4",
             "  retries: 3",
             "defaults:",
             "  size: 2K",
             "  watermark: false",
             "state_dir: %s" % json.dumps(state_dir),
             "rescan_interval: 1s",  # full scans keep meeting the FIFO and the symlink
             "folders:",
             "  - path: %s" % json.dumps(hot),
             "    prompt: %s" % json.dumps(h.PROMPT),
             "    settle: 200ms",
             "    incomplete_timeout: 2s",
             # The refusals as such (test_fit.py covers what fit: auto makes of these).
             "    fit: never"]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path



def tree(top, skip=()):
    """Every path under top (files, dirs, links, FIFOs) with its type and size; skip: relative
    subtrees left out."""
    out = {}
    for dirpath, dirs, files in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel_dir, d)) not in skip]
        for n in dirs + files:
            rel = os.path.normpath(os.path.join(rel_dir, n))
            st = os.lstat(os.path.join(dirpath, n))
            out[rel] = (st.st_mode, st.st_size if not os.path.isdir(os.path.join(dirpath, n)) else 0)
    return out


def unsafe_name(name):
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    bad = [ch for ch in name if ord(ch) < 0x20 or ord(ch) == 0x7f]
    if bad:
        return "control characters %r" % bad
    if name.startswith("."):
        return "hidden"
    if len(name.encode("utf-8")) > 255:
        return "longer than 255 bytes"
    return None


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("hostile")
    outside = os.path.join(root, "outside")
    staging = os.path.join(root, "staging")
    os.makedirs(outside)
    os.makedirs(staging)
    config = yaml_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state, hot=hot)
    version = ctx.version()

    target = h.png_image(40, 40, 600)
    h.write_bytes(os.path.join(outside, "target.png"), target)
    long_name = "L" + "é" * 3 + "ç" * 2 + "-" + "x" * 225 + "-end.png"
    assert len(long_name) == 240 and len(long_name.encode()) == 245, (len(long_name), len(long_name.encode()))
    nl_name = "new\nline çiçek.png"
    latin1_name = os.fsdecode(b"latin1-caf\xe9.png")  # not UTF-8: an old SMB client's "café"
    good = {
        "good.png": h.png_image(48, 40, 601),
        nl_name: h.png_image(44, 40, 602),
        long_name: h.png_image(40, 44, 603),
        latin1_name: h.png_image(40, 40, 609),
    }
    bad = {
        # name: (content, expected code)
        "empty.png": (b"", "LocalValidation.Empty"),
        "text.jpg": (b"Not a JPEG at all, just some text.\n" * 8, "LocalValidation.UnsupportedFormat"),
        "trunc.png": (h.png_image(64, 64, 604)[:33 + 20], "LocalValidation.Truncated"),
        "tiny.png": (h.png_image(10, 10, 605), "LocalValidation.TooSmall"),
        "thin.png": (h.png_image(20, 400, 606), "LocalValidation.AspectRatio"),
        "huge-dims.png": (png_claiming(7000, 6000), "LocalValidation.TooLarge"),
        "big.png": (png_padded(h.png_image(64, 64, 607), 11 * 1024 * 1024 + 4096), "LocalValidation.FileTooLarge"),
    }
    all_shas = {h.sha256_bytes(v): k for k, v in good.items()}
    all_shas.update({h.sha256_bytes(v[0]): k for k, v in bad.items()})
    all_shas[h.sha256_bytes(target)] = "link.png (its target)"

    # the whole temporary directory, less what the test and the daemon may change
    rootname = os.path.basename(root)
    skip = {"logs"} | {os.path.join(rootname, n) for n in ("hot-out", "state", "hot", "staging")}

    def around():
        t = tree(ctx.tmp, skip)
        # the stand-in API's own state and log files grow; only their presence matters
        return {p: ((m, 0) if os.path.basename(p).startswith("api-") else (m, sz)) for p, (m, sz) in t.items()}

    before = around()
    d = ctx.start_daemon(config, name="hostile")
    c.require(d.wait_for(r"\bready\b", 15), "the daemon logs 'ready'",
              "exit status %s; stderr: %s" % (d.proc.poll(), d.stderr_text()[-600:]))

    # the FIFO and the symlink arrive by rename (IN_MOVED_TO), like a finished copy would
    os.mkfifo(os.path.join(staging, "x.png"))
    os.rename(os.path.join(staging, "x.png"), os.path.join(hot, "x.png"))
    os.symlink(os.path.join(outside, "target.png"), os.path.join(staging, "link.png"))
    os.rename(os.path.join(staging, "link.png"), os.path.join(hot, "link.png"))
    t_written = {}
    for name, (data, _) in bad.items():
        h.write_bytes(os.path.join(hot, name), data)
        t_written[name] = time.monotonic()
    for name, data in good.items():
        h.write_bytes(os.path.join(hot, name), data)

    def error_path(name):
        return os.path.join(out, name.rsplit(".", 1)[0] + ".error.json")

    # the truncated PNG: not failed before incomplete_timeout, failed after it
    time.sleep(max(0.0, t_written["trunc.png"] + 1.2 - time.monotonic()))
    c.check(not os.path.exists(error_path("trunc.png")),
            "trunc.png: no error sidecar 1.2 s after it was written (incomplete_timeout is 2 s)")
    appeared = h.wait_until(lambda: os.path.exists(error_path("trunc.png")), 10)
    delay = time.monotonic() - t_written["trunc.png"]
    c.check(appeared and delay >= INCOMPLETE_TIMEOUT - 0.2,
            "trunc.png: its error sidecar comes after incomplete_timeout (%.1f s)" % delay,
            "appeared %s after %.1f s" % (appeared, delay))

    # a file after the hostile ones: the daemon still works
    later = h.png_image(40, 36, 608)
    h.write_bytes(os.path.join(staging, "later.png"), later)
    os.rename(os.path.join(staging, "later.png"), os.path.join(hot, "later.png"))
    good["later.png"] = later
    all_shas[h.sha256_bytes(later)] = "later.png"

    def good_sidecars():
        found = {}
        for n in os.listdir(out) if os.path.isdir(out) else []:
            if n.endswith(".json") and not n.endswith(".error.json"):
                try:
                    # leniently: a sidecar that is not UTF-8 is reported by its own check below
                    sc = json.loads(h.read_bytes(os.path.join(out, n)).decode("utf-8", "surrogateescape"))
                except ValueError:
                    continue
                # A name that is not UTF-8: "source" is readable (U+FFFD), "source_hex" exact.
                key = sc.get("source")
                if isinstance(sc.get("source_hex"), str):
                    key = os.fsdecode(bytes.fromhex(sc["source_hex"]))
                found[key] = (n, sc)
        return found

    done = h.wait_until(lambda: set(good) <= set(good_sidecars()) and
                      all(os.path.exists(error_path(n)) for n in bad), 20)
    c.check(done, "every good file has its sidecar and every bad one its error sidecar",
            "output holds %s" % h.listing(out))
    time.sleep(2.5)  # two more rescans over the FIFO and the symlink
    c.check(d.proc.poll() is None, "the daemon is still running (the FIFO and the symlink did not stop it)",
            "exit status %s" % d.proc.poll())

    # ---- the good ones -----------------------------------------------------------------------
    gens = api.generations()
    c.eq(sorted(h.sent(gens, all_shas)), sorted(good), "exactly one call per good file, none for anything else")
    scs = good_sidecars()
    problems = []
    for name, data in good.items():
        if name not in scs:
            problems.append("%r: no sidecar" % name)
            continue
        side, sc = scs[name]
        outname = sc.get("output")
        if not isinstance(outname, str) or "/" in outname or not os.path.isfile(os.path.join(out, outname)):
            problems.append("%r: output %r is not a file directly in the output folder" % (name, outname))
            continue
        problems += ["%r: %s" % (name, p) for p in h.output_problems(os.path.join(out, outname), h.sha256_bytes(data))]
        if outname.rsplit(".", 1)[0] != side.rsplit(".", 1)[0]:
            problems.append("%r: output %r and sidecar %r do not share a stem" % (name, outname, side))
        if sc.get("source_sha256") != h.sha256_bytes(data):
            problems.append("%r: source_sha256 is not the file's" % name)
    c.problems(problems, "the good files (incl. the newline and the 240-character names) are processed, "
                         "outputs generated from them, sidecars name the source")
    c.problems(["%r: %s" % (n, unsafe_name(n)) for n in os.listdir(out) if unsafe_name(n)],
               "every name in the output folder is safe (UTF-8, no control characters, not hidden, <= 255 bytes)")
    not_utf8 = []
    for n in os.listdir(out):
        if n.endswith(".json"):
            try:
                json.loads(h.read_bytes(os.path.join(out, n)).decode("utf-8"))
            except ValueError as e:
                not_utf8.append("%r: %s" % (n, e))
    c.problems(not_utf8, "every sidecar is valid UTF-8 JSON (RFC 8259), whatever the source's name")
    c.eq([n for n in os.listdir(out) if os.path.isdir(os.path.join(out, n))], [],
         "no subfolder was created in the output folder")
    if latin1_name in scs:
        sc = scs[latin1_name][1]
        c.eq((sc.get("source"), sc.get("source_hex")), ("latin1-caf\ufffd.png", b"latin1-caf\xe9.png".hex()),
             "a name that is not UTF-8: source readable with U+FFFD, source_hex exact")
    if nl_name in scs:
        c.eq(scs[nl_name][1].get("output"), "new_line çiçek.jpeg",
             "the newline is replaced by '_', the non-ASCII letters kept: 'new_line çiçek.jpeg'")
    if long_name in scs:
        stem = scs[long_name][1].get("output", "").rsplit(".", 1)[0]
        c.check(long_name.startswith(stem) and 0 < len(stem.encode()) <= 200,
                "the 240-character name gets a stem cut at a character boundary to <= 200 bytes",
                "stem %r (%d bytes)" % (stem, len(stem.encode())))

    # ---- the bad ones ------------------------------------------------------------------------
    for name, (data, code) in bad.items():
        path = error_path(name)
        if not c.check(os.path.exists(path), "%s: %s exists" % (name, os.path.basename(path))):
            continue
        sc = h.read_json(path)
        c.problems(h.error_sidecar_problems(sc, src_path=os.path.join(hot, name), source=name, http_status=None,
                                            code=code, attempts=0, version=version),
                   "%s: %s, http_status null, attempts 0, every field" % (name, code))
        c.eq(len([r for r in gens if r.get("image_sha256") == h.sha256_bytes(data)]), 0,
             "%s: zero API calls for its content" % name)

    # ---- the FIFO and the symlink --------------------------------------------------------------
    for stem in ("x", "link"):
        c.eq([n for n in os.listdir(out) if n.split(".")[0] == stem], [],
             "%s.png: no output and no sidecar of any kind" % stem)
    c.eq(len([r for r in gens if r.get("image_sha256") == h.sha256_bytes(target)]), 0,
         "link.png: the image it points to outside the folder was never sent")
    c.check(os.path.islink(os.path.join(hot, "link.png")) and
            h.read_bytes(os.path.join(outside, "target.png")) == target,
            "link.png and its target are untouched")

    # ---- nothing outside the output folder ------------------------------------------------------
    after = around()
    c.problems(["%s appeared" % p for p in sorted(set(after) - set(before))] +
               ["%s disappeared" % p for p in sorted(set(before) - set(after))] +
               ["%s changed" % p for p in sorted(set(before) & set(after)) if before[p] != after[p]],
               "nothing written outside the output folder (the tree around it is unchanged)")
    expected_hot = sorted(list(good) + list(bad) + ["x.png", "link.png"])
    c.same_names(os.listdir(hot), expected_hot, "nothing added to or removed from the watched folder")
    c.problems(h.leftovers(out), "no hidden or temporary file left in the output folder")

    rc, took = d.terminate(timeout=8)
    c.check(rc == 0 and took < 5, "SIGTERM: exits 0 within 5 s",
            "exit status %s after %.1f s" % ("(killed)" if rc is None else rc, took))

    # ---- the same folder with --once: the FIFO does not hang a scan either ------------------------
    n_gen = len(api.generations())
    res = ctx.run_once(config, name="hostile-once", timeout=30)
    c.check(not res.timed_out and res.elapsed < 15, "--once over the hostile folder finishes", res.describe())
    c.eq(len(api.generations()) - n_gen, 0, "--once: no call (everything is recorded as done or failed)")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
