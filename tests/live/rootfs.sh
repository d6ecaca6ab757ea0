#!/bin/sh
# tests/live/rootfs.sh NAME [PACKAGE...]: prints the path of a Debian 12 (bookworm) minbase root
# file system with PACKAGE... included, made with debootstrap from the mirror apt already uses
# (the first http(s) URI of a "bookworm" suite in /etc/apt/sources.list{,.d/*}), and cached:
#   ${SEEDREAMD_TEST_CACHE:-/var/cache/seedreamd-test}/rootfs-NAME-<key>
# where <key> is a hash of the suite, the mirror, debootstrap's version and the package list, so a
# changed list makes a new tree (older trees of the same NAME are removed). The tree is never
# written by the tests: they run on an overlay or a copy of it. Root only. Progress on stderr.
set -eu
NAME=$1
shift
PACKAGES=$(printf '%s\n' "$@" | sort -u | tr '\n' ',' | sed 's/,$//')
SUITE=bookworm
CACHE=${SEEDREAMD_TEST_CACHE:-/var/cache/seedreamd-test}

mirror() {
	# deb822 .sources files first (Debian 12's default), then one-line lists.
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v suite="$SUITE" '
			/^$/ { if (uri != "" && has) { print uri; exit } uri = ""; has = 0; next }
			/^URIs:/ { uri = $2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) has = 1 }
			END { if (uri != "" && has) print uri }' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk -v suite="$SUITE" '$1 == "deb" && $0 !~ /\[/ && $3 == suite { print $2 }
			$1 == "deb" && /\[/ { for (i = 2; i <= NF; i++) if ($i ~ /\]$/) break;
				if ($(i + 2) == suite) print $(i + 1) }' "$f"
	done
}
MIRROR=$(mirror | grep -E '^https?://' | head -n 1)
[ -n "$MIRROR" ] || { echo "rootfs.sh: no $SUITE mirror in the apt sources" >&2; exit 1; }

DBS_VERSION=$(dpkg-query -W -f='${Version}' debootstrap)
KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$DBS_VERSION" "$PACKAGES" | sha256sum | cut -c1-16)
TREE="$CACHE/rootfs-$NAME-$KEY"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$NAME"
flock 9
if [ ! -f "$TREE/.complete" ]; then
	rm -rf "$TREE" "$TREE.new"
	echo "rootfs.sh: debootstrap --variant=minbase $SUITE from $MIRROR${PACKAGES:+ with $PACKAGES}" \
		"into $TREE (cached for the next runs)" >&2
	if ! debootstrap --variant=minbase ${PACKAGES:+--include="$PACKAGES"} "$SUITE" "$TREE.new" \
		"$MIRROR" >"$CACHE/debootstrap-$NAME.log" 2>&1; then
		tail -n 30 "$CACHE/debootstrap-$NAME.log" >&2
		rm -rf "$TREE.new"
		exit 1
	fi
	# Apt's downloaded archives are not needed in the tree.
	rm -rf "$TREE.new"/var/cache/apt/archives/*.deb "$TREE.new"/var/lib/apt/lists/*_Packages
	for old in "$CACHE/rootfs-$NAME-"*; do
		[ "$old" = "$TREE.new" ] || rm -rf "$old"
	done
	mv "$TREE.new" "$TREE"
	touch "$TREE/.complete"
fi
echo "$TREE"
