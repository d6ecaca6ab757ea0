#!/usr/bin/env python3
"""A group's fit against storage that fails or changes under it (group fitting, review follow-up;
faultfs drives the timing). A fit that fails here rather than on the image (the original cannot be
read: EIO) is not a refusal, nor is the same fault when the group is checked again: no .error.json,
the group is held and retried, and once the fault ends it is sent with one call. An image already
fitted that is deleted while the next one is being converted makes the group look again at once:
the rest is not fitted for nothing, and the group goes out with the images it has then; so does an
image deleted while it is being fitted, even where no event reports the deletion."""

import os
import re
import shutil
import sys
import time

import harness as h
from test_fit import marked_png, run

# fit.c decodes through this path (the descriptor it read, not the name): only a fit opens it.
FIT_OPEN = "/proc/self/fd"


def heic(ctx, path, dark):
    png = path + ".png"
    marked_png(png, 64, 48, dark=dark)
    run("heif-enc", "-q", "90", png, "-o", path)
    os.unlink(png)


def test_local_fault(ctx):
    """b.heic cannot be read (EIO) while it is being fitted, and still when the group is checked
    again: held, retried, sent once the fault ends."""
    c = ctx.checks
    api = ctx.start_api(name="fault")
    fs = ctx.faultfs("fault")
    root, hot, out, state = ctx.folder("fault")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "group": "subfolder"}])
    make = os.path.join(ctx.tmp, "make-fault")
    os.makedirs(make)
    # Made outside the watched folder and moved in whole: the group is checked as it is.
    g_tmp = os.path.join(make, "g")
    os.makedirs(g_tmp)
    heic(ctx, os.path.join(g_tmp, "a.heic"), 40)
    heic(ctx, os.path.join(g_tmp, "b.heic"), 80)
    g = os.path.join(hot, "g")
    b = os.path.join(g, "b.heic")
    # The group's check reads both images unhindered; a.heic's fit then waits on its decode, and
    # meanwhile b.heic becomes unreadable: its own fit fails hashing it.
    fs.set("stall open %s" % FIT_OPEN)
    daemon = ctx.start_daemon(config, faultfs=fs)
    c.require(daemon.wait_for(r"ready", 10), "daemon: ready")
    os.rename(g_tmp, g)
    stalled = h.wait_until(lambda: any(l.startswith("stall open " + FIT_OPEN) for l in fs.applied()), 20)
    c.require(stalled, "a.heic's fit reached its decode", daemon.stderr_text()[-1500:])
    fs.set("fail read %s EIO" % b)
    failed = h.wait_until(lambda: any(l.startswith("fail read " + b) for l in fs.applied()), 20)
    c.check(failed, "b.heic's fit was refused a read", daemon.stderr_text()[-1500:])
    held = daemon.wait_for(r"converting b\.heic of group \S+ failed here "
                           r"\(LocalValidation\.Unreadable: [^)]*\); trying again", 10)
    c.check(held, "the log says b.heic's fit failed here and is retried", daemon.stderr_text()[-1500:])
    err = os.path.join(out, "g.error.json")
    c.check(not os.path.exists(err), "no g.error.json while the fault lasts",
            h.read_bytes(err).decode("utf-8", "replace") if os.path.exists(err) else "")
    # Still unreadable when the group is looked at again: its check holds it too, no refusal.
    rechecked = daemon.wait_for(r"group \S+/g cannot be read \(Input/output error\); looking again", 20)
    c.check(rechecked, "the group's check 10 s later cannot read b.heic either and holds it",
            daemon.stderr_text()[-1500:])
    c.check(not os.path.exists(err), "no g.error.json from that check either",
            h.read_bytes(err).decode("utf-8", "replace") if os.path.exists(err) else "")
    c.eq(len(api.generations()), 0, "nothing is sent while b.heic cannot be read")
    fs.clear()
    done = h.wait_until(lambda: os.path.exists(os.path.join(out, "g.json")), 40)
    c.check(done, "the group is sent once the fault ends", daemon.stderr_text()[-2000:])
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "daemon: exits 0 on SIGTERM")
    c.check(not os.path.exists(err), "no g.error.json after the fault either")
    gens = api.generations()
    c.eq(len(gens), 1, "exactly one API call")
    if gens:
        imgs = gens[0].get("images") or []
        c.eq([i.get("format") for i in imgs], ["jpeg", "jpeg"], "both HEICs were sent fitted, as JPEG")
        c.check(len(imgs) == 2 and imgs[1].get("sha256") != h.sha256_file(b),
                "what was sent for b.heic is not the HEIC", repr(imgs))
    sc = h.read_json(os.path.join(out, "g.json")) if done else {}
    c.eq([(s.get("name"), s.get("sha256")) for s in sc.get("sources") or []],
         [("a.heic", h.sha256_file(os.path.join(g, "a.heic"))), ("b.heic", h.sha256_file(b))],
         "g.json lists both sources with their originals' sha256")


def test_member_removed(ctx):
    """b.heic is fitted, then deleted while c.heic is being converted: looked at again at once."""
    c = ctx.checks
    api = ctx.start_api(name="removed")
    fs = ctx.faultfs("removed")
    root, hot, out, state = ctx.folder("removed")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "group": "subfolder"}])
    make = os.path.join(ctx.tmp, "make-removed")
    g_tmp = os.path.join(make, "g")
    os.makedirs(g_tmp)
    h.write_bytes(os.path.join(g_tmp, "a.png"), h.png_image(40, 30, 7))
    heic(ctx, os.path.join(g_tmp, "b.heic"), 50)
    heic(ctx, os.path.join(g_tmp, "c.heic"), 90)
    g = os.path.join(hot, "g")
    # Every decode waits a while: room to delete b.heic after its fit, before c.heic's ends.
    fs.set("delay open %s 40" % FIT_OPEN)
    daemon = ctx.start_daemon(config, faultfs=fs)
    c.require(daemon.wait_for(r"ready", 10), "daemon: ready")
    os.rename(g_tmp, g)
    c.require(daemon.wait_for(r"converted b\.heic of group", 30), "b.heic is fitted",
              daemon.stderr_text()[-1500:])
    os.unlink(os.path.join(g, "b.heic"))
    done = h.wait_until(lambda: os.path.exists(os.path.join(out, "g.json")), 40)
    c.check(done, "the group is done with the images it has", daemon.stderr_text()[-2000:])
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "daemon: exits 0 on SIGTERM")
    log = daemon.stderr_text()
    c.eq(len(re.findall(r"converted c\.heic of group", log)), 1,
         "c.heic is converted once: not first for a group that lost b.heic")
    c.check(re.search(r"group \S+ changed while (c\.heic was|it was) being converted", log),
            "the log says the group changed while it was being converted", log[-2000:])
    gens = api.generations()
    c.eq(len(gens), 1, "exactly one API call")
    if gens:
        imgs = gens[0].get("images") or []
        c.eq([i.get("format") for i in imgs], ["png", "jpeg"], "a.png as it is, then c.heic fitted")
        c.check(imgs and imgs[0].get("sha256") == h.sha256_file(os.path.join(g, "a.png")),
                "the first image is a.png's exact bytes", repr(imgs))
    sc = h.read_json(os.path.join(out, "g.json")) if done else {}
    c.eq([s.get("name") for s in sc.get("sources") or []], ["a.png", "c.heic"],
         "g.json lists the two images left")


def test_member_gone_unseen(ctx):
    """a.heic is deleted while it is being fitted, in a folder whose deletions nobody reports (poll
    mode, no scan due): the fit worker itself sees the name is gone and the group is looked at
    again, rather than a.heic's fit counting and the group going on without the image it names."""
    c = ctx.checks
    api = ctx.start_api(name="unseen")
    fs = ctx.faultfs("unseen")
    root, hot, out, state = ctx.folder("unseen")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "group": "subfolder", "mode": "poll",
                                        "poll_interval": "1h"}])
    g = os.path.join(hot, "g")
    os.makedirs(g)
    heic(ctx, os.path.join(g, "a.heic"), 60)
    h.write_bytes(os.path.join(g, "b.png"), h.png_image(40, 30, 4))
    fs.set("stall open %s" % FIT_OPEN)
    daemon = ctx.start_daemon(config, faultfs=fs)
    c.require(daemon.wait_for(r"ready", 10), "daemon: ready")
    stalled = h.wait_until(lambda: any(l.startswith("stall open " + FIT_OPEN) for l in fs.applied()), 20)
    c.require(stalled, "a.heic's fit reached its decode", daemon.stderr_text()[-1500:])
    os.unlink(os.path.join(g, "a.heic"))
    fs.clear()
    seen = daemon.wait_for(r"group \S+ changed while a\.heic was being converted", 20)
    c.check(seen, "the fit noticed a.heic is gone and the group is looked at again",
            daemon.stderr_text()[-1500:])
    done = h.wait_until(lambda: os.path.exists(os.path.join(out, "g.json")), 20)
    c.check(done, "the group is done with the image it has", daemon.stderr_text()[-1500:])
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "daemon: exits 0 on SIGTERM")
    log = daemon.stderr_text()
    c.check(not re.search(r"converted a\.heic", log), "a.heic's fit of a deleted file did not count",
            log[-1500:])
    gens = api.generations()
    c.eq(len(gens), 1, "exactly one API call")
    if gens:
        c.eq([i.get("sha256") for i in gens[0].get("images") or []],
             [h.sha256_file(os.path.join(g, "b.png"))], "it carries b.png alone")


def test_single_local_fault(ctx):
    """The same for a single file: y.heic cannot be read while it is being fitted (x.heic's fit
    ahead of it holds the one fit worker meanwhile): no .error.json, converted and sent later."""
    c = ctx.checks
    api = ctx.start_api(name="single")
    fs = ctx.faultfs("single")
    root, hot, out, state = ctx.folder("single")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    make = os.path.join(ctx.tmp, "make-single")
    os.makedirs(make)
    heic(ctx, os.path.join(make, "x.heic"), 30)
    heic(ctx, os.path.join(make, "y.heic"), 70)
    y = os.path.join(hot, "y.heic")
    fs.set("stall open %s" % FIT_OPEN)
    daemon = ctx.start_daemon(config, faultfs=fs)
    c.require(daemon.wait_for(r"ready", 10), "daemon: ready")
    os.rename(os.path.join(make, "x.heic"), os.path.join(hot, "x.heic"))
    stalled = h.wait_until(lambda: any(l.startswith("stall open " + FIT_OPEN) for l in fs.applied()), 20)
    c.require(stalled, "x.heic's fit reached its decode", daemon.stderr_text()[-1500:])
    # y.heic's check reads it (logged by a rule that delays nothing) before its fit can start.
    fs.set("stall open %s" % FIT_OPEN, "delay read %s 0" % y)
    os.rename(os.path.join(make, "y.heic"), y)
    looked = h.wait_until(lambda: any(l.startswith("delay read " + y) for l in fs.applied()), 20)
    c.require(looked, "y.heic's check read it", daemon.stderr_text()[-1500:])
    # Its check reads the head, then the tail: let both happen before the fault starts.
    time.sleep(1)
    fs.set("fail read %s EIO" % y)
    held = daemon.wait_for(r"converting \S+/y\.heic failed here \(LocalValidation\.Unreadable: "
                           r"[^)]*\); trying again", 20)
    c.check(held, "the log says y.heic's fit failed here and is retried", daemon.stderr_text()[-1500:])
    err = os.path.join(out, "y.error.json")
    c.check(not os.path.exists(err), "no y.error.json",
            h.read_bytes(err).decode("utf-8", "replace") if os.path.exists(err) else "")
    fs.clear()
    done = h.wait_until(lambda: os.path.exists(os.path.join(out, "y.json")), 30)
    c.check(done, "y.heic is converted and sent once the fault ends", daemon.stderr_text()[-2000:])
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "daemon: exits 0 on SIGTERM")
    c.check(not os.path.exists(err), "no y.error.json after the fault either")
    c.eq(len(api.generations()), 2, "two API calls: x.heic and y.heic, once each")


def test_all(ctx):
    c = ctx.checks
    for tool in ("heif-enc", "vips"):
        c.require(shutil.which(tool), "%s is installed (scripts/install-deps.sh)" % tool)
    test_local_fault(ctx)
    test_member_removed(ctx)
    test_member_gone_unseen(ctx)
    test_single_local_fault(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test_all, __doc__))
