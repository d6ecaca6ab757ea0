#!/usr/bin/env python3
"""Copies of one image in flight at once are paid once (spend safety): the copies checked while
another job of the folder is paying for the same bytes wait for it (state "twin" in seedreamctl
queue, not in flight) and then reuse its result. If that job fails, the first waiting copy is judged
on its own: it is sent (documented in the README), the others wait for it. Copies with different per-file prompts are other
results: both are sent, neither waits. A reload and a stop while a copy waits lose nothing (the
next run reuses the result); in a --once run copies are paid once too."""

import json
import os
import signal
import subprocess

import harness as h

LATENCY_MS = 2500  # every generation answers this late: the copies are checked meanwhile


def ctl(ctx, sock, *args):
    binary = os.path.join(os.path.dirname(ctx.binary), "seedreamctl")
    p = subprocess.run([binary, "-s", sock, "--json"] + list(args), capture_output=True,
                       timeout=20, cwd=ctx.tmp, check=False)
    try:
        return json.loads(p.stdout.decode("utf-8", "replace"))
    except ValueError:
        return {}


def calls_for(api, data):
    return [r for r in api.generations() if r.get("image_sha256") == h.sha256_bytes(data)]


def sidecar(out, stem):
    path = os.path.join(out, stem + ".json")
    return h.read_json(path) if os.path.exists(path) else None


def drop_together(hot, names, data):
    """Written under hidden names, then renamed in one after the other: offered at once."""
    for n in names:
        h.write_bytes(os.path.join(hot, "." + n + ".part"), data)
    for n in names:
        os.rename(os.path.join(hot, "." + n + ".part"), os.path.join(hot, n))


def test(ctx):
    c = ctx.checks
    api = ctx.start_api(latency_ms=LATENCY_MS)
    root = os.path.join(ctx.tmp, "twins")
    hot, hot_fail, hot_prompt = (os.path.join(root, n) for n in ("hot", "fail", "prompts"))
    state = os.path.join(root, "state")
    for d in (hot, hot_fail, hot_prompt, state):
        os.makedirs(d)
    sock = os.path.join(root, "control")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}, {"path": hot_fail},
                                       {"path": hot_prompt, "prompt_file": "replace"}])
    with open(config, "a", encoding="utf-8") as f:
        f.write("control_socket: %s\n" % json.dumps(sock))
    d = ctx.start_daemon(config, name="twins")
    c.require(d.wait_for(r"\bready\b", 15), "the daemon logs 'ready'", d.stderr_text()[-600:])
    out = hot + "-out"

    # ---- 1. three copies dropped together: one call, three outputs -------------------------
    data = h.png_image(40, 30, 901)
    names = ["a.png", "a copy.png", "a copy 2.png"]
    drop_together(hot, names, data)
    seen = {}

    def twins_held():
        q = ctl(ctx, sock, "queue")
        items = [i for i in q.get("items", []) if i.get("folder") == hot]
        seen["queue"] = items
        held = [i for i in items if i.get("kind") == "twin" and i.get("state") == "twin"]
        flying = [i for i in items if i.get("kind") == "in_flight"]
        return len(held) == 2 and len(flying) == 1

    c.check(h.wait_until(twins_held, LATENCY_MS / 1000.0 + 1),
            "seedreamctl queue: while one copy is in flight the two others wait as 'twin' "
            "(not in flight)", str(seen.get("queue"))[:600])
    st = ctl(ctx, sock, "status")
    fo = [f for f in st.get("folders", []) if f.get("path") == hot]
    c.check(fo and fo[0].get("twin") == 2 and fo[0].get("in_flight") == 1 and
            st.get("totals", {}).get("twin") == 2,
            "seedreamctl status: twin 2, in_flight 1", str(fo)[:400])
    done = lambda: all(sidecar(out, os.path.splitext(n)[0]) for n in names)
    c.check(h.wait_until(done, 15), "three copies: a sidecar for each", str(h.listing(out)))
    c.eq(len(calls_for(api, data)), 1, "three copies dropped together: exactly one API call")
    scs = {n: sidecar(out, os.path.splitext(n)[0]) or {} for n in names}
    paid = [n for n in names if "reused_from" not in scs[n]]
    c.eq(len(paid), 1, "one sidecar is of the paid result")
    reused = [scs[n].get("reused_from") for n in names if n not in paid]
    c.eq(reused, paid * 2, "the two others say reused_from the paid one")
    outputs = [os.path.join(out, os.path.splitext(n)[0] + ".jpeg") for n in names]
    c.check(all(os.path.exists(p) for p in outputs) and
            len({h.sha256_file(p) for p in outputs}) == 1,
            "three outputs, the same image", str(h.listing(out)))

    # ---- 2. the paying copy fails: the first waiting one is judged on its own (and sent) ----
    # while the third goes on waiting, now for it; it fails too, and the third is sent.
    fail_out = hot_fail + "-out"
    data2 = h.png_image(40, 30, 902)
    fail_names = ["b", "b copy", "b copy 2"]
    api.add_faults(["400:InputImageSensitiveContentDetected"] * 2)
    drop_together(hot_fail, [n + ".png" for n in fail_names], data2)
    def ends(stem):
        return [e for e in (".json", ".error.json") if os.path.exists(os.path.join(fail_out, stem + e))]

    ended = lambda: sum(len(ends(n)) for n in fail_names) == 3
    c.check(h.wait_until(ended, 25), "the failed copies and their twin all end",
            str(h.listing(fail_out)))
    errs = [s for s in fail_names if os.path.exists(os.path.join(fail_out, s + ".error.json"))]
    oks = [s for s in fail_names if sidecar(fail_out, s)]
    c.eq(len(errs), 2, "the copies sent first failed (the stand-in's 400s): their error records")
    c.eq(len(oks), 1, "the last was then sent on its own and succeeded")
    c.check(oks and "reused_from" not in (sidecar(fail_out, oks[0]) or {}),
            "and its sidecar is an ordinary one (nothing to reuse from a failure)", str(oks))
    calls = calls_for(api, data2)
    c.eq(len(calls), 3, "three calls: the failed ones, then the last copy's own")
    c.eq([r.get("fault") or "ok" for r in calls],
         ["400:InputImageSensitiveContentDetected"] * 2 + ["ok"], "answered 400, 400, then ok")
    starts = [r.get("time", 0) for r in calls]
    c.check(all(b - a >= LATENCY_MS / 1000.0 * 0.9 for a, b in zip(starts, starts[1:])),
            "each call started only after the one before was answered (the copies waited)",
            str(starts))
    held = [line for line in d.stderr_text().splitlines()
            if "/fail/b" in line and "the same image as" in line]
    c.eq(len(held), 2, "two copies were held once each; a failure hands the lead on, the other "
         "copy keeps waiting (not looked at again)")

    # ---- 3. per-file prompts: different prompts are different results, not twins ----------
    prompt_out = hot_prompt + "-out"
    data3 = h.png_image(40, 30, 903)
    h.write_bytes(os.path.join(hot_prompt, "c.txt"), b"Paint it red")
    h.write_bytes(os.path.join(hot_prompt, "c copy.txt"), b"Paint it blue")
    drop_together(hot_prompt, ["c.png", "c copy.png"], data3)
    both = lambda: sidecar(prompt_out, "c") and sidecar(prompt_out, "c copy")
    c.check(h.wait_until(both, 15), "two copies with their own prompts: both done",
            str(h.listing(prompt_out)))
    c.eq(len(calls_for(api, data3)), 2, "different per-file prompts: both sent")
    c.eq(sorted(r.get("fields", {}).get("prompt") for r in calls_for(api, data3)), ["Paint it blue", "Paint it red"],
         "each with its own prompt")
    c.check(not any("reused_from" in (sidecar(prompt_out, s) or {}) for s in ("c", "c copy")),
            "neither reuses the other's result", "")
    c.check(not any("prompts/c" in line and "the same image as" in line
                    for line in d.stderr_text().splitlines()),
            "neither waited for the other (no 'the same image as' logged)", "")
    # ---- 4. a reload, then a stop, while a copy waits: nothing lost, nothing paid twice ----
    data4 = h.png_image(40, 30, 904)
    drop_together(hot, ["d.png", "d copy.png"], data4)

    def one_held():
        items = ctl(ctx, sock, "queue").get("items", [])
        return any(i.get("state") == "twin" and i.get("file", "").startswith("d") for i in items)

    c.check(h.wait_until(one_held, LATENCY_MS / 1000.0 + 1), "stop: one copy of d waits as 'twin'",
            "")
    d.proc.send_signal(signal.SIGHUP)
    c.check(d.wait_for(r"reload", 5), "a reload while it waits", d.stderr_text()[-400:])
    rc, took = d.terminate(timeout=8)
    c.eq(rc, 0, "exits 0 on SIGTERM while a copy waits (the paying one finishes first)")
    stems = [s for s in ("d", "d copy") if sidecar(out, s)]
    c.eq(len(stems), 1, "the copy in flight was written; the waiting one was left for next time")
    res = ctx.run_once(config)
    c.eq(res.rc, 0, "the next run (--once) exits 0")
    c.eq(len(calls_for(api, data4)), 1, "and the copy left waiting costs no call: one in all")
    left = [s for s in ("d", "d copy") if s not in stems]
    c.eq((sidecar(out, left[0]) or {}).get("reused_from") if left else None,
         stems[0] + ".png" if stems else "?", "it reuses the result written before the stop")


    # ---- 5. --once: copies in one run are paid once, and the run ends with both done -------
    hot_once = os.path.join(root, "once")
    os.makedirs(hot_once)
    data5 = h.png_image(40, 30, 905)
    drop_together(hot_once, ["e.png", "e copy.png"], data5)
    config5 = ctx.write_config(os.path.join(root, "once.yaml"), api=api, state_dir=state,
                               folders=[{"path": hot_once}])
    res = ctx.run_once(config5)
    c.eq(res.rc, 0, "--once with two copies exits 0")
    c.eq(len(calls_for(api, data5)), 1, "--once: two copies, one call")
    scs = [sidecar(hot_once + "-out", s) or {} for s in ("e", "e copy")]
    c.eq(sorted(bool(x.get("reused_from")) for x in scs), [False, True],
         "--once: both done, one reusing the other's result")

if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
