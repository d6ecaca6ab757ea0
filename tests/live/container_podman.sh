#!/bin/sh
# tests/live/container_podman.sh [DEB]: the container image (packaging/container/) built and run
# with podman, offline but for Debian's apt mirror:
#   - the base image docker.io/library/debian:bookworm-slim is a debootstrap minbase root file
#     system (tests/live/rootfs.sh, cached) imported with `podman import`; nothing is pulled;
#   - `podman build --pull=never --format docker --network=host` with the .deb (default: the newest
#     build/seedreamd_*.deb) in the build context (its dependencies come from the apt mirror);
#   - a run with --network=host against the stand-in API (tests/fake_api.py) on the host's
#     loopback, PUID/PGID 1234:2345, a bind-mounted /config and hot folder: images processed, the
#     files owned by 1234:2345, logs on standard output, the HEALTHCHECK, the key from a mounted
#     file, and `podman stop` (SIGTERM) with a transfer in flight: finished, exit status 0.
# Every podman state directory (storage, run root, tmp, XDG dirs, containers.conf with runc and a
# lower nofile ulimit) is under one temporary directory, removed at the end.
#
# Root only. Without root, podman, runc or debootstrap it prints "SKIP: ..." and exits 0, unless
# SEEDREAMD_LIVE_REQUIRED=1 (scripts/test.sh sets it). Output as scripts/package.sh.
# shellcheck disable=SC2012,SC2016  # ls of our own test dirs; sh -c scripts take "$1"
set -eu
cd "$(dirname "$0")/../.."

skip() {
	if [ "${SEEDREAMD_LIVE_REQUIRED:-0}" = 1 ]; then
		echo "FAIL - container_podman.sh cannot run: $1"
		exit 1
	fi
	echo "SKIP: container_podman.sh: $1"
	exit 0
}
[ "$(id -u)" -eq 0 ] || skip "not root"
command -v podman >/dev/null 2>&1 || skip "no podman (apt-get install podman)"
command -v runc >/dev/null 2>&1 || skip "no runc (apt-get install runc)"
command -v debootstrap >/dev/null 2>&1 || skip "no debootstrap (apt-get install debootstrap)"

# shellcheck disable=SC2012  # our own build directory
DEB=${1:-$(ls -t build/seedreamd_*.deb 2>/dev/null | head -n 1)}
if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then
	echo "FAIL - no .deb (run scripts/package.sh first)"
	exit 1
fi

PUID=1234
PGID=2345
KEY=container-key-$$
IMAGE=localhost/seedreamd:live-test

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; }
check() {
	what=$1
	shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}

START=$(date +%s)
SLIM=$(./tests/live/rootfs.sh slim)
echo "     base root file system: $SLIM ($(($(date +%s) - START)) s to get it)"

T=$(mktemp -d /var/tmp/seedreamd-podman.XXXXXX)
API_PID=""
# The one file podman writes outside its configured directories, whatever they are: root's
# blob-info cache in /var/lib/containers/cache. Removed at the end if this test created it.
BLOBCACHE=/var/lib/containers/cache/blob-info-cache-v1.boltdb
had_varlib=no
[ -e /var/lib/containers ] && had_varlib=yes
had_blobcache=no
[ -e "$BLOBCACHE" ] && had_blobcache=yes
cleanup() {
	set +e
	[ -n "$API_PID" ] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null
	pm rm -a -f -t 0 >/dev/null 2>&1
	pm rmi -a -f >/dev/null 2>&1
	pm system reset --force >/dev/null 2>&1
	# Whatever podman left mounted under the temporary root (overlay layers, shm).
	awk -v t="$T" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
		umount -l "$m"
	done
	rm -rf "$T"
	if [ "$had_varlib" = no ]; then
		rm -rf /var/lib/containers
	elif [ "$had_blobcache" = no ]; then
		rm -f "$BLOBCACHE"
		rmdir /var/lib/containers/cache 2>/dev/null
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$T/storage" "$T/run" "$T/tmp" "$T/home" "$T/xdg-config" "$T/xdg-data" "$T/xdg-run" \
	"$T/ctx" "$T/config" "$T/data/hot" "$T/data/hot-out"
chmod 0700 "$T/xdg-run"
# podman raises nofile and nproc for root's containers beyond what this machine lets a process
# raise them to (runc: "error setting rlimit"): lower ones, enough for the daemon (4096 files).
nofile=4096
nproc=4096
cat >"$T/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$T/run/events.log"
tmp_dir = "$T/run/libpod"
static_dir = "$T/storage/libpod"
volume_path = "$T/storage/volumes"
[engine.runtimes]
runc = ["$(command -v runc)"]
EOF
cat >"$T/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$T/storage"
runroot = "$T/run"
EOF
: >"$T/registries.conf"
pm() {
	env CONTAINERS_CONF="$T/containers.conf" CONTAINERS_STORAGE_CONF="$T/storage.conf" \
		CONTAINERS_REGISTRIES_CONF="$T/registries.conf" HOME="$T/home" TMPDIR="$T/tmp" \
		XDG_CONFIG_HOME="$T/xdg-config" XDG_DATA_HOME="$T/xdg-data" XDG_RUNTIME_DIR="$T/xdg-run" \
		podman --root "$T/storage" --runroot "$T/run" "$@"
}

# ---- the base image, the build ----------------------------------------------------------------
if tar -C "$SLIM" --exclude=./.complete -c . | pm import --change 'CMD ["/bin/bash"]' - \
	docker.io/library/debian:bookworm-slim >"$T/import.log" 2>&1; then
	ok "podman import: docker.io/library/debian:bookworm-slim from the debootstrap minbase tree"
else
	cat "$T/import.log"
	fail "podman import of the base image"
fi
cp packaging/container/Containerfile packaging/container/entrypoint.sh "$T/ctx/"
cp "$DEB" "$T/ctx/"
t0=$(date +%s)
if pm build --pull=never --format docker --network=host -t "$IMAGE" "$T/ctx" >"$T/build.log" 2>&1; then
	ok "podman build --pull=never --format docker ($(($(date +%s) - t0)) s)"
else
	tail -n 40 "$T/build.log"
	fail "podman build --pull=never --format docker"
	echo "$passed passed, $failed failed"
	exit 1
fi
check "the image has a HEALTHCHECK" \
	sh -c 'echo "$1" | grep -q "seedreamd-entrypoint.*healthcheck"' sh \
	"$(pm image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" 2>&1)"

# ---- the stand-in API on the host's loopback ------------------------------------------------------
python3 tests/fake_api.py --port 0 --key "$KEY" --state-file "$T/api.jsonl" --max-seconds 600 \
	--quiet >"$T/api.out" 2>"$T/api.err" &
API_PID=$!
PORT=""
for _ in $(seq 50); do
	PORT=$(sed -n 's/^PORT \([0-9]*\)$/\1/p' "$T/api.out")
	[ -n "$PORT" ] && break
	sleep 0.1
done
[ -n "$PORT" ] || { cat "$T/api.err"; fail "the stand-in API started"; exit 1; }
api() {
	python3 -c 'import sys, urllib.request as u
r = u.Request("http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[3]), method=sys.argv[2],
              data=sys.argv[4].encode() if len(sys.argv) > 4 else None)
print(u.urlopen(r, timeout=5).read().decode())' "$PORT" "$@"
}

cat >"$T/config/seedreamd.yaml" <<EOF
api:
  base_url: http://127.0.0.1:$PORT/api/v3
  model: doubao-seedream-4-5-251128
  retries: 2
folders:
  - path: /data/hot
    prompt: "container test"
    settle: 1s
state_dir: /config/state
stop_timeout: 30s
EOF
chown -R "$PUID:$PGID" "$T/data"

drop() { # drop SAMPLE...: renamed into the hot folder
	for s in "$@"; do
		cp "tests/data/samples/$s" "$T/data/.$s.tmp"
		chown "$PUID:$PGID" "$T/data/.$s.tmp"
		mv "$T/data/.$s.tmp" "$T/data/hot/$s"
	done
}
sidecars() { find "$T/data/hot-out" -maxdepth 1 -name '*.json' | wc -l; }
wait_sidecars() { # wait_sidecars N SECONDS
	i=0
	while [ "$(sidecars)" -lt "$1" ] && [ $i -lt $(($2 * 5)) ]; do
		sleep 0.2
		i=$((i + 1))
	done
	[ "$(sidecars)" -ge "$1" ]
}
run() { # run NAME [podman run options...]
	name=$1
	shift
	# Without systemd as PID 1 podman says it cannot set up the healthcheck's timer: noise here,
	# shown only when the run fails (the test runs the check with `podman healthcheck run`).
	pm run -d --name "$name" --network=host -e PUID=$PUID -e PGID=$PGID \
		-v "$T/config:/config" -v "$T/data:/data" "$@" "$IMAGE" >"$T/run-$name.log" 2>&1 ||
		{ cat "$T/run-$name.log"; return 1; }
}

# ---- run: key in the environment ------------------------------------------------------------------
if run sd1 -e SEEDREAM_API_KEY="$KEY"; then ok "podman run (--network=host, PUID=$PUID PGID=$PGID)"; else fail "podman run"; fi
i=0
while ! pm logs sd1 2>/dev/null | grep -q 'ready: watching' && [ $i -lt 50 ]; do
	sleep 0.2
	i=$((i + 1))
done
check "the daemon is ready (its log on standard output: 'ready: watching')" \
	sh -c 'echo "$1" | grep -q "ready: watching"' sh "$(pm logs sd1 2>/dev/null)"
# k8s-file logs tag each line with its stream: all on stdout, none on stderr.
logfile=$(pm inspect --format '{{.HostConfig.LogConfig.Path}}' sd1 2>/dev/null || true)
check "the log is on standard output only (k8s-file: no stderr line)" \
	sh -c '[ -s "$1" ] && grep -q " stdout " "$1" && ! grep -q " stderr " "$1"' sh "$logfile"
hostpid=$(pm inspect --format '{{.State.Pid}}' sd1)
check "the daemon is the container's PID 1 (exec: it gets SIGTERM itself)" \
	sh -c '[ "$(awk "/^NSpid:/ { print \$NF }" /proc/$1/status)" = 1 ] && [ "$(cat /proc/$1/comm)" = seedreamd ]' sh "$hostpid"
check "the daemon runs as $PUID:$PGID" \
	sh -c '[ "$(awk "/^Uid:/ { print \$2 }" /proc/$1/status):$(awk "/^Gid:/ { print \$2 }" /proc/$1/status)" = "$2" ]' \
	sh "$hostpid" "$PUID:$PGID"
drop aurora.png blocks.jpg
if wait_sidecars 2 30; then
	ok "2 images processed from the bind-mounted folder ($(ls "$T/data/hot-out" | tr '\n' ' '))"
else
	pm logs sd1 | tail -n 20
	fail "2 images processed from the bind-mounted folder"
fi
check "the outputs and sidecars are owned by $PUID:$PGID" \
	sh -c '[ -n "$(ls -A "$1")" ] && [ -z "$(find "$1" -mindepth 1 ! \( -uid "$2" -gid "$3" \))" ]' \
	sh "$T/data/hot-out" "$PUID" "$PGID"
check "/config/state is owned by $PUID:$PGID, mode 0700" \
	sh -c '[ "$(stat -c %u:%g:%a "$1")" = "$2:700" ]' sh "$T/config/state" "$PUID:$PGID"
check "the state in /config/state is owned by $PUID:$PGID ($(ls -A "$T/config/state" 2>/dev/null | tr '\n' ' '))" \
	sh -c '[ -d "$1" ] && [ -z "$(find "$1" ! \( -uid "$2" -gid "$3" \))" ]' sh "$T/config/state" "$PUID" "$PGID"
if out=$(pm healthcheck run sd1 2>&1); then ok "podman healthcheck run: healthy"; else fail "podman healthcheck run: $out"; fi
ctl=$(pm exec sd1 seedreamctl status 2>&1 || true)
check "seedreamctl status inside the container answers on /run/seedreamd/control (2 done)" \
	sh -c 'echo "$1" | grep -Eq "this run 2 done"' sh "$ctl"
ctl=$(pm exec sd1 seedreamctl --json history 2>&1 || true)
check "seedreamctl --json history inside the container lists aurora and blocks" \
	sh -c 'echo "$1" | grep -q aurora && echo "$1" | grep -q blocks' sh "$ctl"

# ---- podman stop (SIGTERM) with a transfer in flight ------------------------------------------------
api POST /_faults '["slow:ms=3000"]' >/dev/null
drop dusk.jpg
# In flight once the stand-in has taken the "slow" token from its queue (it answers 3 s later).
i=0
while [ "$(api GET /_faults | tr -d ' \n')" != "[]" ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
t0=$(date +%s)
pm stop -t 30 sd1 >/dev/null 2>&1 || true
echo "     podman stop took $(($(date +%s) - t0)) s"
check "exit status 0 after SIGTERM" \
	[ "$(pm inspect --format '{{.State.Status}} {{.State.ExitCode}}' sd1)" = "exited 0" ]
check "the log says it stopped on SIGTERM, waiting for 1 transfer" \
	sh -c 'echo "$1" | grep -q "SIGTERM: stopping; waiting up to .* for 1 transfer"' sh "$(pm logs sd1 2>&1)"
check "the transfer in flight was finished (dusk's sidecar written)" \
	sh -c 'ls "$1" | grep -q "^dusk.*\.json$"' sh "$T/data/hot-out"
pm rm sd1 >/dev/null 2>&1 || true

# ---- the key from a mounted file ---------------------------------------------------------------------
install -m 0600 /dev/null "$T/api_key"
printf '%s\n' "$KEY" >"$T/api_key"
before=$(sidecars)
run sd2 -v "$T/api_key:/run/secrets/api_key:ro" -e SEEDREAM_API_KEY_FILE=/run/secrets/api_key || true
drop rings.png
if wait_sidecars $((before + 1)) 30; then
	ok "with the key from a mounted file (SEEDREAM_API_KEY_FILE, root-only 0600): an image processed"
else
	pm logs sd2 | tail -n 20
	fail "with the key from a mounted file: an image processed"
fi
pm stop -t 30 sd2 >/dev/null 2>&1 || true
check "second run: exit status 0 after SIGTERM" \
	[ "$(pm inspect --format '{{.State.Status}} {{.State.ExitCode}}' sd2)" = "exited 0" ]
billed=$(api GET /_stats | python3 -c 'import json, sys; print(json.load(sys.stdin)["billed"])')
check "the stand-in API billed 4 generations, one per image" [ "$billed" = 4 ]

echo "     the whole test: $(($(date +%s) - START)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
