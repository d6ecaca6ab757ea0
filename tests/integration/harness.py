"""Shared helpers for seedreamd's integration tests (not a test itself).

Each test_*.py calls harness.main(test_function). A test function receives a Context:

    ctx.checks          .check(cond, what, detail) / .eq(found, expected, what) / .require(...)
    ctx.start_api(...)  the stand-in API (tests/fake_api.py) on a free loopback port
    ctx.folder(name)    a fresh tree: <tmp>/<name>/{hot, state}, output <tmp>/<name>/hot-out
    ctx.write_config()  a YAML config for the daemon
    ctx.run_once(...)   seedreamd -c CONFIG --once, with a timeout, logs kept
    ctx.start_daemon()  seedreamd in the background, waits for its "ready" line; faultfs= preloads
                        the fault-injecting shim, notify= / watchdog_usec= give it a NOTIFY_SOCKET
    ctx.faultfs()       tests/faultfs/faultfs.so's control file: .set(rules...), .clear(), .applied()
    notify_socket(ctx)  a NOTIFY_SOCKET the test owns (test_systemd.NotifySocket); watchdog_pings()
                        and longest_gap() for the WATCHDOG=1 timestamps
    ctx.start_fast_api  bench/fast_api.py, for tests that need hundreds of jobs/s

Every check prints one line ("ok - ..." or "FAIL - ...: expected ..., found ..."), and the script
ends with "N passed, M failed"; the exit status is 0 only when nothing failed. The daemon and the
server are always stopped, and the temporary directory removed (unless --keep).
"""

import argparse
import calendar
import hashlib
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FAKE_API = os.path.join(REPO, "tests", "fake_api.py")
HOSTILE_API = os.path.join(REPO, "tests", "hostile_api.py")
sys.path.insert(0, os.path.dirname(FAKE_API))
from fake_api import magic_format  # noqa: E402  (the API's lowercase format name, or None)
SAMPLES = os.path.join(REPO, "tests", "data", "samples")
sys.path.insert(0, os.path.join(REPO, "tests", "data"))
import make_samples  # noqa: E402

MODEL = "doubao-seedream-4-5-251128"
PROMPT = "Make it watercolour"
DEFAULT_KEY = "test-key"
FAKE_USAGE = {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

SUCCESS_FIELDS = ("source", "source_sha256", "source_size", "source_mtime", "output", "model",
                  "prompt", "size", "result_size", "watermark", "response_format", "created",
                  "usage", "request_id", "attempts", "elapsed_ms", "completed_at", "seedreamd_version")
ERROR_FIELDS = ("source", "source_sha256", "source_size", "source_mtime", "error", "request_id",
                "attempts", "failed_at", "seedreamd_version")

RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?Z$")


class Abort(Exception):
    """A check whose failure makes the rest of the script meaningless."""


# ------------------------------------------------------------------------------------------------
# checks


def _short(v, limit=300):
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "...(%d chars)" % len(s)


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            print("ok   - %s" % what, flush=True)
        else:
            self.failed += 1
            print("FAIL - %s%s" % (what, (": " + detail) if detail else ""), flush=True)
        return bool(cond)

    def eq(self, found, expected, what):
        return self.check(found == expected, what,
                          "expected %s, found %s" % (_short(expected), _short(found)))

    def problems(self, problems, what, limit=6):
        """One check over a list of problem strings (passes when the list is empty)."""
        detail = "; ".join(problems[:limit])
        if len(problems) > limit:
            detail += "; ... and %d more" % (len(problems) - limit)
        return self.check(not problems, what, detail)

    def same_names(self, found, expected, what):
        """Compares two collections of names, reporting what is missing and what is extra."""
        found, expected = sorted(found), sorted(expected)
        missing = [n for n in expected if n not in found]
        extra = [n for n in found if n not in expected]
        detail = []
        if missing:
            detail.append("missing %s" % _short(missing, 400))
        if extra:
            detail.append("unexpected %s" % _short(extra, 400))
        return self.check(found == expected, what, "; ".join(detail) or
                          "expected %s, found %s" % (_short(expected), _short(found)))

    def require(self, cond, what, detail=""):
        if not self.check(cond, what, detail):
            raise Abort(what)


# ------------------------------------------------------------------------------------------------
# small helpers


def wait_until(cond, timeout, step=0.05):
    """Polls cond() until it is true or timeout seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def rename_in(folder, name, data):
    """Written under a hidden name, then renamed in, as pipelines and sync tools do."""
    tmp = os.path.join(folder, "." + name + ".partial")
    write_bytes(tmp, data)
    os.rename(tmp, os.path.join(folder, name))


def read_json(path):
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def rfc3339_ns(mtime_ns):
    sec, ns = divmod(mtime_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%09dZ" % ns


def parse_rfc3339(text):
    """Epoch seconds (float) of an RFC 3339 UTC 'Z' timestamp, or None."""
    m = RFC3339.match(text) if isinstance(text, str) else None
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = float(m.group(7)) if m.group(7) else 0.0
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) + frac


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_int(v):
    return is_number(v) and float(v) == int(v)


FAKE_COMMENT = re.compile(r"seedream-fake sha256=([0-9a-f]{64}) prompt_sha256=([0-9a-f]{64})")


XMP_APP1_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


def jpeg_segments(data):
    """[(marker, offset, total length)] of a JPEG's segments from SOI up to SOS; raises ValueError
    when they do not parse."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("no SOI")
    segs, i = [], 2
    while True:
        if i + 4 > len(data) or data[i] != 0xFF:
            raise ValueError("no marker at %d" % i)
        m = data[i + 1]
        n = int.from_bytes(data[i + 2:i + 4], "big")
        if n < 2 or i + 2 + n > len(data):
            raise ValueError("segment %02x at %d runs past the end" % (m, i))
        segs.append((m, i, 2 + n))
        if m == 0xDA:
            return segs
        i += 2 + n


def jpeg_xmp(data):
    """The XMP packet (bytes) of a JPEG's APP1 segment, or None."""
    for m, off, n in jpeg_segments(data):
        if m == 0xE1 and data[off + 4:off + 4 + len(XMP_APP1_HEADER)] == XMP_APP1_HEADER:
            return data[off + 4 + len(XMP_APP1_HEADER):off + n]
    return None


def strip_xmp(data):
    """The JPEG without its XMP APP1 segment: what the API returned, if seedreamd inserted it."""
    if data[:2] != b"\xff\xd8":
        return data
    for m, off, n in jpeg_segments(data):
        if m == 0xE1 and data[off + 4:off + 4 + len(XMP_APP1_HEADER)] == XMP_APP1_HEADER:
            return data[:off] + data[off + n:]
    return data


def sha256_output(path):
    """sha256 of an output JPEG as the API returned it (the XMP seedreamd inserts taken out)."""
    return sha256_bytes(strip_xmp(read_bytes(path)))


def output_provenance(data):
    """(input sha256, prompt sha256) from the fake's COM segment, or None."""
    com = make_samples.jpeg_comment(data) if data[:2] == b"\xff\xd8" else None
    m = FAKE_COMMENT.search(com or "")
    return (m.group(1), m.group(2)) if m else None


def png_image(w, h, seed):
    """A distinct, valid RGB PNG (a two-colour gradient with a seed-dependent pattern)."""
    a = ((seed * 73) % 256, (seed * 151 + 40) % 256, (seed * 199 + 90) % 256)
    b = (255 - a[0], (a[1] + 128) % 256, 255 - a[2])
    px = bytearray()
    for y in range(h):
        for x in range(w):
            t = (x + y) / max(1, w + h - 2)
            c = [int(a[i] + (b[i] - a[i]) * t) for i in range(3)]
            if ((x // 4) + (y // 4) + seed) % 5 == 0:
                c = [255 - v for v in c]
            px += bytes(c)
    return make_samples.encode_png(w, h, bytes(px), 2)


def jpeg_image(w, h, seed):
    """A distinct, valid baseline JPEG (colour blocks)."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            k = (x // 8) * 7 + (y // 8) * 13 + seed * 31
            px += bytes(((k * 37) % 256, (k * 91 + seed * 17) % 256, (k * 53 + 100) % 256))
    return make_samples.encode_jpeg(w, h, bytes(px), 85)


def sent(records, names_by_sha):
    """What each generation record sent, as file names where known (for readable messages)."""
    return [names_by_sha.get(r.get("image_sha256")) or "unknown content %s..." % (r.get("image_sha256") or "")[:12]
            for r in records]


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def big_png(total, fill=None):
    """A valid PNG (a sample) grown to `total` bytes by a private ancillary chunk before IEND;
    the padding is `fill`'s bytes (default: zeros)."""
    data = sample("plasma.png")
    iend = data[-12:]
    assert iend[4:8] == b"IEND"
    pad = total - len(data) - 12
    return data[:-12] + png_chunk(b"prVt", fill(pad) if fill else bytes(pad)) + iend


def tree_texts(folder):
    """(relative path, text) of every file under folder, bytes read as Latin-1."""
    for root, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                yield os.path.relpath(p, folder), f.read().decode("latin-1")


class tmpfs:
    """`with h.tmpfs(path, "size=1m"):` a tmpfs mounted on path (made if missing) for the block;
    needs root."""

    def __init__(self, path, options="size=16m"):
        self.path, self.options = path, options

    def __enter__(self):
        os.makedirs(self.path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", self.options, "tmpfs", self.path], check=True)
        return self.path

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", self.path], check=False)
        return False


def sample(name):
    return read_bytes(os.path.join(SAMPLES, name))


def sample_names():
    return sorted(n for n in os.listdir(SAMPLES) if not n.startswith("."))


def snapshot(folder):
    """{name: (size, mtime_ns, sha256)} for every file directly in folder (hidden ones too)."""
    snap = {}
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            st = os.stat(p)
            snap[name] = (st.st_size, st.st_mtime_ns, sha256_file(p))
    return snap


def snapshot_problems(before, after):
    problems = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            problems.append("%s disappeared" % name)
        elif name not in before:
            problems.append("%s appeared" % name)
        elif before[name] != after[name]:
            b, a = before[name], after[name]
            what = []
            if b[0] != a[0]:
                what.append("size %d -> %d" % (b[0], a[0]))
            if b[1] != a[1]:
                what.append("mtime %s -> %s" % (rfc3339_ns(b[1]), rfc3339_ns(a[1])))
            if b[2] != a[2]:
                what.append("content changed")
            problems.append("%s: %s" % (name, ", ".join(what)))
    return problems


def leftovers(folder):
    """Hidden or temporary-looking files anywhere under folder."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            if name.startswith(".") or name.endswith((".tmp", ".part")):
                found.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)


def journal_lines(state_dir):
    """The lines of <state_dir>/journal.log as (kind, payload bytes), each frame and checksum
    checked: "SJ1 <W|D> <length> <crc32 hex> <payload>\n". A line that does not check out is
    returned as ("?", line)."""
    path = os.path.join(state_dir, "journal.log")
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        m = re.match(rb"SJ1 ([WD]) (\d+) ([0-9a-f]{8}) (.*)\Z", line, re.S)
        if (not m or int(m.group(2)) != len(m.group(4))
                or zlib.crc32(m.group(1) + m.group(4)) != int(m.group(3), 16)):
            out.append(("?", line))
        else:
            out.append((m.group(1).decode(), m.group(4)))
    return out


def journal_records(state_dir):
    """The live paid-result records of the journal (parsed JSON), in order: a write not followed
    by a "done" tombstone for its folder and source."""
    def key(rec):
        return (rec.get("folder_hex") or rec.get("folder"), rec.get("source_hex") or rec.get("source"))
    live = {}
    for kind, payload in journal_lines(state_dir):
        if kind == "?":
            continue
        rec = json.loads(payload.decode("utf-8"))
        live.pop(key(rec), None)
        if kind == "W":
            live[key(rec)] = rec
    return list(live.values())


def listing(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# ------------------------------------------------------------------------------------------------
# sidecars and outputs


def _source_checks(sc, p, src_path, source):
    """Checks the source fields both kinds of sidecar carry against the file; returns the
    want(field, cond, expected) used for the rest, which appends to p."""
    st = os.stat(src_path)

    def want(field, cond, expected):
        if field in sc and not cond(sc[field]):
            p.append("%s: expected %s, found %s" % (field, expected, _short(sc[field])))

    want("source", lambda v: v == source, repr(source))
    want("source_sha256", lambda v: v == sha256_file(src_path), "the file's sha256 " + sha256_file(src_path))
    want("source_size", lambda v: is_int(v) and v == st.st_size, "the file's size %d" % st.st_size)
    want("source_mtime", lambda v: isinstance(v, str) and RFC3339_NS.match(v) and v == rfc3339_ns(st.st_mtime_ns),
         "the file's mtime as RFC 3339 with nanoseconds %r" % rfc3339_ns(st.st_mtime_ns))
    return want


def success_sidecar_problems(sc, *, src_path, source, output, attempts=1, response_format="url",
                             model=MODEL, prompt=PROMPT, size="2K", watermark=False, version=None,
                             record=None, window=None):
    """Problems with a success sidecar for the source file at src_path. `record` is the fake's
    generation record that produced it (for request_id and created); `window` (t0, t1) bounds
    completed_at."""
    p = []
    if not isinstance(sc, dict):
        return ["sidecar is not a JSON object: %s" % _short(sc)]
    missing = [f for f in SUCCESS_FIELDS if f not in sc]
    if missing:
        p.append("missing fields %s" % ", ".join(missing))
    want = _source_checks(sc, p, src_path, source)
    want("output", lambda v: v == output, repr(output))
    want("model", lambda v: v == model, repr(model))
    want("prompt", lambda v: v == prompt, repr(prompt))
    want("size", lambda v: v == size, repr(size))
    want("result_size", lambda v: v == "2048x2048" if size == "2K" else isinstance(v, str),
         "the API's data[0].size '2048x2048'")
    want("watermark", lambda v: v is watermark, repr(watermark))
    want("response_format", lambda v: v == response_format, repr(response_format))
    want("usage", lambda v: v == FAKE_USAGE, "the API's usage object %r" % FAKE_USAGE)
    want("attempts", lambda v: is_int(v) and v == attempts, "%d (API calls)" % attempts)
    want("elapsed_ms", lambda v: is_number(v) and v >= 0, "a number >= 0")
    want("seedreamd_version", lambda v: isinstance(v, str) and v and (version is None or v == version),
         repr(version) if version else "a non-empty string")
    if record is not None:
        want("request_id", lambda v: v == record.get("request_id"), "the x-request-id %r" % record.get("request_id"))
        want("created", lambda v: is_number(v) and v == record.get("created"),
             "the API's created %r" % record.get("created"))
    else:
        want("request_id", lambda v: isinstance(v, str) and v, "a non-empty string")
        want("created", is_number, "a number")
    t = parse_rfc3339(sc.get("completed_at"))
    if "completed_at" in sc:
        if t is None:
            p.append("completed_at: expected RFC 3339 UTC ('Z'), found %s" % _short(sc["completed_at"]))
        elif window and not (window[0] - 2 <= t <= window[1] + 2):
            p.append("completed_at %s is outside the run" % sc["completed_at"])
    return p


def error_sidecar_problems(sc, *, src_path, source, http_status, code=None, code_prefix=None,
                           attempts=None, version=None, record=None):
    p = []
    if not isinstance(sc, dict):
        return ["error sidecar is not a JSON object: %s" % _short(sc)]
    missing = [f for f in ERROR_FIELDS if f not in sc]
    if missing:
        p.append("missing fields %s" % ", ".join(missing))
    want = _source_checks(sc, p, src_path, source)
    want("attempts", lambda v: attempts is None or (is_int(v) and v == attempts), repr(attempts))
    want("seedreamd_version", lambda v: isinstance(v, str) and v and (version is None or v == version),
         repr(version) if version else "a non-empty string")
    if "failed_at" in sc and parse_rfc3339(sc["failed_at"]) is None:
        p.append("failed_at: expected RFC 3339 UTC ('Z'), found %s" % _short(sc["failed_at"]))
    err = sc.get("error")
    if "error" in sc:
        if not isinstance(err, dict):
            p.append("error: expected an object, found %s" % _short(err))
        else:
            for f in ("http_status", "code", "message"):
                if f not in err:
                    p.append("error.%s missing" % f)
            if http_status is None:
                if err.get("http_status") is not None:
                    p.append("error.http_status: expected null (no HTTP exchange), found %s"
                             % _short(err.get("http_status")))
            elif err.get("http_status") != http_status:
                p.append("error.http_status: expected %s, found %s" % (http_status, _short(err.get("http_status"))))
            c = err.get("code")
            if code is not None and c != code:
                p.append("error.code: expected %r, found %s" % (code, _short(c)))
            if code_prefix is not None and not (isinstance(c, str) and c.startswith(code_prefix)):
                p.append("error.code: expected one starting %r, found %s" % (code_prefix, _short(c)))
            if not isinstance(err.get("message"), str) or not err.get("message"):
                p.append("error.message: expected a non-empty string, found %s" % _short(err.get("message")))
    if record is not None:
        want("request_id", lambda v: v == record.get("request_id"), "the x-request-id %r" % record.get("request_id"))
    return p


def output_problems(path, src_sha, prompt=PROMPT):
    """Problems with a generated image written by the daemon, checked against the fake's COM."""
    if not os.path.isfile(path):
        return ["%s does not exist" % os.path.basename(path)]
    data = read_bytes(path)
    name = os.path.basename(path)
    p = []
    if not data.startswith(b"\xff\xd8\xff") or not data.endswith(b"\xff\xd9"):
        p.append("%s is not a complete JPEG (%d bytes, starts %s, ends %s)"
                 % (name, len(data), data[:3].hex(), data[-2:].hex()))
        return p
    prov = output_provenance(data)
    if prov is None:
        p.append("%s has no seedream-fake COM segment" % name)
    else:
        if prov[0] != src_sha:
            p.append("%s was generated from input sha256 %s..., expected %s..." % (name, prov[0][:12], src_sha[:12]))
        if prov[1] != sha256_bytes(prompt.encode("utf-8")):
            p.append("%s was generated with another prompt" % name)
    return p


# ------------------------------------------------------------------------------------------------
# the stand-in API


def _start_server(ctx, argv, log, log_file, what):
    """Starts a stand-in server that prints "PORT <n>" once listening; returns (proc, port)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    ctx.processes.append(proc)
    line = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 100)
            if not chunk:
                break
            line += chunk
    m = re.match(rb"PORT (\d+)\n", line)
    if not m:
        log.flush()
        raise Abort("%s did not start (stdout %r); its log:\n%s" % (what, line, tail(log_file)))
    return proc, int(m.group(1))


class FakeAPI:
    def __init__(self, ctx, name, key=DEFAULT_KEY, faults=None, latency_ms=0, extra=()):
        self.ctx = ctx
        self.key = key
        self.state_file = os.path.join(ctx.tmp, "%s-api-state.jsonl" % name)
        self.log_file = os.path.join(ctx.tmp, "%s-api.log" % name)
        argv = [sys.executable, FAKE_API, "--port", "0", "--state-file", self.state_file,
                "--key", key, "--max-seconds", "300"]
        if faults:
            argv += ["--faults", ",".join(faults)]
        if latency_ms:
            argv += ["--latency-ms", str(latency_ms)]
        argv += list(extra)
        self.log = open(self.log_file, "wb")
        self.proc, self.port = _start_server(ctx, argv, self.log, self.log_file, "the stand-in API")
        self.base_url = "http://127.0.0.1:%d/v1" % self.port

    def records(self, kind=None):
        if not os.path.exists(self.state_file):
            return []
        out = []
        with open(self.state_file, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    if kind is None or rec.get("kind") == kind:
                        out.append(rec)
        return out

    def generations(self, valid_only=True):
        """Generation requests; by default only the valid, authenticated ones."""
        return [r for r in self.records("generation") if not (valid_only and r.get("rejected"))]

    def downloads(self):
        return self.records("download")

    def rejected(self):
        return [r for r in self.records("generation") if r.get("rejected")]

    def _http(self, method, path, body=None):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), method=method,
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self):
        return self._http("GET", "/_stats")

    def add_faults(self, tokens, replace=False):
        """Appends fault tokens to the server's queue (replace=True: drops what is queued first)."""
        return self._http("POST", "/_faults" + ("?replace=1" if replace else ""), list(tokens))

    def queued_faults(self):
        return self._http("GET", "/_faults")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


# ------------------------------------------------------------------------------------------------
# the daemon


class HostileAPI(FakeAPI):
    """tests/hostile_api.py: a stand-in that answers as its script says (see that file)."""

    def __init__(self, ctx, name, script=None, host="127.0.0.1"):  # pylint: disable=super-init-not-called
        self.ctx = ctx
        self.key = DEFAULT_KEY
        self.state_file = os.path.join(ctx.tmp, "%s-api-state.jsonl" % name)
        self.log_file = os.path.join(ctx.tmp, "%s-api.log" % name)
        argv = [sys.executable, HOSTILE_API, "--host", host, "--port", "0",
                "--state-file", self.state_file, "--max-seconds", "300"]
        if script is not None:
            path = os.path.join(ctx.tmp, "%s-script.json" % name)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(script, f)
            argv += ["--script", path]
        self.log = open(self.log_file, "wb")
        self.proc, self.port = _start_server(ctx, argv, self.log, self.log_file, "the hostile API")
        self.host = host
        hostpart = "[%s]" % host if ":" in host else host
        self.base_url = "http://%s:%d/v1" % (hostpart, self.port)
        self._control = "http://%s:%d" % (hostpart, self.port)

    def _http(self, method, path, body=None):
        req = urllib.request.Request(self._control + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
            return json.loads(data) if data else None

    def set_script(self, script):
        return self._http("POST", "/_script", script)

    def generations(self, valid_only=True):
        return [r for r in self.records("generation") if r.get("valid") or not valid_only]

    def images(self):
        """Downloads of honest results."""
        return self.records("image")


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no %s)" % path
    return "\n".join(text.splitlines()[-lines:])


class FaultFS:
    """tests/faultfs/faultfs.so (built next to the binary) and its control file: rules set at run
    time (see faultfs.c's header), and the log of the rules it applied."""

    def __init__(self, ctx, name="faultfs"):
        self.shim = os.path.join(os.path.dirname(ctx.binary), "faultfs.so")
        if not os.path.isfile(self.shim):
            raise Abort("the fault-injecting shim %s is missing: build the tests (cmake --build)"
                        % self.shim)
        self.control = os.path.join(ctx.tmp, "%s.control" % name)
        self.log = os.path.join(ctx.tmp, "%s.log" % name)
        self.set()

    def set(self, *rules):
        """Replaces the rules (atomically: the shim sees the old set or the new one)."""
        tmp = self.control + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(r + "\n" for r in rules))
        os.rename(tmp, self.control)

    def clear(self):
        self.set()

    def applied(self):
        """Lines 'delay|fail|stall <op> <path> <arg>' for each rule applied so far."""
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def env(self, env):
        """env with the shim preloaded. A sanitizer runtime checks it comes first in the library
        list; the shim only forwards to it, so that check is turned off."""
        env = dict(env)
        env["LD_PRELOAD"] = self.shim + ((" " + env["LD_PRELOAD"]) if env.get("LD_PRELOAD") else "")
        env["FAULTFS_CONTROL"] = self.control
        env["FAULTFS_LOG"] = self.log
        opts = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "verify_asan_link_order=0"
        return env


def notify_socket(ctx, name="notify"):
    """A stand-in for systemd's NOTIFY_SOCKET (test_systemd.NotifySocket): every datagram with
    its arrival time; use with ctx.start_daemon(..., notify=sock, watchdog_usec=...)."""
    from test_systemd import NotifySocket  # pylint: disable=import-outside-toplevel
    sock = NotifySocket(ctx.tmp, name)
    ctx.notify_sockets.append(sock)
    return sock


def watchdog_pings(msgs):
    """Monotonic times of the WATCHDOG=1 messages."""
    return [m["mono"] for m in msgs if m["fields"].get("WATCHDOG") == "1"]


def longest_gap(times, start, end):
    """(seconds, from, to): the longest stretch within [start, end] without one of times."""
    points = [start] + sorted(t for t in times if start < t < end) + [end]
    best = (0.0, start, start)
    for a, b in zip(points, points[1:]):
        if b - a > best[0]:
            best = (b - a, a, b)
    return best


class FastAPI(FakeAPI):
    """bench/fast_api.py: a stand-in that sustains hundreds of jobs/s (tests/fake_api.py renders
    every result in Python and manages a few per second). It validates little: the key only;
    records (GET /_records) carry the "benchid" tEXt chunk of each PNG sent (see bench_png)."""

    def __init__(self, ctx, name, latency_ms=0):  # pylint: disable=super-init-not-called
        self.ctx = ctx
        self.key = DEFAULT_KEY
        self.state_file = None
        self.log_file = os.path.join(ctx.tmp, "%s-api.log" % name)
        argv = [sys.executable, os.path.join(REPO, "bench", "fast_api.py"), "--port", "0",
                "--key", DEFAULT_KEY, "--latency-ms", str(latency_ms), "--max-seconds", "900"]
        self.log = open(self.log_file, "wb")
        self.proc, self.port = _start_server(ctx, argv, self.log, self.log_file, "bench/fast_api.py")
        self.base_url = "http://127.0.0.1:%d/v1" % self.port

    def records(self, kind=None):
        return [r for r in self._http("GET", "/_records") if kind is None or r.get("kind") == kind]

    def generations(self, valid_only=True):
        return [r for r in self.records("generation") if r.get("status") == 200 or not valid_only]


def bench_png(ident, seed=0):
    """A small valid PNG carrying a "benchid" tEXt chunk that bench/fast_api.py records."""
    data = png_image(16, 16, seed or ident)
    ihdr_end = 8 + 25
    return data[:ihdr_end] + png_chunk(b"tEXt", b"benchid\x00%08d" % ident) + data[ihdr_end:]


class Result:
    def __init__(self, rc, stdout, stderr, elapsed, timed_out, log_prefix):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.timed_out = timed_out
        self.log_prefix = log_prefix

    def describe(self):
        head = "exit status %s after %.1f s" % ("(killed: timed out)" if self.timed_out else self.rc, self.elapsed)
        err = self.stderr.strip().splitlines()
        if err:
            head += "; stderr ends: " + " | ".join(err[-4:])
        return head


class Daemon:
    """seedreamd running in the background; stderr goes to a file that wait_for() polls."""

    def __init__(self, ctx, argv, env, name):
        self.ctx = ctx
        self.out_path = os.path.join(ctx.logdir, "%s.stdout" % name)
        self.err_path = os.path.join(ctx.logdir, "%s.stderr" % name)
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL,
                                     env=env, cwd=ctx.tmp)
        ctx.processes.append(self.proc)
        ctx.logs.append(self.err_path)

    def stderr_text(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout_text(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for(self, pattern, timeout):
        """True once stderr matches pattern; False on timeout or when the daemon exits first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rx.search(self.stderr_text()):
                return True
            if self.proc.poll() is not None:
                return bool(rx.search(self.stderr_text()))
            time.sleep(0.05)
        return False

    def terminate(self, timeout=5.0):
        """SIGTERM; returns (exit status or None if it had to be killed, seconds it took)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.out.close()
        self.err.close()
        return rc, time.monotonic() - t0


class Context:
    def __init__(self, args, checks):
        self.args = args
        self.binary = os.path.abspath(args.binary)
        self.checks = checks
        self.tmp = tempfile.mkdtemp(prefix="seedreamd-it-")
        self.logdir = os.path.join(self.tmp, "logs")
        os.makedirs(self.logdir)
        self.processes = []
        self.apis = []
        self.logs = []
        self.runs = 0
        self._version = None
        self.notify_sockets = []

    # ---- pieces ---------------------------------------------------------------------------

    def start_api(self, name="api", **kw):
        api = FakeAPI(self, name, **kw)
        self.apis.append(api)
        return api

    def start_hostile_api(self, name="hostile", **kw):
        """tests/hostile_api.py with a script (see there); the same records() and stop()."""
        api = HostileAPI(self, name, **kw)
        self.apis.append(api)
        return api

    def folder(self, name):
        """A fresh tree <tmp>/<name>/ with hot/ and state/; returns (root, hot, out, state)."""
        root = os.path.join(self.tmp, name)
        hot = os.path.join(root, "hot")
        state = os.path.join(root, "state")
        os.makedirs(hot)
        os.makedirs(state)
        return root, hot, hot + "-out", state

    def write_config(self, path, *, api, state_dir, folders, response_format="url", retries=3,
                     timeout="20s", max_in_flight=4, size="2K", watermark=False, settle="300ms",
                     model=MODEL, extra_api=None):
        """folders: a list of {"path": ..., "prompt": ..., and optional "output"}."""
        q = json.dumps
        lines = ["api:",
                 "  base_url: %s" % q(api.base_url if hasattr(api, "base_url") else api),
                 "  model: %s" % q(model),
                 "  timeout: %s" % timeout,
                 "  max_in_flight: %d" % max_in_flight,
                 "  response_format: %s" % response_format,
                 "  retries: %d" % retries]
        for k, v in (extra_api or {}).items():
            lines.append("  %s: %s" % (k, v))
        lines += ["defaults:",
                  "  size: %s" % size,
                  "  watermark: %s" % ("true" if watermark else "false"),
                  "  settle: %s" % settle,
                  "state_dir: %s" % q(state_dir),
                  "folders:"]
        for f in folders:
            lines.append("  - path: %s" % q(f["path"]))
            lines.append("    prompt: %s" % q(f.get("prompt", PROMPT)))
            if "output" in f:
                lines.append("    output: %s" % q(f["output"]))
            for k, v in f.items():  # any other folder key, as YAML flow (JSON) text
                if k not in ("path", "prompt", "output"):
                    lines.append("    %s: %s" % (k, q(v)))
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    def env(self, key=DEFAULT_KEY):
        env = dict(os.environ)
        for k in ("SEEDREAM_API_KEY", "JOURNAL_STREAM", "NOTIFY_SOCKET", "STATE_DIRECTORY",
                  "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "INVOCATION_ID"):
            env.pop(k, None)
        if key is not None:
            env["SEEDREAM_API_KEY"] = key
        return env

    def run(self, args, *, key=DEFAULT_KEY, timeout=30.0, name=None):
        """Runs the daemon in the foreground; keeps stdout/stderr under logs/."""
        self.runs += 1
        name = name or "run%02d" % self.runs
        prefix = os.path.join(self.logdir, name)
        t0 = time.monotonic()
        proc = subprocess.Popen([self.binary] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=self.env(key), cwd=self.tmp)
        self.processes.append(proc)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            out, err = proc.communicate()
        res = Result(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                     time.monotonic() - t0, timed_out, prefix)
        write_bytes(prefix + ".stdout", out)
        write_bytes(prefix + ".stderr", err)
        self.logs.append(prefix + ".stderr")
        return res

    def run_once(self, config, *, extra=(), **kw):
        return self.run(["-c", config, "--once"] + list(extra), **kw)

    def start_daemon(self, config, *, extra=(), key=DEFAULT_KEY, name="daemon", faultfs=None,
                     notify=None, watchdog_usec=None, env_extra=None):
        """faultfs: a FaultFS to preload; notify: a notify_socket() for NOTIFY_SOCKET, with
        WATCHDOG_USEC=watchdog_usec if given."""
        env = self.env(key)
        if faultfs is not None:
            env = faultfs.env(env)
        if notify is not None:
            env["NOTIFY_SOCKET"] = notify.path
            if watchdog_usec:
                env["WATCHDOG_USEC"] = str(int(watchdog_usec))
        env.update(env_extra or {})
        return Daemon(self, [self.binary, "-c", config] + list(extra), env, name)

    def faultfs(self, name="faultfs"):
        return FaultFS(self, name)

    def start_fast_api(self, name="fast", **kw):
        api = FastAPI(self, name, **kw)
        self.apis.append(api)
        return api

    def version(self):
        """The version from `seedreamd --version` ("seedreamd <version>"), or None."""
        if self._version is None:
            res = self.run(["--version"], timeout=10, name="version")
            m = re.match(r"seedreamd (\S+)\s*$", res.stdout)
            self._version = m.group(1) if (m and res.rc == 0) else ""
        return self._version or None

    def cleanup(self):
        for proc in self.processes:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                except OSError:
                    pass
        for api in self.apis:
            try:
                api.stop()
            except OSError:
                pass
        for sock in self.notify_sockets:
            sock.close()


def main(test, description=""):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--binary", required=True, help="path to the seedreamd executable")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    checks = Checks()
    if not (os.path.isfile(args.binary) and os.access(args.binary, os.X_OK)):
        checks.check(False, "the binary under test exists and is executable",
                     "%s is missing or not executable" % args.binary)
        print("%d passed, %d failed" % (checks.passed, checks.failed))
        return 1
    ctx = Context(args, checks)
    try:
        test(ctx)
    except Abort as e:
        print("stopping here: the checks after '%s' depend on it" % e, flush=True)
    except Exception:  # a bug in the test or a surprise from the daemon: count it, show it
        checks.check(False, "the test ran to the end", traceback.format_exc().strip().replace("\n", "\n    "))
    finally:
        ctx.cleanup()
        if checks.failed:
            for path in ctx.logs[-3:] + [a.log_file for a in ctx.apis]:
                sys.stderr.write("---- %s (tail)\n%s\n" % (os.path.relpath(path, ctx.tmp), tail(path, 30)))
        if args.keep or os.environ.get("SEEDREAMD_KEEP_TMP"):
            print("kept %s" % ctx.tmp, flush=True)
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)
    print("%d passed, %d failed" % (checks.passed, checks.failed), flush=True)
    return 0 if checks.failed == 0 else 1
