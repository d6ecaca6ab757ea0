#!/bin/sh
# Builds the Debian package (cpack -G DEB), checks the systemd unit (systemd-analyze security:
# exposure 2.0 or lower; systemd-analyze verify against the installed files), installs the .deb
# with dpkg -i, runs the installed seedreamd (--version, --check on the shipped example config,
# also as the service user), then removes and purges it and checks that nothing is left.
#
# As root on Debian 12 (dpkg -i). Uses BUILD_DIR (default build), configured and built if needed.
# Refuses to run when seedreamd is already installed: it would purge the admin's configuration.
# Each check prints "ok   - ..." or "FAIL - ..."; the last line is "N passed, M failed" and the
# exit status is 0 only when nothing failed.
# shellcheck disable=SC2012,SC2016  # ls of our own build dir; sh -c scripts take "$1"
set -eu
cd "$(dirname "$0")/.."

MAX_EXPOSURE=2.0
UNIT=/lib/systemd/system/seedreamd.service
CONFIG=/etc/seedreamd/seedreamd.yaml

if [ "$(id -u)" -ne 0 ]; then
	echo "package.sh: run as root (it installs and removes the .deb with dpkg)" >&2
	exit 1
fi
./scripts/install-deps.sh

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; }
check() { # check "what" command...: ok when the command succeeds
	what=$1
	shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}
finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}
installed() { dpkg-query -W -f='${db:Status-Status}' seedreamd 2>/dev/null | grep -qv '^not-installed$'; }

if installed; then
	echo "package.sh: seedreamd is already installed (dpkg); this script would purge it." >&2
	echo "package.sh: run 'dpkg --purge seedreamd' first if that is what you want." >&2
	exit 1
fi
for f in /usr/bin/seedreamd /usr/bin/seedreamctl "$UNIT" "$CONFIG"; do
	if [ -e "$f" ]; then
		echo "package.sh: $f exists outside the package (cmake --install?); remove it first." >&2
		exit 1
	fi
done

WORK=$(mktemp -d /tmp/seedreamd-package.XXXXXX)
we_installed=no
cleanup() {
	if [ "$we_installed" = yes ] && installed; then
		echo "package.sh: purging the package left installed by a failed run" >&2
		dpkg --purge seedreamd >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build -------------------------------------------------------------------------------------
BUILD=${BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null
rm -f "$BUILD"/seedreamd_*.deb
(cd "$BUILD" && cpack -G DEB >"$WORK/cpack.log" 2>&1) || { cat "$WORK/cpack.log"; fail "cpack -G DEB"; finish; }
DEB=$(ls "$BUILD"/seedreamd_*.deb 2>/dev/null | head -n 1)
[ -n "$DEB" ] || { fail "cpack -G DEB produced a .deb"; finish; }
ok "cpack -G DEB built $DEB"

# ---- the package's contents --------------------------------------------------------------------
dpkg-deb -x "$DEB" "$WORK/root"
dpkg-deb -e "$DEB" "$WORK/control"
for f in usr/bin/seedreamd usr/bin/seedreamctl lib/systemd/system/seedreamd.service \
	usr/lib/sysusers.d/seedreamd.conf usr/share/man/man1/seedreamctl.1.gz \
	usr/lib/tmpfiles.d/seedreamd.conf etc/seedreamd/seedreamd.yaml \
	usr/share/man/man8/seedreamd.8.gz usr/share/man/man5/seedreamd.yaml.5.gz; do
	check "the package has /$f" test -f "$WORK/root/$f"
done
check "the binary is a stripped, dynamically linked ELF executable" \
	sh -c 'file -b "$1" | grep -q "^ELF .*dynamically linked.*, stripped"' sh "$WORK/root/usr/bin/seedreamd"
check "the unit runs /usr/bin/seedreamd" grep -q '^ExecStart=/usr/bin/seedreamd ' "$WORK/root/$UNIT"
check "$CONFIG is a conffile" grep -qx "$CONFIG" "$WORK/control/conffiles"
depends=$(dpkg-deb -f "$DEB" Depends)
echo "     Depends: $depends"
for lib in libcurl4 libyaml-0-2 libcjson1 libsystemd0 libssl3; do
	check "Depends: names $lib" sh -c 'echo "$1" | tr "," "\n" | grep -q "^ *$2\( \|$\)"' sh "$depends" "$lib"
done
for page in usr/share/man/man8/seedreamd.8.gz usr/share/man/man5/seedreamd.yaml.5.gz \
	usr/share/man/man1/seedreamctl.1.gz; do
	check "/$page renders without warnings" \
		sh -c 'out=$(zcat "$1" | groff -man -ww -z 2>&1) && [ -z "$out" ] || { echo "$out"; false; }' \
		sh "$WORK/root/$page"
done

# ---- systemd-analyze security ------------------------------------------------------------------
systemd-analyze security --offline=true --no-pager "$WORK/root/$UNIT" >"$WORK/security.txt" 2>&1 || true
score_line=$(grep 'Overall exposure level' "$WORK/security.txt" || true)
echo "     $score_line"
score=$(echo "$score_line" | sed -n 's/.*: *\([0-9][0-9]*\.[0-9]\).*/\1/p')
if [ -n "$score" ] && awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
	ok "systemd-analyze security: exposure $score <= $MAX_EXPOSURE"
else
	grep '✗' "$WORK/security.txt" || cat "$WORK/security.txt"
	fail "systemd-analyze security: exposure ${score:-unknown} <= $MAX_EXPOSURE"
fi

# ---- install -----------------------------------------------------------------------------------
we_installed=yes
if dpkg -i "$DEB" >"$WORK/dpkg-i.log" 2>&1; then
	ok "dpkg -i $(basename "$DEB")"
else
	cat "$WORK/dpkg-i.log"
	fail "dpkg -i $(basename "$DEB")"
	finish
fi
check "the system user seedreamd exists" sh -c "getent passwd seedreamd >/dev/null"
check "/var/lib/seedreamd exists, owned by seedreamd, mode 0700" \
	sh -c '[ "$(stat -c %U:%a /var/lib/seedreamd)" = seedreamd:700 ]'
check "the service is not enabled (systemctl is-enabled: disabled)" \
	sh -c '[ "$(systemctl is-enabled seedreamd.service 2>/dev/null)" = disabled ]'

# systemd-analyze verify on the installed unit: /usr/bin/seedreamd and the man pages are real.
# Where dpkg is told not to install man pages (path-exclude, as in slim images), the pages are
# looked up in the package itself instead, and that is said.
manpath=""
if ! man -w seedreamd.8 >/dev/null 2>&1; then
	manpath="$WORK/root/usr/share/man"
	echo "     note: man cannot find the installed seedreamd(8) (dpkg path-exclude?);" \
		"verify reads the pages from the .deb"
fi
rc=0
MANPATH=${manpath:-${MANPATH:-}} systemd-analyze verify "$UNIT" >"$WORK/verify.txt" 2>&1 || rc=$?
if [ "$rc" -eq 0 ] && ! grep -q seedreamd "$WORK/verify.txt"; then
	ok "systemd-analyze verify $UNIT is clean"
	[ -s "$WORK/verify.txt" ] && sed 's/^/     (about other units) /' "$WORK/verify.txt"
else
	cat "$WORK/verify.txt"
	fail "systemd-analyze verify $UNIT is clean (exit status $rc)"
fi

version=$(dpkg-query -W -f='${Version}' seedreamd)
check "seedreamd --version prints 'seedreamd $version'" \
	sh -c '[ "$(/usr/bin/seedreamd --version)" = "seedreamd $1" ]' sh "$version"
if out=$(/usr/bin/seedreamd --check -c "$CONFIG" 2>&1); then
	ok "seedreamd --check -c $CONFIG: $out"
else
	fail "seedreamd --check -c $CONFIG: $out"
fi
check "seedreamctl --version prints 'seedreamctl $version'" \
	sh -c '[ "$(/usr/bin/seedreamctl --version)" = "seedreamctl $1" ]' sh "$version"
# No daemon runs here: the client says so with its documented exit status 3.
rc=0
/usr/bin/seedreamctl -s "$WORK/no-daemon.sock" status >/dev/null 2>&1 || rc=$?
check "seedreamctl without a daemon exits 3" test "$rc" -eq 3
# As ExecStartPre= runs it: the service user, no supplementary groups.
if out=$(setpriv --reuid=seedreamd --regid=seedreamd --clear-groups \
	/usr/bin/seedreamd --check -c "$CONFIG" 2>&1); then
	ok "seedreamd --check as the seedreamd user"
else
	fail "seedreamd --check as the seedreamd user: $out"
fi

# ---- remove, purge -----------------------------------------------------------------------------
if dpkg -r seedreamd >"$WORK/dpkg-r.log" 2>&1; then ok "dpkg -r seedreamd"; else cat "$WORK/dpkg-r.log"; fail "dpkg -r seedreamd"; fi
check "after dpkg -r: /usr/bin/seedreamd is gone" test ! -e /usr/bin/seedreamd
check "after dpkg -r: /usr/bin/seedreamctl is gone" test ! -e /usr/bin/seedreamctl
check "after dpkg -r: the unit is gone" test ! -e "$UNIT"
check "after dpkg -r: the conffile $CONFIG is kept" test -f "$CONFIG"
if dpkg --purge seedreamd >"$WORK/dpkg-purge.log" 2>&1; then ok "dpkg --purge seedreamd"; else cat "$WORK/dpkg-purge.log"; fail "dpkg --purge seedreamd"; fi
check "after purge: dpkg no longer knows seedreamd" sh -c '! dpkg-query -W seedreamd >/dev/null 2>&1'
left=$(ls -d /usr/bin/seedreamd* 2>/dev/null || true)
check "after purge: nothing named seedreamd* is left in /usr/bin" test -z "$left"
leftovers=""
for f in $(dpkg-deb -c "$DEB" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }') /var/lib/seedreamd /etc/seedreamd; do
	[ -e "$f" ] && leftovers="$leftovers $f"
done
if [ -z "$leftovers" ]; then
	ok "after purge: no file of the package, no /etc/seedreamd, no /var/lib/seedreamd"
else
	fail "after purge: left behind:$leftovers"
fi
we_installed=no

finish
