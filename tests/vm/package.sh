#!/bin/bash
# The package suite of the VM tier (scripts/test-vm runs it with run-in-vm):
# installs corral's .deb on the Debian guest and checks, as the user tester,
# what packaging/README.md promises: D-Bus activation by the first
# `corralctl list`, `man corralctl`, bash completion of `corralctl st<TAB>`,
# an upgrade to a higher version while processes run (same ids and PIDs, a
# new agent serving them), remove (workload left running, agent stopped)
# and purge (state and the global enable gone). Between upgrade and remove
# it runs system.sh: the system agent, polkit and per-user visibility.
#
# Runs as root in the guest; cwd /mnt/host holds old.deb, new.deb and system.sh (the
# same build, new.deb with a higher version). Prints one line per check;
# exits 1 if any failed.
set -uo pipefail
fails=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
step() { printf '\n== %s\n' "$*"; }

# tester's user manager, from root (what the maintainer scripts use too)
user_ctl() { systemctl --user -M tester@ "$@"; }
agent_pid() { user_ctl show -p MainPID --value corrald.service 2>/dev/null; }
# corralctl as tester, inside a fresh logind login session
as_tester() { corral-vm-as-tester "$@"; }

# The user manager must run before the package arrives, so that the install
# meets a running session (which it must not start an agent in) and the
# first corralctl call is what activates the agent. Lingering keeps that
# manager, and the processes it runs, alive between tester's logins.
step "tester's user manager, kept by lingering"
loginctl enable-linger tester
for _ in $(seq 100); do
    systemctl -q is-active user@1000.service && user_ctl is-system-running --wait >/dev/null 2>&1 && break
    sleep 0.2
done
check "user@1000.service runs" systemctl -q is-active user@1000.service

step "install: dpkg -i $(dpkg-deb -f old.deb Package)_$(dpkg-deb -f old.deb Version)"
dpkg -i old.deb || fail "dpkg -i old.deb"
check "package installed" test "$(dpkg-query -W -f='${Status}' corral)" = "install ok installed"
for f in /usr/bin/corrald:755 /usr/bin/corralctl:755 /usr/libexec/corral/corral-shim:755 \
         /usr/lib/systemd/user/corrald.service:644 /usr/share/dbus-1/services/org.corral.Supervisor1.service:644 \
         /usr/share/dbus-1/interfaces/org.corral.Supervisor1.Manager.xml:644; do
    check "${f%:*} mode ${f#*:}" test "$(stat -c %a "${f%:*}" 2>/dev/null)" = "${f#*:}"
done
check "user unit enabled globally" test "$(readlink /etc/systemd/user/default.target.wants/corrald.service)" = \
    /usr/lib/systemd/user/corrald.service
check "install did not start an agent in the running session" test "$(user_ctl is-active corrald.service)" = inactive

step "activation: the first corralctl list, as tester"
as_tester corralctl list
check "corralctl list exit 0" test $? = 0
check "corrald.service active after the call" test "$(user_ctl is-active corrald.service)" = active
check "the session bus activated it through systemd" \
    journalctl -q -b --no-pager -g "Activating via systemd: service name='org.corral.Supervisor1'"
pid=$(agent_pid)
check "agent runs /usr/bin/corrald (pid $pid)" test "$(readlink "/proc/$pid/exe")" = /usr/bin/corrald

step "desktop-remote.sh: notify, journal, corralctl -H"
bash ./desktop-remote.sh; fails=$((fails + $?))

step "man corralctl, corrald(8), corrald.toml(5)"
as_tester sh -c 'MANPAGER=cat MANWIDTH=80 man corralctl 2>&1 | head -8'
check "man corralctl renders" sh -c 'MANPAGER=cat man corralctl 2>/dev/null | grep -q "corralctl.*Control corrald"'
check "man 8 corrald renders" sh -c 'MANPAGER=cat man 8 corrald 2>/dev/null | grep -q -- "--state-dir"'
check "man 5 corrald.toml renders" sh -c 'MANPAGER=cat man 5 corrald.toml 2>/dev/null | grep -q "restart_limit"'

step "bash completion of 'corralctl st<TAB>', as tester"
# what interactive bash does on TAB: load the completion on demand
# (bash-completion's loader), then call its function with COMP_* set
complete_st=$(as_tester bash -c '
    . /usr/share/bash-completion/bash_completion
    __load_completion corralctl || exit 1
    fn=$(complete -p corralctl | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
    COMP_WORDS=(corralctl st); COMP_CWORD=1; COMP_LINE="corralctl st"; COMP_POINT=${#COMP_LINE}
    "$fn" corralctl st corralctl
    printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "')
echo "corralctl st<TAB> -> $complete_st"
check "completion offers start stats status stop" test "$complete_st" = "start stats status stop "

step "upgrade with processes running"
as_tester corralctl start --name up1 -- sleep 1000
as_tester corralctl start --name up2 --workspace pkg -- sh -c 'while :; do sleep 1; done'
# "id name state pid" of each process, from corralctl --json list (pretty
# JSON: each process's fields are 4-space indented lines; pid is null, "-",
# when it does not run)
list() {
    as_tester corralctl --json list | awk -F'"' '
        /^    "id":/ {id = $4} /^    "name":/ {name = $4} /^    "state":/ {state = $4}
        /^    "pid":/ {gsub(/[^0-9]/, "", $3); print id, name, state, ($3 == "" ? "-" : $3)}' | sort
}
before=$(list); old_agent=$(agent_pid)
echo "before: agent $old_agent; processes:"; echo "$before"
check "two processes running before" test "$(grep -c ' running ' <<< "$before")" = 2
dpkg -i new.deb || fail "dpkg -i new.deb"
check "new version installed" test "$(dpkg-query -W -f='${Version}' corral)" = "$(dpkg-deb -f new.deb Version)"
new_agent=$(agent_pid)
after=$(list)
echo "after: agent $new_agent; processes:"; echo "$after"
check "a new agent runs (pid $old_agent -> $new_agent)" test -n "$new_agent" -a "$new_agent" != 0 -a "$new_agent" != "$old_agent"
check "new agent is the installed binary" test "$(readlink "/proc/$new_agent/exe")" = /usr/bin/corrald
check "same ids, names, states and PIDs after the upgrade" test "$before" = "$after"
while read -r _ _ _ p; do check "pid $p alive" kill -0 "$p"; done <<< "$after"
as_tester corralctl stop up2
now=$(list); echo "$now"
check "the new agent serves them: stop up2 ended it" \
    awk '$2 == "up2" && $3 != "running" {found = 1} END {exit !found}' <<< "$now"

# System mode, in this boot, with the upgraded package installed and the
# system agent not started yet (the upgrade restarts only running agents).
step "system mode: system.sh"
check "system corrald not started by install or upgrade" test "$(systemctl is-active corrald.service)" != active
bash ./system.sh || fail "system mode (system.sh; its FAIL lines above)"
check "system agent running before the remove" test "$(systemctl is-active corrald.service)" = active

step "remove: dpkg -r corral"
up1_pid=$(list | awk '$2 == "up1" {print $4}')
dpkg -r corral || fail "dpkg -r corral"
check "binaries gone" test ! -e /usr/bin/corrald -a ! -e /usr/libexec/corral/corral-shim
check "agent stopped" test "$(user_ctl is-active corrald.service)" != active
check "system agent stopped" test "$(systemctl is-active corrald.service)" != active
check "workload left running (up1 pid $up1_pid)" kill -0 "$up1_pid"
check "tester's state kept" test -e /home/tester/.local/state/corral/corral.db

step "purge: dpkg -P corral"
dpkg -P corral || fail "dpkg -P corral"
check "package gone" test -z "$(dpkg-query -W -f='${Status}' corral 2>/dev/null)"
check "global enable gone" test ! -e /etc/systemd/user/default.target.wants/corrald.service -a ! -L /etc/systemd/user/default.target.wants/corrald.service
check "system state gone" test ! -e /var/lib/corral
check "no file of the package left" sh -c '! ls -d /usr/share/dbus-1/*/org.corral.* /usr/share/man/man1/corralctl.1.gz /usr/share/doc/corral 2>/dev/null'
user_ctl stop 'corral-*.scope' 2>/dev/null

echo
if [ $fails = 0 ]; then echo "package suite: all checks passed"; else echo "package suite: $fails check(s) failed"; fi
[ $fails = 0 ]
