#!/usr/bin/env python3
"""references: (issue 13 item 2): the dropped image then each reference, in order, in the request's
`image` array, every data URL the exact bytes of its file; the sidecar lists the references with
their SHA-256; a restart sends nothing again; a reference that changed or vanished since the
configuration was read makes files wait (nothing is paid with another version) until a reload
accepts it, and done files are not sent again; --check refuses bad references at their
file:line:column."""

import json
import os
import re
import signal
import time

import harness as h


def add_folder_lines(config, lines):
    """Appends keys to the last folder of a harness config (folders come last)."""
    with open(config, "a", encoding="utf-8") as f:
        f.write("".join("    %s\n" % l for l in lines))


def refs_lines(paths):
    return ["references:"] + ["  - %s" % json.dumps(p) for p in paths]


def image_list(rec):
    return [(i.get("format"), i.get("sha256"), i.get("len")) for i in rec.get("images") or []]


def expect_list(paths):
    out = []
    for p in paths:
        data = h.read_bytes(p)
        out.append((h.magic_format(data), h.sha256_bytes(data), len(data)))
    return out


def test_sending(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("refs")
    refdir = os.path.join(root, "refs")
    os.makedirs(refdir)
    style = os.path.join(refdir, "style.png")
    logo = os.path.join(refdir, "logo.jpg")
    h.write_bytes(style, h.png_image(40, 30, 7))
    h.write_bytes(logo, h.jpeg_image(48, 32, 8))
    sources = {"a.png": h.png_image(33, 21, 1), "b.jpg": h.jpeg_image(60, 40, 2)}
    for name, data in sources.items():
        h.write_bytes(os.path.join(hot, name), data)
    # A second folder without references: its body keeps "image" a string.
    hot2 = os.path.join(root, "plain")
    os.makedirs(hot2)
    h.write_bytes(os.path.join(hot2, "p.png"), h.png_image(20, 20, 3))
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot2}, {"path": hot}])
    add_folder_lines(config, refs_lines([style, logo]))

    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "--once with references exits 0", res.describe())
    gens = api.generations()
    c.eq(len(api.rejected()), 0, "the API refused no request (every data URL decodes, format matches)")
    c.eq(len(gens), 3, "one call per dropped image (2 with references, 1 plain)")
    by_first = {r.get("image_sha256"): r for r in gens}
    for name, data in sources.items():
        rec = by_first.get(h.sha256_bytes(data))
        if not c.check(rec is not None, "%s was sent" % name):
            continue
        c.check(rec.get("image_array") is True, "%s: image is an array" % name)
        c.eq(image_list(rec), expect_list([os.path.join(hot, name), style, logo]),
             "%s: the image array is [the file, style.png, logo.jpg], each the exact bytes" % name)
    plain = by_first.get(h.sha256_file(os.path.join(hot2, "p.png")))
    c.check(plain is not None and plain.get("image_array") is False and len(image_list(plain)) == 1,
            "a folder without references still sends image as one string", repr(plain))

    for name, data in sources.items():
        stem = name.rsplit(".", 1)[0]
        sc_path = os.path.join(out, stem + ".json")
        if not c.check(os.path.exists(sc_path), "%s: sidecar written" % name):
            continue
        sc = h.read_json(sc_path)
        c.eq(sc.get("references"), [{"path": style, "sha256": h.sha256_file(style)},
                                    {"path": logo, "sha256": h.sha256_file(logo)}],
             "%s: the sidecar lists the references in order with their SHA-256" % name)
        c.eq(sc.get("source_sha256"), h.sha256_bytes(data), "%s: source_sha256 is still the source's" % name)
        c.check(os.path.exists(os.path.join(out, stem + ".jpeg")), "%s: output written" % name)
    sc_plain = h.read_json(os.path.join(hot2 + "-out", "p.json"))
    c.check("references" not in sc_plain, "no references member without references")

    # ---- restart: nothing again; a copy reuses the result made with the same references ---
    n = len(api.generations())
    h.write_bytes(os.path.join(hot, "a-copy.png"), sources["a.png"])
    res = ctx.run_once(config)
    c.check(res.rc == 0, "second --once exits 0", res.describe())
    c.eq(len(api.generations()) - n, 0, "second run: no new call (a-copy.png reuses a.png's result)")
    copy_sc = os.path.join(out, "a-copy.json")
    if c.check(os.path.exists(copy_sc), "a-copy.png is done by reuse"):
        sc = h.read_json(copy_sc)
        c.eq(sc.get("reused_from"), "a.png", "a-copy.json names the result it reused")
        c.eq([r.get("sha256") for r in sc.get("references") or []],
             [h.sha256_file(style), h.sha256_file(logo)], "a-copy.json lists the same references")

    # ---- a reference replaced after the check: files wait, nothing paid ---------------------
    daemon = ctx.start_daemon(config, name="daemon-refs")
    c.require(daemon.wait_for(r"ready: watching", 10), "the daemon starts",
              daemon.stderr_text()[-2000:])
    time.sleep(0.3)
    new_logo = h.jpeg_image(50, 30, 9)
    h.write_bytes(logo + ".new", new_logo)
    os.rename(logo + ".new", logo)  # a new file: another inode, another content
    h.write_bytes(os.path.join(hot, "c.png"), h.png_image(25, 25, 4))
    waited = daemon.wait_for(r"c\.png waits: reference .*logo\.jpg: changed since the configuration "
                             r"was read", 15)
    c.check(waited, "a changed reference: the file waits, with a log line naming the reference",
            daemon.stderr_text()[-2000:])
    time.sleep(1.0)
    c.eq(len(api.generations()) - n, 0, "nothing is sent while a reference is not the one checked")
    c.check(not os.path.exists(os.path.join(out, "c.json")) and
            not os.path.exists(os.path.join(out, "c.error.json")),
            "the waiting file has no sidecar (it is not failed)")

    # A reload validates the new version: the waiting file goes out with it, and the files
    # already done are not sent again (settings apply to new files).
    daemon.proc.send_signal(signal.SIGHUP)
    ok = h.wait_until(lambda: os.path.exists(os.path.join(out, "c.json")), 30)
    c.check(ok, "after a reload, the waiting file is sent with the new reference",
            daemon.stderr_text()[-2000:])
    new = api.generations()[n:]
    c.eq(len(new), 1, "exactly one new call (c.png); a.png and b.png stay done")
    if new:
        c.eq(image_list(new[0]), expect_list([os.path.join(hot, "c.png"), style, logo]),
             "c.png went out with the new logo bytes")
    if ok:
        sc = h.read_json(os.path.join(out, "c.json"))
        refs = sc.get("references") or [{}, {}]
        c.eq(refs[-1].get("sha256"), h.sha256_bytes(new_logo), "c.json records the new logo's SHA-256")
        old = h.read_json(os.path.join(out, "a.json"))
        c.check((old.get("references") or [{}, {}])[-1].get("sha256") != h.sha256_bytes(new_logo),
                "a.json still shows the logo it was made with (a changed reference is visible)")

    # A copy of a.png now: a.png's result was made with the old logo, so it is not reused.
    h.write_bytes(os.path.join(hot, "a-copy2.png"), sources["a.png"])
    ok = h.wait_until(lambda: os.path.exists(os.path.join(out, "a-copy2.json")), 20)
    c.check(ok, "a-copy2.png is done")
    new = api.generations()[n:]
    c.eq(len(new), 2, "a copy made after the references changed is generated anew, not reused")
    if ok:
        sc = h.read_json(os.path.join(out, "a-copy2.json"))
        c.check("reused_from" not in sc, "a-copy2.json is not a reuse", repr(sc.get("reused_from")))

    # ---- a reference that vanished: --once leaves the file for a later run -----------------
    daemon.terminate()
    os.unlink(style)
    h.write_bytes(os.path.join(hot, "d.png"), h.png_image(26, 26, 5))
    n = len(api.generations())
    res = ctx.run(["-c", config, "--check"], timeout=15)
    c.check(res.rc == 1 and re.search(r"seedreamd\.yaml:\d+:\d+: references: .*style\.png.* cannot be "
                                      r"opened: No such file", res.stderr),
            "--check refuses a vanished reference with file:line:column", res.describe())
    res = ctx.run_once(config)
    c.check(res.rc != 0, "--once refuses to start with a vanished reference", res.describe())
    c.eq(len(api.generations()) - n, 0, "nothing sent with a vanished reference")


def test_check(ctx):
    c = ctx.checks
    root = os.path.join(ctx.tmp, "check-refs")
    hot, state, refdir = (os.path.join(root, n) for n in ("hot", "state", "refs"))
    for d in (hot, state, refdir):
        os.makedirs(d)
    good = os.path.join(refdir, "good.png")
    h.write_bytes(good, h.png_image(30, 30, 1))
    text = os.path.join(refdir, "notes.png")
    h.write_bytes(text, b"just text, not an image\n")
    tiny = os.path.join(refdir, "tiny.png")
    h.write_bytes(tiny, h.png_image(10, 10, 2))  # the API wants sides > 14 px
    cut = os.path.join(refdir, "cut.png")
    h.write_bytes(cut, h.png_image(30, 30, 3)[:-20])
    big = os.path.join(refdir, "big.png")
    h.write_bytes(big, h.big_png(2 * 1024 * 1024))

    base = ["api:",                                   # 1
            "  base_url: http://127.0.0.1:9/v1",      # 2
            "  model: doubao-seedream-4-5-251128",    # 3
            "state_dir: %s" % state,                  # 4
            "folders:",                               # 5
            "  - path: %s" % hot,                     # 6
            '    prompt: "Add the logo"']             # 7

    def check(name, extra, line, col, pattern, defaults=None):
        lines = list(base)
        if defaults is not None:
            lines[4:4] = ["defaults:"] + ["  " + l for l in defaults]
        lines += ["    " + l for l in extra]
        path = os.path.join(root, name + ".yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        res = ctx.run(["-c", path, "--check"], timeout=15)
        want = r"seedreamd: error: %s:%d:%d: %s" % (re.escape(path), line, col, pattern)
        c.check(res.rc == 1 and re.search(want, res.stderr), "--check refuses %s at %d:%d" % (name, line, col),
                "rc %s stderr %r (wanted /%s/)" % (res.rc, res.stderr[-400:], want))

    ok_path = os.path.join(root, "ok.yaml")
    with open(ok_path, "w", encoding="utf-8") as f:
        f.write("\n".join(base + ["    references: [%s]" % good]) + "\n")
    res = ctx.run(["-c", ok_path, "--check"], timeout=15)
    c.check(res.rc == 0, "--check accepts a valid reference", res.describe())

    check("missing", ["references:", "  - %s" % good, "  - %s/nope.png" % refdir], 10, 9,
          r"references: .*nope\.png.* cannot be opened: No such file or directory")
    check("not-an-image", ["references: [%s]" % text], 8, 18, r"references: .*notes\.png.* is not a usable image")
    check("too-small", ["references: [%s]" % tiny], 8, 18, r"references: .*tiny\.png.* outside the API's limits")
    check("truncated", ["references: [%s]" % cut], 8, 18, r"references: .*cut\.png.* (incomplete|not a usable)")
    check("directory", ["references: [%s]" % refdir], 8, 18, r"references: .* is not a regular file")
    check("relative", ["references: [refs/good.png]"], 8, 18, r"references: .*absolute")
    check("not-a-list", ["references: %s" % good], 8, 17, r"references: expected a sequence")
    check("too-many", ["references: [%s]" % ", ".join([good] * 14)], 8, 17,
          r"references: 14 images, but a request takes at most 14")
    check("over-max-input-bytes", ["max_input_bytes: 1MiB", "references: [%s]" % big], 9, 18,
          r"references: .*big\.png.* more than max_input_bytes")
    # In defaults: the error points into defaults; a folder's smaller limit is still applied.
    check("defaults-missing", [], 7, 7, r"references: .*gone\.png.* cannot be opened",
          defaults=["references:", "  - %s/gone.png" % refdir])
    check("defaults-over-folder-limit", ["max_input_bytes: 1MiB"], 6, 16,
          r"references: .*big\.png.* more than max_input_bytes",
          defaults=["references: [%s]" % big])


def test(ctx):
    test_check(ctx)
    test_sending(ctx)


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
