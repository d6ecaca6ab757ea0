#!/usr/bin/env python3
"""Copies in flight are paid once across a reload, and a copy is held only once it is valid.
(1) An image done earlier with prompt P1, a reload to P2, then two copies dropped together: one new
call (with P2); the second copy reuses the first copy's P2 result, not stopped by the older P1 record.
(2) A copy queued under the folder's prompt, a reload that changes it, then another copy: the two
are sent with the same prompt, so the later waits for the first: one call. (3) Copies of an image
that fails its own check (a side under 15 px) fail each on their own, none waits for another."""

import json
import os
import signal
import subprocess
import time

import harness as h

LATENCY_MS = 2500  # every generation answers this late
P1, P2 = "Turn it into a watercolour", "Turn it into a charcoal sketch"


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
    root = os.path.join(ctx.tmp, "twins-reload")
    hot1, hot2, hot3 = (os.path.join(root, n) for n in ("done", "queued", "small"))
    state = os.path.join(root, "state")
    for d in (hot1, hot2, hot3, state):
        os.makedirs(d)
    sock = os.path.join(root, "control")
    path = os.path.join(root, "seedreamd.yaml")

    def configure(prompt1, prompt2):
        # One generation at a time: in (2) a copy waits in the queue behind another image.
        ctx.write_config(path, api=api, state_dir=state, max_in_flight=1,
                         folders=[{"path": hot1, "prompt": prompt1},
                                  {"path": hot2, "prompt": prompt2}, {"path": hot3}])
        with open(path, "a", encoding="utf-8") as f:
            f.write("control_socket: %s\n" % json.dumps(sock))

    def reload(d, what):
        n = d.stderr_text().count("reloading")
        d.proc.send_signal(signal.SIGHUP)
        c.check(h.wait_until(lambda: d.stderr_text().count("reloading") > n, 5),
                "a reload: " + what, d.stderr_text()[-400:])
        time.sleep(1.0)  # read on a worker, then applied by the loop

    configure(P1, P1)
    d = ctx.start_daemon(path, name="twins-reload")
    c.require(d.wait_for(r"\bready\b", 15), "the daemon logs 'ready'", d.stderr_text()[-600:])

    # ---- 1. done with P1, reload to P2, two copies: one new call -----------------------------
    out1 = hot1 + "-out"
    data1 = h.png_image(40, 30, 911)
    # Named so that the folder's records list first.png before either copy (the order of a
    # hash table): the reuse that took the first record of the bytes found P1 and paid again.
    drop_together(hot1, ["first.png"], data1)
    c.check(h.wait_until(lambda: sidecar(out1, "first"), 15), "first.png done with P1",
            str(h.listing(out1)))
    configure(P2, P1)
    reload(d, "the folder's prompt is now P2")
    copies = ["a copy.png", "a copy 2.png"]
    drop_together(hot1, copies, data1)
    both = lambda: all(sidecar(out1, os.path.splitext(n)[0]) for n in copies)
    c.check(h.wait_until(both, 20), "the two copies are done", str(h.listing(out1)))
    calls = calls_for(api, data1)
    c.eq(len(calls), 2, "P1 once, then P2 once: the second copy is not paid again")
    c.eq([r.get("fields", {}).get("prompt") for r in calls], [P1, P2],
         "the new call is sent with P2")
    scs = [sidecar(out1, os.path.splitext(n)[0]) or {} for n in copies]
    paid = [n for n, x in zip(copies, scs) if "reused_from" not in x]
    c.eq(sorted(x.get("reused_from", "") for x in scs), [""] + paid,
         "one copy is paid, the other reuses its result")
    c.check(all(x.get("prompt") == P2 for x in scs), "both sidecars say P2", str(scs)[:400])
    c.check(not any(x.get("reused_from") == "first.png" for x in scs),
            "neither reuses the P1 result of first.png", str(scs)[:400])

    # ---- 2. a copy queued under P1, reload to P2, another copy: one call ---------------------
    out2 = hot2 + "-out"
    data2 = h.png_image(40, 30, 913)
    # Two other images ahead of it in the only generation slot: b.png waits over 2.5 s.
    for i, n in enumerate(("y.png", "z.png")):
        drop_together(hot2, [n], h.png_image(40, 30, 915 + i))
    seen = {}

    def ahead():
        items = seen["queue"] = ctl(ctx, sock, "queue").get("items", [])
        return any(i.get("folder") == hot2 and i.get("kind") == "in_flight" for i in items)

    c.check(h.wait_until(ahead, 10), "another image is in flight (the only generation slot)",
            str(seen.get("queue"))[:600])
    drop_together(hot2, ["b.png"], data2)

    def b_queued():
        items = seen["queue"] = ctl(ctx, sock, "queue").get("items", [])
        return any(i.get("folder") == hot2 and i.get("file") == "b.png" and
                   i.get("state") == "queued" for i in items)

    c.check(h.wait_until(b_queued, LATENCY_MS / 1000.0), "b.png waits in the queue behind y.png and z.png",
            str(seen.get("queue"))[:600])
    configure(P2, P2)
    reload(d, "the queued copy's folder prompt is now P2")
    drop_together(hot2, ["b copy.png"], data2)
    done2 = lambda: sidecar(out2, "b") and sidecar(out2, "b copy")
    c.check(h.wait_until(done2, 20), "both copies of b are done", str(h.listing(out2)))
    calls = calls_for(api, data2)
    c.eq(len(calls), 1, "a reload changed the prompt of both: one call")
    c.eq([r.get("fields", {}).get("prompt") for r in calls], [P2], "sent with P2")
    c.check(any("queued/b copy.png: the same image as b.png" in line
                for line in d.stderr_text().splitlines()),
            "the later copy waited for the queued one", "")
    c.eq((sidecar(out2, "b copy") or {}).get("reused_from"), "b.png",
         "and reuses its result")

    # ---- 3. copies of an image that fails its own check: none waits ---------------------------
    out3 = hot3 + "-out"
    tiny = h.png_image(8, 8, 914)  # a side under 15 px: refused here, before any call
    names = ["t.png", "t copy.png", "t copy 2.png", "t copy 3.png"]
    drop_together(hot3, names, tiny)
    failed = lambda: all(os.path.exists(os.path.join(out3, os.path.splitext(n)[0] + ".error.json"))
                         for n in names)
    c.check(h.wait_until(failed, 15), "every copy of the tiny image fails",
            str(h.listing(out3)))
    c.eq(len(calls_for(api, tiny)), 0, "no call for it")
    held = [line for line in d.stderr_text().splitlines()
            if "small/t" in line and "the same image as" in line]
    c.eq(held, [], "none was held as a copy of another (each is judged on its own)")
    rc, _ = d.terminate(timeout=8)
    c.eq(rc, 0, "exits 0 on SIGTERM")


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
