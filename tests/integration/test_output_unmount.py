#!/usr/bin/env python3
"""An output share that goes away (issue 9, finding 3). The output is a mount (a tmpfs reached by a
bind mount); after three results it is unmounted, leaving the bare mount point. A new image then
waits: no generation, nothing written on the bare mount point, and STATUS= and the log name the
folder and the reason. A restart during the outage also pauses instead of paying for everything
again. When the share is back, the new image is processed and the three old ones are not paid
again: both when it comes back as another device (a new tmpfs holding the old content) and as the
very same one (the records read on the bare mount point during the outage must be read again).
Needs root (mount)."""

import os
import shutil
import subprocess
import sys
import time

import harness as h
from test_systemd import NotifySocket


def mount(*args):
    subprocess.run(["mount"] + list(args), check=True)


def start(ctx, cfg, notify, name):
    env = ctx.env()
    env["NOTIFY_SOCKET"] = notify.path
    return h.Daemon(ctx, [ctx.binary, "-c", cfg], env, name)


def status_with(notify, text, start=0, timeout=10.0):
    return notify.wait(lambda m: text in m["fields"].get("STATUS", ""), start, timeout) is not None


def test(ctx):
    if os.geteuid() != 0:
        print("skip - needs root to mount tmpfs (run as root, as CI does)")
        return
    scenario(ctx, same_share=False)
    scenario(ctx, same_share=True)


def scenario(ctx, same_share):
    c = ctx.checks
    print("# the share comes back as %s" % ("the same one" if same_share else "another device"),
          flush=True)
    api = ctx.start_api("api-same" if same_share else "api")
    root, hot, out, state = ctx.folder("outmount-same" if same_share else "outmount")
    os.makedirs(out)
    store1, store2 = os.path.join(root, "store1"), os.path.join(root, "store2")
    for p in (store1, store2):
        os.makedirs(p)
    mounts = []
    try:
        mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", store1)
        mounts.append(store1)
        mount("--bind", store1, out)
        mounts.append(out)
        cfg = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                               folders=[{"path": hot}])
        with open(cfg, "a", encoding="utf-8") as fh:
            fh.write("min_free_space: 1MiB\n")  # the share is a 16 MiB tmpfs
        notify = NotifySocket(root)
        d = start(ctx, cfg, notify, "first")
        c.require(d.wait_for(r"\bready\b", 15), "the daemon starts", d.stderr_text()[-600:])
        for i in range(3):
            h.write_bytes(os.path.join(hot, "p%d.png" % i), h.png_image(40 + i, 36, 30 + i))
        c.require(h.wait_until(lambda: all(os.path.exists(os.path.join(out, "p%d.json" % i))
                                           for i in range(3)), 20),
                  "three images processed onto the output share", h.listing(out))
        c.eq(len(api.generations()), 3, "three generations")

        # ---- the share goes away --------------------------------------------------------
        seen = notify.count()
        subprocess.run(["umount", "-l", out], check=True)
        mounts.remove(out)
        c.check(status_with(notify, "paused", seen, 10),
                "STATUS= says the folder is paused within 10 s of the unmount",
                "; ".join(m["fields"].get("STATUS", "") for m in notify.snapshot()[seen:]))
        st = [m["fields"].get("STATUS", "") for m in notify.snapshot()[seen:] if "paused" in
              m["fields"].get("STATUS", "")]
        c.check(bool(st) and hot in st[-1] and out in st[-1],
                "STATUS= names the folder and its output", st[-1] if st else "none")
        c.check(d.wait_for(r"paused.*output", 5), "the log says the folder is paused because of its output",
                d.stderr_text()[-600:])
        h.write_bytes(os.path.join(hot, "new.png"), h.png_image(60, 44, 99))
        time.sleep(3)
        c.eq(len(api.generations()), 3, "no generation while the output share is away")
        c.eq(os.listdir(out), [], "nothing written on the bare mount point")
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly during the outage")

        # ---- a restart during the outage ------------------------------------------------
        d = start(ctx, cfg, notify, "restart")
        c.require(d.wait_for(r"\bready\b", 15), "the daemon starts again during the outage",
                  d.stderr_text()[-600:])
        time.sleep(3)
        c.eq(len(api.generations()), 3, "a restart during the outage pays for nothing")
        c.eq(os.listdir(out), [], "still nothing on the bare mount point")
        c.check("paused" in d.stderr_text(), "the restarted daemon says the folder is paused",
                d.stderr_text()[-600:])

        # ---- the share comes back (the same, or another tmpfs with the old content) ------
        if same_share:
            mount("--bind", store1, out)
        else:
            mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", store2)
            mounts.append(store2)
            for name in os.listdir(store1):
                shutil.copy2(os.path.join(store1, name), os.path.join(store2, name))
            mount("--bind", store2, out)
        mounts.append(out)
        c.check(h.wait_until(lambda: os.path.exists(os.path.join(out, "new.json")), 15),
                "the new image is processed within 15 s of the share coming back", h.listing(out))
        time.sleep(1.5)
        gens = api.generations()
        c.eq(len(gens), 4, "four generations in all: the old three were not paid again")
        want = h.sha256_file(os.path.join(hot, "new.png"))
        c.check(bool(gens) and gens[-1].get("image_sha256") == want, "the fourth was the new image",
                str(gens[-1].get("image_sha256") if gens else None))
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")
        notify.close()
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", m], check=False)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
