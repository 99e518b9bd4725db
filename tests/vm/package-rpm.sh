#!/bin/bash
# The .rpm half of the package suite, on the host (no rpm-based VM is
# reachable here): installs the .rpm with `rpm --root` into a scratch root
# and checks that it holds the same files with the same modes as the .deb
# (apart from the distribution-specific places corral-gen check-assets
# allows), and that its scriptlets do what the .deb's maintainer scripts do.
# The scriptlets are compared, not run: the scratch root has no shell.
#
#   tests/vm/package-rpm.sh DEB RPM
set -euo pipefail
deb=$1 rpm=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/corral-rpm-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { local what=$1; shift; if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi; }

rpm --root "$tmp/root" --initdb
rpm --root "$tmp/root" -i --nodeps --noscripts "$rpm"
check "rpm -V in the scratch root" rpm --root "$tmp/root" -V --nodeps corral
dpkg-deb -x "$deb" "$tmp/deb"
dpkg-deb -e "$deb" "$tmp/deb-control"

# "mode path" of every file, with the places that differ by distribution
# mapped to one name (zsh's completion dir) or dropped (license, changelog,
# lintian overrides: each format keeps them its own way).
listing() {
    (cd "$1" && find . -type f -printf '%m %P\n') |
        sed 's#usr/share/zsh/vendor-completions/#usr/share/zsh/site-functions/#' |
        grep -Ev ' usr/share/(licenses/corral/|doc/corral/(copyright|changelog)|lintian/overrides/)' | sort
}
listing "$tmp/deb" > "$tmp/deb.list"
listing "$tmp/root" | grep -Ev "^[0-9]+ (var/lib/rpm|root/\.rpmdb)/" > "$tmp/rpm.list" || true
check "same files and modes in .deb and .rpm ($(wc -l < "$tmp/deb.list") files)" \
    diff -u "$tmp/deb.list" "$tmp/rpm.list"
check "rpm carries the licenses" test -s "$tmp/root/usr/share/licenses/corral/LICENSE-MIT" \
    -a -s "$tmp/root/usr/share/licenses/corral/LICENSE-APACHE"

# Each duty of the maintainer scripts, as "deb script|deb pattern|rpm scriptlet|rpm pattern".
rpm --root "$tmp/root" -q --scripts corral > "$tmp/scripts"
scriptlet() { awk -v want="$1 scriptlet" 'index($0, want) == 1 {on = 1; next} / scriptlet \(using/ {on = 0} on' "$tmp/scripts"; }
for s in postinstall preuninstall postuninstall; do scriptlet "$s" > "$tmp/rpm.$s"; done
while IFS='|' read -r what dscript dpat rscript rpat; do
    check "$what: deb $dscript and rpm $rscript" \
        sh -c 'grep -q -- "$1" "$2" && grep -q -- "$3" "$4"' _ \
        "$dpat" "$tmp/deb-control/$dscript" "$rpat" "$tmp/rpm.$rscript"
done <<'DUTIES'
user unit enabled globally on install|postinst|deb-systemd-helper --user enable corrald.service|postinstall|systemctl --global enable corrald.service
systemd reloaded on install|postinst|systemctl --system daemon-reload|postinstall|systemctl --system daemon-reload
bus config reloaded on install|postinst|org.freedesktop.DBus ReloadConfig|postinstall|org.freedesktop.DBus ReloadConfig
running user agents restarted on upgrade|postinst|try-restart corrald.service|postinstall|try-restart corrald.service
agents stopped on removal|prerm|deb-systemd-invoke --user stop corrald.service|preuninstall|--user -M "$uid@" stop corrald.service
systemd reloaded on removal|postrm|systemctl --system daemon-reload|postuninstall|systemctl --system daemon-reload
DUTIES
((fails == 0)) && echo "rpm check: all passed" || echo "rpm check: $fails failed"
((fails == 0))
