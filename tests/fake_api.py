#!/usr/bin/env python3
"""A local stand-in for the Seedream image-generation API, for seedreamd's tests and demo.

    python3 tests/fake_api.py --port 0 --state-file FILE [--key KEY] [--latency-ms N]
                              [--faults SPEC] [--fault-rate R --seed S] [--max-seconds N]
                              [--save-images DIR]

Serves HTTP/1.1 (keep-alive) on 127.0.0.1 and prints "PORT <n>" on stdout once listening.

  POST <any prefix>/images/generations   the generation call (JSON body, Bearer key)
  GET  /files/<id>.jpeg                  a generated image (response_format url)
  GET  /_stats                           {"generations", "billed", "downloads", "faults", ...}
  GET  /_faults                          the fault tokens still queued
  POST /_faults[?replace=1]              a JSON list of fault tokens, appended to the queue
                                         (or replacing it)

The "generated" image is a small real baseline JPEG (a stylised thumbnail of a PNG input up to
512x512, a gradient otherwise) whose COM segment reads
    seedream-fake sha256=<sha256 of the decoded input image> prompt_sha256=<sha256 of the prompt>
so a test can tell which input produced which output.

Every generation request (valid or not) and every download is appended to the state file as one
JSON line, flushed at once:
  kind "generation": index (1, 2, ... per kind), time (arrival, epoch seconds), request_id, status
    (null when dropped), model, prompt, prompt_sha256, size, watermark, response_format,
    image_format (from the data URL), image_sha256 and image_len (of the decoded image), fault (the
    token applied, or null), billed, file_id, created, output_sha256, error_code; rejected: true
    for requests refused before any fault (bad key, invalid body). The `image` field may be one data
    URL or an array of 1..14; image_format/image_sha256/image_len describe the first, "images" lists
    every one in order ({format, sha256, len} of the decoded bytes) and image_array says whether an
    array was sent; an invalid one is refused (400) naming its place, e.g. image[2].
  kind "download": index, time, file_id, status, length, bytes_sent, truncated.
Billed: a generation that happened (ok, slow, truncdl, slowdl, dropafter); faults injected before the
generation (errors, drop, malformed, error200) are not billed.

Faults (--faults "500,429:ra=2,drop,ok,400:InputImageSensitiveContentDetected"): a queue, one
token consumed per valid, authenticated generation request, in arrival order (a request refused
for its key or its body consumes none). Tokens:
  ok               a normal success
  500 / 503        InternalServiceError / ServiceUnavailable
  429[:ra=N]       ServerOverloaded, with "Retry-After: N" when given
  drop             read the request, close the connection without a response (not billed)
  dropafter        as drop, but after generating (billed)
  malformed        200 with a truncated JSON body (not billed)
  error200         200 with a top-level error object, InternalServiceError (not billed)
  truncdl          success (billed); the first download of that image sends half of the bytes
                   with the full Content-Length, then closes (no effect with b64_json)
  slow:ms=N        sleep N ms, then a normal success (billed)
  slowdl[:ms=N]    success (billed); the first download of that image sends its headers (full
                   Content-Length), then stalls N ms (default 5000) before sending the body (no
                   effect with b64_json); the download record (stalled: true) is written at once
  401 / 403 / 404  AuthenticationError / AccountOverdueError / InvalidEndpointOrModel.NotFound
  quota            429 QuotaExceeded
  400:<Code>       400 with that error code, e.g. 400:InputImageSensitiveContentDetected
With the queue empty and --fault-rate R > 0, a retryable fault (500, 503, 429, drop, malformed,
error200, truncdl) is drawn with probability R from a generator seeded with --seed.

Sequential generation: "sequential_image_generation": "auto" with
"sequential_image_generation_options": {"max_images": N} returns N distinct images in data[] (url or
b64_json, as asked) and usage.generated_images = the images made. Words in the prompt change the
answer: "[fail-image:I]" (0-based, may repeat) makes data[I] an {"error": {code, message}} inside the
successful answer, "[bad-image:I]" (I >= 1) makes image I bytes that are not an image (billed; its
url downloads them, or its b64_json holds them), "[png-image:I]" (I >= 1) makes image I a PNG, "[stall-image:I:MS]" (I >= 1) stalls the first
download of image I for MS ms as slowdl does, "[fewer:M]" returns only M images (a relay that ignores sequential generation),
"[no-usage]" drops usage (a relay that drops it; also for one image). The generation record adds
sequential, max_images, images_returned, images_billed, file_ids and output_sha256s (data[] order,
null for a failed image).

Stops cleanly on SIGTERM/SIGINT, and by itself after --max-seconds.
"""

import argparse
import base64
import binascii
import collections
import hashlib
import http.server
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
import make_samples  # noqa: E402  (the PNG decoder and the JPEG encoder)

MAX_BODY = 64 * 1024 * 1024
FORMATS = ("png", "jpeg", "webp", "bmp", "tiff", "gif")
RETRYABLE = ("500", "503", "429", "drop", "malformed", "error200", "truncdl")
MAX_IMAGES = 14  # the API's limit on the `image` array
USAGE = {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}


def magic_format(data):
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def parse_fault(token):
    """'429:ra=2' -> {"token": "429:ra=2", "kind": "429", "ra": 2}. ValueError if unknown."""
    token = token.strip()
    kind, _, arg = token.partition(":")
    fault = {"token": token, "kind": kind}
    if kind in ("ok", "500", "503", "drop", "dropafter", "malformed", "error200", "truncdl",
                "401", "403", "404", "quota") and not arg:
        return fault
    if kind == "429":
        if arg:
            m = re.fullmatch(r"ra=(\d+)", arg)
            if not m:
                raise ValueError("bad 429 argument %r (want ra=N)" % arg)
            fault["ra"] = int(m.group(1))
        return fault
    if kind == "slow":
        m = re.fullmatch(r"ms=(\d+)", arg)
        if not m:
            raise ValueError("slow needs ms=N, got %r" % arg)
        fault["ms"] = int(m.group(1))
        return fault
    if kind == "slowdl":
        fault["ms"] = 5000
        if arg:
            m = re.fullmatch(r"ms=(\d+)", arg)
            if not m:
                raise ValueError("bad slowdl argument %r (want ms=N)" % arg)
            fault["ms"] = int(m.group(1))
        return fault
    if kind == "400" and re.fullmatch(r"[A-Za-z][A-Za-z0-9.]*", arg or ""):
        fault["code"] = arg
        return fault
    raise ValueError("unknown fault token %r" % token)


def parse_fault_list(spec):
    return [parse_fault(t) for t in spec.split(",") if t.strip()]


def _box_downscale(w, h, rgb, limit):
    scale = max(1, -(-max(w, h) // limit))  # ceil
    if scale == 1:
        return w, h, rgb
    nw, nh = max(1, w // scale), max(1, h // scale)
    out = bytearray()
    for y in range(nh):
        for x in range(nw):
            acc = [0, 0, 0]
            for dy in range(scale):
                base = ((y * scale + dy) * w + x * scale) * 3
                for dx in range(scale):
                    p = base + dx * 3
                    acc[0] += rgb[p]
                    acc[1] += rgb[p + 1]
                    acc[2] += rgb[p + 2]
            n = scale * scale
            out += bytes((acc[0] // n, acc[1] // n, acc[2] // n))
    return nw, nh, bytes(out)


def render_output(image, fmt, prompt):
    """The 'generated' image: for a PNG input a watercolour-ish thumbnail of it, else a gradient
    derived from the input's hash. Always a baseline JPEG with the provenance COM segment."""
    sha = hashlib.sha256(image).hexdigest()
    psha = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    comment = "seedream-fake sha256=%s prompt_sha256=%s" % (sha, psha)
    wh = make_samples.png_size(image) if fmt == "png" else None
    # decoding in pure Python is slow: only small PNGs get a thumbnail, others a gradient
    dec = make_samples.decode_png(image) if wh and wh[0] * wh[1] <= 512 * 512 else None
    if dec and dec[0] >= 8 and dec[1] >= 8:
        w, h, rgb = _box_downscale(*dec, limit=128)
        paper = (250, 243, 228)
        px = bytearray(len(rgb))
        for y in range(h):
            for x in range(w):
                i = (y * w + x) * 3
                # a soft cross blur, posterised, laid on paper; edges a little darker
                nb = [i]
                if x > 0:
                    nb.append(i - 3)
                if x < w - 1:
                    nb.append(i + 3)
                if y > 0:
                    nb.append(i - 3 * w)
                if y < h - 1:
                    nb.append(i + 3 * w)
                ex = min(x, w - 1 - x, y, h - 1 - y)
                edge = 0.82 + 0.18 * min(1.0, ex / 6.0)
                for c in range(3):
                    v = sum(rgb[j + c] for j in nb) / len(nb)
                    v = round(v / 51.0) * 51.0
                    v = (0.78 * v + 0.22 * paper[c]) * edge
                    px[i + c] = 0 if v < 0 else 255 if v > 255 else int(v)
    else:
        w = h = 96
        a = tuple(int(sha[k:k + 2], 16) for k in (0, 2, 4))
        b = tuple(int(sha[k:k + 2], 16) for k in (6, 8, 10))
        px = bytearray()
        for y in range(h):
            for x in range(w):
                t = (x + y) / (w + h - 2)
                px += bytes(int(a[c] + (b[c] - a[c]) * t) for c in range(3))
    return make_samples.encode_jpeg(w, h, bytes(px), 85, comment=comment)


def result_size(size):
    if re.fullmatch(r"\d+x\d+", size):
        return size
    return {"1K": "1024x1024", "2K": "2048x2048", "4K": "4096x4096"}.get(size, "2048x2048")


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.faults = collections.deque(parse_fault_list(args.faults or ""))
        self.rng = random.Random(args.seed)
        self.images = {}
        self.truncate_pending = set()
        self.stall_pending = {}  # file_id -> ms (slowdl)
        self.render_cache = collections.OrderedDict()
        self.counts = collections.Counter()
        self.seq = collections.Counter()  # per kind: the n-th generation, the n-th download
        self.out = open(args.state_file, "a", encoding="utf-8") if args.state_file else None
        self.port = None

    def next_index(self, kind):
        with self.lock:
            self.seq[kind] += 1
            return self.seq[kind]

    def take_fault(self):
        with self.lock:
            if self.faults:
                return self.faults.popleft()
            if self.args.fault_rate > 0 and self.rng.random() < self.args.fault_rate:
                return parse_fault(self.rng.choice(RETRYABLE))
            return None

    def record(self, rec):
        rec.setdefault("time", round(time.time(), 6))
        with self.lock:
            kind = rec["kind"]
            if kind == "generation":
                self.counts["generations"] += 1
                if rec.get("billed"):
                    self.counts["billed"] += 1
                if rec.get("fault") and rec["fault"] != "ok":
                    self.counts["faults"] += 1
                if rec.get("rejected"):
                    self.counts["rejected"] += 1
            elif kind == "download":
                self.counts["downloads"] += 1
                if rec.get("truncated"):
                    self.counts["truncated_downloads"] += 1
            if self.out:
                self.out.write(json.dumps(rec, sort_keys=True) + "\n")
                self.out.flush()

    def render(self, image, fmt, prompt):
        key = (hashlib.sha256(image).digest(), prompt)
        with self.lock:
            if key in self.render_cache:
                self.render_cache.move_to_end(key)
                return self.render_cache[key]
        data = render_output(image, fmt, prompt)
        with self.lock:
            self.render_cache[key] = data
            while len(self.render_cache) > 256:
                self.render_cache.popitem(last=False)
        return data

    def stats(self):
        with self.lock:
            d = {k: self.counts.get(k, 0) for k in
                 ("generations", "billed", "downloads", "faults", "rejected", "truncated_downloads")}
            d["queued_faults"] = len(self.faults)
            return d


class BadRequest(Exception):
    def __init__(self, param, message, code="InvalidParameter"):
        super().__init__(message)
        self.param = param
        self.code = code


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "seedream-fake/1.0"
    timeout = 60  # idle keep-alive connections are closed after this

    # ---- plumbing -------------------------------------------------------------------------

    @property
    def state(self):
        return self.server.state

    def log_message(self, fmt, *args):
        if not self.state.args.quiet:
            sys.stderr.write("fake_api: %s %s\n" % (self.address_string(), fmt % args))
            sys.stderr.flush()

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ConnectionError("EOF inside chunked body")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def send_bytes(self, status, body, content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status, obj, headers=None):
        self.send_bytes(status, json.dumps(obj).encode("utf-8"), "application/json", headers)

    def send_api_error(self, status, code, message, rid, param="", headers=None):
        etype = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 429: "TooManyRequests", 503: "ServiceUnavailable"}.get(status, "InternalServerError")
        body = {"error": {"code": code, "message": "%s Request id: %s" % (message, rid),
                          "param": param, "type": etype}}
        h = {"x-request-id": rid}
        h.update(headers or {})
        self.send_json(status, body, h)

    def drop(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---- routes ---------------------------------------------------------------------------

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        m = re.fullmatch(r"/files/([A-Za-z0-9]+)\.jpeg", path)
        if m:
            return self.download(m.group(1))
        if path == "/_stats":
            return self.send_json(200, self.state.stats())
        if path == "/_faults":
            with self.state.lock:
                return self.send_json(200, [f["token"] for f in self.state.faults])
        self.send_json(404, {"error": {"code": "NotFound", "message": "no route " + path}})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        try:
            body = self.read_body()
        except (ValueError, ConnectionError) as e:
            self.close_connection = True
            return self.send_json(413, {"error": {"code": "RequestTooLarge", "message": str(e)}})
        if path == "/_faults":
            try:
                tokens = json.loads(body)
                if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                    raise ValueError("want a JSON list of strings")
                faults = [parse_fault(t) for t in tokens]
            except ValueError as e:
                return self.send_json(400, {"error": {"code": "InvalidParameter", "message": str(e)}})
            replace = "replace=1" in (urllib.parse.urlsplit(self.path).query or "")
            with self.state.lock:
                if replace:
                    self.state.faults.clear()
                self.state.faults.extend(faults)
                n = len(self.state.faults)
            return self.send_json(200, {"queued": n})
        if path.endswith("/images/generations"):
            return self.generation(body)
        self.send_json(404, {"error": {"code": "InvalidEndpointOrModel.NotFound",
                                       "message": "no route " + path}})

    # ---- the generation call --------------------------------------------------------------

    def validate_image(self, img, where):
        """One data URL: (format, decoded bytes), or BadRequest naming where it is."""
        bad = "The parameter `image` specified in the request is not valid: %s" % (
            "" if where == "image" else where + ": ")
        if not isinstance(img, str):
            raise BadRequest("image", bad + "a data URL string is required.")
        m = re.fullmatch(r"data:image/([^;,]*);base64,(.*)", img, re.S)
        if not m:
            raise BadRequest("image", bad + "expected data:image/<fmt>;base64,<data>.")
        fmt = m.group(1)
        if fmt not in FORMATS:
            raise BadRequest("image", bad + "image format %r is not one of %s (lowercase)."
                             % (fmt, ", ".join(FORMATS)))
        try:
            data = base64.b64decode(m.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("image", bad + "the base64 data does not decode.")
        if not data:
            raise BadRequest("image", bad + "the image is empty.")
        actual = magic_format(data)
        if actual != fmt:
            raise BadRequest("image", bad + "declared image/%s but the bytes are %s."
                             % (fmt, actual or "no known format"))
        return fmt, data

    def validate(self, body):
        try:
            req = json.loads(body)
        except ValueError as e:
            raise BadRequest("body", "The request body is not valid JSON (%s)." % e)
        if not isinstance(req, dict):
            raise BadRequest("body", "The request body must be a JSON object.")
        for field in ("model", "prompt"):
            v = req.get(field)
            if not isinstance(v, str) or not v:
                raise BadRequest(field, "The parameter `%s` specified in the request is not valid: "
                                 "a non-empty string is required." % field)
        img = req.get("image")
        # A string (one image) or an array of up to 14 (the first is the one "edited", the others
        # references); each is checked on its own, and the error names its place in the array.
        if isinstance(img, list):
            if not 1 <= len(img) <= MAX_IMAGES:
                raise BadRequest("image", "The parameter `image` specified in the request is not valid: "
                                 "an array of 1 to %d images is required, got %d." % (MAX_IMAGES, len(img)))
            items = [(v, "image[%d]" % i) for i, v in enumerate(img)]
        else:
            items = [(img, "image")]
        images = [self.validate_image(v, where) for v, where in items]
        size = req.get("size")
        if not isinstance(size, str) or not re.fullmatch(r"1K|2K|4K|[1-9][0-9]*x[1-9][0-9]*", size):
            raise BadRequest("size", "The parameter `size` specified in the request is not valid.")
        if not isinstance(req.get("watermark"), bool):
            raise BadRequest("watermark", "The parameter `watermark` specified in the request is not "
                             "valid: a boolean is required.")
        seq = req.get("sequential_image_generation", "disabled")
        if seq not in ("disabled", "auto"):
            raise BadRequest("sequential_image_generation", "The parameter "
                             "`sequential_image_generation` specified in the request is not valid: "
                             "disabled or auto.")
        opts = req.get("sequential_image_generation_options")
        if opts is not None:
            n = opts.get("max_images") if isinstance(opts, dict) else None
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 15 or n + 1 > 15:
                raise BadRequest("sequential_image_generation_options.max_images",
                                 "The parameter `sequential_image_generation_options.max_images` "
                                 "specified in the request is not valid: 1..15, inputs + outputs <= 15.")
        if req.get("response_format") not in ("url", "b64_json"):
            raise BadRequest("response_format", "The parameter `response_format` specified in the "
                             "request is not valid: url or b64_json.")
        return req, images[0][0], images[0][1], images

    def generation(self, body):
        st = self.state
        idx = st.next_index("generation")
        rid = "%s%06d%s" % (time.strftime("%Y%m%d%H%M%S"), idx, uuid.uuid4().hex[:12])
        rec = {"kind": "generation", "index": idx, "time": round(time.time(), 6),  # arrival
               "request_id": rid, "fault": None, "billed": False,
               "remote_port": self.client_address[1], "path": self.path}
        auth = self.headers.get("Authorization") or ""
        if auth != "Bearer " + st.args.key:
            rec.update(status=401, error_code="AuthenticationError", rejected=True)
            st.record(rec)
            return self.send_api_error(401, "AuthenticationError",
                                       "The API key in the request is missing or invalid.", rid)
        try:
            req, fmt, image, images = self.validate(body)
        except BadRequest as e:
            rec.update(status=400, error_code=e.code, error_param=e.param, rejected=True,
                       message=str(e))
            st.record(rec)
            return self.send_api_error(400, e.code, str(e), rid, e.param)
        prompt = req["prompt"]
        rec.update(model=req["model"], prompt=prompt, size=req["size"], watermark=req["watermark"],
                   response_format=req["response_format"], image_format=fmt,
                   image_sha256=hashlib.sha256(image).hexdigest(), image_len=len(image),
                   prompt_sha256=hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
                   image_array=isinstance(req.get("image"), list),
                   images=[{"format": f, "sha256": hashlib.sha256(d).hexdigest(), "len": len(d)}
                           for f, d in images])
        # every field but the image, in the order sent, for tests of fields passed through (extra:)
        rec["fields"] = {k: v for k, v in req.items() if k != "image"}
        rec["field_order"] = list(req.keys())
        if st.args.save_images:
            # The image as received, for tests that look at its pixels.
            with open(os.path.join(st.args.save_images, "%s.%s" % (rec["image_sha256"], fmt)), "wb") as f:
                f.write(image)
            for f_, d in images[1:]:  # an array's other images too (groups)
                with open(os.path.join(st.args.save_images, "%s.%s" % (hashlib.sha256(d).hexdigest(), f_)),
                          "wb") as f:
                    f.write(d)
        fault = st.take_fault()
        kind = fault["kind"] if fault else "ok"
        rec["fault"] = fault["token"] if fault else None
        if st.args.latency_ms:
            time.sleep(st.args.latency_ms / 1000.0)

        def fail(status, code, message, headers=None):
            rec.update(status=status, error_code=code)
            st.record(rec)
            self.send_api_error(status, code, message, rid, headers=headers)

        if kind == "500":
            return fail(500, "InternalServiceError", "The service encountered an unexpected internal error.")
        if kind == "503":
            return fail(503, "ServiceUnavailable", "The service is temporarily unavailable.")
        if kind == "429":
            hdr = {"Retry-After": fault["ra"]} if "ra" in fault else None
            return fail(429, "ServerOverloaded", "The service is currently overloaded, try again later.", hdr)
        if kind == "quota":
            return fail(429, "QuotaExceeded", "The request has exceeded the quota of your account.")
        if kind == "401":
            return fail(401, "AuthenticationError", "The API key in the request is missing or invalid.")
        if kind == "403":
            return fail(403, "AccountOverdueError", "The request failed because your account has an overdue balance.")
        if kind == "404":
            return fail(404, "InvalidEndpointOrModel.NotFound",
                        "The model or endpoint %s does not exist or you do not have access to it." % req["model"])
        if kind == "400":
            return fail(400, fault["code"], "The request failed because of %s." % fault["code"])
        if kind == "drop":
            rec.update(status=None)
            st.record(rec)
            return self.drop()
        if kind == "malformed":
            good = json.dumps({"model": req["model"], "created": int(time.time()),
                               "data": [{"url": "http://127.0.0.1/", "size": "2048x2048"}]}).encode()
            rec.update(status=200, error_code="(malformed body)")
            st.record(rec)
            return self.send_bytes(200, good[:len(good) // 2], headers={"x-request-id": rid})
        if kind == "error200":
            rec.update(status=200, error_code="InternalServiceError")
            st.record(rec)
            body = {"error": {"code": "InternalServiceError",
                              "message": "The service encountered an unexpected internal error. "
                                         "Request id: %s" % rid, "param": "", "type": "InternalServerError"}}
            return self.send_json(200, body, {"x-request-id": rid})
        if kind == "slow":
            time.sleep(fault["ms"] / 1000.0)

        # A generation: billed from here on.
        out = st.render(image, fmt, prompt)
        file_id = uuid.uuid4().hex[:20]
        created = int(time.time())
        with st.lock:
            st.images[file_id] = out
            if kind == "truncdl" and req["response_format"] == "url":
                st.truncate_pending.add(file_id)
            if kind == "slowdl" and req["response_format"] == "url":
                st.stall_pending[file_id] = fault["ms"]
        item = {"size": result_size(req["size"])}
        if req["response_format"] == "b64_json":
            item = {"b64_json": base64.b64encode(out).decode("ascii"), "size": item["size"]}
        else:
            item = {"url": "http://127.0.0.1:%d/files/%s.jpeg" % (st.port, file_id), "size": item["size"]}
        data, usage = [item], dict(USAGE)
        if "sequential_image_generation" in req or "sequential_image_generation_options" in req:
            data, extra = self.sequential(req, image, fmt, prompt, item, rec)
            usage = dict(USAGE, generated_images=extra,
                         output_tokens=USAGE["output_tokens"] * extra,
                         total_tokens=USAGE["total_tokens"] * extra)
        resp = {"model": req["model"], "created": created, "data": data, "usage": usage}
        if "[no-usage]" in prompt:
            del resp["usage"]  # a relay that drops it
        rec.update(billed=True, file_id=file_id, created=created, output_sha256=hashlib.sha256(out).hexdigest())
        if kind == "dropafter":
            rec.update(status=None)
            st.record(rec)
            return self.drop()
        rec.update(status=200)
        st.record(rec)
        self.send_json(200, resp, {"x-request-id": rid})

    def sequential(self, req, image, fmt, prompt, first, rec):
        """data[] for sequential_image_generation: max_images images (auto), or fewer with
        "[fewer:M]" in the prompt; "[fail-image:I]" (0-based, may repeat) makes data[I] an error
        inside the successful answer. Each image is distinct (the fake renders the prompt with
        "#<i>" appended for i > 0). Returns (data, images billed)."""
        st = self.state
        n = 1
        if req.get("sequential_image_generation") == "auto":
            n = req.get("sequential_image_generation_options", {}).get("max_images", 15)
        m = re.search(r"\[fewer:(\d+)\]", prompt)
        if m:
            n = max(1, min(n, int(m.group(1))))
        failing = {int(x) for x in re.findall(r"\[fail-image:(\d+)\]", prompt)}
        bad = {int(x) for x in re.findall(r"\[bad-image:(\d+)\]", prompt)}
        png = {int(x) for x in re.findall(r"\[png-image:(\d+)\]", prompt)}
        stall = {int(i): int(ms) for i, ms in re.findall(r"\[stall-image:(\d+):(\d+)\]", prompt)}
        data, file_ids, shas = [], [], []
        for i in range(n):
            if i in failing:
                data.append({"error": {"code": "OutputImageSensitiveContentDetected",
                                       "message": "The generated image %d may contain sensitive "
                                                  "content." % i}})
                file_ids.append(None)
                shas.append(None)
                continue
            if i == 0:
                out = st.images[rec_file_id(first)] if "url" in first else base64.b64decode(first["b64_json"])
                item = first
                fid = rec_file_id(first) if "url" in first else None
            else:
                out = st.render(image, fmt, "%s#%d" % (prompt, i))
                if i in bad:
                    out = b"<html><body>not an image</body></html>"
                elif i in png:
                    out = make_samples.encode_png(8, 8, bytes([i * 40 % 256]) * (8 * 8 * 3), 2)
                fid = uuid.uuid4().hex[:20]
                with st.lock:
                    st.images[fid] = out
                    if i in stall and req["response_format"] == "url":
                        st.stall_pending[fid] = stall[i]
                item = {"size": first["size"]}
                if req["response_format"] == "b64_json":
                    item["b64_json"] = base64.b64encode(out).decode("ascii")
                else:
                    item["url"] = "http://127.0.0.1:%d/files/%s.jpeg" % (st.port, fid)
            data.append(item)
            file_ids.append(fid)
            shas.append(None if i in bad else hashlib.sha256(out).hexdigest())
        ok = sum(1 for x in shas if x) + len(bad & set(range(1, n)))
        rec.update(sequential=req.get("sequential_image_generation"),
                   max_images=req.get("sequential_image_generation_options", {}).get("max_images"),
                   images_returned=n, images_billed=ok, file_ids=file_ids, output_sha256s=shas)
        return data, ok

    def download(self, file_id):
        st = self.state
        with st.lock:
            data = st.images.get(file_id)
            truncate = file_id in st.truncate_pending
            st.truncate_pending.discard(file_id)
            stall_ms = st.stall_pending.pop(file_id, None)
        idx = st.next_index("download")
        if data is None:
            st.record({"kind": "download", "index": idx, "file_id": file_id, "status": 404})
            return self.send_json(404, {"error": {"code": "NotFound", "message": "no such file"}})
        if truncate:
            half = data[:len(data) // 2]
            st.record({"kind": "download", "index": idx, "file_id": file_id, "status": 200,
                       "length": len(data), "bytes_sent": len(half), "truncated": True})
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(half)
            return self.drop()
        if stall_ms is not None:
            st.record({"kind": "download", "index": idx, "file_id": file_id, "status": 200,
                       "length": len(data), "bytes_sent": None, "truncated": False,
                       "stalled": True, "stall_ms": stall_ms})
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.flush()
            time.sleep(stall_ms / 1000.0)
            self.wfile.write(data)
            self.wfile.flush()
            return
        st.record({"kind": "download", "index": idx, "file_id": file_id, "status": 200,
                   "length": len(data), "bytes_sent": len(data), "truncated": False})
        self.send_bytes(200, data, "image/jpeg")


def rec_file_id(item):
    """The file id in a url item's URL."""
    return item["url"].rsplit("/", 1)[1].split(".")[0]


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError)):
            return  # a client that went away or idled out
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description="Local stand-in for the Seedream image API.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--state-file", help="append one JSON line per request here")
    ap.add_argument("--key", default="test-key", help="the accepted Bearer key")
    ap.add_argument("--latency-ms", type=int, default=0, help="delay before every generation reply")
    ap.add_argument("--faults", default="", help="comma-separated fault tokens, consumed in order")
    ap.add_argument("--fault-rate", type=float, default=0.0, help="random retryable faults")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=600, help="stop by itself after this long")
    ap.add_argument("--quiet", action="store_true", help="no request log on stderr")
    ap.add_argument("--save-images", help="write each received image (every one of an array) here "
                    "as <sha256>.<format>")
    args = ap.parse_args()
    try:
        state = State(args)
    except ValueError as e:
        ap.error(str(e))

    server = Server((args.host, args.port), Handler)
    server.state = state
    state.port = server.server_address[1]

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    print("PORT %d" % state.port, flush=True)
    stop.wait(args.max_seconds)
    server.shutdown()
    server.server_close()
    if state.out:
        state.out.close()
    if not args.quiet:
        sys.stderr.write("fake_api: stopped (%s)\n" % json.dumps(state.stats()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
