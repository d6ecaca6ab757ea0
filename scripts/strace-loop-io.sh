#!/bin/bash
# Counts file-system reads, writes and syncs by thread (the loop thread, which
# is the process's first, against the workers) for one --once batch through
# the honest stand-in API: issue 10's "the loop makes no blocking file-system
# call", measured. Usage: scripts/strace-loop-io.sh BINARY [url|b64_json] [WORKDIR]
set -eu
BIN=$(realpath "$1")
FMT=${2:-url}
W=${3:-$(mktemp -d /tmp/strace-loop-io.XXXXXX)}
TOP=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$W/hot" "$W/out" "$W/state"
mkdir -p "$W/hot" "$W/out" "$W/state"
cp "$TOP"/tests/data/samples/* "$W/hot/"
# A 3 MB input, so that the upload takes several reads.
python3 - "$W/hot/noise.png" <<'PY'
import os, struct, sys, zlib
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
w = h = 1000
raw = b"".join(b"\0" + os.urandom(w * 3) for _ in range(h))
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b""))
open(sys.argv[1], "wb").write(png)
PY
python3 "$TOP/tests/fake_api.py" --quiet --max-seconds 120 > "$W/api.out" &
API=$!
trap 'kill $API 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q PORT "$W/api.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(awk '/PORT/{print $2}' "$W/api.out")
cat > "$W/config.yaml" <<YAML
api:
  base_url: "http://127.0.0.1:$PORT/api/v3"
  model: "doubao-seedream-4-5-251128"
  timeout: 20s
  max_in_flight: 4
  response_format: $FMT
defaults:
  size: 2K
  settle: 100ms
state_dir: "$W/state"
folders:
  - path: "$W/hot"
    prompt: "test"
    output: "$W/out"
YAML
SEEDREAM_API_KEY=test-key strace -f -y -o "$W/trace" \
	-e trace=read,write,pread64,pwrite64,fsync,fdatasync "$BIN" -c "$W/config.yaml" --once \
	> "$W/stdout" 2> "$W/stderr"
tail -1 "$W/stderr"
python3 - "$W/trace" <<'PY'
import collections, re, sys
lines = open(sys.argv[1]).read().splitlines()
main = lines[0].split()[0]
count = collections.Counter()
for line in lines:
    m = re.match(r"(\d+)\s+(\w+)\(\d+<([^>]*)>", line)
    if not m:
        continue
    pid, call, path = m.groups()
    if not path.startswith("/") or path.startswith(("/dev/", "/proc/", "/sys/")):
        continue  # sockets, pipes, eventfds, timerfds
    if "/hot/" in path:
        what = "input"
    elif re.search(r"/out/\.[^/]*\.out\.[0-9a-f]+\.tmp$", path):
        what = "result temp file"
    elif "/out/" in path or path.endswith("/out"):
        what = "output folder, other"
    elif "/state" in path:
        what = "state_dir"
    else:
        what = "elsewhere (config, libraries)"
    count[("loop" if pid == main else "worker", call, what)] += 1
print("%-7s %-9s %-30s %s" % ("thread", "call", "file", "count"))
for k in sorted(count):
    print("%-7s %-9s %-30s %d" % (k + (count[k],)))
PY
