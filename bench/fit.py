#!/usr/bin/env python3
"""The fit row: seedreamd fitting camera-sized images to the API's limits (fit: auto) against
ImageMagick's `convert -auto-orient -resize 36000000@> -quality 92` doing the same job.

    python3 bench/fit.py [--binary build-bench/seedreamd] [--n 16] [--n-im 4] [--tmpdir DIR]

Inputs, made with vips: N distinct 48 MP JPEGs (8000x6000, a textured gradient plus noise, Q 90,
EXIF orientation 6) and N distinct 12 MP HEICs (4032x3024, heif-enc). seedreamd runs --once over
each set against tests/fake_api.py (every image fitted, sent and written back; the server is a
separate process, not counted); ImageMagick runs once per image, one at a time. CPU is user+sys
of the whole process (getrusage of the reaped child), peak RSS its ru_maxrss. ImageMagick converts
the first --n-im images of each set (it needs ~35 s of CPU per 48 MP JPEG here). seedreamd's
per-image CPU is its whole run's CPU / N (so it includes the upload, the HTTP and the output
writing); its peak RSS is that of the whole run, with all N images queued for fitting at once
and max_fits (--max-fits, default 1 as in the daemon) fitting at a time. Needs vips, heif-enc, exiftool and convert.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FAKE_API = os.path.join(REPO, "tests", "fake_api.py")


def run(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measured(argv, env=None):
    """(cpu seconds, peak RSS MiB, wall seconds, exit status) of one child process."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode("utf-8", "replace")
    p.stderr.close()
    if p.returncode != 0:
        sys.stderr.write(err[-2000:])
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, time.monotonic() - t0, p.returncode


def make_inputs(tmp, n, only=None):
    jpegs, heics = [], []
    base = os.path.join(tmp, "base.v")
    # A textured image (gradient + noise) so that the JPEGs are camera-sized (~10-20 MB).
    run("vips", "xyz", os.path.join(tmp, "xyz.v"), "8000", "6000")
    run("vips", "gaussnoise", os.path.join(tmp, "noise.v"), "8000", "6000", "--sigma", "25")
    run("vips", "bandjoin", os.path.join(tmp, "xyz.v") + " " + os.path.join(tmp, "noise.v"),
        os.path.join(tmp, "three.v"))
    run("vips", "linear", os.path.join(tmp, "three.v"), base, "0.02 0.03 1", "0 0 0", "--uchar")
    for i in range(n):
        p = os.path.join(tmp, "jpeg", "cam%02d.jpg" % i)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        run("vips", "linear", base, p + "[Q=90]", "1", str(i), "--uchar")  # distinct bytes
        run("exiftool", "-q", "-overwrite_original", "-Orientation#=6", "-n", p)
        jpegs.append(p)
    if only == "jpeg":
        return jpegs, []
    small = os.path.join(tmp, "phone.png")
    run("vips", "crop", base, small, "0", "0", "4032", "3024")
    for i in range(n):
        png = os.path.join(tmp, "phone%02d.png" % i)
        run("vips", "linear", small, png, "1", str(i), "--uchar")
        p = os.path.join(tmp, "heic", "phone%02d.heic" % i)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        run("heif-enc", "-q", "85", "-p", "preset=ultrafast", png, "-o", p)  # x265 default: ~1 min each
        os.unlink(png)
        heics.append(p)
    return jpegs, heics


def seedreamd(binary, tmp, files, name, max_fits=2):
    root = os.path.join(tmp, "run-" + name)
    hot, state = os.path.join(root, "hot"), os.path.join(root, "state")
    os.makedirs(hot)
    os.makedirs(state)
    for f in files:
        os.link(f, os.path.join(hot, os.path.basename(f)))
    api = subprocess.Popen([sys.executable, FAKE_API, "--port", "0", "--state-file",
                            os.path.join(root, "api.jsonl"), "--quiet"], stdout=subprocess.PIPE)
    port = int(re.match(rb"PORT (\d+)", api.stdout.readline()).group(1))
    config = os.path.join(root, "c.yaml")
    with open(config, "w") as f:
        f.write("api:\n  base_url: http://127.0.0.1:%d/v1\n  model: doubao-seedream-4-5-251128\n"
                "  max_in_flight: 4\nstate_dir: %s\nmax_fits: %d\nfolders:\n  - path: %s\n"
                "    prompt: p\n" % (port, state, max_fits, hot))
    env = dict(os.environ, SEEDREAM_API_KEY="test-key")
    try:
        cpu, rss, wall, rc = measured([binary, "-c", config, "--once", "-q"], env)
    finally:
        api.terminate()
        api.wait()
    sent = len([n for n in os.listdir(hot + "-out") if n.endswith(".json")])
    return cpu, rss, wall, rc == 0 and sent == len(files)


def imagemagick(tmp, files):
    out = os.path.join(tmp, "im-out")
    os.makedirs(out, exist_ok=True)
    cpu = rss = wall = 0.0
    ok = True
    for f in files:
        c, r, w, rc = measured(["convert", f, "-auto-orient", "-colorspace", "sRGB", "-depth", "8",
                                "-resize", "36000000@>", "-strip", "-quality", "92",
                                os.path.join(out, os.path.basename(f) + ".jpg")])
        cpu += c
        rss = max(rss, r)
        wall += w
        ok = ok and rc == 0
    return cpu, rss, wall, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(REPO, "build-bench", "seedreamd"))
    ap.add_argument("--n", type=int, default=16, help="images per set for seedreamd (default 16)")
    ap.add_argument("--n-im", type=int, default=4,
                    help="of those, how many ImageMagick converts (default 4: ~35 s each for 48 MP)")
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--max-fits", type=int, default=1)
    ap.add_argument("--no-im", action="store_true", help="seedreamd only (no ImageMagick runs)")
    ap.add_argument("--only", choices=("jpeg", "heic"), help="one set only")
    args = ap.parse_args()
    for tool in ("vips", "heif-enc", "exiftool", "convert"):
        if not shutil.which(tool):
            sys.exit("bench/fit.py: %s is missing" % tool)
    tmp = tempfile.mkdtemp(prefix="seedreamd-fit-bench-", dir=args.tmpdir)
    try:
        jpegs, heics = make_inputs(tmp, args.n, args.only)
        mb = sum(os.path.getsize(f) for f in jpegs) / max(1, len(jpegs)) / 1e6
        hb = sum(os.path.getsize(f) for f in heics) / max(1, len(heics)) / 1e6
        rows = []
        for label, files in (("48 MP JPEG (%.1f MB, orientation 6)" % mb, jpegs),
                             ("12 MP HEIC (%.1f MB)" % hb, heics)):
            if args.only and not label.lower().startswith({"jpeg": "48", "heic": "12"}[args.only]):
                continue
            s = seedreamd(args.binary, tmp, files, label[:2], args.max_fits)
            m = (1e-9, 1e-9, 0.0, True) if args.no_im else imagemagick(tmp, files[:args.n_im])
            rows.append((label, s, m))
        n, k = args.n, args.n_im
        print("| fit (seedreamd %d images, ImageMagick %d) | seedreamd CPU/image | "
              "ImageMagick CPU/image | CPU ratio | seedreamd peak RSS (%d queued, max_fits %d) | "
              "ImageMagick peak RSS (one image) | RSS ratio | all done |" % (n, k, n, args.max_fits))
        print("|---|---|---|---|---|---|---|---|")
        for label, s, m in rows:
            if args.no_im:
                print("| %s | %.2f s | - | - | %.0f MB | - | - | %s |" % (
                    label, s[0] / n, s[1], "yes" if s[3] else "NO"))
                continue
            print("| %s | %.2f s | %.2f s | %.1fx less | %.0f MB | %.0f MB | %.2f | %s |" % (
                label, s[0] / n, m[0] / k, (m[0] / k) / (s[0] / n), s[1], m[1], s[1] / m[1],
                "yes" if s[3] and m[3] else "NO"))
        print("\nwall: seedreamd %s; ImageMagick (one at a time) %s" % (
            ", ".join("%.1f s" % r[1][2] for r in rows), ", ".join("%.1f s" % r[2][2] for r in rows)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
