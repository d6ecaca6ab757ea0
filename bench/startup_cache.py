#!/usr/bin/env python3
"""Cold start-up over N done files, with and without the done-record cache (issue 10.4).

Makes (or reuses, in --dir) N inputs with their outputs and sidecars as seedreamd writes them
(bench.py's make_processed_tree: one flat output folder of 2N files), then runs
`seedreamd --once` over them, alternately without the cache (state_dir/index removed first) and
with the cache the previous run wrote at its stop. Before each run the pages of every file (inputs,
outputs, sidecars, the cache) are evicted from the page cache (posix_fadvise DONTNEED; directories
and inodes stay cached, as bench.py's start-up row does). Reports the time to the "ready" log line
(the done records are loaded before it) and of the whole --once run (which also looks at every
input), the median of --repeat runs each, and fails if any run called the API.

  bench/startup_cache.py [--n 100000] [--repeat 3] [--binary build/seedreamd] [--dir DIR]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def run_once(binary, config, env):
    t0 = time.monotonic()
    proc = subprocess.Popen([binary, "-c", config, "--once", "-v"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    t_ready, loaded = None, ""
    for raw in proc.stderr:
        line = raw.decode("utf-8", "replace")
        if "done record(s) in" in line:
            loaded = line.strip()
        if t_ready is None and "info: ready" in line:
            t_ready = time.monotonic() - t0
    rc = proc.wait()
    return {"rc": rc, "ready_s": t_ready, "total_s": time.monotonic() - t0, "loaded": loaded}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "build", "seedreamd"))
    ap.add_argument("--dir", help="where the tree is kept between runs (default: "
                    "$TMPDIR/seedreamd-bench-cache/processed-N, shared with bench.py)")
    a = ap.parse_args()
    root = a.dir or os.path.join(tempfile.gettempdir(), "seedreamd-bench-cache", "processed-%d" % a.n)
    t = time.monotonic()
    hot, out, made = bench.make_processed_tree(root, a.n, bench.tiny_template())
    print("tree of %d done files in %s: %s" % (a.n, root, "written in %.1f s" % (time.monotonic() - t)
                                               if made else "reused"), flush=True)
    work = tempfile.mkdtemp(prefix="seedreamd-startup-cache-")
    logdir = os.path.join(work, "logs")
    os.makedirs(logdir)
    api = bench.Api("fast", 0, logdir, "api")
    try:
        state = os.path.join(work, "state")
        config = os.path.join(work, "seedreamd.yaml")
        with open(config, "w") as f:
            f.write("\n".join([
                "api:", "  base_url: %s" % json.dumps(api.base_url), "  model: %s" % json.dumps(bench.MODEL),
                "  response_format: url", "defaults:", "  size: 2K", "  watermark: false",
                "state_dir: %s" % json.dumps(state), "folders:", "  - path: %s" % json.dumps(hot),
                "    prompt: %s" % json.dumps(bench.PROMPT), ""]))
        env = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM", "STATE_DIRECTORY"):
            env.pop(k, None)
        env["SEEDREAM_API_KEY"] = bench.KEY
        results = {"without": [], "with": []}
        for rep in range(a.repeat):
            for kind in ("without", "with"):
                if kind == "without":
                    shutil.rmtree(os.path.join(state, "index"), ignore_errors=True)
                bench.evict_page_cache(root)
                bench.evict_page_cache(state)
                r = run_once(a.binary, config, env)
                print("%-7s cache, run %d: ready %.3f s, --once %.3f s, exit %s; %s"
                      % (kind, rep + 1, r["ready_s"] or -1, r["total_s"], r["rc"],
                         r["loaded"].split(": ", 2)[-1]), flush=True)
                results[kind].append(r)
        calls = api.stats()["generations"]
    finally:
        api.stop()
    print()
    print("| %d done files, pages evicted | ready (median) | whole --once (median) |" % a.n)
    print("|---|---|---|")
    for kind in ("without", "with"):
        rs = results[kind]
        print("| %s the cache | %.3f s | %.3f s |" % (kind, statistics.median(r["ready_s"] or 0 for r in rs),
                                                   statistics.median(r["total_s"] for r in rs)))
    print("API calls: %d" % calls)
    shutil.rmtree(work, ignore_errors=True)
    bad = calls != 0 or any(r["rc"] != 0 for k in results for r in results[k])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
