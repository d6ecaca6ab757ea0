#!/bin/bash
# Issue 10's "the loop thread makes no blocking file-system call in the steady
# state", measured: the daemon (not --once) under strace -f, N files renamed
# into a watched folder after READY, each processed through the honest stand-in
# API; every file-system call counted by thread (the loop is the process's
# first thread) and by phase (start-up until the first file is dropped, then
# the steady state until SIGTERM, then the stop).
# Usage: scripts/strace-loop-io.sh BINARY [N] [url|b64_json] [WORKDIR]
set -eu
BIN=$(realpath "$1")
N=${2:-40}
FMT=${3:-url}
W=${4:-$(mktemp -d /tmp/strace-loop-io.XXXXXX)}
TOP=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$W/hot" "$W/out" "$W/state" "$W/stage"
mkdir -p "$W/hot" "$W/out" "$W/state" "$W/stage"
for i in $(seq "$N"); do
	for s in "$TOP"/tests/data/samples/*; do
		cp "$s" "$W/stage/$i-$(basename "$s")"
		break
	done
done
python3 "$TOP/tests/fake_api.py" --quiet --max-seconds 300 > "$W/api.out" &
API=$!
trap 'kill $API 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q PORT "$W/api.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(awk '/PORT/{print $2}' "$W/api.out")
cat > "$W/config.yaml" <<YAML
api:
  base_url: "http://127.0.0.1:$PORT/api/v3"
  model: "doubao-seedream-4-5-251128"
  timeout: 20s
  max_in_flight: 8
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
SEEDREAM_API_KEY=test-key strace -f -tt -y -o "$W/trace" "$BIN" -c "$W/config.yaml" \
	2> "$W/stderr" &
STRACE=$!
for _ in $(seq 300); do grep -q "ready" "$W/stderr" 2>/dev/null && break; sleep 0.1; done
sleep 1
MARK=$(date +%H:%M:%S.%N)
mv "$W"/stage/* "$W/hot/"
for _ in $(seq 600); do
	[ "$(find "$W/out" -name '*.json' ! -name '*.error.json' | wc -l)" -ge "$N" ] && break
	sleep 0.1
done
sleep 1
STOP=$(date +%H:%M:%S.%N)
kill -TERM "$(awk 'NR == 1 {print $1}' "$W/trace")"
wait "$STRACE" || true
echo "done: $(find "$W/out" -name '*.json' ! -name '*.error.json' | wc -l) of $N; trace in $W/trace"
python3 - "$W/trace" "$MARK" "$STOP" <<'PY'
import collections, re, sys
trace, mark, stop = sys.argv[1], sys.argv[2][:15], sys.argv[3][:15]
FS = {"open", "openat", "openat2", "read", "pread64", "readv", "write", "pwrite64", "writev",
      "fsync", "fdatasync", "rename", "renameat", "renameat2", "unlink", "unlinkat", "mkdir",
      "mkdirat", "stat", "lstat", "newfstatat", "statx", "fstat", "statfs", "fstatfs",
      "getdents64", "linkat", "readlink", "readlinkat", "access", "faccessat", "faccessat2",
      "close", "inotify_add_watch", "ftruncate", "fallocate", "lseek"}
lines = open(trace).read().splitlines()
main = lines[0].split()[0]
count = collections.Counter()
examples = {}
for line in lines:
    m = re.match(r"(\d+)\s+(\d\d:\d\d:\d\d\.\d+)\s+(\w+)\((.*)", line)
    if not m:
        continue
    pid, ts, call, rest = m.groups()
    if call not in FS:
        continue
    fd = re.match(r"(-?\d+|AT_FDCWD)(<([^>]*)>)?", rest)
    target = fd.group(3) if fd and fd.group(3) else ""
    pm = re.search(r'"(/[^"]*)"', rest)
    if pm and not target.startswith("/"):
        target = pm.group(1)
    elif pm and call in ("openat", "newfstatat", "statx", "unlinkat", "mkdirat", "renameat",
                         "renameat2", "readlinkat", "faccessat", "faccessat2", "linkat"):
        target = pm.group(1)
    if not target.startswith("/") or target.startswith(("/dev/", "/proc/", "/sys/")):
        continue  # sockets, pipes, eventfds, timerfds, epoll, anonymous files
    if target.endswith("/stderr"):
        continue  # the log (journald's socket under systemd)
    phase = "start-up" if ts[:15] < mark else ("steady" if ts[:15] < stop else "stop")
    who = "loop" if pid == main else "worker"
    count[(phase, who)] += 1
    count[(phase, who, call)] += 1
    examples.setdefault((phase, who, call), line[:160])
for phase in ("start-up", "steady", "stop"):
    print("%-9s loop %6d   workers %6d" % (phase, count[(phase, "loop")], count[(phase, "worker")]))
print("file-system calls on the loop thread in the steady state, by call:")
for k in sorted(k for k in count if len(k) == 3 and k[0] == "steady" and k[1] == "loop"):
    print("  %-12s %5d   e.g. %s" % (k[2], count[k], examples[k]))
PY
