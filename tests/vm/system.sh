#!/bin/bash
# The system-mode checks of the VM tier (issue 9, "Done when"): the system
# agent, `corrald --system`, with the guest's real polkitd and logind.
#   * tester (uid 1000, an active logind session on tty1) starts, lists and
#     stops its own processes with `corralctl --system`; the first call
#     activates the agent through the system bus;
#   * tester2 (uid 1001, no session: polkit's allow_any, auth_self, and no
#     authentication agent) is denied org.corral.Supervisor1.manage-own,
#     and the denied call leaves no process, no scope and no row;
#   * neither sees the other's processes, logs or events (a process of
#     another user answers as one that does not exist);
#   * root sees all, and starts a process as tester2 with --run-as;
#   * each workload runs with its owner's uid, gid, groups and passwd
#     environment, in the owner's user-UID.slice.
#
# package.sh runs it in its boot, with the package installed and the system
# agent not yet started. Alone (as root in the guest, e.g. through
# run-in-vm): `system.sh [DEB]` installs DEB first. Prints one line per
# check; exits 1 if any failed.
set -uo pipefail
fails=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
step() { printf '\n== system mode: %s\n' "$*"; }
# "$2" contains "$1" (fixed string)
has() { grep -qF -- "$1" <<< "$2"; }

# Hang diagnostics: the checks take about a minute; one package-suite run
# (of five) hung for 15 minutes right after the denied start, not seen
# again. If this script is still running after $CORRAL_VM_SYSTEM_WATCHDOG
# seconds, print what every process is waiting in (comm, not args: reading
# another process's cmdline can block too).
( sleep "${CORRAL_VM_SYSTEM_WATCHDOG:-300}"
  echo "system.sh: still running after ${CORRAL_VM_SYSTEM_WATCHDOG:-300}s; processes:"
  ps -eo pid,ppid,user,stat,wchan:32,etime,comm
  for st in /proc/[0-9]*/stat; do
      p=${st#/proc/}; p=${p%/stat}
      [ "$(awk '{print $3}' "$st" 2>/dev/null)" = D ] && { echo "stack of $p:"; cat "/proc/$p/stack"; }
  done ) &
watchdog=$!
trap 'kill "$watchdog" 2>/dev/null' EXIT

if [ $# -ge 1 ]; then
    step "install $1"
    dpkg -i "$1" >/dev/null || fail "dpkg -i $1"
fi

# tester: a fresh login session on tty1 for every call (local, active);
# tester2: runuser without a PAM session module, so no logind session
as_tester() { corral-vm-as-tester "$@"; }
as_tester2() { runuser -u tester2 -- "$@"; }
# root: always authorized
ctl() { corralctl --system "$@"; }

# One process as root sees it, as compact JSON ({} when there is no such row).
row() { ctl --json list | jq -c --arg id "$1" 'map(select(.id == $id)) | .[0] // {}'; }
field() { row "$1" | jq -r --arg k "$2" '.[$k] // empty'; }
# Waits until process $1 runs; prints its pid.
running_pid() {
    local p
    for _ in $(seq 50); do
        p=$(row "$1" | jq -r 'select(.state == "running") | .pid // empty')
        [ -n "$p" ] && { echo "$p"; return 0; }
        sleep 0.2
    done
    return 1
}
# The corral scopes systemd knows (names), for "a denied call leaves no scope".
scopes() { systemctl list-units --all --plain --no-legend --type=scope '*corral*' | awk '{print $1}' | sort; }
# Numbers of a /proc/PID/status line ("Uid:", "Gid:", "Groups:"), one per line, sorted.
status_ids() { awk -v k="$2" '$1 == k {for (i = 2; i <= NF; i++) print $i}' "/proc/$1/status" | sort -n -u; }
ids_of() { tr ' ' '\n' <<< "$1" | sed '/^$/d' | sort -n -u; }
env_of() { tr '\0' '\n' < "/proc/$1/environ" | grep -x "$2=.*" | cut -d= -f2-; }
# Checks that pid $1 runs as user $2 with that user's groups, environment and slice.
check_identity() {
    local pid=$1 user=$2 uid gid groups
    uid=$(id -u "$user"); gid=$(id -g "$user"); groups=$(id -G "$user")
    echo "pid $pid ($(readlink "/proc/$pid/exe")):"
    grep -E '^(Uid|Gid|Groups|Umask):' "/proc/$pid/status" | sed 's/^/    /'
    sed 's/^/    cgroup /' "/proc/$pid/cgroup"
    echo "    HOME=$(env_of "$pid" HOME) USER=$(env_of "$pid" USER) LOGNAME=$(env_of "$pid" LOGNAME) SHELL=$(env_of "$pid" SHELL)"
    echo "    id $user: uid=$uid gid=$gid groups=$groups"
    check "$user's workload: real/effective/saved/fs uid = $uid" test "$(status_ids "$pid" Uid:)" = "$uid"
    check "$user's workload: real/effective/saved/fs gid = $gid" test "$(status_ids "$pid" Gid:)" = "$gid"
    check "$user's workload: groups = id -G $user ($groups)" test "$(status_ids "$pid" Groups:)" = "$(ids_of "$groups")"
    check "$user's workload: in user-$uid.slice" grep -q "/user-$uid\.slice/" "/proc/$pid/cgroup"
    check "$user's workload: HOME, USER, LOGNAME, SHELL from passwd" test \
        "$(env_of "$pid" HOME):$(env_of "$pid" USER):$(env_of "$pid" LOGNAME):$(env_of "$pid" SHELL)" = \
        "$(getent passwd "$user" | awk -F: '{print $6 ":" $1 ":" $1 ":" $7}')"
}
# What a call about a process that does not exist answers, with $2 in place
# of the missing id: a process of another user must answer exactly this.
NOID=999999
as_missing() { sed "s/$NOID/$2/g" <<< "$1"; }

step "before the first call"
check "system corrald.service not running" test "$(systemctl is-active corrald.service)" != active
check "tester2 has no logind session" bash -c '! loginctl show-user tester2 >/dev/null 2>&1'
# polkit's own answer for a process of each user (pkcheck exits 0:
# authorized, 1: not authorized, 2: authentication needed, no agent)
pk_manage_own() { "$@" sh -c 'pkcheck --action-id org.corral.Supervisor1.manage-own --process $$' 2>&1; }
out=$(pk_manage_own as_tester); rc=$?
echo "pkcheck manage-own as tester: exit $rc ${out:+($out)}"
check "polkit: manage-own is granted to tester's active session" test $rc = 0
out=$(pk_manage_own as_tester2); rc=$?
echo "pkcheck manage-own as tester2: exit $rc ${out:+($out)}"
check "polkit: manage-own needs authentication for tester2 (auth_self, no agent)" test $rc = 2

step "tester starts own processes (active session)"
out=$(as_tester bash -c 'loginctl show-session "$XDG_SESSION_ID" -p Active -p Remote -p Class -p Type; corralctl --system start --name own1 --workspace shared -- sh -c "echo secret-of-tester; exec sleep 1000"'); rc=$?
echo "$out"
check "tester's session is local and active" bash -c 'grep -qx Active=yes <<< "$1" && grep -qx Remote=no <<< "$1"' sh "$out"
check "corralctl --system start as tester: exit 0" test $rc = 0
t_id=$(tail -1 <<< "$out")
check "system corrald.service active after tester's first call" test "$(systemctl is-active corrald.service)" = active
check "the system bus activated it through systemd, at tester's request" \
    journalctl -q -b --no-pager -u dbus.service -g "Activating via systemd: service name='org.corral.Supervisor1'.*uid=1000"
apid=$(systemctl show -p MainPID --value corrald.service)
check "the agent is /usr/bin/corrald --system, as root (pid $apid)" test \
    "$(tr '\0' ' ' < "/proc/$apid/cmdline"):$(stat -c %u "/proc/$apid")" = "/usr/bin/corrald --system :0"
t_pid=$(running_pid "$t_id"); check "tester's process $t_id runs (pid ${t_pid:-none})" test -n "$t_pid"
check "its owner is 1000" test "$(field "$t_id" owner)" = 1000
[ -n "$t_pid" ] && check_identity "$t_pid" tester
t_scope=$(sed -n 's|^0::.*/\([^/]*\.scope\)$|\1|p' "/proc/${t_pid:-0}/cgroup" 2>/dev/null)
check "its scope $t_scope is a systemd unit" bash -c 'systemctl list-units --all --plain --no-legend "$1" | grep -q .' sh "${t_scope:-none}"

out=$(as_tester bash -c 'corralctl --system --json list; echo ---; corralctl --system logs "$1"; echo ---; busctl get-property org.corral.Supervisor1 "/org/corral/Supervisor1/process/$1" org.corral.Supervisor1.Process Owner' sh "$t_id"); rc=$?
list=$(sed '/^---$/,$d' <<< "$out"); rest=$(sed '1,/^---$/d' <<< "$out")
echo "$rest"
check "tester's list shows own1 running, owner 1000" \
    test "$(jq -r --arg id "$t_id" '.[] | select(.id == $id) | "\(.state) \(.owner)"' <<< "$list")" = "running 1000"
check "tester reads its logs" has secret-of-tester "$rest"
check "tester reads its Owner property (u 1000)" grep -qx 'u 1000' <<< "$rest"

step "tester2 (no session) is denied"
rows_before=$(ctl --json list | jq length); scopes_before=$(scopes)
out=$(as_tester2 corralctl --system start --name denied2 -- sleep 1001 2>&1); rc=$?
echo "tester2: corralctl --system start -> exit $rc: $out"
check "start as tester2 fails" test $rc != 0
check "with AccessDenied naming org.corral.Supervisor1.manage-own" \
    bash -c 'grep -q "org.corral.Supervisor1.manage-own" <<< "$1" && grep -q "(AccessDenied)" <<< "$1"' sh "$out"
sleep 1
check "the denied call left no process of tester2" bash -c 'timeout 30 pgrep -u tester2 >/dev/null; test $? = 1'
check "the denied call left no process 'sleep 1001'" bash -c 'timeout 30 pgrep -fx "sleep 1001" >/dev/null; test $? = 1'
check "the denied call left no scope" test "$(scopes)" = "$scopes_before"
check "the denied call left no row (root's list: $rows_before rows)" \
    test "$(ctl --json list | jq length):$(ctl --json list | jq 'map(select(.name == "denied2")) | length')" = "$rows_before:0"
out=$(as_tester2 corralctl --system stop --workspace shared 2>&1); rc=$?
echo "tester2: corralctl --system stop --workspace shared -> exit $rc: $out"
check "tester2 cannot stop by filter (AccessDenied, manage-own)" \
    bash -c 'test "$2" != 0 && grep -q "manage-own.*(AccessDenied)" <<< "$1"' sh "$out" "$rc"
check "tester's process still runs" kill -0 "${t_pid:-0}"

step "tester cannot start as another user (start-as-user is auth_admin)"
rows_before=$(ctl --json list | jq length); scopes_before=$(scopes)
out=$(as_tester corralctl --system start --run-as tester2 --name runas1 -- sleep 1002 2>&1); rc=$?
echo "tester: corralctl --system start --run-as tester2 -> exit $rc: $out"
check "denied with AccessDenied naming org.corral.Supervisor1.start-as-user" \
    bash -c 'test "$2" != 0 && grep -q "org.corral.Supervisor1.start-as-user.*(AccessDenied)" <<< "$1"' sh "$out" "$rc"
check "left no process, scope or row" bash -c '{ timeout 30 pgrep -fx "sleep 1002" >/dev/null; test $? = 1; } && test "$1" = "$2" && test "$3" = "$(corralctl --system --json list | jq length)"' \
    sh "$(scopes)" "$scopes_before" "$rows_before"

step "root starts a process as tester2 (--run-as)"
out=$(ctl start --run-as tester2 --name own2 --workspace shared -- bash -c 'echo secret-of-tester2; exec sleep 1000' 2>&1); rc=$?
echo "root: corralctl --system start --run-as tester2 -> exit $rc: $out"
check "root's start --run-as tester2: exit 0" test $rc = 0
u_id=$(tail -1 <<< "$out")
u_pid=$(running_pid "$u_id"); check "tester2's process $u_id runs (pid ${u_pid:-none})" test -n "$u_pid"
check "its owner is $(id -u tester2)" test "$(field "$u_id" owner)" = "$(id -u tester2)"
[ -n "$u_pid" ] && check_identity "$u_pid" tester2

step "root sees all"
ctl list
owners=$(ctl --json list | jq -r --arg a "$t_id" --arg b "$u_id" '.[] | select(.id == $a or .id == $b) | "\(.id) \(.owner)"' | sort)
check "root's list --json has $t_id owner 1000 and $u_id owner $(id -u tester2)" \
    test "$owners" = "$(printf '%s\n' "$t_id 1000" "$u_id $(id -u tester2)" | sort)"
check "root reads tester's logs" has secret-of-tester "$(ctl logs "$t_id")"

step "tester2 does not see tester's processes, logs or events"
proc_call() {  # busctl call on process $2 as user-runner $1 (Name property)
    $1 busctl get-property org.corral.Supervisor1 "/org/corral/Supervisor1/process/$2" org.corral.Supervisor1.Process Name 2>&1
}
list2=$(as_tester2 corralctl --system --json list 2>&1); echo "tester2's list: $(jq -c 'map({id, owner})' <<< "$list2")"
check "tester2's list: only its own process ($u_id)" test "$(jq -r '.[].id' <<< "$list2" 2>/dev/null)" = "$u_id"
for cmd in status logs; do
    got=$(as_tester2 corralctl --system "$cmd" "$t_id" 2>&1); rc=$?
    missing=$(as_tester2 corralctl --system "$cmd" "$NOID" 2>&1)
    echo "tester2: $cmd $t_id -> exit $rc: $got"
    echo "tester2: $cmd $NOID (missing) -> $missing"
    check "tester2: $cmd of tester's process fails as for a missing id" \
        bash -c 'test "$1" != 0 && test "$2" = "$3"' sh "$rc" "$got" "$(as_missing "$missing" "$t_id")"
    check "tester2: $cmd of tester's process shows nothing of it" bash -c '! grep -q secret-of-tester <<< "$1"' sh "$got"
done
got=$(proc_call as_tester2 "$t_id"); missing=$(proc_call as_tester2 "$NOID")
echo "tester2: busctl get-property .../process/$t_id Name -> $got"
check "tester2: tester's process object answers UnknownObject, as a missing one" \
    bash -c 'test "$1" = "$2"' sh "$got" "$(as_missing "$missing" "$t_id")"
check "tester2: ... the error is org.freedesktop.DBus.Error.UnknownObject" has "Error org.freedesktop.DBus.Error.UnknownObject:" \
    "$(as_tester2 dbus-send --system --print-reply --dest=org.corral.Supervisor1 "/org/corral/Supervisor1/process/$t_id" \
        org.freedesktop.DBus.Properties.Get string:org.corral.Supervisor1.Process string:Name 2>&1)"
got=$(as_tester2 busctl call org.corral.Supervisor1 /org/corral/Supervisor1 org.freedesktop.DBus.ObjectManager GetManagedObjects 2>&1)
check "tester2: GetManagedObjects has its own process, not tester's" \
    bash -c 'grep -q "/process/$2\"" <<< "$1" && ! grep -q "/process/$3\"" <<< "$1"' sh "$got" "$u_id" "$t_id"
ev2=$(as_tester2 corralctl --system --json events 2>&1)
check "tester2: events only of its own process" test "$(jq -r '[.[].id] | unique | join(" ")' <<< "$ev2" 2>/dev/null)" = "$u_id"
got=$(as_tester2 corralctl --system stop "$t_id" 2>&1); rc=$?
missing=$(as_tester2 corralctl --system stop "$NOID" 2>&1)
echo "tester2: stop $t_id -> exit $rc: $got"
echo "tester2: stop $NOID (missing) -> $missing"
check "tester2: stop of tester's process fails, and it still runs" bash -c 'test "$1" != 0 && kill -0 "$2"' sh "$rc" "${t_pid:-0}"
check "tester2: ... as for a missing id" test "$got" = "$(as_missing "$missing" "$t_id")"
# the method call itself, by error name (corralctl maps names to its own text)
got=$(as_tester2 dbus-send --system --print-reply --dest=org.corral.Supervisor1 "/org/corral/Supervisor1/process/$t_id" \
    org.corral.Supervisor1.Process.Stop 2>&1)
echo "tester2: dbus-send Process.Stop on $t_id -> $got"
check "tester2: Process.Stop on tester's process answers org.freedesktop.DBus.Error.UnknownObject" \
    has "Error org.freedesktop.DBus.Error.UnknownObject:" "$got"

step "tester does not see tester2's processes, logs or events"
# one login: list, status, logs, property, events, each after a marker line
out=$(as_tester sh -c '
    corralctl --system --json list; echo "--- status"
    corralctl --system status "$1" 2>&1; echo "--- status-missing"
    corralctl --system status "$2" 2>&1; echo "--- logs"
    corralctl --system logs "$1" 2>&1; echo "--- logs-missing"
    corralctl --system logs "$2" 2>&1; echo "--- prop"
    busctl get-property org.corral.Supervisor1 "/org/corral/Supervisor1/process/$1" org.corral.Supervisor1.Process Name 2>&1; echo "--- prop-missing"
    busctl get-property org.corral.Supervisor1 "/org/corral/Supervisor1/process/$2" org.corral.Supervisor1.Process Name 2>&1; echo "--- events"
    corralctl --system --json events; echo "--- end"' sh "$u_id" "$NOID")
part() { sed -n "/^--- $1\$/,/^--- /p" <<< "$out" | sed '1d;$d'; }
list1=$(sed '/^--- status$/,$d' <<< "$out")
echo "tester's list: $(jq -c 'map({id, owner})' <<< "$list1")"
check "tester's list: only its own process ($t_id)" test "$(jq -r '.[].id' <<< "$list1" 2>/dev/null)" = "$t_id"
for p in status logs prop; do
    echo "tester: $p $u_id -> $(part $p)"
    check "tester: $p of tester2's process answers as for a missing id" test "$(part $p)" = "$(as_missing "$(part $p-missing)" "$u_id")"
done
check "tester: ... and shows nothing of it" bash -c '! grep -q secret-of-tester2 <<< "$1"' sh "$out"
check "tester: events only of its own process" test "$(part events | jq -r '[.[].id] | unique | join(" ")' 2>/dev/null)" = "$t_id"

step "tester stops its own"
out=$(as_tester corralctl --system stop --workspace shared 2>&1); rc=$?
echo "tester: stop --workspace shared -> exit $rc: $out"
check "stop --workspace shared as tester: exit 0" test $rc = 0
for _ in $(seq 50); do kill -0 "${t_pid:-0}" 2>/dev/null || break; sleep 0.2; done
check "tester's process ended (state $(field "$t_id" state))" bash -c '! kill -0 "$1" 2>/dev/null' sh "${t_pid:-0}"
check "its scope is gone" bash -c '! systemctl list-units --plain --no-legend "$1" | grep -q .' sh "${t_scope:-none}"
check "tester2's process in the same workspace still runs (the filter matched the caller's only)" kill -0 "${u_pid:-0}"

step "cleanup (root)"
ctl rm "$t_id" "$u_id"
for _ in $(seq 50); do [ -z "$(scopes)" ] && break; sleep 0.2; done
check "root removed both; no corral scope left" test -z "$(scopes)"

echo
if [ $fails = 0 ]; then echo "system mode: all checks passed"; else echo "system mode: $fails check(s) failed"; fi
[ $fails = 0 ]
