#!/usr/bin/env python3
"""Soak: 500 files renamed into a watched folder in batches while the daemon runs, through an
API that injects a random retryable fault into 20% of the calls (--fault-rate 0.2, fixed seed),
with retries: 6 and max_in_flight: 8. Every input must end with exactly one sidecar, no partial
file may be visible, the daemon's open file descriptors must not grow, and the paid generations
may exceed the files only by the faults that struck after a generation. Bounded to ~3 minutes."""

import os
import sys
import time

import harness as h

N_FILES = 500
BATCH = 50
FAULT_RATE = 0.2
DEADLINE_S = 170
FD_MARGIN = 4



def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def fd_targets(pid):
    out = {}
    try:
        for n in os.listdir("/proc/%d/fd" % pid):
            try:
                t = os.readlink("/proc/%d/fd/%s" % (pid, n))
            except OSError:
                continue
            kind = t.split(":")[0] if ":" in t and not t.startswith("/") else ("file" if t.startswith("/") else t)
            out[kind] = out.get(kind, 0) + 1
    except OSError:
        pass
    return out


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def test(ctx):
    c = ctx.checks
    seed = int(os.environ.get("SEEDREAMD_SOAK_SEED", "20251124"))
    print("# fault seed %d (set SEEDREAMD_SOAK_SEED to change)" % seed, flush=True)
    api = ctx.start_api(name="soak", latency_ms=10,
                        extra=["--fault-rate", str(FAULT_RATE), "--seed", str(seed), "--quiet"])
    root, hot, out, state = ctx.folder("soak")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], retries=6, max_in_flight=8)
    staging = os.path.join(root, "staging")
    os.makedirs(staging)
    files = {}
    for i in range(N_FILES):
        name = "s%03d.png" % i
        data = h.png_image(24 + i % 9, 24 + (i // 9) % 9, 7000 + i)
        files[name] = data
        h.write_bytes(os.path.join(staging, name), data)
    by_sha = {h.sha256_bytes(v): k for k, v in files.items()}
    c.require(len(by_sha) == N_FILES, "%d distinct inputs prepared" % N_FILES)

    d = ctx.start_daemon(config, name="soak")
    c.require(d.wait_for(r"\bready\b", 15), "the daemon logs 'ready'",
              "exit status %s; stderr: %s" % (d.proc.poll(), d.stderr_text()[-600:]))
    pid = d.proc.pid
    t0 = time.monotonic()

    def n_sidecars():
        return sum(1 for n in os.listdir(out) if n.endswith(".json")) if os.path.isdir(out) else 0

    names = sorted(files)
    fd_max = 0

    def drop_batch(b):
        for name in names[b:b + BATCH]:
            os.rename(os.path.join(staging, name), os.path.join(hot, name))

    # warm-up: two batches, all through, then quiet for a moment; fds and RSS measured idle
    drop_batch(0)
    drop_batch(BATCH)
    warm_ok = h.wait_until(lambda: n_sidecars() >= 2 * BATCH, 60)
    c.check(warm_ok, "warm-up: the first %d files are through" % (2 * BATCH), "%d sidecars" % n_sidecars())
    time.sleep(1.5)
    fd_warm, rss_warm, warm_kinds = fd_count(pid), rss_kib(pid), fd_targets(pid)
    for b in range(2 * BATCH, N_FILES, BATCH):
        drop_batch(b)
        # let part of the batch through before the next one lands
        h.wait_until(lambda: n_sidecars() >= b + BATCH // 2, 30)
        n = fd_count(pid)
        if n is not None:
            fd_max = max(fd_max, n)
        if time.monotonic() - t0 > DEADLINE_S:
            break
    done = h.wait_until(lambda: n_sidecars() >= N_FILES, max(5, DEADLINE_S - (time.monotonic() - t0)))
    elapsed = time.monotonic() - t0
    c.check(done, "all %d files get a sidecar within %d s" % (N_FILES, DEADLINE_S),
            "%d sidecars after %.0f s" % (n_sidecars(), elapsed))
    time.sleep(1.5)  # idle, as at the warm-up measure; nothing else should arrive
    alive = d.proc.poll() is None
    c.check(alive, "the daemon is still running", "exit status %s" % d.proc.poll())
    fd_end, rss_end = fd_count(pid), rss_kib(pid)
    end_kinds = fd_targets(pid)
    c.check(fd_end is not None and fd_end <= fd_warm + FD_MARGIN,
            "open fds stable: %s after warm-up, %s at the end (margin %d, peak %d)" % (fd_warm, fd_end, FD_MARGIN, fd_max),
            "warm-up %s, end %s" % (warm_kinds, end_kinds))

    # ---- the outcome, file by file ----------------------------------------------------------
    problems, lost, errors = [], [], []
    for name in names:
        stem = name[:-4]
        ok = os.path.exists(os.path.join(out, stem + ".json"))
        err = os.path.exists(os.path.join(out, stem + ".error.json"))
        if ok and err:
            problems.append("%s: both .json and .error.json" % name)
        if not ok and not err:
            lost.append(name)
        if err:
            errors.append(name)
    c.problems(problems + ["%s: no sidecar" % n for n in lost], "every input has exactly one sidecar")
    bad_err = []
    for name in errors:
        sc = h.read_json(os.path.join(out, name[:-4] + ".error.json"))
        if sc.get("attempts") != 7:
            bad_err.append("%s failed after %s attempts: %s" % (name, sc.get("attempts"), sc.get("error")))
    c.problems(bad_err, "every .error.json (%d) is a real exhaustion of 1 + 6 attempts" % len(errors))
    want = set()
    for name in names:
        stem = name[:-4]
        if name not in errors:
            want |= {stem + ".json", stem + ".jpeg"}
        else:
            want.add(stem + ".error.json")
    visible = [n for n in os.listdir(out)]
    c.same_names(visible, sorted(want), "the output holds exactly the results and sidecars (no -2 duplicates, "
                                        "no temporary or hidden file)")
    partial = []
    for name in names:
        if name in errors:
            continue
        partial += h.output_problems(os.path.join(out, name[:-4] + ".jpeg"), h.sha256_bytes(files[name]))
    c.problems(partial, "every .jpeg is complete and was generated from its own input")

    gens = api.generations()
    injected = [r for r in gens if r.get("fault") and r.get("fault") != "ok"]
    billed = [r for r in gens if r.get("billed")]
    after_gen = [r for r in billed if r.get("fault") and r.get("fault") != "ok"]  # truncdl, dropafter, slow
    per_file = {}
    for r in billed:
        k = by_sha.get(r.get("image_sha256"), "?")
        per_file[k] = per_file.get(k, 0) + 1
    dups = len(billed) - len(per_file)
    c.check(len(injected) >= 0.15 * len(gens), "faults were injected into ~20%% of the calls (%d of %d)"
            % (len(injected), len(gens)))
    c.check(len(billed) <= N_FILES + len(after_gen),
            "paid generations %d <= files %d + faults after a generation %d" % (len(billed), N_FILES, len(after_gen)),
            "paid more than once: %s" % sorted(k for k, v in per_file.items() if v > 1)[:10])
    c.eq(sorted(k for k, v in per_file.items() if v > 1), [], "no input paid for twice")
    kinds = {}
    for r in injected:
        k = r["fault"].split(":")[0]
        kinds[k] = kinds.get(k, 0) + 1

    rc, took = d.terminate(timeout=10)
    c.eq(rc, 0, "SIGTERM at the end: exits 0")
    print("# soak: files %d, calls %d, faults injected %d (%s), paid %d, paid duplicates %d, files lost %d, "
          "error sidecars %d, %.0f s, fds %s->%s (peak %d), RSS %s->%s KiB"
          % (N_FILES, len(gens), len(injected), " ".join("%s=%d" % kv for kv in sorted(kinds.items())),
             len(billed), dups, len(lost), len(errors), elapsed, fd_warm, fd_end, fd_max, rss_warm, rss_end),
          flush=True)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
