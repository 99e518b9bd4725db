#!/bin/bash
# up1000.sh — the peers section's "800 more (to 1,000)" row, alone, for
# profiling. Run it inside the testbed:
#
#   tests/testbed/testbed benches/up1000.sh BINDIR [perf]
#
# BINDIR holds corrald, corral-shim and corralctl (target/release). It
# starts a corrald on a fresh state directory, brings up 200 `sleep`
# processes from one project file, then 800 more from four files of 200
# (`corralctl up` each, in turn, as the bench does) and prints the wall
# time of the 800 and the CPU ticks (1/100 s) that corrald, the user
# manager, dbus-daemon and the shims used over them. With `perf`, it also records
# `perf record -a -g` over the 800 into $W/perf.data and prints the top of
# its report by command. Everything is stopped and removed at the end.
set -euo pipefail
BIN=$(realpath "$1")
PERF=${2:-}
W=$(mktemp -d /tmp/up1000.XXXXXX)
printf 'sample_interval = 10\nstop_timeout = 3\n' > "$W/corrald.toml"
CORRAL_SHIM=$BIN/corral-shim "$BIN/corrald" --user --config "$W/corrald.toml" \
  --state-dir "$W/state" > "$W/corrald.log" 2>&1 &
AGENT=$!
cleanup() {
  "$BIN/corralctl" rm -w up1000 > /dev/null 2>&1 || true
  kill "$AGENT" 2> /dev/null || true
  wait "$AGENT" 2> /dev/null || true
  [[ -n ${KEEP:-} ]] || rm -rf "$W"
}
trap cleanup EXIT
for _ in $(seq 200); do
  busctl --user status org.corral.Supervisor1 > /dev/null 2>&1 && break
  sleep 0.05
done

# project FILE FROM TO: a project file of `sleep` processes FROM..TO-1.
project() {
  mkdir -p "$(dirname "$1")"
  { echo 'workspace = "up1000"'
    for ((i = $2; i < $3; i++)); do
      printf '[processes.p%d]\ncommand = ["sleep", "100000"]\n' "$i"
    done; } > "$1"
}
project "$W/p0/corral.toml" 0 200
for k in 0 1 2 3; do project "$W/p$((k + 1))/corral.toml" $((200 + k * 200)) $((400 + k * 200)); done
"$BIN/corralctl" up -f "$W/p0/corral.toml" > /dev/null
sleep 2

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Every corral-shim's time on a CPU so far, in ticks (the fork server's
# included; /proc/PID/schedstat, since a shim's own tick count rounds to
# 0). The commands' own CPU is not counted: they are `sleep`, exec'd from
# a shim.
# The PIDs of every corral-shim (the fork server's included).
shim_pids() {
  local d comm
  for d in /proc/[0-9]*; do
    read -r comm < "$d/comm" 2> /dev/null || continue
    [[ $comm == corral-shim ]] && echo "${d#/proc/}"
  done
}
shim_ticks() {
  local sum=0 pid ns
  for pid in $(shim_pids); do
    read -r ns _ < "/proc/$pid/schedstat" 2> /dev/null || continue
    sum=$((sum + ns))
  done
  echo $((sum / 10000000))
}
SD=$(pgrep -o -x systemd || true)
DB=$(pgrep -o -x dbus-daemon || true)
before=("$(ticks "$AGENT")" "$(ticks "$SD")" "$(ticks "$DB")" "$(shim_ticks)")
if [[ $PERF == perf ]]; then
  perf record -q -a -g -F 499 -o "$W/perf.data" 2> /dev/null &
  REC=$!
  sleep 0.5
fi
t0=$(date +%s%N)
for k in 1 2 3 4; do "$BIN/corralctl" up -f "$W/p$k/corral.toml" > /dev/null; done
t1=$(date +%s%N)
[[ $PERF == perf ]] && { kill -INT "$REC"; wait "$REC" || true; }
after=("$(ticks "$AGENT")" "$(ticks "$SD")" "$(ticks "$DB")" "$(shim_ticks)")
running=$("$BIN/corralctl" list -w up1000 --state running --json | grep -o "\"id\"" | wc -l)
echo "800 more: $(((t1 - t0) / 1000000)) ms; running: $running of 1000"
echo "CPU ticks over them: corrald $((after[0] - before[0])), systemd $((after[1] - before[1])), dbus-daemon $((after[2] - before[2])), shims $((after[3] - before[3]))"
pss=$(for pid in $(shim_pids); do
  awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2> /dev/null
done | awk '{s += $1; n++} END {if (n) printf "%d shims, %.0f KiB PSS each", n, s / n}')
echo "shims: $pss"
if [[ $PERF == perf ]]; then
  perf report -i "$W/perf.data" --no-children --sort comm --stdio 2> /dev/null | grep -v '^#' | grep -v '^$' | head -15
fi
