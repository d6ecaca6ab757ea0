#!/bin/sh
# tests/live/systemd_nspawn.sh [DEB]: the Debian package under a real systemd.
#
# Boots a minimal Debian 12 with systemd in systemd-nspawn (--boot --private-network: the only
# network in there is its own loopback), installs the .deb (default: the newest
# build/seedreamd_*.deb), runs the stand-in API (tests/fake_api.py, bind-mounted read-only) inside
# the container on its loopback, and checks the service for real: READY=1 and active, STATUS= in
# `systemctl status`, the hardening on the running process, LoadCredential=, images processed with
# a ReadWritePaths= drop-in, seedreamctl on the control socket (root, the group, not nobody), the
# journal fields, reload without procps, /etc/seedreamd read-only in the unit's namespace, the
# watchdog, stop with a transfer in flight, dpkg --purge while running.
# Every run has the drop-in SystemCallErrorNumber=kill: a syscall the filter lacks kills the daemon
# (SIGSYS) instead of failing with EPERM, so it shows up here.
#
# The root file system (debootstrap minbase + systemd, dbus, python3 and the package's libraries,
# no procps) is cached by tests/live/rootfs.sh under ${SEEDREAMD_TEST_CACHE:-/var/cache/seedreamd-test};
# each run boots an overlay of it (or a copy) under a temporary directory, removed at the end.
#
# Root only. Without root, systemd-nspawn or debootstrap it prints "SKIP: ..." and exits 0, unless
# SEEDREAMD_LIVE_REQUIRED=1 (scripts/test.sh sets it), then it fails. Output as scripts/package.sh:
# "ok   - ..." / "FAIL - ...", last line "N passed, M failed", exit status 0 only when none failed.
# shellcheck disable=SC2016  # sh -c scripts run inside the container expand there
set -eu
cd "$(dirname "$0")/../.."
TOP=$(pwd)

skip() {
	if [ "${SEEDREAMD_LIVE_REQUIRED:-0}" = 1 ]; then
		echo "FAIL - systemd_nspawn.sh cannot run: $1"
		exit 1
	fi
	echo "SKIP: systemd_nspawn.sh: $1"
	exit 0
}
[ "$(id -u)" -eq 0 ] || skip "not root (systemd-nspawn and debootstrap need root)"
command -v systemd-nspawn >/dev/null 2>&1 || skip "no systemd-nspawn (apt-get install systemd-container)"
command -v debootstrap >/dev/null 2>&1 || skip "no debootstrap (apt-get install debootstrap)"
command -v nsenter >/dev/null 2>&1 || skip "no nsenter (util-linux)"

# shellcheck disable=SC2012  # our own build directory
DEB=${1:-$(ls -t build/seedreamd_*.deb 2>/dev/null | head -n 1)}
if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then
	echo "FAIL - no .deb (run scripts/package.sh first)"
	exit 1
fi

KEY=live-test-key-$$
PORT=18080
HOT=/srv/hot

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; }
check() { # check "what" command...
	what=$1
	shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}

START=$(date +%s)
# The package's own Depends (libvips and friends included), so dpkg -i finds them all.
DEPENDS=$(dpkg-deb -f "$DEB" Depends | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/[[:space:]]//g' |
	grep -v '^$' | sort -u | tr '\n' ' ')
# shellcheck disable=SC2086  # one word per package
ROOTFS=$(./tests/live/rootfs.sh systemd systemd dbus $DEPENDS ca-certificates python3)
echo "     root file system: $ROOTFS ($(($(date +%s) - START)) s to get it)"

WORK=$(mktemp -d /var/tmp/seedreamd-live.XXXXXX)
ROOT=$WORK/root
NSPAWN_PID=""
LEADER=""
overlay=no
cleanup() {
	set +e
	if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
		# SIGTERM asks nspawn to shut the container's systemd down cleanly.
		kill -TERM "$NSPAWN_PID"
		i=0
		while kill -0 "$NSPAWN_PID" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.2
			i=$((i + 1))
		done
		kill -0 "$NSPAWN_PID" 2>/dev/null && kill -KILL "$NSPAWN_PID"
		wait "$NSPAWN_PID" 2>/dev/null
	fi
	[ "$overlay" = yes ] && umount "$ROOT"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- boot -------------------------------------------------------------------------------------
mkdir -p "$ROOT" "$WORK/upper" "$WORK/ovwork"
if mount -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$WORK/upper,workdir=$WORK/ovwork" \
	"$ROOT" 2>/dev/null; then
	overlay=yes
else
	echo "     (no overlayfs here: booting a copy of the root file system)"
	cp -a "$ROOTFS/." "$ROOT/"
fi
cp "$DEB" "$ROOT/root/seedreamd.deb"
echo live-nspawn >"$ROOT/etc/hostname"

setsid systemd-nspawn --quiet --register=no --keep-unit --private-network --boot \
	--console=pipe -D "$ROOT" -M seedreamd-live --bind-ro="$TOP/tests:/opt/seedreamd-tests" \
	</dev/null >"$WORK/nspawn.log" 2>&1 &
NSPAWN_PID=$!

# The container's PID 1: a process whose innermost pid is 1, a child or grandchild of nspawn.
# (From /proc: the host may have no procps.)
ppid_of() { awk '/^PPid:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
find_leader() {
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		ns=$(awk '/^NSpid:/ { if (NF > 2) print $NF }' "$d/status" 2>/dev/null)
		[ "$ns" = 1 ] || continue
		pp=$(ppid_of "$p")
		if [ "$pp" = "$NSPAWN_PID" ] || [ "$(ppid_of "$pp")" = "$NSPAWN_PID" ]; then
			echo "$p"
			return 0
		fi
	done
	return 1
}
i=0
while [ -z "$LEADER" ] && [ $i -lt 100 ]; do
	LEADER=$(find_leader || true)
	[ -n "$LEADER" ] || { sleep 0.1; i=$((i + 1)); }
	kill -0 "$NSPAWN_PID" 2>/dev/null || break
done
if [ -z "$LEADER" ]; then
	tail -n 40 "$WORK/nspawn.log"
	fail "systemd-nspawn --boot started a container"
	echo "$passed passed, $failed failed"
	exit 1
fi

# Runs a command in the container (all its namespaces, its root), with a clean environment.
ct() {
	nsenter -t "$LEADER" -a -- /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
ctsh() { ct /bin/sh -c "$@"; }

# Right after the container's PID 1 appears its bus may not answer yet: is-system-running then
# prints nothing at once (seen once here). Ask again until it answers, for up to 120 s.
state=
i=0
while [ -z "$state" ] && [ $i -lt 120 ]; do
	state=$(timeout 120 nsenter -t "$LEADER" -a systemctl is-system-running --wait 2>/dev/null || true)
	[ -n "$state" ] || { sleep 1; i=$((i + 1)); }
	kill -0 "$NSPAWN_PID" 2>/dev/null || break
done
case $state in
running | degraded) ok "systemd booted in the container ($state, $(($(date +%s) - START)) s)" ;;
*)
	tail -n 40 "$WORK/nspawn.log"
	fail "systemd booted in the container (is-system-running: $state)"
	echo "$passed passed, $failed failed"
	exit 1
	;;
esac
[ "$state" = degraded ] && ct systemctl --failed --no-legend | sed 's/^/     (failed unit in the container) /'
check "systemd in the container is version 252 (Debian 12)" \
	sh -c 'nsenter -t "$1" -a systemctl --version | head -n 1 | grep -q "^systemd 252 "' sh "$LEADER"
check "the container has no procps (/bin/kill)" sh -c '! nsenter -t "$1" -a test -e /bin/kill' sh "$LEADER"

# ---- install ----------------------------------------------------------------------------------
if ct dpkg -i /root/seedreamd.deb >"$WORK/dpkg-i.log" 2>&1; then
	ok "dpkg -i $(basename "$DEB") in the container"
else
	cat "$WORK/dpkg-i.log"
	fail "dpkg -i $(basename "$DEB") in the container"
fi
check "installing did not start the service" sh -c '[ "$(nsenter -t "$1" -a systemctl is-active seedreamd)" = inactive ]' sh "$LEADER"

# The stand-in API on the container's loopback, as a transient unit.
ct systemd-run --quiet --unit=fake-api -p WorkingDirectory=/tmp /usr/bin/python3 \
	/opt/seedreamd-tests/fake_api.py --port "$PORT" --key "$KEY" --state-file /var/tmp/api.jsonl \
	--max-seconds 900 --quiet
api_up=no
for _ in $(seq 50); do
	if ct python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null; then
		api_up=yes
		break
	fi
	sleep 0.2
done
check "the stand-in API listens on the container's loopback (port $PORT)" [ $api_up = yes ]
api() { # api METHOD PATH [BODY]: a request to the stand-in API, from inside the container
	ct python3 -c 'import sys, urllib.request as u
r = u.Request("http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[3]), method=sys.argv[2],
              data=sys.argv[4].encode() if len(sys.argv) > 4 else None)
print(u.urlopen(r, timeout=5).read().decode())' "$PORT" "$@"
}

# The key (root only, 0600), a configuration with one folder, the folders owned by seedreamd.
ctsh "umask 077 && printf '%s\n' '$KEY' >/etc/seedreamd/api_key"
write_config() { # write_config FOLDER...: one folder per argument, prompt "live <name>"
	{
		echo "api:"
		echo "  base_url: http://127.0.0.1:$PORT/api/v3"
		echo "  model: doubao-seedream-4-5-251128"
		echo "  retries: 2"
		echo "defaults:"
		echo "  settle: 1s"
		echo "folders:"
		for f in "$@"; do
			echo "  - path: $HOT/$f"
			echo "    prompt: \"live $f\""
		done
		echo "state_dir: /var/lib/seedreamd"
		echo "stop_timeout: 30s"
	} | ct sh -c 'cat >/etc/seedreamd/seedreamd.yaml'
}
write_config a
ctsh "mkdir -p $HOT/a $HOT/a-out $HOT/b $HOT/b-out && chown -R seedreamd:seedreamd $HOT"
ctsh "mkdir -p /etc/systemd/system/seedreamd.service.d && cat >/etc/systemd/system/seedreamd.service.d/live.conf" <<EOF
[Service]
ReadWritePaths=$HOT
SystemCallErrorNumber=kill
RestartSec=1s
LimitCORE=0
EOF
ct systemctl daemon-reload

# ---- start: READY=1, STATUS=, hardening, credential ---------------------------------------------
t0=$(date +%s)
if ct systemctl start seedreamd; then ok "systemctl start seedreamd (Type=notify: returns after READY=1)"; else fail "systemctl start seedreamd"; fi
check "the service is active" sh -c '[ "$(nsenter -t "$1" -a systemctl is-active seedreamd)" = active ]' sh "$LEADER"
# systemd 252 shows the action "kill" as 2147483646 (INT_MAX - 1); EPERM would be 1.
errno_prop=$(ct systemctl show -p SystemCallErrorNumber --value seedreamd)
check "the drop-in's SystemCallErrorNumber=kill is in force (property $errno_prop, not 1 = EPERM)" \
	[ "$errno_prop" = 2147483646 ]
ct systemctl status --no-pager seedreamd >"$WORK/status.txt" 2>&1 || true
if grep -q 'Status: "[0-9]* queued, [0-9]* in flight' "$WORK/status.txt"; then
	ok "systemctl status shows STATUS=: $(grep 'Status:' "$WORK/status.txt" | sed 's/^ *//')"
else
	cat "$WORK/status.txt"
	fail "systemctl status shows the STATUS= text"
fi
PID=$(ct systemctl show -p MainPID --value seedreamd)
echo "     MainPID $PID (in the container), started in $(($(date +%s) - t0)) s"
ct cat "/proc/$PID/status" >"$WORK/proc-status" 2>/dev/null || true
uid=$(ct id -u seedreamd)
field() { awk -v f="$1:" '$1 == f { print $2 }' "$WORK/proc-status"; }
check "the daemon runs as the seedreamd user (uid $uid)" [ "$(field Uid)" = "$uid" ]
check "the daemon has no capabilities (CapEff 0)" [ "$(field CapEff)" = 0000000000000000 ]
check "the daemon has no bounding capabilities (CapBnd 0)" [ "$(field CapBnd)" = 0000000000000000 ]
check "NoNewPrivs 1" [ "$(field NoNewPrivs)" = 1 ]
check "Seccomp 2 (filter)" [ "$(field Seccomp)" = 2 ]
check "the credential api_key is in the service's credentials directory" \
	ctsh "test -s /run/credentials/seedreamd.service/api_key"
check "the seedreamd user cannot read /etc/seedreamd/api_key" \
	sh -c '! nsenter -t "$1" -a setpriv --reuid=seedreamd --regid=seedreamd --clear-groups cat /etc/seedreamd/api_key >/dev/null 2>&1' sh "$LEADER"
check "another user (nobody) cannot read the credential" \
	sh -c '! nsenter -t "$1" -a setpriv --reuid=nobody --regid=nogroup --clear-groups cat /run/credentials/seedreamd.service/api_key >/dev/null 2>&1' sh "$LEADER"
check "/etc/seedreamd/api_key is root's, mode 0600" \
	sh -c '[ "$(nsenter -t "$1" -a stat -c %U:%a /etc/seedreamd/api_key)" = root:600 ]' sh "$LEADER"
# In the unit's own mount namespace (as root there): /etc/seedreamd read-only, the grants writable.
check "/etc/seedreamd is read-only in the unit's namespace (no ConfigurationDirectory=)" \
	sh -c '! nsenter -t "$1" -a nsenter -t "$2" -m touch /etc/seedreamd/.live-rw 2>/dev/null' sh "$LEADER" "$PID"
check "$HOT (ReadWritePaths=) is writable in the unit's namespace" \
	sh -c 'nsenter -t "$1" -a nsenter -t "$2" -m sh -c "touch $3/.live-rw && rm $3/.live-rw"' sh "$LEADER" "$PID" "$HOT"
check "/var/lib/seedreamd (StateDirectory=) is writable in the unit's namespace" \
	sh -c 'nsenter -t "$1" -a nsenter -t "$2" -m sh -c "touch /var/lib/seedreamd/.live-rw && rm /var/lib/seedreamd/.live-rw"' sh "$LEADER" "$PID"

# ---- images processed, journal fields --------------------------------------------------------
drop() { # drop FOLDER SAMPLE...: copied beside the folder, renamed in (taken at once)
	folder=$1
	shift
	for s in "$@"; do
		ctsh "cp /opt/seedreamd-tests/data/samples/$s $HOT/.$s.tmp && chown seedreamd: $HOT/.$s.tmp && mv $HOT/.$s.tmp $HOT/$folder/$s"
	done
}
outputs() { ctsh "ls $HOT/$1-out/ 2>/dev/null | grep -c '\\.json\$'" || true; }
wait_outputs() { # wait_outputs FOLDER N SECONDS
	i=0
	while [ "$(outputs "$1")" -lt "$2" ] && [ $i -lt $(($3 * 5)) ]; do
		sleep 0.2
		i=$((i + 1))
	done
	[ "$(outputs "$1")" -ge "$2" ]
}
drop a aurora.png blocks.jpg dusk.jpg
if wait_outputs a 3 30; then
	ok "3 images in $HOT/a processed: 3 sidecars in $HOT/a-out ($(ctsh "ls $HOT/a-out" | tr '\n' ' '))"
else
	ctsh "ls -la $HOT/a $HOT/a-out"
	ct journalctl -u seedreamd --no-pager | tail -n 20
	fail "3 images in $HOT/a processed"
fi
check "the outputs belong to seedreamd" \
	sh -c '[ -z "$(nsenter -t "$1" -a find "$2/a-out" ! -user seedreamd)" ]' sh "$LEADER" "$HOT"
# seedreamctl on the unit's RuntimeDirectory=: root and the seedreamd group may, nobody may not.
check "the control socket is /run/seedreamd/control, mode 660, group seedreamd" \
	sh -c '[ "$(nsenter -t "$1" -a stat -c %a:%G /run/seedreamd/control)" = 660:seedreamd ]' sh "$LEADER"
check "seedreamctl status (root): folder a has 3 done" \
	sh -c 'nsenter -t "$1" -a seedreamctl --json status | python3 -c "import json, sys
r = json.load(sys.stdin)
sys.exit(0 if r[\"ok\"] and [f[\"done\"] for f in r[\"folders\"] if f[\"path\"] == sys.argv[1] + \"/a\"] == [3] else 1)" "$2"' \
	sh "$LEADER" "$HOT"
gid=$(ct getent group seedreamd | cut -d: -f3)
rc=0
ct setpriv --reuid=nobody --regid=nogroup --groups="$gid" seedreamctl status >/dev/null 2>&1 || rc=$?
check "seedreamctl status as nobody in group seedreamd: allowed" [ "$rc" -eq 0 ]
rc=0
ct setpriv --reuid=nobody --regid=nogroup --clear-groups seedreamctl status >/dev/null 2>&1 || rc=$?
check "seedreamctl status as nobody: refused (exit 3)" [ "$rc" -eq 3 ]
billed=$(api GET /_stats | python3 -c 'import json, sys; print(json.load(sys.stdin)["billed"])' || echo "?")
check "the stand-in API billed 3 generations (the key reached it through LoadCredential=)" [ "$billed" = 3 ]
# A HEIC photo is converted by libvips on a worker thread: its threads and codecs (libheif, x265,
# libnuma) under the unit's syscall filter, set to kill.
if command -v heif-enc >/dev/null 2>&1 &&
	heif-enc -q 60 -o "$ROOT/var/tmp/photo.heic" "$TOP/tests/data/samples/dusk.jpg" >/dev/null 2>&1; then
	ctsh "cp /var/tmp/photo.heic $HOT/.photo.tmp && chown seedreamd: $HOT/.photo.tmp && mv $HOT/.photo.tmp $HOT/a/photo.heic"
	if wait_outputs a 4 60 && ctsh "grep -q '\"fitted\"' $HOT/a-out/photo.json"; then
		ok "a HEIC photo is converted (fit) and processed under the filter"
	else
		ct journalctl -u seedreamd --no-pager | tail -n 20
		fail "a HEIC photo is converted (fit) and processed under the filter"
	fi
else
	fail "cannot make a HEIC photo (heif-enc from libheif-examples)"
fi
ct journalctl -u seedreamd -o json --no-pager >"$WORK/journal.json" 2>/dev/null || true
job_lines=$(grep "\"FOLDER\":\"$HOT/a\"" "$WORK/journal.json" | grep '"SOURCE":"aurora.png"' | grep -c '"REQUEST_ID":"' || true)
if [ "$job_lines" -ge 1 ]; then
	ok "journald: $job_lines entr(y/ies) for aurora.png carry FOLDER=, SOURCE=, REQUEST_ID="
else
	grep aurora "$WORK/journal.json" | head -n 5
	fail "journald entries for a job carry FOLDER=, SOURCE=, REQUEST_ID="
fi

# ---- reload (no procps) applies a changed configuration ---------------------------------------
write_config a b
if ct systemctl reload seedreamd 2>"$WORK/reload.txt"; then
	ok "systemctl reload seedreamd (ExecReload= without procps)"
else
	cat "$WORK/reload.txt"
	fail "systemctl reload seedreamd"
fi
check "still the same process after the reload" [ "$(ct systemctl show -p MainPID --value seedreamd)" = "$PID" ]
drop b rings.png
if wait_outputs b 1 30; then
	ok "the folder added by the reload ($HOT/b) is watched and processed"
else
	ct journalctl -u seedreamd --no-pager | tail -n 20
	fail "the folder added by the reload ($HOT/b) is watched and processed"
fi

# ---- stop with a transfer in flight ------------------------------------------------------------
api POST /_faults '["slow:ms=4000"]' >/dev/null
drop a mandelbrot.png
i=0
while ! ct systemctl show -p StatusText --value seedreamd | grep -q ' 1 in flight' && [ $i -lt 50 ]; do
	sleep 0.1
	i=$((i + 1))
done
check "a transfer is in flight (STATUS=: $(ct systemctl show -p StatusText --value seedreamd))" \
	sh -c 'nsenter -t "$1" -a systemctl show -p StatusText --value seedreamd | grep -q " 1 in flight"' sh "$LEADER"
t0=$(date +%s)
check "systemctl stop seedreamd with a transfer in flight" ct systemctl stop seedreamd
echo "     stop took $(($(date +%s) - t0)) s"
check "the stop was clean (Result=success, exit status 0)" \
	sh -c '[ "$(nsenter -t "$1" -a systemctl show -p Result --value seedreamd)" = success ] &&
		[ "$(nsenter -t "$1" -a systemctl show -p ExecMainStatus --value seedreamd)" = 0 ]' sh "$LEADER"
check "the transfer in flight was finished before the exit (mandelbrot's sidecar)" \
	ctsh "ls $HOT/a-out | grep -q '^mandelbrot.*\\.json\$'"
ct journalctl -u seedreamd -o cat --no-pager >"$WORK/journal.txt" 2>/dev/null || true
check "the journal says it waited for 1 transfer" grep -q 'stopping; waiting up to .* for 1 transfer' "$WORK/journal.txt"

# ---- the watchdog restarts a stopped process ----------------------------------------------------
ctsh "cat >/etc/systemd/system/seedreamd.service.d/watchdog.conf" <<EOF
[Service]
WatchdogSec=2s
TimeoutAbortSec=5s
EOF
ct systemctl daemon-reload
ct systemctl start seedreamd || fail "systemctl start seedreamd with WatchdogSec=2s"
PID=$(ct systemctl show -p MainPID --value seedreamd)
case $PID in
'' | 0 | *[!0-9]*) fail "a main process to stop for the watchdog (MainPID '$PID')" ;;
*) ctsh "kill -STOP $PID" ;; # never "kill -STOP 0": that would stop this very test
esac
t0=$(date +%s)
restarted=no
i=0
while [ $i -lt 150 ]; do
	now=$(ct systemctl show -p MainPID --value seedreamd)
	if [ "$now" != 0 ] && [ "$now" != "$PID" ] &&
		[ "$(ct systemctl is-active seedreamd)" = active ]; then
		restarted=yes
		break
	fi
	sleep 0.2
	i=$((i + 1))
done
ct journalctl -u seedreamd -o cat --no-pager >"$WORK/journal.txt" 2>/dev/null || true
if [ $restarted = yes ] && grep -qi 'watchdog timeout' "$WORK/journal.txt"; then
	ok "the watchdog restarted the SIGSTOPped daemon ($(($(date +%s) - t0)) s; NRestarts=$(ct systemctl show -p NRestarts --value seedreamd))"
else
	tail -n 20 "$WORK/journal.txt"
	fail "the watchdog restarted the SIGSTOPped daemon"
fi
ct rm -f /etc/systemd/system/seedreamd.service.d/watchdog.conf
ct systemctl daemon-reload

# ---- dpkg --purge while running ---------------------------------------------------------------
ct systemctl restart seedreamd || true
check "the service is active before the purge" sh -c '[ "$(nsenter -t "$1" -a systemctl is-active seedreamd)" = active ]' sh "$LEADER"
if ct dpkg --purge seedreamd >"$WORK/purge.txt" 2>&1; then ok "dpkg --purge seedreamd while it runs"; else cat "$WORK/purge.txt"; fail "dpkg --purge seedreamd while it runs"; fi
check "after the purge the service is not running" \
	sh -c '! nsenter -t "$1" -a systemctl is-active --quiet seedreamd' sh "$LEADER"
check "after the purge no seedreamd process is left" \
	ctsh '! grep -qx seedreamd /proc/[0-9]*/comm 2>/dev/null'
check "after the purge: no /usr/bin/seedreamd, no unit, no /var/lib/seedreamd" \
	ctsh '! test -e /usr/bin/seedreamd && ! test -e /lib/systemd/system/seedreamd.service && ! test -e /var/lib/seedreamd'
check "after the purge the admin's /etc/seedreamd/api_key is kept" ctsh 'test -f /etc/seedreamd/api_key'

# Anything the syscall filter killed would have shown as SIGSYS in the journal.
ct journalctl --no-pager -o cat >"$WORK/journal-all.txt" 2>/dev/null || true
check "no process was killed by the syscall filter (no SIGSYS in the journal)" \
	sh -c '! grep -q "status=31/SYS\|signal=SYS" "$1"' sh "$WORK/journal-all.txt"
echo "     the whole test: $(($(date +%s) - START)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
