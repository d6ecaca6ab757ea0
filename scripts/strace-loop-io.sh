#!/bin/bash
# Issue 10's "the loop thread makes no blocking file-system call in the steady
# state", measured: the daemon (not --once) under strace -f, N files renamed
# into a watched folder after READY, each processed through the honest stand-in
# API; every file-system call counted by thread (the loop is the process's
# first thread) and by phase (start-up until the first file is dropped, then
# the steady state until SIGTERM, then the stop). With STRACE_RELOAD=1, a reload that adds a
# second folder (its output holding a done result) follows the steady state, counted as its own
# phase until that folder is watched.
# Usage: [STRACE_RELOAD=1] scripts/strace-loop-io.sh BINARY [N] [url|b64_json] [WORKDIR]
set -eu
BIN=$(realpath "$1")
N=${2:-40}
FMT=${3:-url}
W=${4:-$(mktemp -d /tmp/strace-loop-io.XXXXXX)}
TOP=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$W/hot" "$W/out" "$W/state" "$W/stage" "$W/hot2" "$W/out2"
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
RELOAD=$(date +%H:%M:%S.%N)
if [ "${STRACE_RELOAD:-0}" = 1 ]; then
	# The second folder's output as a finished run left it: the first output's first
	# result and its sidecar, read back as done records by the reload.
	mkdir -p "$W/hot2" "$W/out2"
	cp "$(find "$W/out" -name '*.json' ! -name '*.error.json' | head -1)" "$W/out2/"
	cat >> "$W/config.yaml" <<YAML
  - path: "$W/hot2"
    prompt: "test"
    output: "$W/out2"
YAML
	kill -HUP "$(awk 'NR == 1 {print $1}' "$W/trace")"
	for _ in $(seq 300); do grep -q "$W/hot2: inotify" "$W/stderr" && break; sleep 0.1; done
	sleep 1
fi
STOP=$(date +%H:%M:%S.%N)
kill -TERM "$(awk 'NR == 1 {print $1}' "$W/trace")"
wait "$STRACE" || true
echo "done: $(find "$W/out" -name '*.json' ! -name '*.error.json' | wc -l) of $N; trace in $W/trace"
python3 - "$W/trace" "$MARK" "$RELOAD" "$STOP" "$W/out2" <<'PY'
import collections, re, sys
trace, out2 = sys.argv[1], sys.argv[5]
mark, reload, stop = (a[:15] for a in sys.argv[2:5])
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
    t = ts[:15]
    phase = ("start-up" if t < mark else "steady" if t < reload else "reload" if t < stop
             else "stop")
    who = "loop" if pid == main else "worker"
    count[(phase, who)] += 1
    count[(phase, who, call)] += 1
    if phase == "reload" and who == "loop" and (target == out2 or target.startswith(out2 + "/")):
        count["loop in the added output"] += 1
    examples.setdefault((phase, who, call), line[:160])
for phase in ("start-up", "steady", "reload", "stop"):
    print("%-9s loop %6d   workers %6d" % (phase, count[(phase, "loop")], count[(phase, "worker")]))
for phase in ("steady", "reload"):
    print("file-system calls on the loop thread in the %s phase, by call:" % phase)
    for k in sorted(k for k in count if len(k) == 3 and k[0] == phase and k[1] == "loop"):
        print("  %-12s %5d   e.g. %s" % (k[2], count[k], examples[k]))
# The check: a reload sweeps and reads an added folder's output on a worker only.
print("file-system calls on the loop thread under the added folder's output: %d"
      % count["loop in the added output"])
sys.exit(1 if count["loop in the added output"] else 0)
PY
