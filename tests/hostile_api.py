#!/usr/bin/env python3
"""A dishonest stand-in of the Seedream API, scripted by the test that starts it.

The honest stand-in (fake_api.py) behaves like the real service with faults the service really
has. This one answers whatever the test tells it to: redirects, echoed keys, huge or invalid-UTF-8
fields, HTML instead of an image, result URLs that point elsewhere. Each test states its hostility
as a script, so the server itself stays small.

    hostile_api.py [--host H] [--port P] [--state-file F] [--script FILE] [--max-seconds N]

Prints "PORT <n>" on stdout once listening.

The script (JSON, from --script or POST /_script):
    {"generation": [STEP, ...],   answers to generation POSTs (any path ending in
                                  /images/generations), in order; the last one repeats;
                                  an empty list answers honestly (see below)
     "routes": {"/path": STEP},   answers to any other request by exact path (GET or POST)
     "image_delay_ms": N}         a pause before serving each honest result ({image_url})

A STEP is an object with any of:
    "status": 200                 HTTP status
    "headers": {"k": "v"}         extra headers (values may use the placeholders)
    "json": {...}                 a body, serialised as JSON (strings may use the placeholders)
    "body": "..."                 a body as text (placeholders apply), or
    "body_b64": "..."             a body as raw bytes (no placeholders): e.g. invalid UTF-8
    "body_file": "/path"          a body read from a file as it is (no placeholders), served as
                                  application/json: answers too large to script (a 60 MB b64_json)
    "delay_ms": N                 sleep before answering
    "drop": true                  close the connection without an answer
Placeholders: {port}, {host}, {rid} (a fresh request id), {image_url} (a URL on this server that
serves the image just uploaded, as an honest result), {b64} (that image in base64), {key} (the
bearer key the client sent: a relay that echoes it), {created} (now, epoch seconds).

With no script, a generation is answered honestly: the uploaded image comes back as the result
(at {image_url}), with a small usage object.

Every request is appended to --state-file as one JSON line when it arrives: kind ("generation", "image",
"route", "other"), method, path, status, and for generations whether a body came with it.
GET /_stats returns the counts by kind. Control paths (/_script, /_stats) are never recorded.
"""

import argparse
import base64
import http.server
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid

MAX_BODY = 80 * 1024 * 1024
HONEST = {"status": 200,
          "json": {"model": "doubao-seedream-4-5-251128", "created": "{created}",
                   "data": [{"url": "{image_url}", "size": "2048x2048"}],
                   "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}},
          "headers": {"x-request-id": "{rid}"}}


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.script = {"generation": [], "routes": {}, "image_delay_ms": 0}
        self.gen_index = 0
        self.images = {}
        self.counts = {}
        self.out = open(args.state_file, "a", encoding="utf-8") if args.state_file else None
        self.port = 0
        if args.script:
            with open(args.script, encoding="utf-8") as f:
                self.set_script(json.load(f))

    def set_script(self, script):
        if not isinstance(script, dict):
            raise ValueError("the script is a JSON object")
        with self.lock:
            self.script = {"generation": list(script.get("generation") or []),
                           "routes": dict(script.get("routes") or {}),
                           "image_delay_ms": int(script.get("image_delay_ms") or 0)}
            self.gen_index = 0

    def next_generation_step(self):
        with self.lock:
            steps = self.script["generation"]
            if not steps:
                return HONEST
            step = steps[min(self.gen_index, len(steps) - 1)]
            self.gen_index += 1
            return step

    def record(self, rec):
        rec.setdefault("time", round(time.time(), 6))
        with self.lock:
            self.counts[rec["kind"]] = self.counts.get(rec["kind"], 0) + 1
            if self.out:
                self.out.write(json.dumps(rec) + "\n")
                self.out.flush()


def substitute(value, subs):
    """Replaces {name} placeholders in every string of a JSON value. A string that is exactly one
    placeholder of a number ("{created}") becomes that number."""
    if isinstance(value, str):
        m = re.fullmatch(r"\{(\w+)\}", value)
        if m and m.group(1) in subs and isinstance(subs[m.group(1)], int):
            return subs[m.group(1)]
        return re.sub(r"\{(\w+)\}", lambda m: str(subs.get(m.group(1), m.group(0))), value)
    if isinstance(value, list):
        return [substitute(v, subs) for v in value]
    if isinstance(value, dict):
        return {substitute(k, subs): substitute(v, subs) for k, v in value.items()}
    return value


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hostile/1.0"
    timeout = 60

    @property
    def state(self):
        return self.server.state

    def log_message(self, fmt, *args):
        sys.stderr.write("hostile_api: %s %s\n" % (self.address_string(), fmt % args))

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def answer(self, step, subs, rec):
        # Recorded on arrival, before any delay: a test can act while the answer is pending.
        rec["status"] = None if step.get("drop") else int(step.get("status", 200))
        self.state.record(rec)
        if step.get("delay_ms"):
            time.sleep(step["delay_ms"] / 1000.0)
        if step.get("drop"):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        status = int(step.get("status", 200))
        ctype = "application/json"
        if "body_b64" in step:
            body = base64.b64decode(step["body_b64"])
            ctype = "application/octet-stream"
        elif "body_file" in step:
            with open(step["body_file"], "rb") as f:
                body = f.read()
        elif "body" in step:
            body = substitute(step["body"], subs).encode("utf-8")
            ctype = "text/html"
        elif "json" in step:
            body = json.dumps(substitute(step["json"], subs)).encode("utf-8")
        else:
            body = b""
        headers = substitute(step.get("headers") or {}, subs)
        self.send_response(status)
        if not any(k.lower() == "content-type" for k in headers):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def subs_for(self, image=None):
        host = self.headers.get("Host") or "127.0.0.1:%d" % self.state.port
        auth = self.headers.get("Authorization") or ""
        subs = {"port": self.state.port, "host": host, "rid": uuid.uuid4().hex,
                "key": auth[7:] if auth.startswith("Bearer ") else auth,
                "created": int(time.time()), "image_url": "", "b64": ""}
        if image is not None:
            file_id = uuid.uuid4().hex[:16]
            with self.state.lock:
                self.state.images[file_id] = image
            subs["image_url"] = "http://%s/files/%s" % (host, file_id)
            subs["b64"] = base64.b64encode(image).decode("ascii")
        return subs

    def handle_any(self):
        path = urllib.parse.urlsplit(self.path).path
        try:
            body = self.read_body() if self.command in ("POST", "PUT") else b""
        except ValueError:
            self.close_connection = True
            return self.answer({"status": 413}, {}, {"kind": "other", "method": self.command, "path": path})
        if path == "/_script" and self.command == "POST":
            try:
                self.state.set_script(json.loads(body))
            except ValueError as e:
                self.send_response(400)
                self.send_header("Content-Length", str(len(str(e))))
                self.end_headers()
                self.wfile.write(str(e).encode())
                return
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/_stats":
            with self.state.lock:
                data = json.dumps(self.state.counts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        rec = {"method": self.command, "path": path,
               "authorization": bool(self.headers.get("Authorization")), "body_len": len(body)}
        with self.state.lock:
            route = self.state.script["routes"].get(path)
        if route is not None:
            rec["kind"] = "route"
            return self.answer(route, self.subs_for(), rec)
        m = re.fullmatch(r"/files/([0-9a-f]+)", path)
        if m and self.command == "GET":
            with self.state.lock:
                image = self.state.images.get(m.group(1))
                delay_ms = self.state.script.get("image_delay_ms", 0)
            rec["kind"] = "image"
            if image is None:
                return self.answer({"status": 404}, {}, rec)
            rec["status"] = 200
            self.state.record(rec)
            if delay_ms:
                time.sleep(delay_ms / 1000.0)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)
            return
        if path.endswith("/images/generations") and self.command == "POST":
            rec["kind"] = "generation"
            image = None
            try:
                req = json.loads(body)
                m = re.fullmatch(r"data:image/[^;,]*;base64,(.*)", req.get("image", ""), re.S)
                image = base64.b64decode(m.group(1)) if m else None
                rec["prompt"] = req.get("prompt")
            except (ValueError, AttributeError, TypeError):
                pass
            rec["valid"] = image is not None
            return self.answer(self.state.next_generation_step(), self.subs_for(image), rec)
        rec["kind"] = "other"
        return self.answer({"status": 404, "json": {"error": {"code": "NotFound", "message": "no route"}}},
                           {}, rec)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr, handler):
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description="A scripted, dishonest stand-in of the Seedream API.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--state-file")
    ap.add_argument("--script", help="a JSON script (see the module's docstring)")
    ap.add_argument("--max-seconds", type=float, default=600)
    args = ap.parse_args()
    state = State(args)
    server = Server((args.host, args.port), Handler)
    server.state = state
    state.port = server.server_address[1]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    print("PORT %d" % state.port, flush=True)
    stop.wait(args.max_seconds)
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
