#!/usr/bin/env python3
"""Provenance inside the output (issue 13 item 5): each output JPEG carries XMP (IPTC digital
source type, tool, model, creation time, source name, prompt hash; the prompt only with
embed_prompt), read back with exiftool; the image bytes are otherwise those the API returned and
decode to the same pixels; hostile source names are escaped; embed_provenance: false leaves the
output untouched; a reused result keeps its XMP."""

import hashlib
import json
import os
import subprocess
import sys

import harness as h

DST = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
HOSTILE = b'q"u<o>&t\'e \xff\xfe.png'  # quotes, markup, an ampersand, invalid UTF-8
PROMPT_B = 'Paint it "blue" & <keep> the ]]> edges'


def exiftool(path):
    """exiftool's JSON for the XMP of path (group-1 names), or None."""
    try:
        out = subprocess.run(["exiftool", "-json", "-G1", "-XMP:all", path], capture_output=True,
                             timeout=60, check=False)
    except OSError:
        return None
    try:
        return json.loads(out.stdout.decode("utf-8", "replace"))[0]
    except (ValueError, IndexError):
        return None


def pixels(path, tmpdir):
    """The decoded pixels (vips rawsave: the bands, no header) of a JPEG file."""
    ppm = os.path.join(tmpdir, "decoded.raw")
    src = os.path.join(tmpdir, "decode-me.jpeg")  # vips parses options in names: a plain one
    h.write_bytes(src, h.read_bytes(path))
    subprocess.run(["vips", "rawsave", src, ppm], capture_output=True, timeout=60, check=True)
    os.unlink(src)
    data = h.read_bytes(ppm)
    if not data:
        raise ValueError("vips decoded nothing")
    os.unlink(ppm)
    return data


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("prov")
    hot_b = hot + "-b"
    hot_c = hot + "-c"
    os.makedirs(hot_b)
    os.makedirs(hot_c)
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot},
                                       {"path": hot_b, "prompt": PROMPT_B, "embed_prompt": True},
                                       {"path": hot_c, "embed_provenance": False}])
    h.write_bytes(os.path.join(hot, "plain.png"), h.sample("plasma.png"))
    with open(os.path.join(os.fsencode(hot), HOSTILE), "wb") as f:
        f.write(h.png_image(40, 30, 7))
    h.write_bytes(os.path.join(hot_b, "b.png"), h.sample("rings.png"))
    h.write_bytes(os.path.join(hot_c, "c.png"), h.sample("bubbles.png"))

    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "--once exits 0", res.describe())
    c.eq(len(api.generations()), 4, "4 generation calls")
    # the same bytes under another name: the paid result is reused, with its XMP
    h.write_bytes(os.path.join(hot, "copy.png"), h.sample("plasma.png"))
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "second --once exits 0", res.describe())
    gens = api.generations()
    c.eq(len(gens), 4, "no new generation call: copy.png reuses plain.png's result")
    by_sha = {r.get("image_sha256"): r for r in gens}

    # ---- the default folder: XMP without the prompt -------------------------------------------
    outs = sorted(os.listdir(os.fsencode(out)))
    jpegs = [n for n in outs if n.endswith(b".jpeg")]
    c.eq(len(jpegs), 3, "three outputs in the default folder")
    prompt_sha = hashlib.sha256(h.PROMPT.encode("utf-8")).hexdigest()
    for name in jpegs:
        path = os.path.join(os.fsencode(out), name)
        shown = os.fsdecode(name)
        data = h.read_bytes(path)
        sidecar = h.read_json(path[:-5] + b".json")
        if name == b"copy.jpeg":
            c.eq(sidecar.get("reused_from"), "plain.png", "copy.png: reused")
        c.eq(sidecar.get("provenance"), "xmp", "%s: the sidecar says provenance xmp" % shown)
        xmp = None
        try:
            xmp = h.jpeg_xmp(data)
        except ValueError as e:
            c.check(False, "%s: its JPEG segments parse" % shown, str(e))
        c.check(xmp is not None, "%s: one XMP APP1 segment" % shown)
        stripped = h.strip_xmp(data)
        rec = by_sha.get(h.output_provenance(stripped)[0]) if h.output_provenance(stripped) else None
        c.check(rec is not None and h.sha256_bytes(stripped) == rec.get("output_sha256"),
                "%s: without its XMP segment, byte for byte what the API returned" % shown)
        tmp_api = os.path.join(root, "api.jpeg")
        h.write_bytes(tmp_api, stripped)
        c.check(pixels(path, root) == pixels(tmp_api, root),
                "%s: decodes (vips) to the same pixels as the API's image" % shown)
        meta = exiftool(path) or {}
        c.eq(meta.get("XMP-iptcExt:DigitalSourceType"), DST, "%s: exiftool reads DigitalSourceType" % shown)
        c.check(str(meta.get("XMP-xmp:CreatorTool", "")).startswith("seedreamd "),
                "%s: exiftool reads CreatorTool seedreamd" % shown, repr(meta.get("XMP-xmp:CreatorTool")))
        c.check(bool(meta.get("XMP-xmp:CreateDate")), "%s: exiftool reads CreateDate" % shown)
        c.eq(meta.get("XMP-seedreamd:Model"), h.MODEL, "%s: exiftool reads the model" % shown)
        c.eq(meta.get("XMP-seedreamd:PromptSHA256"), prompt_sha,
             "%s: exiftool reads the prompt's sha256" % shown)
        c.check("XMP-seedreamd:Prompt" not in meta, "%s: no prompt without embed_prompt" % shown)
        want_source = sidecar.get("reused_from") or sidecar.get("source")
        if sidecar.get("source_hex"):
            want_source = bytes.fromhex(sidecar["source_hex"]).decode("utf-8", "replace")
        c.eq(meta.get("XMP-seedreamd:SourceFile"), want_source,
             "%s: exiftool reads the source file name (invalid bytes as U+FFFD)" % shown)
        if sidecar.get("source_hex"):
            c.check(xmp is not None and b'q&quot;u&lt;o&gt;&amp;t&apos;e \xef\xbf\xbd\xef\xbf\xbd.png' in xmp,
                    "the hostile name is escaped in the packet", repr(xmp))

    # ---- embed_prompt: true ------------------------------------------------------------------
    out_b = hot_b + "-out"
    meta = exiftool(os.path.join(out_b, "b.jpeg")) or {}
    c.eq(meta.get("XMP-seedreamd:Prompt"), PROMPT_B, "embed_prompt: exiftool reads the prompt back exactly")
    c.eq(meta.get("XMP-iptcExt:DigitalSourceType"), DST, "embed_prompt: DigitalSourceType too")

    # ---- embed_provenance: false -------------------------------------------------------------
    out_c = hot_c + "-out"
    data = h.read_bytes(os.path.join(out_c, "c.jpeg"))
    c.check(h.jpeg_xmp(data) is None, "embed_provenance false: no XMP segment")
    rec = next((r for r in gens if r.get("image_sha256") == h.sha256_bytes(h.sample("bubbles.png"))), {})
    c.eq(h.sha256_bytes(data), rec.get("output_sha256"), "embed_provenance false: the API's bytes exactly")
    c.eq(h.read_json(os.path.join(out_c, "c.json")).get("provenance"), "off",
         "embed_provenance false: the sidecar says provenance off")
    c.problems(h.leftovers(out), "no hidden or temporary file left")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
