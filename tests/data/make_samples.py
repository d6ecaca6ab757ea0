#!/usr/bin/env python3
"""Sample images for seedreamd's demo and tests, with the Python standard library only.

Run `python3 tests/data/make_samples.py` to (re)write tests/data/samples/: PNGs of several
colour types (RGB, RGBA, grey, palette) and two baseline JPEGs. The output is deterministic.
`--verify` also checks every file's structure and decodes the JPEGs with an independent decoder
(djpeg from libjpeg-turbo-progs, or ImageMagick) when one is installed, comparing pixels.

It is also a small library the stand-in API and the integration tests import:
encode_png, decode_png, encode_jpeg, jpeg_segments, jpeg_comment, png_size.
"""

import argparse
import math
import os
import shutil
import struct
import subprocess
import sys
import zlib
from operator import mul

# --------------------------------------------------------------------------------------------
# PNG


def _png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter_row(ftype, row, prev, bpp):
    n = len(row)
    if ftype == 0:
        return bytes(row)
    out = bytearray(n)
    for i in range(n):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if ftype == 1:
            pred = a
        elif ftype == 2:
            pred = b
        elif ftype == 3:
            pred = (a + b) >> 1
        else:
            pred = _paeth(a, b, c)
        out[i] = (row[i] - pred) & 0xFF
    return bytes(out)


def encode_png(width, height, pixels, color_type=2, palette=None):
    """pixels: bytes, rows top to bottom, 8 bits per sample. color_type 0 (grey), 2 (RGB),
    3 (palette: pixels are indexes, palette a list of (r, g, b)), 4 (grey+alpha), 6 (RGBA).
    Picks a filter per row (least sum of absolute values), deflate level 9."""
    bpp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    stride = width * bpp
    if len(pixels) != stride * height:
        raise ValueError("pixel buffer is %d bytes, expected %d" % (len(pixels), stride * height))
    raw = bytearray()
    prev = bytes(stride)
    for y in range(height):
        row = pixels[y * stride:(y + 1) * stride]
        if color_type == 3:
            best = (0, bytes(row))  # palette images: filters rarely help
        else:
            best = None
            for ftype in range(5):
                f = _filter_row(ftype, row, prev, bpp)
                score = sum(v if v < 128 else 256 - v for v in f)
                if best is None or score < best[2]:
                    best = (ftype, f, score)
        raw.append(best[0])
        raw += best[1]
        prev = row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
    if color_type == 3:
        out += _png_chunk(b"PLTE", b"".join(bytes(c) for c in palette))
    out += _png_chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    return out + _png_chunk(b"IEND", b"")


def png_size(data):
    """(width, height) from a PNG's IHDR, or None."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def decode_png(data):
    """Decodes a non-interlaced 8-bit PNG (colour types 0, 2, 3, 4, 6) to (w, h, RGB bytes).
    Returns None for anything else (or anything broken)."""
    try:
        if data[:8] != b"\x89PNG\r\n\x1a\n":
            return None
        pos, idat, palette, hdr = 8, [], None, None
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            body = data[pos + 8:pos + 8 + length]
            pos += 12 + length
            if kind == b"IHDR":
                hdr = struct.unpack(">IIBBBBB", body)
            elif kind == b"PLTE":
                palette = [tuple(body[i:i + 3]) for i in range(0, len(body), 3)]
            elif kind == b"IDAT":
                idat.append(body)
            elif kind == b"IEND":
                break
        if hdr is None:
            return None
        w, h, depth, ctype, _, _, interlace = hdr
        if depth != 8 or interlace != 0 or ctype not in (0, 2, 3, 4, 6):
            return None
        bpp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
        raw = zlib.decompress(b"".join(idat))
        stride = w * bpp
        prev = bytearray(stride)
        out = bytearray()
        pos = 0
        for _ in range(h):
            ftype = raw[pos]
            row = bytearray(raw[pos + 1:pos + 1 + stride])
            pos += 1 + stride
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                if ftype == 1:
                    row[i] = (row[i] + a) & 0xFF
                elif ftype == 2:
                    row[i] = (row[i] + b) & 0xFF
                elif ftype == 3:
                    row[i] = (row[i] + ((a + b) >> 1)) & 0xFF
                elif ftype == 4:
                    row[i] = (row[i] + _paeth(a, b, c)) & 0xFF
            prev = row
            if ctype == 2:
                out += row
            elif ctype == 6:
                for i in range(0, stride, 4):  # composite over white
                    al = row[i + 3]
                    out += bytes((row[i + k] * al + 255 * (255 - al)) // 255 for k in range(3))
            elif ctype == 0:
                for v in row:
                    out += bytes((v, v, v))
            elif ctype == 4:
                for i in range(0, stride, 2):
                    v = (row[i] * row[i + 1] + 255 * (255 - row[i + 1])) // 255
                    out += bytes((v, v, v))
            else:
                for v in row:
                    out += bytes(palette[v])
        return w, h, bytes(out)
    except (zlib.error, struct.error, IndexError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------------------------
# Baseline JPEG (ITU-T T.81): YCbCr 4:4:4, standard quantisation and Huffman tables (Annex K).

# ZIGZAG[k] = natural (row-major) index of the k-th coefficient in zigzag order.
ZIGZAG = sorted(range(64), key=lambda i: (i // 8 + i % 8,
                                          (i // 8) if (i // 8 + i % 8) % 2 else (i % 8)))
assert ZIGZAG[:10] == [0, 1, 8, 16, 9, 2, 3, 10, 17, 24] and ZIGZAG[-3:] == [55, 62, 63]

_Q_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
           14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
           18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_Q_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
             24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32

_DC_LUMA_BITS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
_DC_CHROMA_BITS = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
_DC_VALS = list(range(12))
_AC_LUMA_BITS = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D]
_AC_LUMA_VALS = bytes.fromhex("""
    01 02 03 00 04 11 05 12 21 31 41 06 13 51 61 07 22 71 14 32 81 91 a1 08 23 42 b1 c1 15 52 d1 f0
    24 33 62 72 82 09 0a 16 17 18 19 1a 25 26 27 28 29 2a 34 35 36 37 38 39 3a 43 44 45 46 47 48 49
    4a 53 54 55 56 57 58 59 5a 63 64 65 66 67 68 69 6a 73 74 75 76 77 78 79 7a 83 84 85 86 87 88 89
    8a 92 93 94 95 96 97 98 99 9a a2 a3 a4 a5 a6 a7 a8 a9 aa b2 b3 b4 b5 b6 b7 b8 b9 ba c2 c3 c4 c5
    c6 c7 c8 c9 ca d2 d3 d4 d5 d6 d7 d8 d9 da e1 e2 e3 e4 e5 e6 e7 e8 e9 ea f1 f2 f3 f4 f5 f6 f7 f8
    f9 fa""")
_AC_CHROMA_BITS = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77]
_AC_CHROMA_VALS = bytes.fromhex("""
    00 01 02 03 11 04 05 21 31 06 12 41 51 07 61 71 13 22 32 81 08 14 42 91 a1 b1 c1 09 23 33 52 f0
    15 62 72 d1 0a 16 24 34 e1 25 f1 17 18 19 1a 26 27 28 29 2a 35 36 37 38 39 3a 43 44 45 46 47 48
    49 4a 53 54 55 56 57 58 59 5a 63 64 65 66 67 68 69 6a 73 74 75 76 77 78 79 7a 82 83 84 85 86 87
    88 89 8a 92 93 94 95 96 97 98 99 9a a2 a3 a4 a5 a6 a7 a8 a9 aa b2 b3 b4 b5 b6 b7 b8 b9 ba c2 c3
    c4 c5 c6 c7 c8 c9 ca d2 d3 d4 d5 d6 d7 d8 d9 da e2 e3 e4 e5 e6 e7 e8 e9 ea f2 f3 f4 f5 f6 f7 f8
    f9 fa""")
assert len(_AC_LUMA_VALS) == sum(_AC_LUMA_BITS) == 162
assert len(_AC_CHROMA_VALS) == sum(_AC_CHROMA_BITS) == 162
assert len(set(_AC_LUMA_VALS)) == 162 and len(set(_AC_CHROMA_VALS)) == 162


def _huff_codes(bits, vals):
    """Annex C: code lengths and canonical codes -> {symbol: (code, length)}."""
    table, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            table[vals[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return table


_DC_LUMA = _huff_codes(_DC_LUMA_BITS, _DC_VALS)
_DC_CHROMA = _huff_codes(_DC_CHROMA_BITS, _DC_VALS)
_AC_LUMA = _huff_codes(_AC_LUMA_BITS, _AC_LUMA_VALS)
_AC_CHROMA = _huff_codes(_AC_CHROMA_BITS, _AC_CHROMA_VALS)

# Orthonormal 8-point DCT-II basis: C[u][x] = c(u)/2 * cos((2x+1)u pi/16).
_DCT = [tuple((math.sqrt(0.125) if u == 0 else 0.5) * math.cos((2 * x + 1) * u * math.pi / 16)
              for x in range(8)) for u in range(8)]


def _scaled_quant(base, quality):
    quality = max(1, min(100, quality))
    scale = 5000 // quality if quality < 50 else 200 - quality * 2
    return [max(1, min(255, (q * scale + 50) // 100)) for q in base]


class _BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def write(self, code, length):
        self.acc = (self.acc << length) | code
        self.n += length
        while self.n >= 8:
            self.n -= 8
            byte = (self.acc >> self.n) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0)  # byte stuffing
        self.acc &= (1 << self.n) - 1

    def flush(self):
        if self.n:
            self.write((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with 1 bits


def _category(v):
    v = abs(v)
    n = 0
    while v:
        n += 1
        v >>= 1
    return n


def _encode_block(bw, block, quant, prev_dc, dc_table, ac_table):
    # 2-D DCT, separable: rows then columns.
    rows = [[sum(map(mul, basis, block[y * 8:y * 8 + 8])) for basis in _DCT] for y in range(8)]
    coef = [0.0] * 64
    for u in range(8):
        col = [rows[y][u] for y in range(8)]
        for v in range(8):
            coef[v * 8 + u] = sum(map(mul, _DCT[v], col))
    zz = [int(round(coef[ZIGZAG[k]] / quant[k])) for k in range(64)]
    diff = zz[0] - prev_dc
    cat = _category(diff)
    bw.write(*dc_table[cat])
    if cat:
        bw.write(diff if diff > 0 else diff + (1 << cat) - 1, cat)
    run = 0
    for k in range(1, 64):
        v = zz[k]
        if v == 0:
            run += 1
            continue
        while run > 15:
            bw.write(*ac_table[0xF0])
            run -= 16
        cat = _category(v)
        bw.write(*ac_table[(run << 4) | cat])
        bw.write(v if v > 0 else v + (1 << cat) - 1, cat)
        run = 0
    if run:
        bw.write(*ac_table[0x00])
    return zz[0]


def _segment(marker, payload):
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _dht(tclass, tid, bits, vals):
    return bytes(((tclass << 4) | tid,)) + bytes(bits) + bytes(vals)


def encode_jpeg(width, height, rgb, quality=90, comment=None):
    """Baseline JPEG of an RGB image (bytes, rows top to bottom). `comment` (str or bytes)
    goes into a COM segment after the JFIF header."""
    if len(rgb) != width * height * 3:
        raise ValueError("pixel buffer is %d bytes, expected %d" % (len(rgb), width * height * 3))
    ql = _scaled_quant(_Q_LUMA, quality)
    qc = _scaled_quant(_Q_CHROMA, quality)
    qlz = [ql[ZIGZAG[k]] for k in range(64)]  # tables are stored in zigzag order
    qcz = [qc[ZIGZAG[k]] for k in range(64)]
    # Colour conversion once, to three planes with the level shift applied.
    n = width * height
    planes = ([0.0] * n, [0.0] * n, [0.0] * n)
    for i in range(n):
        r, g, b = rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]
        planes[0][i] = 0.299 * r + 0.587 * g + 0.114 * b - 128
        planes[1][i] = -0.168736 * r - 0.331264 * g + 0.5 * b
        planes[2][i] = 0.5 * r - 0.418688 * g - 0.081312 * b
    bw = _BitWriter()
    dc = [0, 0, 0]
    for by in range(0, height, 8):
        for bx in range(0, width, 8):
            for c in range(3):
                plane = planes[c]
                block = []
                for y in range(8):
                    yy = min(by + y, height - 1) * width
                    block.extend(plane[yy + min(bx + x, width - 1)] for x in range(8))
                if c == 0:
                    dc[0] = _encode_block(bw, block, qlz, dc[0], _DC_LUMA, _AC_LUMA)
                else:
                    dc[c] = _encode_block(bw, block, qcz, dc[c], _DC_CHROMA, _AC_CHROMA)
    bw.flush()
    out = bytearray(b"\xff\xd8")
    out += _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    if comment is not None:
        if isinstance(comment, str):
            comment = comment.encode("utf-8")
        out += _segment(0xFE, comment)
    out += _segment(0xDB, b"\x00" + bytes(qlz) + b"\x01" + bytes(qcz))
    out += _segment(0xC0, struct.pack(">BHHB", 8, height, width, 3) +
                    bytes((1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1)))
    out += _segment(0xC4, _dht(0, 0, _DC_LUMA_BITS, _DC_VALS) + _dht(1, 0, _AC_LUMA_BITS, _AC_LUMA_VALS) +
                    _dht(0, 1, _DC_CHROMA_BITS, _DC_VALS) + _dht(1, 1, _AC_CHROMA_BITS, _AC_CHROMA_VALS))
    out += _segment(0xDA, bytes((3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0)))
    out += bw.out
    out += b"\xff\xd9"
    return bytes(out)


def jpeg_segments(data):
    """Walks a JPEG's marker structure. Returns a list of (marker, payload) up to and including
    SOS (payload of SOS = its header), then ("scan", entropy-coded bytes) and (0xD9, b"").
    Raises ValueError describing the first structural problem."""
    if data[:3] != b"\xff\xd8\xff":
        raise ValueError("does not start with FF D8 FF")
    if data[-2:] != b"\xff\xd9":
        raise ValueError("does not end with FF D9 (EOI)")
    segs, pos = [], 2
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise ValueError("expected a marker at offset %d" % pos)
        marker = data[pos + 1]
        if marker in (0xD8, 0xD9) or 0xD0 <= marker <= 0xD7:
            raise ValueError("unexpected marker FF %02X at offset %d" % (marker, pos))
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise ValueError("segment FF %02X at offset %d overruns the file" % (marker, pos))
        segs.append((marker, data[pos + 4:pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:
            break
    end = pos
    while True:  # entropy-coded data: FF is followed by 00 (stuffing) or RSTn, until EOI
        end = data.index(b"\xff", end)
        nxt = data[end + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
            end += 2
            continue
        if nxt == 0xD9 and end + 2 == len(data):
            break
        raise ValueError("unexpected marker FF %02X inside the scan at offset %d" % (nxt, end))
    segs.append(("scan", data[pos:end]))
    segs.append((0xD9, b""))
    kinds = [m for m, _ in segs]
    for needed, name in ((0xDB, "DQT"), (0xC0, "SOF0"), (0xC4, "DHT")):
        if needed not in kinds:
            raise ValueError("no %s segment" % name)
    return segs


def jpeg_size(data):
    """(width, height) from the first SOFn, or None."""
    try:
        for marker, payload in jpeg_segments(data):
            if isinstance(marker, int) and 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                _, h, w = struct.unpack(">BHH", payload[:5])
                return w, h
    except (ValueError, struct.error, IndexError):
        return None
    return None


def jpeg_comment(data):
    """The text of the first COM segment (str), or None. Lenient: scans markers before SOS."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker == 0xFE:
            return data[pos + 4:pos + 2 + length].decode("utf-8", "replace")
        if marker == 0xDA:
            return None
        pos += 2 + length
    return None


# --------------------------------------------------------------------------------------------
# The pictures


def _clamp(v):
    return 0 if v < 0 else 255 if v > 255 else int(v)


def _lerp(a, b, t):
    return tuple(_clamp(a[i] + (b[i] - a[i]) * t) for i in range(len(a)))


def _ramp(stops, t):
    """Colour at t in [0, 1] along [(pos, (r, g, b)), ...]."""
    t = max(0.0, min(1.0, t))
    for (p0, c0), (p1, c1) in zip(stops, stops[1:]):
        if t <= p1:
            return _lerp(c0, c1, (t - p0) / (p1 - p0) if p1 > p0 else 0)
    return stops[-1][1]


def sunset(w=256, h=160):
    sky = [(0.0, (40, 24, 84)), (0.45, (190, 60, 110)), (0.8, (250, 150, 70)), (1.0, (255, 214, 120))]
    sea = [(0.0, (250, 170, 90)), (0.3, (120, 60, 110)), (1.0, (20, 24, 60))]
    horizon = int(h * 0.62)
    sx, sy, sr = w * 0.5, horizon - h * 0.02, h * 0.2
    px = bytearray()
    for y in range(h):
        for x in range(w):
            if y < horizon:
                c = _ramp(sky, y / horizon)
                d = math.hypot(x - sx, y - sy)
                if d < sr:
                    band = (y > sy - sr * 0.1) and int((y - sy) / (sr * 0.14)) % 2 == 1
                    c = (255, 236, 170) if not band else c
                elif d < sr * 1.6:
                    c = _lerp(c, (255, 200, 120), 0.35 * (1 - (d - sr) / (sr * 0.6)))
            else:
                t = (y - horizon) / (h - horizon)
                c = _ramp(sea, t)
                glint = abs(x - sx) < sr * (1.1 - t * 0.6) and (y * 7 + int(4 * math.sin(x * 0.3))) % 9 < 2
                if glint:
                    c = _lerp(c, (255, 220, 150), 0.6 * (1 - t))
            px += bytes(c)
    return w, h, bytes(px), 2


def mandelbrot(w=192, h=128):
    pal = [(0.0, (8, 8, 40)), (0.16, (32, 107, 203)), (0.42, (237, 255, 255)),
           (0.64, (255, 170, 0)), (0.86, (120, 2, 40)), (1.0, (8, 8, 40))]
    px = bytearray()
    max_iter = 64
    for y in range(h):
        ci = (y - h / 2) * 2.4 / h
        for x in range(w):
            cr = -0.65 + (x - w / 2) * 3.4 / w
            zr = zi = 0.0
            i = 0
            while i < max_iter and zr * zr + zi * zi < 16.0:
                zr, zi = zr * zr - zi * zi + cr, 2 * zr * zi + ci
                i += 1
            if i == max_iter:
                px += b"\x00\x00\x00"
            else:
                mu = i + 1 - math.log(math.log(math.sqrt(zr * zr + zi * zi))) / math.log(2)
                px += bytes(_ramp(pal, (mu / 24.0) % 1.0))
    return w, h, bytes(px), 2


def plasma(w=128, h=128):
    px = bytearray()
    for y in range(h):
        for x in range(w):
            v = (math.sin(x / 9.0) + math.sin(y / 13.0) + math.sin((x + y) / 17.0) +
                 math.sin(math.hypot(x - w * 0.7, y - h * 0.3) / 8.0)) / 4.0
            px += bytes((_clamp(128 + 127 * math.sin(math.pi * v)),
                         _clamp(128 + 127 * math.sin(math.pi * v + 2.1)),
                         _clamp(128 + 127 * math.sin(math.pi * v + 4.2))))
    return w, h, bytes(px), 2


def bubbles(w=160, h=160):
    """RGBA: translucent discs over a soft checker."""
    discs = [(40, 50, 30, (255, 90, 90)), (100, 60, 38, (90, 200, 255)), (70, 110, 34, (140, 255, 120)),
             (125, 125, 24, (255, 220, 80)), (30, 130, 18, (200, 120, 255))]
    px = bytearray()
    for y in range(h):
        for x in range(w):
            base = 235 if ((x // 20) + (y // 20)) % 2 else 210
            r = g = b = base
            a = 255
            for cx, cy, rad, col in discs:
                d = math.hypot(x - cx, y - cy)
                if d < rad:
                    t = 0.55 + 0.35 * (1 - d / rad)
                    r, g, b = _lerp((r, g, b), col, t)
            if math.hypot(x - w / 2, y - h / 2) > w * 0.49:  # transparent corners
                a = 0
            px += bytes((r, g, b, a))
    return w, h, bytes(px), 6


def rings(w=128, h=128):
    """Greyscale: moire rings."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            d1 = math.hypot(x - w * 0.35, y - h * 0.4)
            d2 = math.hypot(x - w * 0.68, y - h * 0.62)
            px.append(_clamp(128 + 60 * math.cos(d1 * 0.55) + 60 * math.cos(d2 * 0.55)))
    return w, h, bytes(px), 0


def truchet(w=192, h=192, tile=16):
    """Palette: quarter-circle Truchet tiles."""
    palette = [(22, 33, 62), (233, 69, 96), (245, 245, 240), (83, 52, 131)]
    state = 12345
    flips = {}
    px = bytearray()
    for y in range(h):
        for x in range(w):
            tx, ty = x // tile, y // tile
            if (tx, ty) not in flips:
                state = (state * 1103515245 + 12345) & 0x7FFFFFFF
                flips[(tx, ty)] = (state >> 16) & 1
            lx, ly = x % tile + 0.5, y % tile + 0.5
            if flips[(tx, ty)]:
                lx = tile - lx
            d1 = math.hypot(lx, ly)
            d2 = math.hypot(tile - lx, tile - ly)
            half = tile / 2
            on = abs(d1 - half) < tile * 0.14 or abs(d2 - half) < tile * 0.14
            if on:
                px.append(1 if (tx + ty) % 2 else 2)
            else:
                px.append(0 if (tx * 3 + ty) % 5 else 3)
    return w, h, bytes(px), 3, palette


def aurora(w=240, h=135):
    px = bytearray()
    for y in range(h):
        for x in range(w):
            t = y / h
            c = _lerp((6, 10, 30), (18, 30, 70), t)
            for k, (col, off) in enumerate((((60, 255, 160), 0.0), ((120, 120, 255), 1.7), ((255, 90, 200), 3.1))):
                centre = h * (0.3 + 0.1 * k) + 14 * math.sin(x / 23.0 + off) + 6 * math.sin(x / 7.0 + off * 2)
                d = (y - centre) / (10 + 6 * math.sin(x / 31.0 + off))
                if -3 < d < 3:
                    c = _lerp(c, col, 0.75 * math.exp(-d * d))
            if (x * 7919 + y * 104729) % 997 < 3 and y < h * 0.8:  # stars
                c = (230, 230, 255)
            if y > h * 0.86 - 6 * math.sin(x / 19.0):  # hills
                c = (4, 8, 14)
            px += bytes(c)
    return w, h, bytes(px), 2


def spiral(w=144, h=144):
    px = bytearray()
    for y in range(h):
        for x in range(w):
            dx, dy = x - w / 2 + 0.5, y - h / 2 + 0.5
            a = math.atan2(dy, dx)
            r = math.hypot(dx, dy)
            v = (a / math.pi * 3 + r / 9.0) % 2.0
            hue = (a / (2 * math.pi) + 0.5 + r / 300.0) % 1.0
            c = _hue(hue)
            c = _lerp(c, (250, 248, 240), 0.75 if v < 1.0 else 0.0)
            px += bytes(c)
    return w, h, bytes(px), 2


def _hue(h):
    h6 = h * 6
    i = int(h6) % 6
    f = h6 - int(h6)
    v, p, q, t = 235, 40, _clamp(235 - 195 * f), _clamp(40 + 195 * f)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def blocks(w=128, h=96):
    """For the JPEG: a Mondrian-like composition of 8-aligned blocks."""
    cells = [((0, 0, 64, 56), (220, 40, 40)), ((64, 0, 128, 32), (245, 240, 230)),
             ((64, 32, 104, 96), (30, 60, 170)), ((104, 32, 128, 64), (250, 205, 40)),
             ((0, 56, 64, 96), (245, 240, 230)), ((104, 64, 128, 96), (245, 240, 230))]
    px = bytearray()
    for y in range(h):
        for x in range(w):
            c = (20, 20, 20)
            for (x0, y0, x1, y1), col in cells:
                if x0 + 2 <= x < x1 - 2 and y0 + 2 <= y < y1 - 2:
                    c = col
            px += bytes(c)
    return w, h, bytes(px)


def dusk_gradient(w=100, h=75):
    """For the JPEG: a smooth diagonal gradient (sizes not multiples of 8: edge padding)."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            t = (x / w + y / h) / 2
            px += bytes(_ramp([(0.0, (255, 180, 90)), (0.5, (200, 80, 120)), (1.0, (40, 40, 110))], t))
    return w, h, bytes(px)


PNGS = [("sunset.png", sunset), ("mandelbrot.png", mandelbrot), ("plasma.png", plasma),
        ("bubbles.png", bubbles), ("rings.png", rings), ("truchet.png", truchet),
        ("aurora.png", aurora), ("spiral.png", spiral)]
JPEGS = [("blocks.jpg", blocks, 92), ("dusk.jpg", dusk_gradient, 90)]


def _decode_with_tool(path, w, h):
    """Decodes a JPEG with an independent decoder (libjpeg's djpeg, else ImageMagick) to RGB
    bytes; None when neither is installed or works here."""
    for argv in (["djpeg", "-pnm", path], ["convert", path, "-depth", "8", "ppm:-"]):
        if not shutil.which(argv[0]):
            continue
        proc = subprocess.run(argv, capture_output=True)
        out = proc.stdout
        if proc.returncode != 0 or not out.startswith(b"P6"):
            continue
        fields = out.split(maxsplit=4)  # P6 w h maxval pixels
        if len(fields) == 5 and (int(fields[1]), int(fields[2])) == (w, h):
            return fields[4][:w * h * 3]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples"))
    ap.add_argument("--verify", action="store_true", help="also check structure and decode the JPEGs")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for name, fn in PNGS:
        res = fn()
        w, h, px, ctype = res[:4]
        data = encode_png(w, h, px, ctype, res[4] if len(res) > 4 else None)
        path = os.path.join(args.out, name)
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
        if args.verify:
            dec = decode_png(data)
            assert dec is not None and dec[:2] == (w, h), name
            if ctype == 2:
                assert dec[2] == px, name + ": PNG round trip differs"
        print("%-16s %3dx%-3d PNG type %d  %6d bytes" % (name, w, h, ctype, len(data)))
    for name, fn, quality in JPEGS:
        w, h, px = fn()
        data = encode_jpeg(w, h, px, quality, comment="seedreamd sample image")
        path = os.path.join(args.out, name)
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
        extra = ""
        if args.verify:
            jpeg_segments(data)
            assert jpeg_size(data) == (w, h), name
            dec = _decode_with_tool(path, w, h)
            if dec is None:
                extra = "  (no djpeg/convert here to decode it)"
            else:
                mae = sum(abs(a - b) for a, b in zip(dec, px)) / len(px)
                if len(dec) != len(px) or mae > 6:
                    raise SystemExit("%s: decoded image differs (mean abs error %.2f)" % (name, mae))
                extra = "  decoded, mean abs error %.2f" % mae
        print("%-16s %3dx%-3d JPEG q%d     %6d bytes%s" % (name, w, h, quality, len(data), extra))
    print("total %d bytes in %s" % (total, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
