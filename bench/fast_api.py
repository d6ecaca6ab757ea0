#!/usr/bin/env python3
"""A fast stand-in for the Seedream image API, for the benchmark only (bench/run.sh).

    python3 bench/fast_api.py [--port 0] [--key KEY] [--latency-ms N] [--max-seconds N]

Why not tests/fake_api.py: that server validates every request in full (JSON parse, base64
decode, SHA-256 of the image) and renders each result in pure Python (a PNG decode and a JPEG
encode per image), in threads under one GIL. bench.py measures it (the "fake_api.py" line of the
results); it manages only a few jobs per second, far below the 80 jobs/s being measured, and
burns a core the contenders need.

This one is a single asyncio loop (HTTP/1.1, keep-alive, Content-Length or chunked bodies):

  POST <any prefix>/images/generations  checks the Bearer key, reads the body without keeping it
                                        (only its first 64 KiB are looked at), sleeps
                                        --latency-ms (asyncio: requests overlap), answers like
                                        Seedream with a result URL on this server
  GET  /files/<id>.jpeg                 a fixed small baseline JPEG (~2 KB)
  GET  /_stats                          {"server": "bench/fast_api.py", "generations", "downloads", ...}
  GET  /_records                        every request so far (see below), as one JSON list
  POST /_latency?ms=N                   changes the latency from now on

Per generation request it records: t_head_ns (time.time_ns() when the request line had been
read, i.e. as soon as the request started to arrive, before the body), t_body_ns (after the whole
body had been read), bench_id (from a PNG "tEXt" chunk "benchid\\0<8 digits>" right after IHDR,
found by base64-decoding the first bytes of the data URL; null if absent), body_len, status,
t_resp_ns (when the answer was sent, after the latency).
Times are the wall clock of this machine, nanoseconds since the epoch.

It does NOT validate the JSON or the whole image (bench.py checks the outputs instead).
"""

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import sys
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "data"))
try:
    import make_samples  # the repository's stdlib JPEG encoder

    def _jpeg():
        w = h = 32
        px = b"".join(bytes(((x * 8) & 255, (y * 8) & 255, 128)) for y in range(h) for x in range(w))
        return make_samples.encode_jpeg(w, h, px, 85, comment="seedream-bench")
except Exception:  # pragma: no cover - fall back to a tiny valid JPEG
    make_samples = None

    def _jpeg():
        return base64.b64decode(
            "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////"
            "////////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAA"
            "AAAAAAAP/aAAgBAQABPxA=")

USAGE = {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}
MARK = b";base64,"
ID_RX = re.compile(rb"benchid\x00(\d{8})")


class Server:
    def __init__(self, args):
        self.args = args
        self.latency = args.latency_ms / 1000.0
        self.jpeg = _jpeg()
        self.records = []
        self.counts = {"generations": 0, "downloads": 0, "rejected": 0, "connections": 0}
        self.port = None

    @staticmethod
    def bench_id(head):
        i = head.find(MARK)
        if i < 0:
            return None
        chunk = head[i + len(MARK):i + len(MARK) + 160]
        chunk = chunk[:len(chunk) // 4 * 4]
        try:
            raw = base64.b64decode(chunk)
        except ValueError:
            return None
        m = ID_RX.search(raw)
        return int(m.group(1)) if m else None

    async def read_body(self, reader, headers):
        """Reads the body, keeping at most its first 64 KiB. Returns (head, total length)."""
        head = bytearray()
        total = 0
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("EOF in chunked body")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(head), total
                left = size
                while left:
                    data = await reader.read(min(left, 1 << 18))
                    if not data:
                        raise ConnectionError("EOF in chunk")
                    if len(head) < 65536:
                        head += data[:65536 - len(head)]
                    left -= len(data)
                    total += len(data)
                await reader.readline()
        left = int(headers.get(b"content-length", b"0") or 0)
        while left:
            data = await reader.read(min(left, 1 << 18))
            if not data:
                raise ConnectionError("EOF in body")
            if len(head) < 65536:
                head += data[:65536 - len(head)]
            left -= len(data)
            total += len(data)
        return bytes(head), total

    @staticmethod
    def response(status, body, ctype="application/json", extra=()):
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 400: "Bad Request"}.get(status, "X")
        head = ["HTTP/1.1 %d %s" % (status, reason), "Content-Type: " + ctype,
                "Content-Length: %d" % len(body), "Server: seedream-bench-fast/1.0"]
        head += list(extra)
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def handle(self, reader, writer):
        self.counts["connections"] += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                t_head = time.time_ns()
                headers = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.partition(b":")
                    headers[k.strip().lower()] = v.strip()
                try:
                    method, target, _ = line.split(b" ", 2)
                except ValueError:
                    break
                head, blen = await self.read_body(reader, headers)
                t_body = time.time_ns()
                url = urllib.parse.urlsplit(target.decode("latin-1"))
                path = url.path
                keep = headers.get(b"connection", b"").lower() != b"close"
                if method == b"POST" and path.endswith("/images/generations"):
                    out = await self.generation(headers, head, blen, t_head, t_body)
                elif method == b"GET" and path.startswith("/files/"):
                    self.counts["downloads"] += 1
                    self.records.append({"kind": "download", "t_ns": t_head})
                    out = self.response(200, self.jpeg, "image/jpeg")
                elif path == "/_stats":
                    d = dict(self.counts, server="bench/fast_api.py", latency_ms=self.latency * 1000)
                    out = self.response(200, json.dumps(d).encode())
                elif path == "/_records":
                    out = self.response(200, json.dumps(self.records).encode())
                elif path == "/_latency" and method == b"POST":
                    q = urllib.parse.parse_qs(url.query)
                    self.latency = float(q.get("ms", ["0"])[0]) / 1000.0
                    out = self.response(200, b"{}")
                else:
                    out = self.response(404, b'{"error":{"code":"NotFound","message":"no route"}}')
                writer.write(out)
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def generation(self, headers, head, blen, t_head, t_body):
        rec = {"kind": "generation", "t_head_ns": t_head, "t_body_ns": t_body, "body_len": blen,
               "bench_id": self.bench_id(head)}
        self.records.append(rec)
        rid = uuid.uuid4().hex
        if headers.get(b"authorization", b"") != b"Bearer " + self.args.key.encode():
            self.counts["rejected"] += 1
            rec["status"] = 401
            return self.response(401, json.dumps({"error": {"code": "AuthenticationError",
                                                            "message": "bad key"}}).encode(),
                                 extra=["x-request-id: " + rid])
        self.counts["generations"] += 1
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        rec["status"] = 200
        rec["t_resp_ns"] = time.time_ns()
        fid = uuid.uuid4().hex[:20]
        body = {"model": "doubao-seedream-4-5-251128", "created": int(time.time()),
                "data": [{"url": "http://127.0.0.1:%d/files/%s.jpeg" % (self.port, fid),
                          "size": "2048x2048"}],
                "usage": USAGE}
        return self.response(200, json.dumps(body).encode(), extra=["x-request-id: " + rid])


async def amain(args):
    srv = Server(args)
    server = await asyncio.start_server(srv.handle, args.host, args.port, backlog=1024,
                                        limit=1 << 20)
    srv.port = server.sockets[0].getsockname()[1]
    print("PORT %d" % srv.port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        pass
    server.close()
    sys.stderr.write("fast_api: stopped %s\n" % json.dumps(srv.counts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--key", default="test-key")
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--max-seconds", type=float, default=3600)
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
