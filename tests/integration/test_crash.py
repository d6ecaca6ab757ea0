#!/usr/bin/env python3
"""SIGKILL and restart. 30 files, the API answering in 300 ms, max_in_flight 4: the daemon is
killed at three different moments, then run again with --once on the same config. Every input
must end with exactly one sidecar, no final name may hold a partial file, no temporary file may
stay behind, and the paid generations may exceed the files by at most what was in flight at the
kill. Then a download stalled by the API (fault slowdl) when the daemon is killed: after the
restart the result must be downloaded, not generated again (needs the journal in state_dir)."""

import os
import random
import signal
import sys
import time

import harness as h

N_FILES = 30
MAX_IN_FLIGHT = 4
KILL_AFTER = (1, 5, 13)  # sidecars present when the kill comes (plus a random 0-250 ms)



def all_files(folder):
    out = []
    for dirpath, dirs, files in os.walk(folder):
        for n in files:
            out.append(os.path.relpath(os.path.join(dirpath, n), folder))
    return sorted(out)


def is_hidden_tmp(rel):
    base = os.path.basename(rel)
    return base.startswith(".") and base.endswith(".tmp")


def output_state_problems(out):
    """Partial files under final names, and visible names that are neither results nor sidecars."""
    p = []
    for rel in all_files(out):
        path = os.path.join(out, rel)
        if is_hidden_tmp(rel):
            continue
        if rel.endswith(".jpeg"):
            data = h.read_bytes(path)
            if not (data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")):
                p.append("%s is not a complete JPEG (%d bytes, ends %s)" % (rel, len(data), data[-2:].hex()))
        elif rel.endswith(".json"):
            try:
                h.read_json(path)
            except ValueError as e:
                p.append("%s is not complete JSON (%s)" % (rel, e))
        else:
            p.append("%s: a visible file that is neither a result nor a sidecar" % rel)
    return p


def sidecars(out):
    return [n for n in h.listing(out) if n.endswith(".json")]


def kill(d):
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.out.close()
    d.err.close()


def test(ctx):
    c = ctx.checks
    seed = int(os.environ.get("SEEDREAMD_CRASH_SEED", str(int(time.time()) % 100000)))
    rng = random.Random(seed)
    print("# random seed %d (set SEEDREAMD_CRASH_SEED to repeat)" % seed, flush=True)
    table = []

    for rnd, kill_after in enumerate(KILL_AFTER):
        tag = "kill%d" % (rnd + 1)
        api = ctx.start_api(name=tag, latency_ms=300)
        root, hot, out, state = ctx.folder(tag)
        config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                                  folders=[{"path": hot}], max_in_flight=MAX_IN_FLIGHT, retries=3)
        files = {}
        for i in range(N_FILES):
            data = h.png_image(32 + i % 7, 32 + i // 7, 1000 * (rnd + 1) + i)
            files["f%02d.png" % i] = data
            h.write_bytes(os.path.join(hot, "f%02d.png" % i), data)
        by_sha = {h.sha256_bytes(v): k for k, v in files.items()}
        before = h.snapshot(hot)

        d = ctx.start_daemon(config, name=tag)
        c.require(d.wait_for(r"\bready\b", 15), "%s: the daemon logs 'ready'" % tag,
                  "exit status %s; stderr: %s" % (d.proc.poll(), d.stderr_text()[-600:]))
        reached = h.wait_until(lambda: len(sidecars(out)) >= kill_after, 30)
        time.sleep(rng.uniform(0.0, 0.25))
        kill(d)
        t_kill = time.time()
        c.check(reached, "%s: %d sidecar(s) appeared before the kill" % (tag, kill_after),
                "found %s" % sidecars(out))
        at_kill = len(sidecars(out))
        c.problems(output_state_problems(out), "%s: right after SIGKILL: no partial file under a final name, "
                                               "no visible temporary" % tag)

        res = ctx.run_once(config, name=tag + "-restart", timeout=90)
        c.check(res.rc == 0 and not res.timed_out, "%s: the restart with --once exits 0" % tag, res.describe())
        time.sleep(0.5)  # requests the killed daemon left behind are recorded when the API finishes them
        problems = []
        lost = 0
        for name in files:
            stem = name[:-4]
            ok, err = os.path.exists(os.path.join(out, stem + ".json")), os.path.exists(os.path.join(out, stem + ".error.json"))
            if ok == err:
                problems.append("%s: %s" % (name, "both .json and .error.json" if ok else "no sidecar"))
            if not ok:
                lost += 1
        c.problems(problems, "%s: every input ends with exactly one sidecar" % tag)
        want = sorted([n[:-4] + ".json" for n in files] + [n[:-4] + ".jpeg" for n in files])
        c.same_names([f for f in all_files(out) if not is_hidden_tmp(f)], want,
                     "%s: the output holds exactly one .jpeg and one .json per input (no -2 duplicates)" % tag)
        c.problems(output_state_problems(out), "%s: every .jpeg complete (ends FF D9), every .json complete" % tag)
        c.eq([f for f in all_files(out) if is_hidden_tmp(f)], [],
             "%s: no hidden .*.tmp left after the --once run" % tag)
        wrong = []
        for name, data in files.items():
            wrong += h.output_problems(os.path.join(out, name[:-4] + ".jpeg"), h.sha256_bytes(data))
        c.problems(wrong, "%s: each output was generated from its own input" % tag)
        gens = api.generations()
        gens_at_kill = [r for r in gens if r["time"] <= t_kill]  # arrival times
        billed = sum(1 for r in gens if r.get("billed"))
        per_file = {}
        for r in gens:
            if r.get("billed"):
                n = by_sha.get(r.get("image_sha256"), "?")
                per_file[n] = per_file.get(n, 0) + 1
        dups = billed - len(per_file)
        c.check(billed <= N_FILES + MAX_IN_FLIGHT,
                "%s: paid generations %d <= files %d + max_in_flight %d" % (tag, billed, N_FILES, MAX_IN_FLIGHT),
                "paid twice: %s" % sorted(n for n, k in per_file.items() if k > 1))
        c.problems(h.snapshot_problems(before, h.snapshot(hot)), "%s: inputs untouched" % tag)
        table.append((tag, kill_after, at_kill, len(gens_at_kill), billed, dups, lost))
        api.stop()

    print("# kill  wanted  sidecars@kill  calls@kill  paid  paid-duplicates  lost", flush=True)
    for row in table:
        print("# %-5s %6d %14d %11d %5d %16d %5d" % row, flush=True)
    print("# SIGKILL summary: %d files x %d kills, %d paid duplicates, %d lost"
          % (N_FILES, len(table), sum(r[5] for r in table), sum(r[6] for r in table)), flush=True)

    # ---- paid results not yet written out at the kill ----------------------------------------
    # (slowdl) the download stalls; (truncdl) the first download was cut off and the daemon is
    # backing off before downloading again; (replaced) as slowdl, and the input is replaced by
    # new content before the restart: the output must then be made from the new content.
    for case in ("slowdl", "truncdl", "replaced"):
        api = ctx.start_api(name=case)
        root, hot, out, state = ctx.folder(case)
        config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                                  folders=[{"path": hot}], retries=3)
        data = h.png_image(48, 40, 5000 + len(case))
        src = os.path.join(hot, "in.png")
        h.write_bytes(src, data)
        api.add_faults(["truncdl" if case == "truncdl" else "slowdl:ms=5000"], replace=True)
        d = ctx.start_daemon(config, name=case)
        if case == "truncdl":
            cue = h.wait_until(lambda: any(r.get("truncated") for r in api.downloads()), 15, step=0.005)
        else:
            cue = h.wait_until(lambda: any(r.get("stalled") for r in api.downloads()), 15)
            time.sleep(0.3)
        kill(d)
        c.require(cue, "%s: the first download %s when the daemon is killed"
                  % (case, "was cut off" if case == "truncdl" else "started and stalls"),
                  "downloads %s" % api.downloads())
        redownloaded = len(api.downloads()) > 1
        gens_before = len(api.generations())
        c.eq(gens_before, 1, "%s: one generation before the kill" % case)
        if not redownloaded:
            c.check(not os.path.exists(os.path.join(out, "in.jpeg")), "%s: no in.jpeg at the kill" % case)
        c.problems(output_state_problems(out), "%s: right after SIGKILL: no partial file under a final name" % case)
        c.check(all_files(state), "%s: something was recorded under state_dir (the journal)" % case,
                "state_dir is empty")
        if case == "replaced":
            data = h.png_image(52, 40, 5100)
            h.write_bytes(src, data)
        res = ctx.run_once(config, name=case + "-restart", timeout=60)
        c.check(res.rc == 0 and not res.timed_out, "%s: the restart with --once exits 0" % case, res.describe())
        gens = api.generations()
        if case == "replaced":
            c.eq(len(gens), 2, "replaced: the new content was generated once more (2 generations in all)")
            sc_path = os.path.join(out, "in.json")
            if c.check(os.path.exists(sc_path), "replaced: in.json written", "output holds %s" % all_files(out)):
                c.problems(h.success_sidecar_problems(h.read_json(sc_path), src_path=src, source="in.png",
                                                      output="in.jpeg", attempts=1,
                                                      record=gens[-1] if len(gens) > 1 else None),
                           "replaced: in.json describes the new content (sha256, size, mtime, request_id)")
            c.problems(h.output_problems(os.path.join(out, "in.jpeg"), h.sha256_bytes(data)),
                       "replaced: in.jpeg was generated from the new content, not the journalled old result")
            c.same_names([f for f in all_files(out)], ["in.jpeg", "in.json"],
                         "replaced: only in.jpeg and in.json in the output (no -2, no temporary)")
        else:
            c.eq(len(gens), gens_before, "%s: the restart did not generate again (the result URL was downloaded)" % case)
            c.eq(sum(1 for r in gens if r.get("billed")), 1, "%s: paid once" % case)
            c.problems(h.output_problems(os.path.join(out, "in.jpeg"), h.sha256_bytes(data)),
                       "%s: in.jpeg exists and is complete" % case)
            if gens and os.path.exists(os.path.join(out, "in.jpeg")):
                c.eq(h.sha256_output(os.path.join(out, "in.jpeg")), gens[0].get("output_sha256"),
                     "%s: in.jpeg is the image of the first (paid) generation" % case)
            sc_path = os.path.join(out, "in.json")
            if c.check(os.path.exists(sc_path), "%s: in.json written" % case, "output holds %s" % all_files(out)):
                c.problems(h.success_sidecar_problems(h.read_json(sc_path), src_path=src, source="in.png",
                                                      output="in.jpeg", attempts=1, record=gens[0] if gens else None),
                           "%s: in.json complete, request_id and created of the paid generation" % case)
        c.eq([f for f in all_files(out) if is_hidden_tmp(f)], [], "%s: no hidden .*.tmp left after the --once run" % case)
        c.eq(h.journal_records(state), [], "%s: the journal holds no live record after the --once run" % case)
        api.stop()

if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
