#!/usr/bin/env python3
"""group: subfolder (issue 13 item 3): each immediate subfolder is one request with its images in
bytewise name order (then the folder's references), named after the subfolder (<output>/<sub>.jpeg
and .json listing every source); a group over the API's 14 images gets an .error.json and no call;
settle mode waits until the subfolder is quiet, marker mode until the marker is there; a restart
sends nothing again; a file added to a done group costs nothing (logged once; deleting the sidecar
redoes it); --check refusals at file:line:column."""

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


def image_list(rec):
    return [(i.get("format"), i.get("sha256"), i.get("len")) for i in rec.get("images") or []]


def expect_list(paths):
    out = []
    for p in paths:
        data = h.read_bytes(p)
        out.append((h.magic_format(data), h.sha256_bytes(data), len(data)))
    return out


def sources_of(folder, names):
    out = []
    for n in names:
        p = os.path.join(folder, n)
        st = os.stat(p)
        out.append({"name": n, "sha256": h.sha256_file(p), "size": st.st_size,
                    "mtime": h.rfc3339_ns(st.st_mtime_ns)})
    return out


def test_once(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("groups")
    g1 = os.path.join(hot, "g1")
    g2 = os.path.join(hot, "g2")
    os.makedirs(g1)
    os.makedirs(g2)
    # Bytewise order: "C.png" < "a.jpg" < "b.png" (uppercase first).
    members = {"b.png": h.png_image(30, 20, 1), "a.jpg": h.jpeg_image(40, 30, 2),
               "C.png": h.png_image(25, 25, 3)}
    for n, data in members.items():
        h.write_bytes(os.path.join(g1, n), data)
    order = sorted(members, key=lambda n: n.encode())
    for i in range(15):
        h.write_bytes(os.path.join(g2, "img-%02d.png" % i), h.png_image(20 + i, 20, 100 + i))
    g3 = os.path.join(hot, "g3")
    os.makedirs(g3)
    h.write_bytes(os.path.join(g3, "fine.png"), h.png_image(22, 22, 60))
    h.write_bytes(os.path.join(g3, "notes.png"), b"not an image at all\n")  # refuses the group
    h.write_bytes(os.path.join(hot, "top.png"), h.png_image(22, 22, 50))  # not in a group
    os.makedirs(os.path.join(g1, "deeper"))
    h.write_bytes(os.path.join(g1, "deeper", "x.png"), h.png_image(21, 21, 51))  # not a member
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    add_folder_lines(config, ["group: subfolder"])

    res = ctx.run_once(config)
    c.check(res.rc == 1 and not res.timed_out, "--once over two groups exits 1 (a group was refused, "
            "like a failed file)", res.describe())
    gens = api.generations()
    c.eq(len(api.rejected()), 0, "no request refused by the API")
    c.eq(len(gens), 1, "one call: g1; none for the group of 15, the file beside the groups or deeper")
    if gens:
        c.check(gens[0].get("image_array") is True, "a group's image is an array")
        c.eq(image_list(gens[0]), expect_list([os.path.join(g1, n) for n in order]),
             "g1's images in bytewise name order (C.png, a.jpg, b.png), each the exact bytes")
    c.check(all(len(r.get("images") or []) <= 14 for r in api.records("generation")),
            "no request with more than 14 images reached the API")
    c.same_names(h.listing(out), ["g1.jpeg", "g1.json", "g2.error.json", "g3.error.json"],
                 "outputs named after the subfolders: g1.jpeg + g1.json, g2.error.json, g3.error.json")
    sc = h.read_json(os.path.join(out, "g1.json")) if os.path.exists(os.path.join(out, "g1.json")) else {}
    c.eq(sc.get("source"), "g1", "g1.json: source is the subfolder")
    c.eq(sc.get("sources"), sources_of(g1, order),
         "g1.json lists every source in order (name, sha256, size, mtime)")
    c.check("references" not in sc, "no references member without references")
    if os.path.exists(os.path.join(out, "g1.jpeg")):
        c.problems(h.output_problems(os.path.join(out, "g1.jpeg"), h.sha256_file(os.path.join(g1, order[0]))),
                   "g1.jpeg is the result of the request (generated from its first image)")
    err = h.read_json(os.path.join(out, "g2.error.json")) if os.path.exists(os.path.join(out, "g2.error.json")) else {}
    e = err.get("error") or {}
    c.eq(e.get("code"), "Group.TooManyImages", "g2.error.json: Group.TooManyImages")
    c.check("15 images" in (e.get("message") or "") and err.get("attempts") == 0,
            "g2.error.json says 15 images and that no call was made", repr(err))

    err = h.read_json(os.path.join(out, "g3.error.json")) if os.path.exists(os.path.join(out, "g3.error.json")) else {}
    e = err.get("error") or {}
    c.check(e.get("code") == "Group.InvalidImage" and "notes.png" in (e.get("message") or ""),
            "g3.error.json: Group.InvalidImage naming notes.png (no call for a group with a non-image)", repr(err))

    # ---- restart: nothing again -------------------------------------------------------------
    snap = {n: h.read_bytes(os.path.join(out, n)) for n in h.listing(out)}
    res = ctx.run_once(config)
    c.check(res.rc == 0, "second --once exits 0", res.describe())
    c.eq(len(api.generations()), 1, "restart: no new call")
    c.check("3 already done" in res.stderr, "restart: the three groups counted as already done", res.stderr[-500:])
    c.problems([n for n, d in snap.items() if h.read_bytes(os.path.join(out, n)) != d],
               "restart: no output or sidecar rewritten")

    # ---- a file added to the done group: costs nothing, said once --------------------------
    h.write_bytes(os.path.join(g1, "d.png"), h.png_image(26, 26, 4))
    res = ctx.run_once(config)
    c.check(res.rc == 0, "--once after adding a file to a done group exits 0", res.describe())
    c.eq(len(api.generations()), 1, "a file added to a done group costs no call")
    c.check(len(re.findall(r"group \S*g1 changed after it was done", res.stderr)) == 1,
            "the log says once that g1 changed after it was done", res.stderr[-1500:])
    c.check("delete its sidecar" in res.stderr, "the log says how to redo it")
    c.eq(h.read_bytes(os.path.join(out, "g1.json")), snap["g1.json"], "g1.json is unchanged")

    # ---- deleting the sidecar redoes it, with the new file -----------------------------------
    os.unlink(os.path.join(out, "g1.json"))
    os.unlink(os.path.join(out, "g1.jpeg"))
    res = ctx.run_once(config)
    c.check(res.rc == 0, "--once after deleting g1.json exits 0", res.describe())
    gens = api.generations()
    c.eq(len(gens), 2, "deleting the sidecar redoes the group: one new call")
    order2 = sorted(list(members) + ["d.png"], key=lambda n: n.encode())
    if len(gens) == 2:
        c.eq(image_list(gens[1]), expect_list([os.path.join(g1, n) for n in order2]),
             "the redone group sends its four images in order")
    sc = h.read_json(os.path.join(out, "g1.json")) if os.path.exists(os.path.join(out, "g1.json")) else {}
    c.eq([s.get("name") for s in sc.get("sources") or []], order2, "the new g1.json lists the four sources")


def test_daemon(ctx):
    c = ctx.checks
    api = ctx.start_api(name="api2")
    root = os.path.join(ctx.tmp, "gd")
    quiet, marked, state, refdir = (os.path.join(root, n) for n in ("quiet", "marked", "state", "refs"))
    for d in (quiet, marked, state, refdir):
        os.makedirs(d)
    ref = os.path.join(refdir, "style.png")
    h.write_bytes(ref, h.png_image(32, 32, 77))
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": quiet}, {"path": marked}], settle="1500ms")
    text = open(config, encoding="utf-8").read()
    # The first folder gets group: subfolder (settle mode), the second marker mode + a reference.
    text = text.replace('    prompt: %s\n  - path: %s\n' % (json.dumps(h.PROMPT), json.dumps(marked)),
                        '    prompt: %s\n    group: subfolder\n  - path: %s\n' % (json.dumps(h.PROMPT),
                                                                                   json.dumps(marked)), 1)
    with open(config, "w", encoding="utf-8") as f:
        f.write(text)
    add_folder_lines(config, ["group: subfolder", "group_ready: marker", "references: [%s]" % ref])
    daemon = ctx.start_daemon(config, name="daemon-groups")
    c.require(daemon.wait_for(r"ready: watching", 10), "the daemon starts", daemon.stderr_text()[-2000:])

    # Settle mode: a file every 0.5 s for 2.5 s; nothing may go before the last has been quiet.
    s1 = os.path.join(quiet, "s1")
    os.makedirs(s1)
    t_last = None
    for i in range(6):
        h.write_bytes(os.path.join(s1, "p%d.png" % i), h.png_image(20 + i, 24, 200 + i))
        t_last = time.time()
        time.sleep(0.5)
        c.check(not api.generations(), "settle: nothing sent while files keep coming (after file %d)" % i)
    ok = h.wait_until(lambda: len(api.generations()) >= 1, 15)
    c.check(ok, "settle: the group goes once quiet", daemon.stderr_text()[-1500:])
    gens = api.generations()
    if gens:
        c.check(gens[0]["time"] >= t_last + 1.4, "settle: sent only after 1.5 s of quiet",
                "sent %.2f s after the last file" % (gens[0]["time"] - t_last))
        c.eq(image_list(gens[0]), expect_list([os.path.join(s1, "p%d.png" % i) for i in range(6)]),
             "settle: all six images, in order, in one request")
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(quiet + "-out", "s1.json")), 10),
            "settle: s1.json written")

    # Marker mode: nothing until the marker, then the group with the reference last.
    m1 = os.path.join(marked, "m1")
    os.makedirs(m1)
    h.write_bytes(os.path.join(m1, "z.png"), h.png_image(30, 30, 300))
    h.write_bytes(os.path.join(m1, "y.jpg"), h.jpeg_image(30, 30, 301))
    time.sleep(3.5)  # well past settle
    c.eq(len(api.generations()), 1, "marker: nothing sent without the marker")
    h.write_bytes(os.path.join(m1, ".ready"), b"")
    ok = h.wait_until(lambda: len(api.generations()) >= 2, 15)
    c.check(ok, "marker: the group goes once the marker is there", daemon.stderr_text()[-1500:])
    gens = api.generations()
    if len(gens) >= 2:
        c.eq(image_list(gens[1]), expect_list([os.path.join(m1, "y.jpg"), os.path.join(m1, "z.png"), ref]),
             "marker: the group's images in order, then the reference")
    ok = h.wait_until(lambda: os.path.exists(os.path.join(marked + "-out", "m1.json")), 10)
    if c.check(ok, "marker: m1.json written"):
        sc = h.read_json(os.path.join(marked + "-out", "m1.json"))
        c.eq([s.get("name") for s in sc.get("sources") or []], ["y.jpg", "z.png"],
             "m1.json lists the group's sources (not the reference)")
        c.eq(sc.get("references"), [{"path": ref, "sha256": h.sha256_file(ref)}], "m1.json lists the reference")

    # Adding a file to the done group: nothing sent, logged once.
    h.write_bytes(os.path.join(s1, "p9.png"), h.png_image(33, 24, 209))
    logged = daemon.wait_for(r"group \S*s1 changed after it was done", 10)
    c.check(logged, "a file added to a done group is logged", daemon.stderr_text()[-1500:])
    h.write_bytes(os.path.join(s1, "p10.png"), h.png_image(34, 24, 210))
    time.sleep(2.5)
    c.eq(len(api.generations()), 2, "files added to a done group cost nothing")
    c.eq(len(re.findall(r"group \S*s1 changed after it was done", daemon.stderr_text())), 1,
         "said once, not per file")
    daemon.terminate()


def test_check(ctx):
    c = ctx.checks
    root = os.path.join(ctx.tmp, "check-groups")
    hot, state = os.path.join(root, "hot"), os.path.join(root, "state")
    for d in (hot, state):
        os.makedirs(d)
    base = ["api:",                                   # 1
            "  base_url: http://127.0.0.1:9/v1",      # 2
            "  model: doubao-seedream-4-5-251128",    # 3
            "state_dir: %s" % state,                  # 4
            "folders:",                               # 5
            "  - path: %s" % hot,                     # 6
            '    prompt: "Make it one"']              # 7

    def check(name, extra, line, col, pattern):
        path = os.path.join(root, name + ".yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(base + ["    " + l for l in extra]) + "\n")
        res = ctx.run(["-c", path, "--check"], timeout=15)
        want = r"seedreamd: error: %s:%d:%d: %s" % (re.escape(path), line, col, pattern)
        c.check(res.rc == 1 and re.search(want, res.stderr), "--check refuses %s at %d:%d" % (name, line, col),
                "rc %s stderr %r (wanted /%s/)" % (res.rc, res.stderr[-400:], want))

    ok = os.path.join(root, "ok.yaml")
    with open(ok, "w", encoding="utf-8") as f:
        f.write("\n".join(base + ["    group: subfolder", "    group_ready: marker",
                                  "    group_marker: _READY"]) + "\n")
    res = ctx.run(["-c", ok, "--check"], timeout=15)
    c.check(res.rc == 0, "--check accepts group: subfolder with a marker", res.describe())
    check("recursive", ["recursive: true", "group: subfolder"], 9, 12, r"group: subfolder needs recursive: false")
    check("on-success", ["group: subfolder", "on_success: move"], 8, 12, r"group: subfolder needs on_success: keep")
    check("bad-group", ["group: folders"], 8, 12, r"group: unknown value \"folders\"")
    check("bad-ready", ["group_ready: soon"], 8, 18, r"group_ready: unknown value \"soon\"")
    check("marker-path", ["group_marker: a/b"], 8, 19, r"group_marker: expected a file name")
    check("marker-dotdot", ['group_marker: ".."'], 8, 19, r"group_marker: expected a file name")
    check("marker-empty", ['group_marker: ""'], 8, 19, r"group_marker: expected a string")


def test_crash(ctx):
    """A group's paid result survives a SIGKILL: the restart downloads it, never generates again."""
    c = ctx.checks
    api = ctx.start_api(name="api-crash")
    root, hot, out, state = ctx.folder("gcrash")
    g = os.path.join(hot, "g")
    os.makedirs(g)
    for i in range(3):
        h.write_bytes(os.path.join(g, "i%d.png" % i), h.png_image(24 + i, 24, 400 + i))
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], settle="300ms")
    add_folder_lines(config, ["group: subfolder"])
    api.add_faults(["slowdl:ms=5000"], replace=True)
    d = ctx.start_daemon(config, name="daemon-gcrash")
    cue = h.wait_until(lambda: any(r.get("stalled") for r in api.downloads()), 15)
    time.sleep(0.3)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(5)
    c.require(cue, "crash: the group's download started and stalls when the daemon is killed",
              "downloads %s" % api.downloads())
    c.eq(len(api.generations()), 1, "crash: one generation before the kill")
    res = ctx.run_once(config, name="gcrash-restart", timeout=60)
    c.check(res.rc == 0 and not res.timed_out, "crash: the restart with --once exits 0", res.describe())
    gens = api.generations()
    c.eq(len(gens), 1, "crash: the restart did not generate the group again")
    c.check(os.path.exists(os.path.join(out, "g.jpeg")) and gens and
            h.sha256_output(os.path.join(out, "g.jpeg")) == gens[0].get("output_sha256"),
            "crash: g.jpeg is the paid generation's image", repr(h.listing(out)))
    c.check(os.path.exists(os.path.join(out, "g.json")), "crash: g.json written")
    if gens and os.path.exists(os.path.join(out, "g.json")):
        sc = h.read_json(os.path.join(out, "g.json"))
        c.eq([(x.get("name"), x.get("sha256")) for x in sc.get("sources") or []],
             [("i%d.png" % i, img.get("sha256")) for i, img in enumerate(gens[0].get("images") or [])],
             "crash: g.json's sources are the images the stand-in received, in order, with their sha256")
        c.eq(sc.get("prompt"), gens[0]["fields"].get("prompt"), "crash: g.json's prompt is the one sent")
    c.eq(h.journal_records(state), [], "crash: the journal holds no live record afterwards")
    res = ctx.run_once(config, name="gcrash-again", timeout=60)
    c.check(res.rc == 0 and len(api.generations()) == 1, "crash: another run sends nothing", res.describe())
    c.check("changed after" not in res.stderr,
            "crash: a sidecar written from the journal (with its sources list) is not taken for a change",
            res.stderr[-800:])


def test(ctx):
    test_check(ctx)
    test_crash(ctx)
    test_once(ctx)
    test_daemon(ctx)


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
