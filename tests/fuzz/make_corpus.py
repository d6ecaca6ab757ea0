#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora under tests/fuzz/corpus/ (standard library only).

    corpus/image/   one mode byte (see fuzz_image.c) + a tiny image of each format
    corpus/api/     the HTTP status as two big-endian bytes + a response body
    corpus/config/  YAML configurations
    corpus/sidecar/ sidecars and error sidecars as seedreamd writes them, and odd ones
    corpus/journal/ journal records

The output is committed; run this again after changing it. Every seed stays
under 4 KiB so the fuzzers start fast.
"""
import json
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

MODE_WHOLE = b"\x00"      # the bytes are the whole file
MODE_LONGER = b"\x81"     # the file is longer than the bytes given


def png(width, height):
    def chunk(kind, payload):
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + b"".join(bytes((x * 16 % 256, y * 16 % 256, 128))
                                      for x in range(width))
                   for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def jpeg(width, height, sof=0xC0, exif=False):
    def seg(marker, payload):
        return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload

    out = b"\xff\xd8"
    out += seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    if exif:
        out += seg(0xE1, b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00" + bytes(64))
    out += seg(0xDB, b"\x00" + bytes(range(1, 65)))
    out += seg(sof, b"\x08" + struct.pack(">HH", height, width) + b"\x01\x01\x11\x00")
    out += seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    out += seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    out += seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    out += b"\x00\xff\x00\x12\x34\xff\xd0\x56"
    return out + b"\xff\xd9"


def riff(chunks):
    body = b"WEBP" + chunks
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_chunk(kind, payload):
    pad = b"\x00" if len(payload) % 2 else b""
    return kind + struct.pack("<I", len(payload)) + payload + pad


def webp_lossy(width, height):
    frame = b"\x50\x02\x00\x9d\x01\x2a" + struct.pack("<HH", width, height) + bytes(16)
    return riff(webp_chunk(b"VP8 ", frame))


def vp8l(width, height):
    bits = (width - 1) | (height - 1) << 14 | 1 << 28
    return b"\x2f" + struct.pack("<I", bits) + b"\x00\x00\x00"


def webp_lossless(width, height):
    return riff(webp_chunk(b"VP8L", vp8l(width, height)))


def webp_extended(width, height):
    header = b"\x10\x00\x00\x00" + struct.pack("<I", width - 1)[:3] \
        + struct.pack("<I", height - 1)[:3]
    return riff(webp_chunk(b"VP8X", header) + webp_chunk(b"VP8L", vp8l(width, height)))


def gif(version, width, height):
    return (version + struct.pack("<HH", width, height) + b"\x80\x00\x00"
            + b"\x00\x00\x00\xff\xff\xff"
            + b"\x2c\x00\x00\x00\x00" + struct.pack("<HH", width, height) + b"\x00"
            + b"\x02\x02\x44\x01\x00" + b"\x3b")


def bmp(width, height, top_down=False):
    stride = (3 * width + 3) & ~3
    pixels = bytes(stride * height)
    info = struct.pack("<IiiHHIIiiII", 40, width, -height if top_down else height,
                       1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    size = 14 + len(info) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(info)) + info + pixels


def bmp_core(width, height):
    stride = (3 * width + 3) & ~3
    pixels = bytes(stride * height)
    core = struct.pack("<IHHHH", 12, width, height, 1, 24)
    size = 14 + len(core) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(core)) + core + pixels


def tiff(width, height, big_endian=False, ifd_last=False):
    e = ">" if big_endian else "<"
    pixels = bytes(3 * width * height)

    def entry(tag, kind, count, value):
        if kind == 3:
            field = struct.pack(e + "HH", value, 0)
        else:
            field = struct.pack(e + "I", value)
        return struct.pack(e + "HHI", tag, kind, count) + field

    def ifd(data_at):
        entries = [entry(256, 3, 1, width), entry(257, 4 if ifd_last else 3, 1, height),
                   entry(258, 3, 1, 8), entry(259, 3, 1, 1), entry(262, 3, 1, 2),
                   entry(273, 4, 1, data_at), entry(277, 3, 1, 3),
                   entry(278, 3, 1, height), entry(279, 4, 1, len(pixels))]
        return struct.pack(e + "H", len(entries)) + b"".join(entries) + b"\x00\x00\x00\x00"

    order = b"MM" if big_endian else b"II"
    if ifd_last:  # as libtiff writes: data first, directory at the end
        return order + struct.pack(e + "HI", 42, 8 + len(pixels)) + pixels + ifd(8)
    directory = ifd(0)
    data_at = 8 + len(directory)
    return order + struct.pack(e + "HI", 42, 8) + ifd(data_at) + pixels


def image_seeds():
    seeds = {
        "png_16x16": MODE_WHOLE + png(16, 16),
        "png_truncated": MODE_WHOLE + png(16, 16)[:30],
        "jpeg_baseline": MODE_WHOLE + jpeg(32, 24),
        "jpeg_progressive_exif": MODE_WHOLE + jpeg(640, 480, sof=0xC2, exif=True),
        "jpeg_head_of_longer": MODE_LONGER + jpeg(64, 64, exif=True)[:60],
        "webp_lossy": MODE_WHOLE + webp_lossy(20, 30),
        "webp_lossless": MODE_WHOLE + webp_lossless(300, 17),
        "webp_extended": MODE_WHOLE + webp_extended(4000, 250),
        "gif87a": MODE_WHOLE + gif(b"GIF87a", 1, 1),
        "gif89a": MODE_WHOLE + gif(b"GIF89a", 40, 20),
        "bmp_info": MODE_WHOLE + bmp(4, 3),
        "bmp_top_down": MODE_WHOLE + bmp(3, 2, top_down=True),
        "bmp_core": MODE_WHOLE + bmp_core(2, 2),
        "tiff_le": MODE_WHOLE + tiff(4, 3),
        "tiff_be": MODE_WHOLE + tiff(3, 4, big_endian=True),
        "tiff_ifd_last": MODE_WHOLE + tiff(5, 5, ifd_last=True),
        "tiff_ifd_behind_head": MODE_LONGER + tiff(5, 5, ifd_last=True)[:40],
        "text": MODE_WHOLE + b"not an image\n",
        "empty": MODE_WHOLE,
    }
    return seeds


def api_seeds():
    bodies = {
        "ok_url": (200, b'{"model":"doubao-seedream-4-5-251128","created":1757321139,'
                        b'"data":[{"url":"https://example.com/r.jpeg","size":"3104x1312"}],'
                        b'"usage":{"generated_images":1,"output_tokens":16280,'
                        b'"total_tokens":16280}}'),
        "ok_b64": (200, b'{"created":1,"data":[{"b64_json":"/9j/4AAQSkZJRg==",'
                        b'"size":"2048x2048"}],"usage":{"generated_images":1}}'),
        "data_error": (200, b'{"model":"m","created":2,"data":[{"error":{"code":'
                            b'"OutputImageSensitiveContentDetected","message":"blocked"}}],'
                            b'"usage":{"generated_images":0}}'),
        "several": (200, b'{"created":3,"data":[{"url":"https://example.com/1.jpeg","size":"1x1"},'
                         b'{"error":{"code":"OutputImageSensitiveContentDetected","message":"x"}},'
                         b'{"b64_json":"/9j/4AAQSkZJRg=="},{"url":"https://example.com/2.jpeg"}],'
                         b'"usage":{"generated_images":3}}'),
        "several_first_empty": (200, b'{"data":[{"b64_json":""},{"b64_json":"REVG"},'
                                     b'{"error":"gone"}]}'),
        "error_on_200": (200, b'{"error":{"code":"QuotaExceeded","message":"quota"}}'),
        "bad_request": (400, b'{"error":{"code":"InvalidParameter.Size","message":"size",'
                             b'"param":"size","type":"BadRequest"}}'),
        "auth": (401, b'{"error":{"code":"AuthenticationError","message":"The API key '
                      b'is invalid. Request id: 0217"}}'),
        "rate": (429, b'{"error":{"code":"ModelAccountIpmRateLimitExceeded","message":"slow"}}'),
        "server": (500, b'{"error":{"code":"InternalServiceError","message":"oops"}}'),
        "gateway_html": (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
        "relay_string_error": (403, b'{"error":"forbidden \\u00e9\\ud83c\\udfa8"}'),
        "retry_after_date": (429, b"Wed, 21 Oct 2015 07:28:00 GMT"),
        "retry_after_seconds": (503, b"120"),
        "prompt_like": (200, "make it \"water\" \\ 水彩 🎨\n".encode()),
        "empty": (200, b""),
    }
    return {name: struct.pack(">H", status) + body for name, (status, body) in bodies.items()}


CONFIG_MINIMAL = b"""\
api:
  base_url: https://ark.cn-beijing.volces.com/api/v3
  model: doubao-seedream-4-5-251128
folders:
  - path: /srv/hot/in
    prompt: "Turn it into a watercolor."
"""

CONFIG_FULL = b"""\
api:
  base_url: https://ark.ap-southeast.bytepluses.com/api/v3
  model: doubao-seedream-4-0-250828
  api_key_file: /etc/seedreamd/api_key
  timeout: 180s
  max_in_flight: 4
  response_format: b64_json
  retries: 5
  pause_retry: 5m
  ca_file: /etc/seedreamd/ca.pem
  allow_insecure_http: false
defaults:
  size: 2K
  watermark: no
  settle: 2s
folders:
  - path: /srv/hot/portraits
    prompt: "Keep the pose; turn the dress into flowing water."
    size: 2048x2048
    output: /srv/hot/portraits-out
    incomplete_timeout: 10m
    recursive: true
    exclude: ["*.tmp", "draft-*"]
    mode: poll
    poll_interval: 250ms
    follow_symlinks: off
    max_input_bytes: 10MiB
    on_success: move
    done_dir: /srv/hot/done
    max_images_per_day: 100
  - path: /srv/hot/products
    prompt: "On a white marble table in soft daylight."
    size: 1K
    on_success: delete
state_dir: /var/lib/seedreamd
stop_timeout: 60s
rescan_interval: 10m
min_free_space: 256MiB
max_images_per_day: 0
images_per_minute: 30
"""

CONFIG_ANCHORS = b"""\
api: {base_url: "http://127.0.0.1:8080/v1", model: ep-20250101, allow_insecure_http: yes}
defaults: &d
  prompt: 'shared "prompt" with \\ and \xe6\xb0\xb4\xe5\xbd\xa9'
  size: 4K
folders:
  - {path: /a, output: /a-out, settle: 0ms}
  - path: /b
    prompt: |
      multi
      line
    exclude: []
"""

CONFIG_REFUSED = b"""\
api:
  base_url: ftp://example.com
  model: ""
  max_in_flight: 100000
  timeout: -5s
  typo_key: 1
folders:
  - path: relative/path
    prompt: 42
    size: 1x1
  - path: /dup
  - path: /dup
    output: /dup
stop_timeout: 1e9h
min_free_space: 12QiB
"""

CONFIG_ODD_YAML = b"""\
%YAML 1.1
---
api: !!map
  base_url: !!str https://x/api/v3/
  model: &m doubao-seedream-4-5-251128
folders:
  - path: /x
    prompt: *m
...
---
second: document
"""


def config_seeds():
    return {
        "minimal.yaml": CONFIG_MINIMAL,
        "full.yaml": CONFIG_FULL,
        "anchors_flow.yaml": CONFIG_ANCHORS,
        "refused.yaml": CONFIG_REFUSED,
        "odd.yaml": CONFIG_ODD_YAML,
    }


SIDECAR_OK = {
    "source": "sub/photo.png", "source_sha256": "a" * 64, "source_size": 9499,
    "source_mtime": "2026-11-24T15:16:54.123456789Z", "output": "sub/photo.jpeg",
    "model": "doubao-seedream-4-5-251128", "prompt": "Make it watercolour", "size": "2K",
    "result_size": "2048x2048", "watermark": False, "response_format": "url", "created": 1757321139,
    "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384},
    "request_id": "0217", "attempts": 1, "elapsed_ms": 1234, "completed_at": "2026-11-24T15:17:00Z",
    "seedreamd_version": "1.0.0"}
SIDECAR_ERR = {
    "source": "\ufffd.png", "source_hex": "ff2e706e67", "source_sha256": "b" * 64, "source_size": 1,
    "source_mtime": "2026-11-24T15:16:54.000000000Z",
    "error": {"http_status": 400, "code": "InvalidParameter", "message": "bad \u00e9"},
    "request_id": None, "attempts": 1, "failed_at": "2026-11-24T15:17:00Z",
    "seedreamd_version": "1.0.0"}
JOURNAL = {
    "folder": "/srv/hot", "source": "sub/photo.png", "stem": "photo", "url": "https://h/r.jpeg",
    "model": "m", "result_size": "2048x2048", "request_id": "0217", "source_sha256": "c" * 64,
    "source_mtime": "2026-11-24T15:16:54.123456789Z", "source_size": 9499, "created": 1757321139,
    "generated_at_ms": 1764000000000, "elapsed_ms": 1234, "attempts": 1,
    "usage": {"generated_images": 1}}


def sidecar_seeds():
    deep = dict(SIDECAR_OK, usage={"a": {"b": {"c": {"d": {"e": [1, "x", None]}}}}, "n": 2})
    return {
        "ok.json": json.dumps(SIDECAR_OK, indent=2).encode(),
        "error.json": json.dumps(SIDECAR_ERR, indent=2).encode(),
        "deep_usage.json": json.dumps(deep).encode(),
        "raw_bytes.json": json.dumps(SIDECAR_OK).encode().replace(b"Make it", b"\xff\xc0\xaf"),
        "bad_hex.json": json.dumps(dict(SIDECAR_ERR, source_hex="f")).encode(),
        "not_object.json": b"[1,2,3]",
        "outputs.json": json.dumps(dict(SIDECAR_OK, usage=None, max_images=3, outputs=[
            {"index": 0, "output": "a-1.jpeg", "size": "1x1"},
            {"index": 1, "error": {"code": "X", "message": "m"}},
            {"index": 2, "output": "a-2.jpeg", "size": None}])).encode(),
    }


def journal_seeds():
    return {
        "record.json": json.dumps(JOURNAL).encode(),
        "hex_names.json": json.dumps(dict(JOURNAL, source="\ufffd", source_hex="ff",
                                          folder="/x\ufffd", folder_hex="2f78ff")).encode(),
        "no_url.json": json.dumps({k: v for k, v in JOURNAL.items() if k != "url"}).encode(),
        "stem_escape.json": json.dumps(dict(JOURNAL, stem="../x")).encode(),
        "several.json": json.dumps(dict(JOURNAL, max_images=3, images=[
            {"url": "https://e/1", "size": "1x1"},
            {"index": 1, "error": {"code": "X", "message": "m"}},
            {"url": "https://e/3"}])).encode(),
        "huge_numbers.json": json.dumps(dict(JOURNAL, created=1e300, source_size=-1)).encode(),
    }


def write(folder, seeds):
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        if len(data) >= 4096:
            sys.exit(f"seed {name} is {len(data)} bytes; keep seeds under 4 KiB")
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    write(os.path.join(root, "image"), image_seeds())
    write(os.path.join(root, "api"), api_seeds())
    write(os.path.join(root, "config"), config_seeds())
    write(os.path.join(root, "sidecar"), sidecar_seeds())
    write(os.path.join(root, "journal"), journal_seeds())


if __name__ == "__main__":
    main()
