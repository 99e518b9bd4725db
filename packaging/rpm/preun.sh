# corral %preun ($1: 0 erase, 1+ upgrade; what and why: packaging/README.md).
# Erase stops the agents (system and every running user agent) and drops
# the global enable; the processes they supervise keep running in their
# own scopes. An upgrade stops nothing.
if [ "$1" -eq 0 ]; then
    systemctl --global disable corrald.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop corrald.service >/dev/null 2>&1 || :
        for dir in /run/user/*/systemd/private; do
            [ -S "$dir" ] || continue
            uid=${dir#/run/user/}; uid=${uid%%/*}
            systemctl --user -M "$uid@" stop corrald.service >/dev/null 2>&1 || :
        done
    fi
fi
