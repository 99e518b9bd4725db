#!/bin/bash
# The VM checks of corrald among its neighbours (issue 10, items 4-7), run
# by package.sh after the install and the first activation, as root in the
# guest, with tester's agent active and lingering on:
#  - the user unit is Type=notify: StatusText "supervising N processes",
#    a watchdog that does not fire;
#  - the journal: corrald's own lines carry CORRAL_* fields, and with
#    journal_forward = true every output line of a process is an entry
#    that `journalctl --user CORRAL_WORKSPACE=shop` (as tester) finds, with
#    PRIORITY 6 for stdout and 3 for stderr;
#  - corralctl -H tester@127.0.0.1 (real sshd on loopback, a key for tester)
#    lists tester's processes; with --system it reaches the system agent.
# Desktop notifications are checked in the testbed (tests/desktop.rs): the
# image has no notification server. Prints one line per check; exits with
# the number of failed checks.
set -uo pipefail
fails=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
step() { printf '\n== %s\n' "$*"; }
user_ctl() { systemctl --user -M tester@ "$@"; }
as_tester() { corral-vm-as-tester "$@"; }

step "service manager protocol: Type=notify, status, watchdog"
check "corrald.service is Type=notify" test "$(user_ctl show -P Type corrald.service)" = notify
status=$(user_ctl show -P StatusText corrald.service)
echo "StatusText: $status"
check "StatusText says what it supervises" grep -Eq '^supervising [0-9]+ process(es)?( \([0-9]+ failed\))?$' <<< "$status"
check "watchdog armed (WatchdogUSec=1min)" test "$(user_ctl show -P WatchdogUSec corrald.service)" = 1min

step "the journal: corrald's fields, forwarded output"
# Persistent storage (the image keeps a volatile journal), so journald
# files tester's entries in a journal file of tester's own, which
# `journalctl --user` reads without extra groups. This boot only.
printf '[Journal]\nStorage=persistent\n' > /etc/systemd/journald.conf.d/zz-desktop-remote.conf
mkdir -p /var/log/journal && systemctl restart systemd-journald && journalctl --flush
mkdir -p /home/tester/.config/corral
printf 'journal_forward = true\n' > /home/tester/.config/corral/corrald.toml
chown -R tester: /home/tester/.config
user_ctl restart corrald.service
check "agent active again with journal_forward" test "$(user_ctl is-active corrald.service)" = active
check "corrald's own entries carry CORRAL_ fields" \
    sh -c 'journalctl -b -o verbose --no-pager _SYSTEMD_USER_UNIT=corrald.service | grep -q "^ *CORRAL_STATE_DIR="'
id=$(as_tester corralctl start --name shouty --workspace shop -- sh -c 'echo hello-journal; echo oops-journal >&2; sleep 600')
echo "started $id"
for _ in $(seq 50); do
    as_tester journalctl --user -q --no-pager CORRAL_WORKSPACE=shop 2>/dev/null | grep -q oops-journal && break
    sleep 0.2
done
entries=$(as_tester journalctl --user -q --no-pager -o verbose CORRAL_WORKSPACE=shop 2>&1)
echo "$entries" | grep -E '^ *(MESSAGE|PRIORITY|CORRAL_[A-Z]+|SYSLOG_IDENTIFIER)=' | head -20
stdout_entry=$(awk '/^[A-Z][a-z][a-z] /{e=""} {e = e $0 "\n"} /MESSAGE=hello-journal/{print e}' <<< "$entries")
stderr_entry=$(awk '/^[A-Z][a-z][a-z] /{e=""} {e = e $0 "\n"} /MESSAGE=oops-journal/{print e}' <<< "$entries")
check "stdout line found by journalctl --user CORRAL_WORKSPACE=shop" grep -q "PRIORITY=6" <<< "$stdout_entry"
check "stderr line found, PRIORITY=3" grep -q "PRIORITY=3" <<< "$stderr_entry"
check "fields CORRAL_ID, CORRAL_NAME, CORRAL_STREAM, SYSLOG_IDENTIFIER" \
    bash -c 'grep -q "CORRAL_ID=$1" <<< "$2" && grep -q "CORRAL_NAME=shouty" <<< "$2" &&
           grep -q "CORRAL_STREAM=stdout" <<< "$2" && grep -q "SYSLOG_IDENTIFIER=shouty" <<< "$2"' _ "$id" "$stdout_entry"
check "the log file still has the lines" sh -c "corral-vm-as-tester corralctl logs $id | grep -q hello-journal"

step "remote: corralctl -H tester@127.0.0.1 through sshd"
mkdir -p /root/.ssh /home/tester/.ssh && chmod 700 /root/.ssh /home/tester/.ssh
[ -e /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
cat /root/.ssh/id_ed25519.pub >> /home/tester/.ssh/authorized_keys
chown -R tester: /home/tester/.ssh && chmod 600 /home/tester/.ssh/authorized_keys
printf 'Host 127.0.0.1\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n' > /root/.ssh/config
systemctl start ssh.service
check "sshd active" systemctl -q is-active ssh.service
remote=$(corralctl -H tester@127.0.0.1 list 2>&1); rc=$?
echo "$remote"
check "corralctl -H tester@127.0.0.1 list exit 0" test $rc = 0
check "it lists tester's process $id" grep -Eq "^$id +shouty +shop +running" <<< "$remote"
sys=$(corralctl -H tester@127.0.0.1 --system list 2>&1); rc=$?
echo "$sys"
check "corralctl -H tester@127.0.0.1 --system list exit 0" test $rc = 0
# That call bus-activated the system agent; system.sh, later in this boot,
# checks that nothing but a user's first call starts it: leave it stopped.
systemctl stop corrald.service
check "system agent stopped again" test "$(systemctl is-active corrald.service)" = inactive
as_tester corralctl rm "$id" > /dev/null
rm -f /home/tester/.config/corral/corrald.toml
user_ctl restart corrald.service
exit $fails
