# Shared by build-image, run-in-vm and run-suite (sourced, not run).
# Where the VM tier keeps its image and run dirs: outside the work tree.
CORRAL_VM_CACHE=${CORRAL_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/corral-vm}

# Microseconds since the epoch, from bash's $EPOCHREALTIME (no bc needed).
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
# Seconds with one decimal between two now_us values.
secs() { local d=$(($2 - $1)); printf '%d.%d' $((d / 1000000)) $((d % 1000000 / 100000)); }

# ensure_host_cmds CMD:PACKAGE... - install the packages of missing commands with
# apt-get; `apt-get update` only if the first install fails (stale lists).
ensure_host_cmds() {
    local pair need=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
    done
    [ ${#need[@]} -gt 0 ] || return 0
    echo "corral-vm: installing host packages: ${need[*]}" >&2
    local inst=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}")
    "${inst[@]}" >&2 || { apt-get update -q >&2 && "${inst[@]}" >&2; }
}
