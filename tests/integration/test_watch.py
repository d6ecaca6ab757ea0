#!/usr/bin/env python3
"""seedreamd watching a folder: files renamed in and written slowly are each sent exactly once;
a replaced file is sent again; SIGTERM stops it cleanly."""

import os
import sys
import time

import harness as h


def drop_by_rename(hot, name, data):
    tmp = os.path.join(hot, ".%s.incoming" % name)  # hidden: ignored until renamed
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(hot, name))


def write_slowly(path, data, pieces=10, pause=0.1):
    """Open, append a piece, close, sleep; repeated, so the file grows over about a second with
    several close-after-write events on incomplete content."""
    step = -(-len(data) // pieces)
    for i in range(0, len(data), step):
        with open(path, "ab") as f:
            f.write(data[i:i + step])
        time.sleep(pause)



def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("watch")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    files = {"pre-existing.png": h.sample("sunset.png")}
    h.write_bytes(os.path.join(hot, "pre-existing.png"), files["pre-existing.png"])

    d = ctx.start_daemon(config, name="watch")
    ready = d.wait_for(r"\bready\b", 15)
    c.require(ready, "the daemon logs 'ready' within 15 s",
              "exit status %s; stderr: %s" % (d.proc.poll(), d.stderr_text()[-600:]))

    names = ["drop-%d.png" % i for i in range(1, 5)] + ["drop-5.jpg"]
    for i, name in enumerate(names):
        data = h.jpeg_image(48, 40, 50 + i) if name.endswith(".jpg") else h.png_image(40 + 4 * i, 36, 50 + i)
        files[name] = data
        drop_by_rename(hot, name, data)
    slow = h.sample("mandelbrot.png")
    files["slow.png"] = slow
    write_slowly(os.path.join(hot, "slow.png"), slow)
    # names the daemon must leave alone, arriving while it runs
    h.write_bytes(os.path.join(hot, "x.png.part"), h.png_image(30, 30, 90))
    h.write_bytes(os.path.join(hot, "notes.txt"), b"hello\n")
    drop_by_rename(hot, ".hidden.png", h.png_image(30, 30, 91))
    ignored_shas = {h.sha256_file(os.path.join(hot, n)) for n in ("x.png.part", "notes.txt", ".hidden.png")}

    stems = [n.rsplit(".", 1)[0] for n in files]
    want = sorted([s + ".json" for s in stems] + [s + ".jpeg" for s in stems])
    done = h.wait_until(lambda: all(os.path.exists(os.path.join(out, s + ".json")) for s in stems), 25)
    c.check(done, "all 7 files (1 present at start, 5 renamed in, 1 written slowly) get a sidecar within 25 s",
            "present: %s" % h.listing(out))
    time.sleep(1.0)  # anything extra would show up now
    c.check(d.proc.poll() is None, "the daemon is still running", "exit status %s" % d.proc.poll())

    gens = api.generations()
    shas = {n: h.sha256_bytes(data) for n, data in files.items()}
    counts = {n: sum(1 for r in gens if r.get("image_sha256") == s) for n, s in shas.items()}
    c.problems(["%s sent %d times" % (n, k) for n, k in counts.items() if k != 1],
               "each file was submitted exactly once")
    strays = [r for r in gens if r.get("image_sha256") not in shas.values()]
    c.problems(["a request with %d bytes of unknown content (sha256 %s...)%s" %
                (r.get("image_len", 0), r.get("image_sha256", "")[:12],
                 " = an ignored file" if r.get("image_sha256") in ignored_shas else
                 " (a partial read of slow.png?)" if r.get("image_len", 0) < len(slow) else "")
                for r in strays], "no other content was sent (no partial file, no ignored name)")
    c.eq(len(gens), 7, "exactly 7 generation calls")
    c.same_names(h.listing(out), want, "the output folder holds one .jpeg and one .json per file")
    problems = []
    for n in files:
        s = n.rsplit(".", 1)[0]
        problems += h.output_problems(os.path.join(out, s + ".jpeg"), shas[n])
        sc = os.path.join(out, s + ".json")
        if os.path.exists(sc):
            rec = next((r for r in gens if r.get("image_sha256") == shas[n]), None)
            problems += ["%s: %s" % (n, p) for p in h.success_sidecar_problems(
                h.read_json(sc), src_path=os.path.join(hot, n), source=n, output=s + ".jpeg", record=rec)]
    c.problems(problems, "outputs come from their own sources and sidecars are complete")

    # a file replaced (by rename) while watching is sent again
    n_before = len(gens)
    new = h.png_image(52, 30, 77)
    drop_by_rename(hot, "drop-1.png", new)
    sc_path = os.path.join(out, "drop-1.json")
    updated = h.wait_until(lambda: os.path.exists(sc_path) and
                         h.read_json(sc_path).get("source_sha256") == h.sha256_bytes(new), 15)
    c.check(updated, "a file replaced while watching is processed again (its sidecar updated)",
            "drop-1.json has source_sha256 %s" % (h.read_json(sc_path).get("source_sha256")
                                                  if os.path.exists(sc_path) else "(none)"))
    time.sleep(0.5)
    again = api.generations()[n_before:]
    c.eq(h.sent(again, {h.sha256_bytes(new): "the new drop-1.png"}), ["the new drop-1.png"],
         "the replacement cost exactly 1 call")
    c.problems(h.output_problems(os.path.join(out, "drop-1.jpeg"), h.sha256_bytes(new)),
               "drop-1.jpeg was regenerated from the new content")

    rc, took = d.terminate(timeout=8)
    c.check(rc == 0 and took < 5, "SIGTERM: exits 0 within 5 s",
            "exit status %s after %.1f s" % ("(killed)" if rc is None else rc, took))
    c.problems(h.leftovers(out), "no hidden or temporary file left in the output folder")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
