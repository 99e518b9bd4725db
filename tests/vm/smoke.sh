#!/bin/bash
# Smoke test of the VM tier (no corral code involved): run as root in the guest by
#   tests/vm/run-in-vm tests/vm/smoke.sh
# Checks that tester gets a real logind session with a user manager and session bus,
# that the user manager has the controllers corral needs delegated, and that a
# transient user scope lands in its own v2 cgroup with a memory limit and usage files.
set -u
echo "== guest: kernel $(uname -r), PID 1 = $(cat /proc/1/comm), $(systemctl --version | head -1)," \
     "/sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup), system: $(systemctl is-system-running)"

read -r -d '' as_tester <<'EOF'
fail=0
bad() { echo "FAIL: $*"; fail=1; }
uid=$(id -u)
echo "== as $(id -un) (uid $uid), XDG_SESSION_ID=${XDG_SESSION_ID:-unset}"
echo "XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS"
echo "my cgroup: $(cat /proc/self/cgroup)"
echo "== loginctl list-sessions"; loginctl list-sessions --no-legend
echo "== loginctl show-session ${XDG_SESSION_ID:-}"
props=$(loginctl show-session "${XDG_SESSION_ID:-none}" -p Name -p Class -p Type -p Seat -p TTY -p Remote -p Active -p State)
echo "$props"
for want in Name=tester Class=user Type=tty Seat=seat0 Remote=no Active=yes; do
    grep -qx "$want" <<<"$props" || bad "session property $want expected"
done
echo "== loginctl show-user tester"
loginctl show-user tester -p Linger -p State -p Sessions -p Service -p Slice
um=/sys/fs/cgroup/user.slice/user-$uid.slice/user@$uid.service
ctrl=$(cat "$um/cgroup.controllers")
echo "user manager cgroup.controllers: $ctrl"
for c in cpu io memory pids; do grep -qw "$c" <<<"$ctrl" || bad "controller $c not delegated to user@$uid.service"; done

echo "== systemd-run --user --scope -p MemoryMax=100M"
systemd-run --user --scope --unit=corral-smoke -p MemoryMax=100M -- \
    sh -c 'head -c 30000000 /dev/zero | tail -c 1 >/dev/null; sleep 2' &
cg=""
for _ in $(seq 50); do
    cg=$(systemctl --user show -P ControlGroup corral-smoke.scope 2>/dev/null)
    [ -n "$cg" ] && break; sleep 0.1
done
echo "ControlGroup=$cg"
[ -n "$cg" ] || bad "scope has no ControlGroup"
sleep 1
for f in memory.current memory.peak cpu.stat pids.current io.stat memory.max; do
    if [ -r "/sys/fs/cgroup$cg/$f" ]; then
        echo "-- $f:"; sed 's/^/   /' "/sys/fs/cgroup$cg/$f"
    else
        echo "-- $f: (missing)"
    fi
done
[ "$(cat "/sys/fs/cgroup$cg/memory.max" 2>/dev/null)" = 104857600 ] || bad "memory.max is not 100M"
[ -r "/sys/fs/cgroup$cg/cpu.stat" ] || bad "no cpu.stat"
wait
# informative: io.stat/io.max and cpu.max only exist once a unit asks for the accounting
echo "== same, with -p IOAccounting=yes -p CPUAccounting=yes: io/cpu files in the scope, app.slice subtree_control"
systemd-run --user --scope -q -p IOAccounting=yes -p CPUAccounting=yes -- sh -c \
    'cg=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup); cd $cg && echo "  " io.* cpu.*; echo "  " $(cat ../cgroup.subtree_control)'
echo "== busctl --user status org.freedesktop.systemd1"
busctl --user status org.freedesktop.systemd1 | grep -E '^(PID|Comm|CommandLine|UID|Unit|UserUnit|Session|ControlGroup|UniqueName)=' \
    || bad "busctl --user status failed"
[ $fail = 0 ] && echo "SMOKE OK" || echo "SMOKE FAILED"
exit $fail
EOF
corral-vm-as-tester bash -c "$as_tester"
rc=$?
echo "== after the session ended (root)"
loginctl list-sessions --no-legend
exit $rc
