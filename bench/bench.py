#!/usr/bin/env python3
"""seedreamd benchmark: seedreamd against an inotifywait+curl+jq baseline, on this machine.

    bench/run.sh [--quick] [--n-small N] [--n-big N] ...     (see --help)

Everything runs on loopback against a local stand-in of the API (bench/fast_api.py by default;
tests/fake_api.py is measured once as well, to show why it is not used). Each contender runs
under bench/cpuwrap.py, which reports the user+sys CPU of its whole process tree (the stand-in
server is a separate process and is not counted). Images are generated with the Python standard
library into a temporary directory (--tmpdir), never into the repository.

Scenarios (the figure each one yields):
  idle      both contenders watch an empty folder for --idle-seconds: CPU and context switches
  small     N 256x256 PNGs renamed in at once, API latency 200 ms, 16 in flight:
            CPU per job, throughput, peak RSS
  big       N 1600x1200 PNGs (random pixels, 5.7 MB) renamed in at once, 200 ms, 16 in flight:
            CPU per job, peak RSS, throughput
  latency   files renamed in one by one every --interval-ms (no queueing): drop-to-request p50/p99
  calib     seedreamd against tests/fake_api.py (small PNGs, 200 ms): that server's ceiling
  startup   seedreamd started over N already processed files (inputs + sidecars): time to ready
            and idle, RSS, API calls
  flood     N tiny PNGs renamed in at once with the API stalled: all queued?, RSS
  slowfs    N 256x256 PNGs renamed in at once (200 ms, 16 in flight) with every fsync under the
            run's folders delayed by 0, 20 and 50 ms (tests/faultfs/faultfs.so preloaded into the
            contender: the storage of a NAS); against bench/thread_client.py, a plain thread-per-job
            Python client writing as durably through the same shim: jobs/s, the rate against
            seedreamd's own without delay, the longest gap between WATCHDOG=1 pings (1 s interval)
The results are printed as a Markdown table and written to bench/results.md (--results).
"""

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FAST_API = os.path.join(HERE, "fast_api.py")
FAKE_API = os.path.join(REPO, "tests", "fake_api.py")
CPUWRAP = os.path.join(HERE, "cpuwrap.py")
BASELINE = os.path.join(HERE, "baseline.sh")
THREAD_CLIENT = os.path.join(HERE, "thread_client.py")
KEY = "test-key"
MODEL = "doubao-seedream-4-5-251128"
PROMPT = "Make it watercolour"
PAGE = os.sysconf("SC_PAGE_SIZE")
HZ = os.sysconf("SC_CLK_TCK")


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ------------------------------------------------------------------------------------------------
# images: a PNG is compressed once, then each copy gets its own "benchid" tEXt chunk after IHDR
# (the stand-in reads it back from the data URL to tell which file a request carries)


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


class PngTemplate:
    def __init__(self, w, h, rows, level):
        """rows: the raw scanlines, each already prefixed with its filter byte."""
        self.head = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        self.tail = png_chunk(b"IDAT", zlib.compress(rows, level)) + png_chunk(b"IEND", b"")
        self.w, self.h = w, h

    def make(self, ident):
        return self.head + png_chunk(b"tEXt", b"benchid\x00%08d" % ident) + self.tail


def small_template():
    """256x256 RGB: a gradient with noise in the low bits, so it compresses like a photo would."""
    w = h = 256
    noise = os.urandom(w * h * 3)
    rows = bytearray()
    for y in range(h):
        rows.append(0)
        base = b"".join(bytes((((x + y) // 2) & 0xF0, (x * 3) & 0xF0, (y * 2) & 0xF0)) for x in range(w))
        row = bytes(b | (n & 0x0F) for b, n in zip(base, noise[y * w * 3:(y + 1) * w * 3]))
        rows += row
    return PngTemplate(w, h, bytes(rows), 6)


def big_template():
    """1600x1200 RGB random pixels: incompressible, 5.76 MB as a PNG."""
    w, h = 1600, 1200
    rows = bytearray()
    rnd = os.urandom(w * 3 * h)
    for y in range(h):
        rows.append(0)
        rows += rnd[y * w * 3:(y + 1) * w * 3]
    return PngTemplate(w, h, bytes(rows), 1)


def tiny_template():
    w = h = 16
    rows = b"".join(b"\x00" + b"".join(bytes((x * 16, y * 16, 128)) for x in range(w)) for y in range(h))
    return PngTemplate(w, h, rows, 6)


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def stage_images(stage, template, ids):
    os.makedirs(stage, exist_ok=True)
    for i in ids:
        write_file(os.path.join(stage, "img%08d.png" % i), template.make(i))


# ------------------------------------------------------------------------------------------------
# /proc


def read_stat(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            s = f.read()
    except OSError:
        return None
    r = s.rindex(b")")
    comm = s[s.index(b"(") + 1:r].decode("utf-8", "replace")
    f = s[r + 2:].split()
    # f[0] is field 3 (state): field n is f[n - 3]
    return {"comm": comm, "ppid": int(f[1]), "session": int(f[3]), "utime": int(f[11]),
            "stime": int(f[12]), "cutime": int(f[13]), "cstime": int(f[14]), "rss": int(f[21]) * PAGE}


def session_pids(sid, exclude=()):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in exclude:
            continue
        st = read_stat(pid)
        if st and st["session"] == sid:
            out.append((pid, st))
    return out


def runtime_ns(pid):
    """CPU time of every thread of pid, in ns (schedstat), or 0 if gone."""
    total = 0
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def tree_cpu_ns(sid, exclude):
    """Living processes of the session (threads included) plus what they have reaped."""
    total = 0
    for pid, st in session_pids(sid, exclude):
        total += runtime_ns(pid) + (st["cutime"] + st["cstime"]) * 1_000_000_000 // HZ
    return total


def proc_status(pid):
    d = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                d[k] = v.strip()
    except OSError:
        pass
    return d


def kb(v):
    return int(v.split()[0]) if v else 0


def ctxt_switches(pid):
    vol = invol = 0
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0, 0
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/status" % (pid, t)) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except OSError:
            pass
    return vol, invol


class RssSampler(threading.Thread):
    """Samples the summed RSS of a session's processes every `interval` seconds."""

    def __init__(self, sid, exclude, interval=0.05):
        super().__init__(daemon=True)
        self.sid, self.exclude, self.interval = sid, set(exclude), interval
        self.peak = 0
        self.peak_procs = 0
        self.samples = 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            procs = session_pids(self.sid, self.exclude)
            total = sum(st["rss"] for _, st in procs)
            if total > self.peak:
                self.peak, self.peak_procs = total, len(procs)
            self.samples += 1
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.join()
        return self.peak


class NotifySocket(threading.Thread):
    """A NOTIFY_SOCKET for the daemon: collects (time_ns, message) datagrams."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []
        self.stop_ev = threading.Event()
        self.cond = threading.Condition()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            with self.cond:
                self.messages.append((time.time_ns(), data.decode("utf-8", "replace")))
                self.cond.notify_all()

    def wait_for(self, pattern, timeout):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, m in self.messages:
                    if rx.search(m):
                        return t, m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def last_status(self):
        with self.cond:
            for t, m in reversed(self.messages):
                if "STATUS=" in m:
                    return t, m
        return None

    def close(self):
        self.stop_ev.set()
        self.sock.close()
        self.join()


# ------------------------------------------------------------------------------------------------
# the stand-in API


class Api:
    def __init__(self, kind, latency_ms, logdir, name):
        self.kind = kind
        script = FAST_API if kind == "fast" else FAKE_API
        self.state_file = os.path.join(logdir, name + "-api-state.jsonl")
        argv = [sys.executable, script, "--port", "0", "--key", KEY, "--latency-ms", str(int(latency_ms)),
                "--max-seconds", "7200"]
        if kind != "fast":
            argv += ["--state-file", self.state_file, "--quiet"]
        self.log = open(os.path.join(logdir, name + "-api.log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        m = re.match(r"PORT (\d+)", line)
        if not m:
            raise RuntimeError("the stand-in API (%s) did not start: %r" % (script, line))
        self.port = int(m.group(1))
        self.base_url = "http://127.0.0.1:%d/v1" % self.port

    def get(self, path):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path), timeout=30) as r:
            return json.loads(r.read())

    def stats(self):
        return self.get("/_stats")

    def generations(self):
        """[{bench_id, t_head_ns, t_body_ns, t_resp_ns?, status}] (fast) or fake_api records."""
        if self.kind == "fast":
            return [r for r in self.get("/_records") if r["kind"] == "generation"]
        out = []
        if os.path.exists(self.state_file):
            with open(self.state_file) as f:
                for line in f:
                    rec = json.loads(line)
                    if rec.get("kind") == "generation":
                        out.append(rec)
        return out

    def cpu_ns(self):
        # /proc/<pid>/stat, not schedstat: fake_api.py's threads come and go, and the CPU of
        # exited threads is only in the process totals (clock ticks, 10 ms)
        st = read_stat(self.proc.pid)
        return (st["utime"] + st["stime"]) * 1_000_000_000 // HZ if st else 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


# ------------------------------------------------------------------------------------------------
# the contenders


class Contender:
    """A command under cpuwrap.py, in its own session (so its whole tree can be found)."""

    name = "?"

    def __init__(self, root, logdir, tag, hot=None):
        self.root = root
        self.hot = hot or os.path.join(root, "hot")
        self.out = self.hot + "-out"
        self.logdir = logdir
        self.tag = tag
        self.result_path = os.path.join(logdir, "%s-%s-rusage.json" % (tag, self.name))
        self.out_path = os.path.join(logdir, "%s-%s.stdout" % (tag, self.name))
        self.err_path = os.path.join(logdir, "%s-%s.stderr" % (tag, self.name))
        os.makedirs(self.hot, exist_ok=True)

    def launch(self, argv, env):
        self.t_start_ns = time.time_ns()
        self.wrap = subprocess.Popen([sys.executable, CPUWRAP, self.result_path, self.out_path, self.err_path,
                                      "--"] + argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        m = re.match(rb"PID (\d+)", self.wrap.stdout.readline())
        if not m:
            raise RuntimeError("cpuwrap did not start %s" % argv)
        self.pid = int(m.group(1))
        self.sid = self.wrap.pid
        self.exclude = {self.wrap.pid}

    def stderr_text(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_stderr(self, pattern, timeout):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rx.search(self.stderr_text()):
                return True
            if self.wrap.poll() is not None:
                return False
            time.sleep(0.01)
        return False

    def cpu_ns(self):
        return tree_cpu_ns(self.sid, self.exclude)

    def finish(self, timeout=60):
        """Waits for the wrapper; returns its rusage record (CPU of the whole tree)."""
        try:
            self.wrap.wait(timeout)
        except subprocess.TimeoutExpired:
            log("%s did not stop in %d s: killing its session" % (self.name, timeout))
            try:
                os.killpg(self.sid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wrap.wait()
        self.wrap.stdout.close()
        with open(self.result_path) as f:
            ru = json.load(f)
        ru["cpu_ns"] = int(round((ru["utime"] + ru["stime"]) * 1e9))
        return ru


class Seedreamd(Contender):
    name = "seedreamd"

    def __init__(self, root, logdir, tag, binary, api, in_flight=16, timeout="180s", stop_timeout="60s",
                 notify=False, hot=None, env_extra=None, watchdog_usec=0):
        super().__init__(root, logdir, tag, hot)
        self.state = os.path.join(root, "state")
        os.makedirs(self.state, exist_ok=True)
        self.config = os.path.join(root, "seedreamd.yaml")
        q = json.dumps
        with open(self.config, "w") as f:
            f.write("\n".join([
                "api:",
                "  base_url: %s" % q(api.base_url),
                "  model: %s" % q(MODEL),
                "  timeout: %s" % timeout,
                "  max_in_flight: %d" % in_flight,
                "  response_format: url",
                "  retries: 2",
                "defaults:",
                "  size: 2K",
                "  watermark: false",
                "state_dir: %s" % q(self.state),
                "stop_timeout: %s" % stop_timeout,
                "folders:",
                "  - path: %s" % q(self.hot),
                "    prompt: %s" % q(PROMPT),
                ""]))
        env = dict(os.environ)
        for k in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY",
                  "LISTEN_FDS", "INVOCATION_ID", "CREDENTIALS_DIRECTORY"):
            env.pop(k, None)
        env["SEEDREAM_API_KEY"] = KEY
        self.notify = None
        if notify:
            self.notify = NotifySocket(os.path.join(logdir, "%s-notify.sock" % tag))
            self.notify.start()
            env["NOTIFY_SOCKET"] = self.notify.path
            if watchdog_usec:
                env["WATCHDOG_USEC"] = str(watchdog_usec)
        env.update(env_extra or {})
        self.launch([binary, "-c", self.config], env)

    def wait_ready(self, timeout=60):
        return self.wait_stderr(r"seedreamd: info: ready", timeout)

    def status(self):
        return proc_status(self.pid)

    def stop(self, timeout=60):
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        ru = self.finish(timeout)
        if self.notify:
            self.notify.close()
        return ru


class Baseline(Contender):
    name = "baseline"

    def __init__(self, root, logdir, tag, api, jobs=16):
        super().__init__(root, logdir, tag)
        env = dict(os.environ)
        env.update(SEEDREAM_API_KEY=KEY, API_BASE=api.base_url, MODEL=MODEL, PROMPT=PROMPT, JOBS=str(jobs))
        self.launch(["bash", BASELINE, self.hot, self.out], env)

    def wait_ready(self, timeout=30):
        return self.wait_stderr(r"Watches established", timeout)

    def stop(self, timeout=60):
        # End the pipeline the gentle way: inotifywait exits, xargs sees EOF and waits for its jobs.
        for pid, st in session_pids(self.sid, self.exclude):
            if st["comm"] == "inotifywait":
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        return self.finish(timeout)


class ThreadClient(Contender):
    name = "thread_client"

    def __init__(self, root, logdir, tag, api, jobs=16, env_extra=None):
        super().__init__(root, logdir, tag)
        env = dict(os.environ)
        env.update(SEEDREAM_API_KEY=KEY, API_BASE=api.base_url, MODEL=MODEL, PROMPT=PROMPT, JOBS=str(jobs))
        env.update(env_extra or {})
        self.launch([sys.executable, THREAD_CLIENT, self.hot, self.out], env)

    def wait_ready(self, timeout=30):
        return self.wait_stderr(r"watching", timeout)

    def stop(self, timeout=60):
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        return self.finish(timeout)


def faultfs_env(ctx, control):
    """The environment that preloads tests/faultfs/faultfs.so with this control file."""
    return {"LD_PRELOAD": ctx.args.faultfs, "FAULTFS_CONTROL": control}


def longest_watchdog_gap_ms(notify, t0_ns, t1_ns):
    """The longest stretch in [t0, t1] without a WATCHDOG=1 datagram, in ms."""
    pings = sorted(t for t, m in notify.messages if "WATCHDOG=1" in m.split("\n") and t0_ns < t < t1_ns)
    points = [t0_ns] + pings + [t1_ns]
    return max(b - a for a, b in zip(points, points[1:])) / 1e6


# ------------------------------------------------------------------------------------------------
# measuring


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(math.ceil(p / 100.0 * len(v))) - 1))
    return v[k]


def count_outputs(out):
    """(sidecars, error sidecars, latest sidecar mtime ns) in an output folder."""
    ok = err = 0
    latest = 0
    try:
        with os.scandir(out) as it:
            for e in it:
                n = e.name
                if n.startswith(".") or not n.endswith(".json"):
                    continue
                if n.endswith(".error.json"):
                    err += 1
                else:
                    ok += 1
    except FileNotFoundError:
        pass
    return ok, err


def latest_sidecar_ns(out):
    latest = 0
    with os.scandir(out) as it:
        for e in it:
            if e.name.endswith(".json") and not e.name.startswith("."):
                latest = max(latest, e.stat().st_mtime_ns)
    return latest


def max_concurrency(gens):
    ev = []
    for g in gens:
        if g.get("t_resp_ns"):
            ev.append((g["t_head_ns"], 1))
            ev.append((g["t_resp_ns"], -1))
    ev.sort()
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def drop(stage, hot, ids, interval_s=0.0):
    """Renames stage/img<id>.png into hot; returns {id: time_ns just before the rename}."""
    t = {}
    start = time.monotonic()
    for k, i in enumerate(ids):
        if interval_s:
            delay = start + k * interval_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        name = "img%08d.png" % i
        t[i] = time.time_ns()
        os.rename(os.path.join(stage, name), os.path.join(hot, name))
    return t


def recycle(hot, stage):
    """Moves the inputs of a finished run back to a stage folder for the next contender."""
    os.makedirs(stage, exist_ok=True)
    for n in os.listdir(hot):
        if n.endswith(".png"):
            os.rename(os.path.join(hot, n), os.path.join(stage, n))


def run_batch(ctx, tag, contender_cls, stage, ids, latency_ms, interval_s=0.0, api_kind="fast",
              timeout_s=600, rep=0, env_extra=None, watchdog_usec=0):
    """One contender, one batch: start, drop, wait for every sidecar, stop. Returns a dict."""
    tag = "%s%s" % (tag, "-%d" % rep if rep else "")
    root = os.path.join(ctx.tmp, "%s-%s" % (tag, contender_cls.name))
    os.makedirs(root)
    api = Api(api_kind, latency_ms, ctx.logdir, "%s-%s" % (tag, contender_cls.name))
    try:
        if contender_cls is Seedreamd:
            c = Seedreamd(root, ctx.logdir, tag, ctx.binary, api, in_flight=ctx.args.in_flight,
                          env_extra=env_extra, notify=bool(watchdog_usec), watchdog_usec=watchdog_usec)
        elif contender_cls is ThreadClient:
            c = ThreadClient(root, ctx.logdir, tag, api, jobs=ctx.args.in_flight, env_extra=env_extra)
        else:
            c = Baseline(root, ctx.logdir, tag, api, jobs=ctx.args.in_flight)
        if not c.wait_ready():
            raise RuntimeError("%s did not get ready; stderr:\n%s" % (c.name, c.stderr_text()[-2000:]))
        sampler = RssSampler(c.sid, c.exclude, 0.05)
        sampler.start()
        cpu0 = c.cpu_ns()
        api_cpu0 = api.cpu_ns()
        t0 = time.time_ns()
        t_drop = drop(stage, c.hot, ids, interval_s)
        n = len(ids)
        deadline = time.monotonic() + timeout_s
        ok = err = 0
        while time.monotonic() < deadline:
            ok, err = count_outputs(c.out)
            if ok + err >= n:
                break
            time.sleep(0.1)
        t_seen = time.time_ns()
        hwm = kb(c.status().get("VmHWM")) if isinstance(c, Seedreamd) else None
        wd_gap = (longest_watchdog_gap_ms(c.notify, t0, t_seen)
                  if isinstance(c, Seedreamd) and c.notify else None)
        api_cpu = api.cpu_ns() - api_cpu0
        rss_peak = sampler.stop()
        ru = c.stop()
        t_last = latest_sidecar_ns(c.out) if ok else t_seen
        gens = api.generations()
        stats = api.stats()
        with open(os.path.join(ctx.logdir, "%s-%s-generations.json" % (tag, c.name)), "w") as f:
            json.dump({"t_drop": t_drop, "generations": gens}, f)
    finally:
        api.stop()
    res = {"contender": c.name, "n": n, "ok": ok, "errors": err, "timed_out": ok + err < n,
           "cpu_ms_per_job": (ru["cpu_ns"] - cpu0) / 1e6 / n, "cpu_ms_total": (ru["cpu_ns"] - cpu0) / 1e6,
           "cpu_ms_startup": cpu0 / 1e6, "maxrss_single_mb": ru["maxrss_kb"] / 1024.0,
           "rss_peak_sampled_mb": rss_peak / 2**20, "rss_samples": sampler.samples,
           "vmhwm_mb": hwm / 1024.0 if hwm is not None else None,
           "wall_s": (t_last - t0) / 1e9, "jobs_per_s": n / ((t_last - t0) / 1e9) if t_last > t0 else 0,
           "api_cpu_ms_per_job": api_cpu / 1e6 / n, "api": api_kind, "generations": len(gens),
           "watchdog_gap_ms": wd_gap,
           "api_stats": stats}
    if api_kind == "fast":
        lat = [(g["t_head_ns"] - t_drop[g["bench_id"]]) / 1e6 for g in gens if g.get("bench_id") in t_drop]
        lat_body = [(g["t_body_ns"] - t_drop[g["bench_id"]]) / 1e6 for g in gens if g.get("bench_id") in t_drop]
        res.update(lat_p50=pct(lat, 50), lat_p99=pct(lat, 99), lat_max=max(lat) if lat else float("nan"),
                   lat_body_p50=pct(lat_body, 50), lat_body_p99=pct(lat_body, 99), lat_n=len(lat),
                   max_in_flight_seen=max_concurrency(gens), _lat=lat, _lat_body=lat_body,
                   distinct_ids=len({g.get("bench_id") for g in gens}))
    else:
        # fake_api.py: "time" is taken after the whole body was read and parsed, in seconds (µs)
        lat = []
        res.update(lat_p50=float("nan"), lat_p99=float("nan"))
    recycle(c.hot, stage)
    log("%s %s: %d/%d ok, %d errors, %.3f ms CPU/job, %.1f jobs/s, RSS %s MB (sampled tree %.1f MB), "
        "lat p50 %.2f p99 %.2f ms, API CPU %.2f ms/job"
        % (tag, c.name, ok, n, err, res["cpu_ms_per_job"], res["jobs_per_s"],
           "%.1f" % res["vmhwm_mb"] if res["vmhwm_mb"] is not None else "-", res["rss_peak_sampled_mb"],
           res["lat_p50"], res["lat_p99"], res["api_cpu_ms_per_job"]))
    return res


def median(values):
    v = sorted(x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x)))
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def aggregate(runs):
    """Several runs of one contender in one scenario: medians of the figures, latencies pooled,
    correctness summed, and each run's key figures kept under "runs"."""
    if len(runs) == 1:
        out = dict(runs[0])
    else:
        out = {}
        for k, v in runs[0].items():
            vals = [r.get(k) for r in runs]
            if k.startswith("_") or isinstance(v, (dict, list, str)) or isinstance(v, bool):
                out[k] = v
            elif k in ("n", "ok", "errors", "generations"):
                out[k] = sum(vals) // len(runs) if k == "n" else sum(vals)
            else:
                out[k] = median(vals)
        out["n"] = sum(r["n"] for r in runs)
        out["n_per_run"] = runs[0]["n"]
        out["timed_out"] = any(r["timed_out"] for r in runs)
        out["_lat"] = [x for r in runs for x in r.get("_lat", [])]
        out["_lat_body"] = [x for r in runs for x in r.get("_lat_body", [])]
        if out["_lat"]:
            out.update(lat_p50=pct(out["_lat"], 50), lat_p99=pct(out["_lat"], 99), lat_max=max(out["_lat"]),
                       lat_body_p50=pct(out["_lat_body"], 50), lat_body_p99=pct(out["_lat_body"], 99),
                       lat_n=len(out["_lat"]))
    out["runs"] = [{k: r.get(k) for k in ("cpu_ms_per_job", "jobs_per_s", "vmhwm_mb", "rss_peak_sampled_mb",
                                          "lat_p50", "lat_p99")} for r in runs]
    return out


def spread(d, key, digits):
    """ " (min–max)" over the runs, when there were several."""
    runs = d.get("runs") or []
    vals = [r[key] for r in runs if r.get(key) is not None]
    if len(vals) < 2:
        return ""
    return " (%s–%s)" % (f1(min(vals), digits), f1(max(vals), digits))


def public(obj):
    """The results without the raw samples (keys starting with '_')."""
    if isinstance(obj, dict):
        return {k: public(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [public(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------
# scenarios


class Ctx:
    pass


def scenario_idle_start(ctx):
    api = Api("fast", 0, ctx.logdir, "idle")
    s = Seedreamd(os.path.join(ctx.tmp, "idle-seedreamd"), ctx.logdir, "idle", ctx.binary, api)
    b = Baseline(os.path.join(ctx.tmp, "idle-baseline"), ctx.logdir, "idle", api) if ctx.args.baseline else None
    for c in (s, b):
        if c and not c.wait_ready():
            raise RuntimeError("%s did not get ready for the idle test" % c.name)
    time.sleep(1.0)  # let start-up finish
    snap = {}
    for c in (s, b):
        if c:
            pids = [p for p, _ in session_pids(c.sid, c.exclude)]
            snap[c.name] = (time.monotonic(), c.cpu_ns(), [ctxt_switches(p) for p in pids], pids)
    return {"api": api, "s": s, "b": b, "snap": snap}


def scenario_idle_end(ctx, st):
    first = min(v[0] for v in st["snap"].values())
    left = first + ctx.args.idle_seconds - time.monotonic()
    if left > 0:
        log("idle: waiting %.0f s more" % left)
        time.sleep(left)
    out = {}
    for c in (st["s"], st["b"]):
        if not c:
            continue
        t, cpu0, cs0, pids = st["snap"][c.name]
        cpu1 = c.cpu_ns()
        cs1 = [ctxt_switches(p) for p in pids]
        secs = time.monotonic() - t
        vol = sum(a[0] for a in cs1) - sum(a[0] for a in cs0)
        invol = sum(a[1] for a in cs1) - sum(a[1] for a in cs0)
        out[c.name] = {"seconds": secs, "cpu_ms": (cpu1 - cpu0) / 1e6, "vol_cs": vol, "invol_cs": invol,
                       "procs": len(pids)}
        if c is st["s"]:
            out[c.name]["rss_mb"] = kb(c.status().get("VmRSS")) / 1024.0
        c.stop()
    st["api"].stop()
    log("idle: %s" % json.dumps(out))
    return out


def make_processed_tree(root, n, tiny):
    """n inputs in root/hot and, in root/hot-out, their outputs and sidecars as seedreamd writes
    them (cJSON_Print layout), with source_mtime equal to each input's mtime to the nanosecond.
    Kept between runs (root/complete marks a finished tree): creating and deleting 300,000 files
    each run would cost more than the run, and ext4 is slow to create files for minutes after a
    mass deletion."""
    hot = os.path.join(root, "hot")
    out = hot + "-out"
    if os.path.exists(os.path.join(root, "complete")):
        return hot, out, False
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(hot)
    os.makedirs(out)
    import hashlib
    data = tiny.make(0)
    sha = hashlib.sha256(data).hexdigest()
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 800 + b"\xff\xd9"
    base_ns = (time.time_ns() // 1_000_000_000 - 86400) * 1_000_000_000
    done = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmpl = ('{\n\t"source":\t"%s",\n\t"source_sha256":\t"%s",\n\t"source_size":\t%d,\n'
            '\t"source_mtime":\t"%s",\n\t"output":\t"%s",\n\t"model":\t"' + MODEL + '",\n'
            '\t"prompt":\t"' + PROMPT + '",\n\t"size":\t"2K",\n\t"result_size":\t"2048x2048",\n'
            '\t"watermark":\tfalse,\n\t"response_format":\t"url",\n\t"created":\t%d,\n'
            '\t"usage":\t{\n\t\t"generated_images":\t1,\n\t\t"output_tokens":\t16384,\n'
            '\t\t"total_tokens":\t16384\n\t},\n\t"request_id":\t"%s",\n\t"attempts":\t1,\n'
            '\t"elapsed_ms":\t%d,\n\t"completed_at":\t"%s",\n\t"seedreamd_version":\t"0.1.0"\n}\n')
    for i in range(n):
        name = "img%08d" % i
        p = os.path.join(hot, name + ".png")
        write_file(p, data)
        mt = base_ns + i * 1_000_003 + 123
        os.utime(p, ns=(mt, mt))
        sec, ns = divmod(mt, 1_000_000_000)
        mtime = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%09dZ" % ns
        write_file(os.path.join(out, name + ".jpeg"), jpeg)
        doc = tmpl % (name + ".png", sha, len(data), mtime, name + ".jpeg", sec + 60,
                      "2025%014d%012x" % (i, i * 7919), 400 + i % 300, done)
        write_file(os.path.join(out, name + ".json"), doc.encode())
    write_file(os.path.join(root, "complete"), b"")
    return hot, out, True


def scenario_startup(ctx, rep=0):
    n = ctx.args.n_startup
    tag = "startup-%d" % rep
    root = os.path.join(ctx.tmp, tag)
    os.makedirs(root)
    api = Api("fast", 0, ctx.logdir, tag)
    try:
        t0 = time.time_ns()
        c = Seedreamd(root, ctx.logdir, tag, ctx.binary, api, notify=True, hot=ctx.startup_hot)
        got = c.notify.wait_for(r"READY=1", 300)
        if not got:
            raise RuntimeError("no READY=1 at start-up: %s" % c.stderr_text()[-2000:])
        t_ready = got[0]
        # then idle: the last time its CPU time moved, once it has not moved for 1 s
        last_cpu, last_change = c.cpu_ns(), time.time_ns()
        still_since = time.monotonic()
        deadline = time.monotonic() + 120
        while time.monotonic() - still_since < 1.0 and time.monotonic() < deadline:
            time.sleep(0.02)
            cpu = c.cpu_ns()
            if cpu != last_cpu:
                last_cpu, last_change = cpu, time.time_ns()
                still_since = time.monotonic()
        st = c.status()
        cpu_ms = c.cpu_ns() / 1e6
        ru = c.stop()
        gens = api.stats()["generations"]
    finally:
        api.stop()
    ready_line = re.search(r"seedreamd: info: ready.*", c.stderr_text())
    res = {"n": n, "ready_s": (t_ready - t0) / 1e9, "idle_s": (max(last_change, t_ready) - t0) / 1e9,
           "vmhwm_mb": kb(st.get("VmHWM")) / 1024.0, "vmrss_mb": kb(st.get("VmRSS")) / 1024.0,
           "cpu_ms": cpu_ms, "api_calls": gens, "ready_logged": bool(ready_line)}
    log("startup: %s" % json.dumps(res))
    return res


def evict_page_cache(root):
    """posix_fadvise(DONTNEED) on every file under root: their pages leave the page cache (they
    are clean: written, then synced). Directories and inodes stay cached; only a reboot or
    drop_caches (global, not done here) would evict those."""
    n = 0
    os.sync()
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            finally:
                os.close(fd)
    return n


def scenario_slowfs(ctx):
    """Each fsync delay in turn: seedreamd, then the thread-per-job client, both with the shim
    preloaded and `delay fsync <the run's tmpdir> <ms>` (0: the shim without rules, so its own cost
    is in every figure). Returns {delay_ms: {contender: run_batch result}}."""
    a = ctx.args
    stage = os.path.join(ctx.tmp, "stage-slowfs")
    ids = list(range(4_000_001, 4_000_001 + a.n_slowfs))
    control = os.path.join(ctx.tmp, "faultfs.control")
    res = {}
    for delay in a.slowfs_delays:
        with open(control + ".tmp", "w") as f:
            f.write(("delay fsync %s %d\n" % (ctx.tmp, delay)) if delay else "")
        os.rename(control + ".tmp", control)
        res[delay] = {}
        for cls in (Seedreamd, ThreadClient):
            res[delay][cls.name] = run_batch(ctx, "slowfs-%dms" % delay, cls, stage, ids, a.latency_ms,
                                             env_extra=faultfs_env(ctx, control),
                                             watchdog_usec=1_000_000 if cls is Seedreamd else 0)
    return res


def report_slowfs(ctx, S):
    a = ctx.args
    rows = ["| fsync latency | seedreamd jobs/s | thread-per-job client jobs/s | ratio (seedreamd ÷ client) "
            "| seedreamd ÷ its rate without delay | longest gap between watchdog pings (1 s interval), s |",
            "|---|---|---|---|---|---|"]
    base = (S.get(0) or {}).get("seedreamd")
    for delay in sorted(S):
        sd, tc = S[delay].get("seedreamd"), S[delay].get("thread_client")
        gap = sd.get("watchdog_gap_ms") if sd else None
        rows.append("| %s | %s | %s | %s | %s | %s |" % (
            "%d ms" % delay if delay else "none (the shim, no rule)", f1(sd["jobs_per_s"]),
            f1(tc["jobs_per_s"]) if tc else "–", ratio(sd["jobs_per_s"], tc["jobs_per_s"] if tc else None),
            "%.0f%%" % (100 * sd["jobs_per_s"] / base["jobs_per_s"]) if base and base["jobs_per_s"] else "–",
            f1(gap / 1000 if gap is not None else None, 2)))
    d20 = (S.get(20) or {}).get("seedreamd")
    c20 = (S.get(20) or {}).get("thread_client")
    if d20 and base and c20:
        r_self = d20["jobs_per_s"] / base["jobs_per_s"] if base["jobs_per_s"] else 0
        r_client = d20["jobs_per_s"] / c20["jobs_per_s"] if c20["jobs_per_s"] else 0
        rows += ["", "Targets with 20 ms per fsync: ≥ 90%% of the rate without delay: %.0f%%, %s; "
                 "≥ 1.5× the thread-per-job client: %.2f×, %s; watchdog never late (gap < 1 s): %s."
                 % (100 * r_self, yes(r_self >= 0.9), r_client, yes(r_client >= 1.5),
                    yes(all((S[k].get("seedreamd") or {}).get("watchdog_gap_ms") is not None and
                            S[k]["seedreamd"]["watchdog_gap_ms"] < 1000 for k in S)))]
    return "\n".join(rows)


def scenario_flood(ctx):
    n = ctx.args.n_flood
    root = os.path.join(ctx.tmp, "flood-seedreamd")
    os.makedirs(root)
    stage = ctx.flood_stage
    api = Api("fast", 3_600_000, ctx.logdir, "flood")  # stalled: nothing completes
    res = {"n": n}
    try:
        c = Seedreamd(root, ctx.logdir, "flood", ctx.binary, api, in_flight=ctx.args.in_flight,
                      timeout="2h", stop_timeout="0", notify=True)
        if not c.wait_ready():
            raise RuntimeError("not ready: %s" % c.stderr_text()[-2000:])
        names = sorted(os.listdir(stage))
        t0 = time.time_ns()
        for name in names:
            os.rename(os.path.join(stage, name), os.path.join(c.hot, name))
        t_dropped = time.time_ns()
        # all queued: STATUS says queued + in flight == n, and its CPU has gone quiet
        rx = re.compile(r"STATUS=(\d+) queued, (\d+) in flight")
        deadline = time.monotonic() + 300
        seen = 0
        t_all = None
        while time.monotonic() < deadline:
            last = c.notify.last_status()
            if last:
                m = rx.search(last[1])
                if m:
                    seen = int(m.group(1)) + int(m.group(2))
                    if seen >= n:
                        t_all = last[0]
                        break
            time.sleep(0.05)
        time.sleep(1.0)  # validation done: its CPU is flat by now but for curl's 1 s timers
        cpu = c.cpu_ns()
        st = c.status()
        last = c.notify.last_status()
        c.stop(timeout=60)
        err = c.stderr_text()
        recycle(c.hot, stage)
        res.update(queued_seen=seen, all_queued=seen >= n, vmrss_mb=kb(st.get("VmRSS")) / 1024.0,
                   vmhwm_mb=kb(st.get("VmHWM")) / 1024.0,
                   seconds_to_all_queued=(t_all - t0) / 1e9 if t_all else None,
                   rename_seconds=(t_dropped - t0) / 1e9, last_status=last[1] if last else None,
                   overflow="overflow" in err, requests_at_api=api.stats()["generations"],
                   cpu_ms_per_file=cpu / 1e6 / n)
    finally:
        api.stop()
    log("flood: %s" % json.dumps(res))
    return res


# ------------------------------------------------------------------------------------------------
# machine and report


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return "(%s)" % e


def machine_info(binary):
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    model = sh("lscpu | sed -n 's/^Model name: *//p'")
    return {
        "lscpu": sh("lscpu | head"),
        "line": "%s, %s CPU(s) (nproc), %s RAM, Linux %s, %s" % (
            model, sh("nproc"), mem, platform.release(), sh(". /etc/os-release; echo $PRETTY_NAME")),
        "versions": "%s; curl %s; jq %s; inotifywait %s; bash %s; python %s" % (
            sh("%s --version" % binary), sh("curl --version | head -1 | cut -d' ' -f2"), sh("jq --version"),
            sh("inotifywait --help 2>&1 | head -1 | cut -d' ' -f2"), sh("bash -c 'echo $BASH_VERSION'"),
            platform.python_version()),
        "commit": sh("git -C %s describe --always --dirty 2>/dev/null" % REPO),
    }


def f1(v, digits=1):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return "%.*f" % (digits, v)


def ratio(a, b, digits=2):
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)) or \
            (isinstance(b, float) and math.isnan(b)):
        return "–"
    r = a / b
    return ("%.*f×" % (digits, r)) if r >= 0.01 else ("1/%.0f" % (b / a) if a else "0")


def yes(ok):
    return "yes" if ok else "**no**"


def report(ctx, R):
    a = ctx.args
    rows = []
    hdr = "| figure | seedreamd | baseline | ratio (seedreamd ÷ baseline) | target | met? |\n|---|---|---|---|---|---|"

    def row(fig, s, b, r, target, met):
        rows.append("| %s | %s | %s | %s | %s | %s |" % (fig, s, b, r, target, met))

    sm, smb = R.get("small", {}).get("seedreamd"), R.get("small", {}).get("baseline")
    bg, bgb = R.get("big", {}).get("seedreamd"), R.get("big", {}).get("baseline")
    la, lab = R.get("latency", {}).get("seedreamd"), R.get("latency", {}).get("baseline")
    g = lambda d, k: d.get(k) if d else None  # noqa: E731
    npr = lambda d: d.get("n_per_run", d["n"])  # noqa: E731
    if sm:
        row("CPU per job, 256x256 PNGs (%d, %d in flight), ms" % (npr(sm), a.in_flight),
            f1(sm["cpu_ms_per_job"], 3) + spread(sm, "cpu_ms_per_job", 3), f1(g(smb, "cpu_ms_per_job"), 2),
            ratio(sm["cpu_ms_per_job"], g(smb, "cpu_ms_per_job"), 3), "≤ 1", yes(sm["cpu_ms_per_job"] <= 1))
    if bg:
        row("CPU per job, 5.7 MB PNGs (%d, %d in flight), ms" % (npr(bg), a.in_flight),
            f1(bg["cpu_ms_per_job"], 2) + spread(bg, "cpu_ms_per_job", 2), f1(g(bgb, "cpu_ms_per_job"), 1),
            ratio(bg["cpu_ms_per_job"], g(bgb, "cpu_ms_per_job"), 3), "≤ 10", yes(bg["cpu_ms_per_job"] <= 10))
        row("peak RSS, 16 × 5.7 MB in flight, MB (seedreamd VmHWM; baseline: max sampled sum over its "
            "processes)", f1(bg["vmhwm_mb"]) + spread(bg, "vmhwm_mb", 1), f1(g(bgb, "rss_peak_sampled_mb")),
            ratio(bg["vmhwm_mb"], g(bgb, "rss_peak_sampled_mb")), "≤ 32", yes(bg["vmhwm_mb"] <= 32))
    if sm:
        ceiling = a.in_flight / (a.latency_ms / 1000.0)
        row("throughput, API latency %d ms, max_in_flight %d, jobs/s (ceiling %d/%.1f s = %.0f)"
            % (a.latency_ms, a.in_flight, a.in_flight, a.latency_ms / 1000.0, ceiling),
            f1(sm["jobs_per_s"]) + spread(sm, "jobs_per_s", 1), f1(g(smb, "jobs_per_s")),
            ratio(sm["jobs_per_s"], g(smb, "jobs_per_s")),
            "≥ 80", yes(sm["jobs_per_s"] >= 80))
    if la:
        row("drop-to-request latency, renamed in every %d ms (%d files%s), p50 / p99, ms"
            % (a.interval_ms, npr(la), ", %d runs pooled" % len(la["runs"]) if len(la["runs"]) > 1 else ""),
            "%s / %s" % (f1(la["lat_p50"], 2), f1(la["lat_p99"], 2)),
            "%s / %s" % (f1(g(lab, "lat_p50"), 1), f1(g(lab, "lat_p99"), 1)),
            "p99 " + ratio(la["lat_p99"], g(lab, "lat_p99")), "p99 ≤ 20", yes(la["lat_p99"] <= 20))
    st = R.get("startup")
    if st:
        c = st["cold"]
        ok_w = st["idle_s"] <= 3 and st["vmhwm_mb"] <= 64 and st["api_calls"] == 0
        ok_c = c["idle_s"] <= 3
        row("start-up over %s processed files: ready / idle, warm (median of %d) and with the files' pages "
            "evicted (cold); peak RSS; API calls" % (format(st["n"], ","), st["warm_runs"]),
            "warm %s / %s s, cold %s / %s s; %s MB; %d" % (
                f1(st["ready_s"], 2), f1(st["idle_s"], 2), f1(c["ready_s"], 2), f1(c["idle_s"], 2),
                f1(st["vmhwm_mb"]), st["api_calls"]),
            "n/a (ignores existing files)", "–", "≤ 3 s, ≤ 64 MB, 0",
            "warm %s, cold %s" % (yes(ok_w), yes(ok_c and ok_w)))
    fl = R.get("flood")
    if fl:
        ok = fl["all_queued"] and fl["vmhwm_mb"] <= 128
        row("%s files dropped at once (API stalled): queued + in flight, peak RSS MB" % format(fl["n"], ","),
            "%s%s, %s MB" % (format(fl["queued_seen"], ","), " (all)" if fl["all_queued"] else " (NOT all)",
                             f1(fl["vmhwm_mb"])),
            "n/a", "–", "all, ≤ 128 MB", yes(ok))
    idle = R.get("idle")
    if idle:
        s = idle.get("seedreamd")
        b = idle.get("baseline")
        row("idle %.0f s, no WATCHDOG_USEC: CPU ms, context switches" % s["seconds"],
            "%s ms, %d" % (f1(s["cpu_ms"], 3), s["vol_cs"] + s["invol_cs"]),
            "%s ms, %d" % (f1(b["cpu_ms"], 3), b["vol_cs"] + b["invol_cs"]) if b else "–", "–",
            "~0, no wake-ups", yes(s["cpu_ms"] < 1 and s["vol_cs"] + s["invol_cs"] == 0))
    extra = []
    if sm:
        extra.append("| peak RSS, 256x256 run, MB | %s | %s | %s |" % (
            f1(sm["vmhwm_mb"]) + spread(sm, "vmhwm_mb", 1), f1(g(smb, "rss_peak_sampled_mb")), ratio(sm["vmhwm_mb"], g(smb, "rss_peak_sampled_mb"))))
    if bg:
        extra.append("| throughput, 5.7 MB run, jobs/s | %s | %s | %s |" % (
            f1(bg["jobs_per_s"]) + spread(bg, "jobs_per_s", 1), f1(g(bgb, "jobs_per_s")), ratio(bg["jobs_per_s"], g(bgb, "jobs_per_s"))))
    if la:
        extra.append("| CPU per job in the latency run (one file every %d ms), ms | %s | %s | %s |" % (
            a.interval_ms, f1(la["cpu_ms_per_job"], 3) + spread(la, "cpu_ms_per_job", 3),
            f1(g(lab, "cpu_ms_per_job"), 1),
            ratio(la["cpu_ms_per_job"], g(lab, "cpu_ms_per_job"), 3)))
        extra.append("| latency to the end of the request body, p50 / p99, ms | %s / %s | %s / %s | |" % (
            f1(la["lat_body_p50"], 2), f1(la["lat_body_p99"], 2), f1(g(lab, "lat_body_p50"), 1),
            f1(g(lab, "lat_body_p99"), 1)))
    for k, fig, unit in (("small", "256x256", 3), ("big", "5.7 MB", 2)):
        d = (R.get(k + "_tmpfs") or {}).get("seedreamd")
        if d:
            extra.append("| same files on tmpfs (no disk I/O): CPU per job, %s, ms / jobs/s / RSS MB | "
                         "%s / %s / %s | | |" % (fig, f1(d["cpu_ms_per_job"], unit) + spread(d, "cpu_ms_per_job", unit),
                                                f1(d["jobs_per_s"]) + spread(d, "jobs_per_s", 1), f1(d["vmhwm_mb"])))
    for k, d in (("small", sm), ("big", bg)):
        if d:
            extra.append("| stand-in server CPU per job (%s run, not counted above), ms | %s | %s | |" % (
                k, f1(d["api_cpu_ms_per_job"], 2), f1(g(R[k].get("baseline"), "api_cpu_ms_per_job"), 2)))
    cal = R.get("calib")
    if cal:
        extra.append("| tests/fake_api.py as the server: %d 256x256 PNGs, %d ms, jobs/s (its CPU ms/job) | "
                     "%s (%s) | | |" % (cal["n"], a.latency_ms, f1(cal["jobs_per_s"], 2),
                                        f1(cal["api_cpu_ms_per_job"], 0)))
    if st:
        extra.append("| start-up: CPU ms warm / cold, RSS at idle MB | %s / %s ms, %s MB | | |" % (
            f1(st["cpu_ms"], 0), f1(st["cold"]["cpu_ms"], 0), f1(st["vmrss_mb"])))
    if fl:
        extra.append("| flood: s to rename all / s until all queued, inotify overflow?, daemon CPU per file ms, "
                     "requests at the API | %s / %s, %s, %s, %d | | |" % (
                         f1(fl["rename_seconds"], 2), f1(fl["seconds_to_all_queued"], 2),
                         "yes" if fl["overflow"] else "no", f1(fl["cpu_ms_per_file"], 3), fl["requests_at_api"]))
    return hdr + "\n" + "\n".join(rows), "| other figure | seedreamd | baseline | ratio |\n|---|---|---|---|\n" + "\n".join(extra)


def problems(R):
    p = []
    for k in sorted(R):
        for name, d in (R.get(k) or {}).items():
            if d["errors"] or d["timed_out"] or d["ok"] != d["n"]:
                p.append("%s/%s: %d of %d done, %d errors%s" % (k, name, d["ok"], d["n"], d["errors"],
                                                                " (timed out)" if d["timed_out"] else ""))
            if d["generations"] != d["n"]:
                p.append("%s/%s: %d generation requests for %d files" % (k, name, d["generations"], d["n"]))
    return p


# ------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description="seedreamd benchmark (see bench/bench.py's docstring)")
    ap.add_argument("--binary", default=os.path.join(REPO, "build-bench", "seedreamd"))
    ap.add_argument("--quick", action="store_true", help="smaller N everywhere (~1-2 min)")
    ap.add_argument("--n-small", type=int, help="256x256 PNGs (default 1000, quick 300)")
    ap.add_argument("--n-big", type=int, help="5.7 MB PNGs (default 96, quick 32)")
    ap.add_argument("--n-latency", type=int, help="files for the latency test (default 200, quick 100)")
    ap.add_argument("--interval-ms", type=int, default=100, help="pace of the latency test")
    ap.add_argument("--n-startup", type=int, help="processed files at start-up (default 100000, quick 100000)")
    ap.add_argument("--n-flood", type=int, help="files dropped at once (default 50000, quick 50000)")
    ap.add_argument("--n-calib", type=int, help="files for the tests/fake_api.py run (default 24, quick 0)")
    ap.add_argument("--idle-seconds", type=float, help="default 60, quick 20")
    ap.add_argument("--latency-ms", type=int, default=200, help="API latency for the batch runs")
    ap.add_argument("--in-flight", type=int, default=16)
    ap.add_argument("--only", help="comma-separated scenarios: idle,small,big,latency,calib,startup,flood,"
                    "slowfs")
    ap.add_argument("--n-slowfs", type=int, help="256x256 PNGs per slow-storage run (default 240, quick 120)")
    ap.add_argument("--slowfs-delays", default="0,20,50", help="fsync delays of the slowfs scenario, ms")
    ap.add_argument("--faultfs", help="the fault-injecting shim (default: faultfs.so next to --binary; "
                    "built with the tests)")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false")
    ap.add_argument("--tmpdir", default=None, help="where to put the generated files (default $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--repeat", type=int, help="runs of seedreamd per scenario, medians reported (default 3, "
                    "quick 1); the baseline runs once")
    ap.add_argument("--cache-dir", help="where the 100,000-file tree and the flood files are kept between runs "
                    "(default <tmpdir>/seedreamd-bench-cache)")
    ap.add_argument("--fresh-cache", action="store_true", help="regenerate the cached trees")
    ap.add_argument("--tmpfs", dest="tmpfs_too", action="store_true", default=None,
                    help="also run seedreamd's small and big scenarios with the files on /dev/shm (default: "
                    "yes unless --quick or --tmpdir is already a tmpfs)")
    ap.add_argument("--no-tmpfs", dest="tmpfs_too", action="store_false")
    ap.add_argument("--results", default=os.path.join(HERE, "results.md"), help="'' to not write it")
    a = ap.parse_args()
    q = a.quick
    a.n_small = a.n_small or (300 if q else 1000)
    a.n_big = a.n_big or (32 if q else 96)
    a.n_latency = a.n_latency or (100 if q else 200)
    a.n_slowfs = a.n_slowfs or (120 if q else 240)
    a.slowfs_delays = [int(x) for x in a.slowfs_delays.split(",") if x.strip()]
    if 0 not in a.slowfs_delays:
        a.slowfs_delays.insert(0, 0)  # the reference rate
    a.faultfs = os.path.abspath(a.faultfs or os.path.join(os.path.dirname(a.binary), "faultfs.so"))
    a.repeat = a.repeat or (1 if q else 3)
    if a.tmpfs_too is None:
        a.tmpfs_too = not q
    if a.tmpfs_too and (not os.path.isdir("/dev/shm") or
                        sh("stat -f -c %%T %s" % (a.tmpdir or tempfile.gettempdir())) == "tmpfs"):
        a.tmpfs_too = False
    a.n_startup = a.n_startup or 100_000
    a.n_flood = a.n_flood or 50_000
    a.n_calib = a.n_calib if a.n_calib is not None else (0 if q else 24)
    a.idle_seconds = a.idle_seconds or (20 if q else 60)
    only = set((a.only or "idle,small,big,latency,calib,startup,flood,slowfs").split(","))
    if not a.n_calib:
        only.discard("calib")

    if not os.access(a.binary, os.X_OK):
        sys.exit("no seedreamd binary at %s (build it, or pass --binary)" % a.binary)
    if "slowfs" in only and not os.path.isfile(a.faultfs):
        sys.exit("the slowfs scenario needs %s (build the tests: cmake --build, or pass --faultfs; "
                 "--only without slowfs skips it)" % a.faultfs)
    for tool in ("inotifywait", "curl", "jq", "base64", "xargs") if a.baseline else ():
        if not shutil.which(tool):
            sys.exit("the baseline needs %s (apt-get install inotify-tools curl jq)" % tool)

    ctx = Ctx()
    ctx.args = a
    ctx.binary = os.path.abspath(a.binary)
    ctx.tmp = tempfile.mkdtemp(prefix="seedreamd-bench-", dir=a.tmpdir)
    ctx.logdir = os.path.join(ctx.tmp, "logs")
    os.makedirs(ctx.logdir)
    t_start = time.monotonic()
    info = machine_info(ctx.binary)
    info["fs"] = sh("findmnt -n -o FSTYPE,OPTIONS -T %s" % ctx.tmp) or sh("stat -f -c %%T %s" % ctx.tmp)
    log("machine: %s" % info["line"])
    log("temporary files in %s" % ctx.tmp)
    R = {}
    contenders = [Seedreamd, Baseline] if a.baseline else [Seedreamd]
    try:
        idle = scenario_idle_start(ctx) if "idle" in only else None
        # generate everything while the idle test runs (it only watches its own empty folders)
        log("generating images")
        small, big, tiny = small_template(), big_template(), tiny_template()
        if {"small", "calib"} & only:
            stage_images(os.path.join(ctx.tmp, "stage-small"), small, range(1, a.n_small + 1))
        if "slowfs" in only:
            stage_images(os.path.join(ctx.tmp, "stage-slowfs"), small, range(4_000_001, 4_000_001 + a.n_slowfs))
        if "latency" in only:
            stage_images(os.path.join(ctx.tmp, "stage-latency"), small, range(1_000_001, 1_000_001 + a.n_latency))
        if "big" in only:
            stage_images(os.path.join(ctx.tmp, "stage-big"), big, range(2_000_001, 2_000_001 + a.n_big))
        cache = a.cache_dir or os.path.join(a.tmpdir or tempfile.gettempdir(), "seedreamd-bench-cache")
        if a.fresh_cache:
            shutil.rmtree(cache, ignore_errors=True)
        if "flood" in only:
            ctx.flood_stage = os.path.join(cache, "flood-stage")
            os.makedirs(ctx.flood_stage, exist_ok=True)
            have = set(os.listdir(ctx.flood_stage))
            want = ["img%08d.png" % i for i in range(3_000_001, 3_000_001 + a.n_flood)]
            for n_ in have - set(want):
                os.unlink(os.path.join(ctx.flood_stage, n_))
            missing = [int(n_[3:11]) for n_ in want if n_ not in have]
            stage_images(ctx.flood_stage, tiny, missing)
            log("flood files: %d cached, %d written, in %s" % (len(want) - len(missing), len(missing), ctx.flood_stage))
        if "startup" in only:
            root = os.path.join(cache, "processed-%d" % a.n_startup)
            t = time.monotonic()
            ctx.startup_hot, _, made = make_processed_tree(root, a.n_startup, tiny)
            log("processed tree of %d files %s in %s" % (
                a.n_startup, "written in %.1f s" % (time.monotonic() - t) if made else "reused", root))
        os.sync()
        log("images ready (small %d B, big %d B, tiny %d B)" % (len(small.make(1)), len(big.make(1)), len(tiny.make(1))))
        if idle:
            R["idle"] = scenario_idle_end(ctx, idle)
        batches = (("small", "stage-small", range(1, a.n_small + 1), 0.0),
                   ("big", "stage-big", range(2_000_001, 2_000_001 + a.n_big), 0.0),
                   ("latency", "stage-latency", range(1_000_001, 1_000_001 + a.n_latency), a.interval_ms / 1000.0))
        for tag, stage, ids, interval in batches:
            if tag not in only:
                continue
            R[tag] = {}
            if tag != "latency" and a.tmpfs_too:
                # the same for seedreamd alone with every file on tmpfs: no disk I/O in its CPU
                shm = tempfile.mkdtemp(prefix="seedreamd-bench-", dir="/dev/shm")
                try:
                    ctx_shm = Ctx()
                    ctx_shm.__dict__.update(ctx.__dict__, tmp=shm)
                    stage_images(os.path.join(shm, stage), small if tag == "small" else big, ids)
                    R[tag + "_tmpfs"] = {"seedreamd": aggregate([
                        run_batch(ctx_shm, tag + "-tmpfs", Seedreamd, os.path.join(shm, stage), list(ids),
                                  a.latency_ms, rep=k) for k in range(a.repeat)])}
                finally:
                    shutil.rmtree(shm, ignore_errors=True)
            # seedreamd, the baseline, then seedreamd again (a.repeat runs in all)
            order = [Seedreamd] + ([Baseline] if a.baseline else []) + [Seedreamd] * (a.repeat - 1)
            runs = {}
            for k, cls in enumerate(order):
                r = run_batch(ctx, tag, cls, os.path.join(ctx.tmp, stage), list(ids), a.latency_ms,
                              interval_s=interval, rep=k)
                runs.setdefault(cls.name, []).append(r)
            for name, rs in runs.items():
                R[tag][name] = aggregate(rs)
        if "calib" in only:
            ids = list(range(1, a.n_calib + 1))
            R["calib"] = run_batch(ctx, "calib", Seedreamd, os.path.join(ctx.tmp, "stage-small"), ids,
                                   a.latency_ms, api_kind="python", timeout_s=300)
        if "startup" in only:
            # first with the tree's file pages evicted (cold), then warm
            t = time.monotonic()
            evicted = evict_page_cache(os.path.dirname(ctx.startup_hot))
            log("startup: evicted %d files from the page cache in %.1f s" % (evicted, time.monotonic() - t))
            cold = scenario_startup(ctx, 0)
            warm = [scenario_startup(ctx, k) for k in range(1, max(2, a.repeat))]
            st = {"n": a.n_startup, "cold": cold, "warm_runs": len(warm)}
            for k in ("ready_s", "idle_s", "cpu_ms", "vmhwm_mb", "vmrss_mb"):
                st[k] = median([r[k] for r in warm])
            st["vmhwm_mb"] = max(r["vmhwm_mb"] for r in warm + [cold])
            st["api_calls"] = sum(r["api_calls"] for r in warm + [cold])
            st["ready_logged"] = all(r["ready_logged"] for r in warm + [cold])
            R["startup"] = st
        if "flood" in only:
            R["flood"] = scenario_flood(ctx)
        if "slowfs" in only:
            R["slowfs"] = scenario_slowfs(ctx)
    finally:
        if a.keep:
            log("kept %s" % ctx.tmp)
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)

    main_table, extra_table = report(ctx, R)
    cal = dict(R.get("calib") or {})
    probs = problems({k: v for k, v in R.items() if k in ("small", "big", "latency", "small_tmpfs", "big_tmpfs")} |
                     ({"calib": {"seedreamd": cal}} if cal else {}) |
                     {"slowfs-%dms" % k: v for k, v in (R.get("slowfs") or {}).items()})
    slowfs_table = report_slowfs(ctx, R["slowfs"]) if R.get("slowfs") else None
    elapsed = time.monotonic() - t_start
    cmd = "bench/run.sh " + " ".join(sys.argv[1:])
    md = ["# seedreamd benchmark", "",
          "Machine: %s  " % info["line"],
          "Software: %s; seedreamd commit %s  " % (info["versions"], info["commit"]),
          "Files (inputs, outputs, sidecars) on: %s  " % info["fs"],
          "Command: `%s` (%.0f s), %s" % (cmd.strip(), elapsed, time.strftime("%Y-%m-%d %H:%M:%S %Z")), "",
          main_table, "", extra_table, ""] + (
              ["Slow storage (every fsync of the contender's files delayed by tests/faultfs/faultfs.so; "
               "%d 256x256 PNGs, %d ms, %d in flight):" % (a.n_slowfs, a.latency_ms, a.in_flight), "",
               slowfs_table, ""] if slowfs_table else []) + [
          "Server: bench/fast_api.py (asyncio) for every row except the tests/fake_api.py line; "
          "latency %d ms per generation, answered with a URL to a fixed 856-byte JPEG on the same server."
          % a.latency_ms, "",
          "How it is measured:",
          "- CPU: user+sys of each contender's whole process tree (getrusage(RUSAGE_CHILDREN) in "
          "bench/cpuwrap.py, a child subreaper, so orphans count too), minus what the tree had used when it "
          "was ready (/proc schedstat); the stand-in server's own CPU is reported apart and not counted.",
          "- Throughput: N / (time of the last sidecar written (its mtime) − time of the first rename); "
          "all N files are renamed in at once. The ceiling is max_in_flight / latency = 80 jobs/s: every "
          "generation holds its slot for the 200 ms plus its upload, so ≥ 80 cannot be reached exactly.",
          "- seedreamd runs --repeat times per scenario (median, min–max in brackets), interleaved with the "
          "baseline's single run. Its CPU per job includes the kernel work of writing each result durably "
          "(on this VM's virtio disk, fsync and file creation are a large part of it: see the tmpfs rows).",
          "- Latency: time just before rename(2) in the harness to the time the stand-in had read the request "
          "line (time.time_ns(), same clock; the request body follows). fake_api.py timestamps only after "
          "reading and parsing the whole body, in µs — not used for latency.",
          "- RSS: seedreamd VmHWM from /proc/<pid>/status at the end of the run; baseline: the largest sum of "
          "RSS over its processes, sampled every 50 ms (shared library pages count once per process, so this overstates it somewhat).",
          "- Start-up: from exec to READY=1 on a NOTIFY_SOCKET given by the harness (the `ready` log line is "
          "logged just then), then until the daemon's CPU time stops moving for 1 s. Cold: the 200,000 inputs "
          "and sidecars evicted from the page cache first (posix_fadvise DONTNEED; directories and inodes stay "
          "cached, so a real cold boot is slower still); warm: the runs after it. The tree is cached between "
          "runs in --cache-dir.",
          "- Slow storage: the shim (tests/faultfs/faultfs.so, LD_PRELOAD) sleeps before each fsync/fdatasync "
          "under the run's temporary directory (outputs, sidecars, state_dir, the client's files); the "
          "no-delay row preloads it without rules. The client is bench/thread_client.py (one thread per file, "
          "at most max_in_flight at a time; output and sidecar each written to a temporary file, fsync'd, "
          "renamed, folder fsync'd; no journal). Watchdog: WATCHDOG_USEC=1 s, so seedreamd pings every 0.5 s; "
          "the gap is the longest stretch without a ping from the first rename to the last sidecar.",
          "- Flood: the API answers after an hour, so 16 requests hang and the rest queue; the count comes from "
          "the daemon's STATUS= (a NOTIFY_SOCKET), RSS from /proc.",
          "- Idle: CPU (schedstat) and voluntary+involuntary context switches of every thread over the window, "
          "no WATCHDOG_USEC; both contenders idle at the same time (while the harness generates the images "
          "for the other scenarios in other folders).",
          ""]
    if probs:
        md += ["Problems in this run:", ""] + ["- " + p for p in probs] + [""]
    md += ["<details><summary>lscpu | head</summary>", "", "```", info["lscpu"], "```", "", "</details>", "",
           "<details><summary>raw results (JSON)</summary>", "", "```json",
           json.dumps(public(R), indent=1, sort_keys=True, default=str), "```", "", "</details>", ""]
    text = "\n".join(md)
    print(text)
    if a.results:
        with open(a.results, "w") as f:
            f.write(text)
        log("wrote %s" % a.results)
    return 1 if probs else 0


if __name__ == "__main__":
    sys.exit(main())
