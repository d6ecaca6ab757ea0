#!/usr/bin/env python3
"""Several outputs per request (max_images, issue 13 items 4 and 7): the request's sequential
fields, <stem>-1.jpeg .. <stem>-K.jpeg and one sidecar listing them, a data[i].error inside a
successful answer (recorded, not retried), b64_json with several images refused at --check, a relay that drops usage
or returns fewer images (usage null, images counted from data[], one warning per folder), daily
limits that count images, a kill after payment (the restart fetches every output, no new call),
and --check refusals."""

import json
import os
import re
import signal
import sys
import time

import harness as h


def write_config(path, api, state, folders, top=None, response_format="url"):
    q = json.dumps
    lines = ["api:", "  base_url: %s" % q(api.base_url), "  model: %s" % q(h.MODEL),
             "  timeout: 20s", "  max_in_flight: 2", "  retries: 2",
             "  response_format: %s" % response_format,
             "defaults:", "  settle: 200ms", "state_dir: %s" % q(state)]
    for k, v in (top or {}).items():
        lines.append("%s: %s" % (k, v))
    lines.append("folders:")
    for f in folders:
        lines.append("  - path: %s" % q(f["path"]))
        lines.append("    prompt: %s" % q(f.get("prompt", h.PROMPT)))
        for k, v in f.items():
            if k not in ("path", "prompt"):
                lines.append("    %s: %s" % (k, v))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def drop(hot, names, seed=0):
    shas = {}
    for i, name in enumerate(names):
        data = h.png_image(40 + i, 30 + i, seed + i)
        h.write_bytes(os.path.join(hot, name), data)
        shas[name] = h.sha256_bytes(data)
    return shas


def visible(out):
    return sorted(n for n in h.listing(out) if not n.startswith("."))


def check_outputs(c, tag, out, stem, gen, want_files):
    """The outputs of one generation record: names, bytes in data[] order, and the sidecar."""
    names = ["%s-%d.jpeg" % (stem, k + 1) for k in range(want_files)]
    for k, name in enumerate(names):
        c.check(os.path.exists(os.path.join(out, name)), "%s: %s written" % (tag, name),
                "output holds %s" % visible(out))
    shas = [s for s in (gen.get("output_sha256s") or []) if s]
    got = [h.sha256_output(os.path.join(out, n)) if os.path.exists(os.path.join(out, n)) else None
           for n in names]
    c.eq(got, shas, "%s: %s-1..%d hold the API's images in data[] order" % (tag, stem, want_files))
    c.eq(len(set(got)), want_files, "%s: the outputs are distinct images" % tag)
    xmps = [h.jpeg_xmp(h.read_bytes(os.path.join(out, n))) if os.path.exists(os.path.join(out, n)) else None
            for n in names]
    c.check(all(x and b"compositeWithTrainedAlgorithmicMedia" in x for x in xmps),
            "%s: every one of the outputs carries its XMP provenance" % tag)
    sc_path = os.path.join(out, stem + ".json")
    if not c.check(os.path.exists(sc_path), "%s: one sidecar %s.json" % (tag, stem),
                   "output holds %s" % visible(out)):
        return None
    sc = h.read_json(sc_path)
    c.eq(sc.get("output"), names[0], "%s: the sidecar's output is the first, for old readers" % tag)
    listed = [o.get("output") for o in sc.get("outputs") or [] if "output" in o]
    c.eq(listed, names, "%s: the sidecar lists every output" % tag)
    c.eq([o.get("provenance") for o in sc.get("outputs") or [] if "output" in o], ["xmp"] * want_files,
         "%s: each output in outputs[] records its XMP provenance" % tag)
    c.eq(sc.get("provenance"), "xmp", "%s: the sidecar's provenance is xmp (all outputs carry it)" % tag)
    c.eq(sc.get("request_id"), gen.get("request_id"), "%s: the sidecar's request_id" % tag)
    return sc


def test_outputs(ctx):
    c = ctx.checks
    api = ctx.start_api("outputs")
    root, hot, out, state = ctx.folder("outputs")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state,
                          [{"path": hot, "max_images": 3}])
    drop(hot, ["a.png", "b.png"])
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "outputs: --once exits 0", res.describe())
    gens = api.generations()
    c.eq(len(gens), 2, "outputs: one call per input")
    for g in gens:
        c.eq((g.get("sequential"), g.get("max_images")), ("auto", 3),
             "outputs: the request sends sequential_image_generation auto and max_images 3")
    by_sha = {g["image_sha256"]: g for g in gens}
    for stem in ("a", "b"):
        src = h.read_bytes(os.path.join(hot, stem + ".png"))
        gen = by_sha.get(h.sha256_bytes(src), {})
        sc = check_outputs(c, "outputs " + stem, out, stem, gen, 3)
        if sc:
            c.eq(sc.get("usage", {}).get("generated_images"), 3,
                 "outputs %s: usage verbatim (generated_images 3)" % stem)
            c.eq(sc.get("max_images"), 3, "outputs %s: max_images in the sidecar" % stem)
    c.eq(visible(out), sorted(["a-1.jpeg", "a-2.jpeg", "a-3.jpeg", "a.json",
                               "b-1.jpeg", "b-2.jpeg", "b-3.jpeg", "b.json"]),
         "outputs: nothing else in the output folder")
    c.eq(h.journal_records(state), [], "outputs: no live journal record")
    res = ctx.run_once(config, name="outputs-again")
    c.eq(len(api.generations()), 2, "outputs: a second run makes no call (the sidecar is done)")

    # max_images 1 keeps today's names and sends no sequential fields.
    api1 = ctx.start_api("one")
    root, hot, out, state = ctx.folder("one")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api1, state,
                          [{"path": hot, "max_images": 1}])
    drop(hot, ["c.png"])
    res = ctx.run_once(config)
    gens = api1.generations()
    c.eq(visible(out), ["c.jpeg", "c.json"], "one: max_images 1 writes c.jpeg and c.json")
    c.check(gens and gens[0].get("sequential") is None,
            "one: max_images 1 sends no sequential_image_generation", str(gens[:1]))
    if os.path.exists(os.path.join(out, "c.json")):
        c.check("outputs" not in h.read_json(os.path.join(out, "c.json")),
                "one: its sidecar has no outputs list")


def test_image_error(ctx):
    c = ctx.checks
    api = ctx.start_api("imgerr")
    root, hot, out, state = ctx.folder("imgerr")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state,
                          [{"path": hot, "max_images": 3, "prompt": "Paint it [fail-image:1]"}])
    drop(hot, ["a.png"], seed=10)
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "imgerr: --once exits 0", res.describe())
    gens = api.generations()
    c.eq(len(gens), 1, "imgerr: one POST (the failed image is not retried as a whole)")
    gen = gens[0] if gens else {}
    sc = check_outputs(c, "imgerr", out, "a", gen, 2)
    if sc:
        outs = sc.get("outputs") or []
        errs = [o for o in outs if "error" in o]
        c.eq(len(outs), 3, "imgerr: the sidecar lists 3 entries (2 images, 1 error)")
        c.check(len(errs) == 1 and errs[0].get("index") == 1 and
                errs[0]["error"].get("code") == "OutputImageSensitiveContentDetected",
                "imgerr: data[1].error is recorded with its index and code", str(outs))
    c.check(not os.path.exists(os.path.join(out, "a.error.json")), "imgerr: no error sidecar")


def test_provenance(ctx):
    """Provenance per output: a PNG among several outputs gets no XMP, says "none" in its outputs[]
    entry, and the sidecar's provenance is "partial"; the JPEGs still say "xmp". The PNG first or
    last (the last is committed with the sidecar)."""
    c = ctx.checks
    for tag, png in (("prov-middle", 1), ("prov-last", 2)):
        api = ctx.start_api(tag)
        root, hot, out, state = ctx.folder(tag)
        config = write_config(os.path.join(root, "seedreamd.yaml"), api, state,
                              [{"path": hot, "max_images": 3, "prompt": "Paint [png-image:%d]" % png}])
        drop(hot, ["a.png"], seed=70 + png)
        res = ctx.run_once(config)
        c.check(res.rc == 0 and not res.timed_out, "%s: --once exits 0" % tag, res.describe())
        sc_path = os.path.join(out, "a.json")
        if not c.check(os.path.exists(sc_path), "%s: a.json" % tag, str(visible(out))):
            continue
        sc = h.read_json(sc_path)
        got = {o.get("index"): (o.get("output"), o.get("provenance")) for o in sc.get("outputs") or []}
        want = {i: ("a-%d.%s" % (i + 1, "png" if i == png else "jpeg"), "none" if i == png else "xmp")
                for i in range(3)}
        c.eq(got, want, "%s: each output records its own provenance" % tag)
        c.eq(sc.get("provenance"), "partial", "%s: the sidecar's provenance is partial" % tag)
        c.check(h.jpeg_xmp(h.read_bytes(os.path.join(out, "a-1.jpeg"))) is not None,
                "%s: a-1.jpeg carries XMP" % tag)


def test_bad_image(ctx):
    """An image of a paid answer that turns out not to be an image (after the others, or before
    the last): recorded in the sidecar like a data[i].error, the others written, no second POST.
    Then an answer whose only image is bad still fails the file as with one output."""
    c = ctx.checks
    # b64_json with max_images > 1 is refused at --check (test_b64): url only.
    for tag, fmt, bad, files in (("bad-middle-url", "url", 1, 2), ("bad-last-url", "url", 2, 2)):
        api = ctx.start_api(tag)
        root, hot, out, state = ctx.folder(tag)
        config = write_config(os.path.join(root, "seedreamd.yaml"), api, state,
                              [{"path": hot, "max_images": 3, "prompt": "Paint [bad-image:%d]" % bad}],
                              response_format=fmt)
        # retries 2 (write_config): a URL whose bytes are no image is fetched 3 times, then recorded.
        drop(hot, ["a.png"], seed=90 + bad)
        res = ctx.run_once(config, timeout=60)
        c.check(res.rc == 0 and not res.timed_out, "%s: --once exits 0" % tag, res.describe())
        gens = api.generations()
        c.eq(len(gens), 1, "%s: one POST, never generated again" % tag)
        sc = check_outputs(c, tag, out, "a", gens[0] if gens else {}, files)
        if sc:
            errs = [o for o in sc.get("outputs") or [] if "error" in o]
            c.check(len(errs) == 1 and errs[0].get("index") == bad and
                    errs[0]["error"].get("code", "").startswith("Result."),
                    "%s: image %d recorded with its error in the sidecar" % (tag, bad), str(errs))
        c.eq(visible(out), ["a-1.jpeg", "a-2.jpeg", "a.json"], "%s: no error sidecar, nothing else" % tag)
        c.eq(h.journal_records(state), [], "%s: no live journal record" % tag)


def test_b64(ctx):
    """b64_json with several outputs would hold every image of an answer in memory at once:
    --check refuses it at max_images (here or in defaults), saying to use url."""
    c = ctx.checks
    root = os.path.join(ctx.tmp, "b64")
    hot, state = os.path.join(root, "hot"), os.path.join(root, "state")
    os.makedirs(hot)
    os.makedirs(state)
    for where, lines, line, col in (
            ("folder", ["folders:", "  - path: %s" % json.dumps(hot), "    prompt: \"Paint\"",
                        "    max_images: 3"], 9, 17),
            ("defaults", ["defaults:", "  max_images: 2", "folders:",
                          "  - path: %s" % json.dumps(hot), "    prompt: \"Paint\""], 7, 15)):
        path = os.path.join(root, "b64-%s.yaml" % where)
        with open(path, "w") as fh:
            fh.write("\n".join(["api:", "  base_url: http://127.0.0.1:9/v1", "  model: %s" % h.MODEL,
                                "  response_format: b64_json", "state_dir: %s" % json.dumps(state)]
                               + lines) + "\n")
        res = ctx.run(["-c", path, "--check"], timeout=15)
        c.eq(res.rc, 1, "b64 %s: --check exits 1" % where)
        c.check(re.search(r"seedreamd: error: %s:%d:%d: .*max_images \d+ needs response_format: url"
                          % (re.escape(path), line, col), res.stderr),
                "b64 %s: file:line:column of max_images, saying to use url" % where,
                res.stderr[-300:])


def test_relay(ctx):
    c = ctx.checks
    api = ctx.start_api("relay")
    root, hot, out, state = ctx.folder("relay")
    # No usage: counted from data[]. Two requests of 3 fill the folder's 6 a day; a third waits.
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state,
                          [{"path": hot, "max_images": 3, "max_images_per_day": 6,
                            "prompt": "Paint it [no-usage]"}])
    drop(hot, ["a.png", "b.png", "c.png"], seed=30)
    res = ctx.run_once(config)
    c.eq(res.rc, 1, "relay: --once held back by the daily limit exits 1")
    gens = api.generations()
    c.eq(len(gens), 2, "relay: images counted from data[] without usage: 2 requests fill 6 a day")
    done = [n for n in visible(out) if n.endswith(".json")]
    c.eq(len(done), 2, "relay: 2 sidecars")
    for n in done:
        sc = h.read_json(os.path.join(out, n))
        c.check("usage" in sc and sc["usage"] is None, "relay %s: \"usage\": null" % n,
                str(sc.get("usage")))
        c.eq(len([o for o in sc.get("outputs") or [] if "output" in o]), 3,
             "relay %s: 3 outputs listed" % n)
    warns = re.findall(r"had no usage", res.stderr)
    c.eq(len(warns), 1, "relay: the missing usage is logged once per folder, not per file")
    res = ctx.run_once(config, name="relay-again")
    c.eq(len(api.generations()), 2, "relay: after a restart the count comes from the sidecars' "
         "outputs (no usage): no new call")

    api2 = ctx.start_api("fewer")
    root, hot, out, state = ctx.folder("fewer")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api2, state,
                          [{"path": hot, "max_images": 3, "prompt": "Paint it [fewer:2]"}])
    drop(hot, ["a.png", "b.png"], seed=40)
    res = ctx.run_once(config)
    c.check(res.rc == 0, "fewer: --once exits 0", res.describe())
    c.eq(visible(out), ["a-1.jpeg", "a-2.jpeg", "a.json", "b-1.jpeg", "b-2.jpeg", "b.json"],
         "fewer: 2 outputs each")
    c.eq(len(re.findall(r"asked for up to 3 images", res.stderr)), 1,
         "fewer: fewer images than asked is logged once per folder")
    c.eq(len(re.findall(r"had no usage", res.stderr)), 0, "fewer: usage present: no warning")
    if os.path.exists(os.path.join(out, "a.json")):
        c.eq(h.read_json(os.path.join(out, "a.json")).get("usage", {}).get("generated_images"), 2,
             "fewer: usage verbatim")


def test_daily_limit(ctx):
    c = ctx.checks
    for tag, folder_kw, top in (("limit-folder", {"max_images_per_day": 5}, None),
                                ("limit-global", {}, {"max_images_per_day": 5})):
        api = ctx.start_api(tag)
        root, hot, out, state = ctx.folder(tag)
        f = {"path": hot, "max_images": 3}
        f.update(folder_kw)
        config = write_config(os.path.join(root, "seedreamd.yaml"), api, state, [f], top=top)
        drop(hot, ["a.png", "b.png"], seed=50)
        res = ctx.run_once(config)
        c.eq(res.rc, 1, "%s: --once held back by the daily limit exits 1" % tag)
        c.eq(len(api.generations()), 1,
             "%s: limit 5 with max_images 3: one request, the second waits (3 + 3 > 5)" % tag)
        c.check("daily limit" in res.stderr, "%s: the log says a daily limit holds it" % tag,
                res.stderr[-300:])


def test_crash(ctx):
    c = ctx.checks
    api = ctx.start_api("crash")
    root, hot, out, state = ctx.folder("crash")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state,
                          [{"path": hot, "max_images": 3}])
    drop(hot, ["in.png"], seed=60)
    api.add_faults(["slowdl:ms=5000"], replace=True)
    d = ctx.start_daemon(config, name="crash")
    cue = h.wait_until(lambda: any(r.get("stalled") for r in api.downloads()), 15)
    time.sleep(0.3)
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.out.close()
    d.err.close()
    c.require(cue, "crash: the first download stalls when the daemon is killed",
              "downloads %s" % api.downloads())
    recs = h.journal_records(state)
    c.check(len(recs) == 1 and len([i for i in recs[0].get("images") or [] if i.get("url")]) == 3,
            "crash: the journal record holds all 3 URLs before any is fetched", str(recs)[:600])
    c.eq([n for n in visible(out) if n.endswith(".json")], [], "crash: no sidecar at the kill")
    res = ctx.run_once(config, name="crash-restart", timeout=60)
    c.check(res.rc == 0 and not res.timed_out, "crash: the restart exits 0", res.describe())
    gens = api.generations()
    c.eq(len(gens), 1, "crash: the restart made no new POST")
    check_outputs(c, "crash", out, "in", gens[0] if gens else {}, 3)
    c.eq(h.journal_records(state), [], "crash: no live journal record after the restart")


def test_check(ctx):
    c = ctx.checks
    root = os.path.join(ctx.tmp, "check")
    hot, state = os.path.join(root, "hot"), os.path.join(root, "state")
    os.makedirs(hot)
    os.makedirs(state)
    base = ["api:", "  base_url: http://127.0.0.1:9/v1", "  model: %s" % h.MODEL,
            "state_dir: %s" % state, "folders:", "  - path: %s" % hot,
            "    prompt: \"Paint it\""]
    cases = (("0", 8, "max_images: 0"), ("16", 8, "max_images: 16"),
             ("15", 8, "max_images: 15 (with the dropped image over 15)"),
             ("three", 8, "max_images: three"))
    for value, line, what in cases:
        path = os.path.join(root, "bad-%s.yaml" % value)
        with open(path, "w") as fh:
            fh.write("\n".join(base + ["    max_images: %s" % value]) + "\n")
        res = ctx.run(["-c", path, "--check"], timeout=15)
        c.eq(res.rc, 1, "%s: --check exits 1" % what)
        c.check(re.search(r"seedreamd: error: %s:%d:17: max_images" % (re.escape(path), line),
                          res.stderr), "%s: file:line:column and the key" % what,
                res.stderr[-300:])
    path = os.path.join(root, "limit.yaml")
    with open(path, "w") as fh:
        fh.write("\n".join(base + ["    max_images: 4", "    max_images_per_day: 3"]) + "\n")
    res = ctx.run(["-c", path, "--check"], timeout=15)
    c.eq(res.rc, 1, "max_images 4 over max_images_per_day 3: --check exits 1")
    c.check(re.search(r"seedreamd: error: %s:6:\d+: .*max_images 4" % re.escape(path), res.stderr),
            "max_images over the folder's daily limit: file:line:column", res.stderr[-300:])
    path = os.path.join(root, "good.yaml")
    with open(path, "w") as fh:
        fh.write("\n".join(base + ["    max_images: 14"]) + "\n")
    res = ctx.run(["-c", path, "--check"], timeout=15)
    c.eq(res.rc, 0, "max_images 14: --check exits 0")


def test(ctx):
    test_check(ctx)
    test_outputs(ctx)
    test_image_error(ctx)
    test_provenance(ctx)
    test_bad_image(ctx)
    test_b64(ctx)
    test_relay(ctx)
    test_daily_limit(ctx)
    test_crash(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
