#!/usr/bin/env python3
"""How shares really behave, with the daemon watching: a slow writer that closes between chunks
is submitted once, whole; a subfolder renamed in (recursive) is processed with mirrored output
paths; a subfolder created later is watched; NAS litter (@eaDir, #recycle) and exclude globs are
ignored; the watched folder renamed away and back keeps working; mode: poll picks files up; a
file replaced by new content is processed again; a file deleted before submission costs
nothing."""

import json
import os
import sys
import time

import harness as h


def yaml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v))
    if isinstance(v, int):
        return str(v)
    return json.dumps(v) if ("/" in v or " " in v or not v) else v


def write_config(path, *, api, state_dir, folders, retries=3, max_in_flight=4, timeout="20s", extra_api=None):
    """folders: dicts of per-folder keys (path, settle, recursive, exclude, mode, ...)."""
    lines = ["api:",
             "  base_url: %s" % json.dumps(api.base_url),
             "  model: %s" % json.dumps(h.MODEL),
             "  timeout: %s" % timeout,
             "  max_in_flight: %d" % max_in_flight,
             "  retries: %d" % retries]
    for k, v in (extra_api or {}).items():
        lines.append("  %s: %s" % (k, yaml_value(v)))
    lines += ["defaults:", "  size: 2K", "  watermark: false",
              "  prompt: %s" % json.dumps(h.PROMPT),
              "state_dir: %s" % json.dumps(state_dir),
              "folders:"]
    for f in folders:
        lines.append("  - path: %s" % json.dumps(f["path"]))
        for k, v in f.items():
            if k != "path":
                lines.append("    %s: %s" % (k, yaml_value(v)))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path



def drop_by_rename(folder, name, data):
    tmp = os.path.join(folder, ".%s.incoming" % name)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(folder, name))


def calls_for(api, sha):
    return [r for r in api.generations() if r.get("image_sha256") == sha]


def start(ctx, c, config, name):
    d = ctx.start_daemon(config, name=name)
    c.require(d.wait_for(r"\bready\b", 15), "%s: the daemon logs 'ready'" % name,
              "exit status %s; stderr: %s" % (d.proc.poll(), d.stderr_text()[-600:]))
    return d


def stop(c, d, name):
    c.check(d.proc.poll() is None, "%s: the daemon is still running" % name, "exit status %s" % d.proc.poll())
    rc, took = d.terminate(timeout=8)
    c.check(rc == 0, "%s: exits 0 on SIGTERM" % name, "exit status %s after %.1f s" % (rc, took))


def sidecar_json(path):
    try:
        return h.read_json(path)
    except (OSError, ValueError):
        return None


def sidecar_sha(path):
    try:
        return h.read_json(path).get("source_sha256")
    except (OSError, ValueError):
        return None


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()

    # ---- 1. a slow writer: 5 chunks, closed in between, 150 ms apart, settle 500ms --------
    root, hot, out, state = ctx.folder("slow")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                          folders=[{"path": hot, "settle": "500ms"}])
    d = start(ctx, c, config, "slow-writer")
    data = h.sample("aurora.png")
    sha = h.sha256_bytes(data)
    path = os.path.join(hot, "slow.png")
    step = -(-len(data) // 5)
    for i in range(0, len(data), step):
        with open(path, "ab") as f:
            f.write(data[i:i + step])
        last_close = time.time()
        if i + step < len(data):
            time.sleep(0.15)
    ok = h.wait_until(lambda: os.path.exists(os.path.join(out, "slow.json")), 15)
    c.check(ok, "slow writer: slow.json appears", "output holds %s" % h.listing(out))
    time.sleep(1.0)
    gens = api.generations()
    c.eq(len(gens), 1, "slow writer: submitted exactly once")
    c.eq([r.get("image_sha256") for r in gens], [sha], "slow writer: the request's image sha256 is the final file's")
    if gens:
        c.check(gens[0]["time"] >= last_close + 0.45, "slow writer: sent only after a settle (500 ms) of quiet",
                "sent %.3f s after the last close" % (gens[0]["time"] - last_close))
    c.problems(h.output_problems(os.path.join(out, "slow.jpeg"), sha), "slow writer: slow.jpeg made from the whole file")
    stop(c, d, "slow-writer")

    # ---- 2. recursive: a subfolder renamed in, one created later, litter, exclude ---------
    root, hot, out, state = ctx.folder("tree")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                          folders=[{"path": hot, "settle": "300ms", "recursive": True, "exclude": ["raw"]}])
    d = start(ctx, c, config, "recursive")
    n_gen = len(api.generations())
    staging = os.path.join(root, "staging", "batch1")
    os.makedirs(staging)
    want = {}  # rel path -> data
    for i in range(3):
        data = h.png_image(40 + i, 32, 400 + i)
        h.write_bytes(os.path.join(staging, "m%d.png" % i), data)
        want["batch1/m%d.png" % i] = data
    os.rename(staging, os.path.join(hot, "batch1"))
    # a subfolder created later, files written into it at once (no rename)
    os.makedirs(os.path.join(hot, "later", "deeper"))
    for rel, data in (("later/l1.png", h.png_image(36, 36, 410)), ("later/deeper/l2.jpg", h.jpeg_image(40, 40, 411))):
        h.write_bytes(os.path.join(hot, rel), data)
        want[rel] = data
    # litter and excluded names
    ignored = {}
    for rel, data in (("@eaDir/x.png", h.png_image(30, 30, 420)), ("#recycle/y.png", h.png_image(30, 30, 421)),
                      ("batch1/@eaDir/x2.png", h.png_image(30, 30, 422)), ("raw/z.png", h.png_image(30, 30, 423)),
                      ("later/raw/w.png", h.png_image(30, 30, 424))):
        os.makedirs(os.path.dirname(os.path.join(hot, rel)), exist_ok=True)
        h.write_bytes(os.path.join(hot, rel), data)
        ignored[rel] = data
    # and a top-level file, so that something is known to arrive after the litter
    drop_by_rename(hot, "top.png", h.png_image(44, 30, 430))
    want["top.png"] = h.png_image(44, 30, 430)

    def sidecar(rel):
        return os.path.join(out, os.path.splitext(rel)[0] + ".json")

    ok = h.wait_until(lambda: all(os.path.exists(sidecar(r)) for r in want), 20)
    c.check(ok, "recursive: every file (3 moved in with their folder, 2 in a folder made later, 1 top) gets a sidecar",
            "missing %s" % [r for r in want if not os.path.exists(sidecar(r))])
    time.sleep(1.0)
    gens = api.generations()[n_gen:]
    by_sha = {h.sha256_bytes(v): k for k, v in want.items()}
    by_sha.update({h.sha256_bytes(v): "ignored " + k for k, v in ignored.items()})
    c.eq(sorted(h.sent(gens, by_sha)), sorted(want), "recursive: each wanted file sent exactly once, nothing else")
    problems = []
    for rel, data in want.items():
        stem = os.path.splitext(rel)[0]
        problems += h.output_problems(os.path.join(out, stem + ".jpeg"), h.sha256_bytes(data))
        if os.path.exists(sidecar(rel)):
            sc = h.read_json(sidecar(rel))
            if sc.get("source") != rel or sc.get("output") != stem + ".jpeg":
                problems.append("%s: source %r output %r" % (rel, sc.get("source"), sc.get("output")))
    c.problems(problems, "recursive: outputs mirror the relative path (<out>/<sub>/<stem>.jpeg), sidecar source/output relative")
    found_ignored = []
    for dirpath, dirs, files in os.walk(out):
        for n in files:
            rel = os.path.relpath(os.path.join(dirpath, n), out)
            if any(part in ("@eaDir", "#recycle", "raw") for part in rel.split(os.sep)):
                found_ignored.append(rel)
    c.eq(found_ignored, [], "recursive: no output for @eaDir/, #recycle/ or the excluded raw/ folders")
    stop(c, d, "recursive")

    # ---- 2b. recursive: a subfolder renamed inside the watched tree (a -> b) ---------------
    root, hot, out, state = ctx.folder("rename-sub")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                          folders=[{"path": hot, "settle": "300ms", "recursive": True}])
    os.makedirs(os.path.join(hot, "a"))
    d = start(ctx, c, config, "rename-sub")
    one, two = h.png_image(40, 40, 480), h.png_image(40, 40, 481)
    h.write_bytes(os.path.join(hot, "a", "one.png"), one)
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(out, "a", "one.json")), 10),
            "rename-sub: a/one.png processed", "output holds %s" % h.listing(out))
    os.rename(os.path.join(hot, "a"), os.path.join(hot, "b"))
    time.sleep(0.5)
    h.write_bytes(os.path.join(hot, "b", "two.png"), two)
    ok = h.wait_until(lambda: os.path.exists(os.path.join(out, "b", "two.json")), 8)
    c.check(ok, "rename-sub: a file written into the renamed subfolder (b/two.png) is processed",
            "after 8 s the output holds %s" % sorted(
                os.path.relpath(os.path.join(dp, n), out) for dp, _, fs in os.walk(out) for n in fs))
    # b/one.png ends too, whichever way: reused (a/one.png's result committed, or still being
    # committed: it waits for it as its twin), or paid again (the bug). Counted once it has ended,
    # not after a guessed delay.
    reused = os.path.join(out, "b", "one.json")
    c.check(h.wait_until(lambda: os.path.exists(reused), 8),
            "rename-sub: b/one.png (the renamed a/one.png) ends with a sidecar", h.listing(out))
    c.eq((sidecar_json(reused) or {}).get("reused_from"), "a/one.png",
         "rename-sub: b/one.png reuses a/one.png's result")
    c.eq(len(calls_for(api, h.sha256_bytes(one))), 1,
         "rename-sub: renaming the folder does not pay again for the file already done in it "
         "(README: never paid for twice)")
    c.eq(len(calls_for(api, h.sha256_bytes(two))), 1, "rename-sub: b/two.png sent exactly once")
    stop(c, d, "rename-sub")

    # ---- 3. the watched folder renamed away while the daemon runs, then back --------------
    root, hot, out, state = ctx.folder("vanish")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                          folders=[{"path": hot, "settle": "1s"}])
    first = h.png_image(40, 40, 440)
    h.write_bytes(os.path.join(hot, "first.png"), first)
    d = start(ctx, c, config, "vanish")
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(out, "first.json")), 15),
            "vanish: first.png processed before the folder goes away", "output holds %s" % h.listing(out))
    n_gen = len(api.generations())
    pending = h.png_image(40, 40, 441)  # still settling when the folder goes away
    h.write_bytes(os.path.join(hot, "pending.png"), pending)
    time.sleep(0.1)
    away = hot + ".away"
    os.rename(hot, away)
    time.sleep(2.5)
    c.check(d.proc.poll() is None, "vanish: the daemon keeps running while the folder is gone",
            "exit status %s" % d.proc.poll())
    c.eq([n for n in h.listing(out) if n.endswith(".error.json")], [],
         "vanish: no error sidecar for the files that vanished with the folder")
    c.eq(len(api.generations()) - n_gen, 0, "vanish: no call while the folder is gone")
    os.rename(away, hot)
    after = h.png_image(40, 40, 442)
    drop_by_rename(hot, "after.png", after)
    ok = h.wait_until(lambda: os.path.exists(os.path.join(out, "after.json")), 20)
    c.check(ok, "vanish: after the folder is back, a file dropped in is processed", "output holds %s" % h.listing(out))
    ok = h.wait_until(lambda: os.path.exists(os.path.join(out, "pending.json")), 10)
    c.check(ok, "vanish: the file that was settling when the folder vanished is processed after it is back",
            "output holds %s" % h.listing(out))
    time.sleep(0.5)
    c.eq(sorted(h.sent(api.generations()[n_gen:], {h.sha256_bytes(pending): "pending.png",
                                                   h.sha256_bytes(after): "after.png",
                                                   h.sha256_bytes(first): "first.png"})),
         ["after.png", "pending.png"], "vanish: after the restore, each new file sent once, first.png not again")
    c.eq([n for n in h.listing(out) if n.endswith(".error.json")], [], "vanish: still no error sidecar")
    err = d.stderr_text()
    c.check("missing" in err, "vanish: the log says the folder went missing", "stderr: %s" % err.strip()[-400:])
    stop(c, d, "vanish")

    # ---- 4. mode: poll --------------------------------------------------------------------
    root, hot, out, state = ctx.folder("poll")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                          folders=[{"path": hot, "settle": "300ms", "mode": "poll", "poll_interval": "300ms"}])
    d = start(ctx, c, config, "poll")
    err = d.stderr_text()
    c.check("polling" in err, "poll: the log line says the folder is polled", "stderr: %s" % err.strip()[-400:])
    n_gen = len(api.generations())
    p1, p2 = h.png_image(40, 40, 450), h.png_image(40, 40, 451)
    drop_by_rename(hot, "p1.png", p1)
    h.write_bytes(os.path.join(hot, "p2.png"), p2)
    t0 = time.monotonic()
    ok = h.wait_until(lambda: all(os.path.exists(os.path.join(out, n)) for n in ("p1.json", "p2.json")), 15)
    c.check(ok, "poll: files renamed in and written in place are picked up",
            "after %.1f s the output holds %s" % (time.monotonic() - t0, h.listing(out)))
    time.sleep(1.0)
    c.eq(sorted(h.sent(api.generations()[n_gen:], {h.sha256_bytes(p1): "p1.png", h.sha256_bytes(p2): "p2.png"})),
         ["p1.png", "p2.png"], "poll: each sent exactly once (repeated polls do not resend)")
    stop(c, d, "poll")

    # ---- 5. replaced content, and a file deleted before submission (settle 1s) -------------
    root, hot, out, state = ctx.folder("replace")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                          folders=[{"path": hot, "settle": "1s"}])
    old = h.png_image(40, 40, 460)
    h.write_bytes(os.path.join(hot, "r.png"), old)
    d = start(ctx, c, config, "replace")
    sc_path = os.path.join(out, "r.json")
    c.check(h.wait_until(lambda: sidecar_sha(sc_path) == h.sha256_bytes(old), 15),
            "replace: r.png processed first", "output holds %s" % h.listing(out))
    n_gen = len(api.generations())
    new = h.png_image(44, 40, 461)
    with open(os.path.join(hot, "r.png"), "wb") as f:  # rewritten in place
        f.write(new)
    ok = h.wait_until(lambda: sidecar_sha(sc_path) == h.sha256_bytes(new), 15)
    c.check(ok, "replace: r.png rewritten in place is processed again (r.json's source_sha256 changes)",
            "r.json source_sha256 %s" % sidecar_sha(sc_path))
    time.sleep(0.5)
    c.eq(h.sent(api.generations()[n_gen:], {h.sha256_bytes(new): "new r.png", h.sha256_bytes(old): "old r.png"}),
         ["new r.png"], "replace: one call, with the new content")
    c.problems(h.output_problems(os.path.join(out, "r.jpeg"), h.sha256_bytes(new)), "replace: r.jpeg regenerated")
    c.same_names(h.listing(out), ["r.jpeg", "r.json"], "replace: the sidecar was replaced, not duplicated (no r-2.*)")

    n_gen = len(api.generations())
    gone = h.png_image(40, 40, 470)
    gpath = os.path.join(hot, "gone.png")
    t0 = time.monotonic()
    h.write_bytes(gpath, gone)
    time.sleep(0.15)
    os.unlink(gpath)
    c.check(time.monotonic() - t0 < 0.3, "gone: written then deleted within 300 ms", "took %.2f s" % (time.monotonic() - t0))
    time.sleep(2.5)
    c.eq(len(calls_for(api, h.sha256_bytes(gone))), 0, "gone: a file deleted before submission costs no call")
    c.eq(len(api.generations()) - n_gen, 0, "gone: no call at all")
    c.check(not any(n.startswith("gone") for n in h.listing(out)), "gone: no output or sidecar for it",
            "output holds %s" % h.listing(out))
    stop(c, d, "replace")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
