# corral %post ($1: 1 install, 2+ upgrade; what and why: packaging/README.md).
# Enable the user agent globally on first install: every user session
# started from now on starts it; running sessions get it by D-Bus activation.
if [ "$1" -eq 1 ]; then
    systemctl --global enable corrald.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
    busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig \
        >/dev/null 2>&1 || :
    if [ "$1" -gt 1 ]; then
        # Upgrade: running agents hand over to the new binary (it adopts the
        # running processes); agents that do not run are not started.
        systemctl try-restart corrald.service >/dev/null 2>&1 || :
        for dir in /run/user/*/systemd/private; do
            [ -S "$dir" ] || continue
            uid=${dir#/run/user/}; uid=${uid%%/*}
            systemctl --user -M "$uid@" daemon-reload >/dev/null 2>&1 || :
            systemctl --user -M "$uid@" try-restart corrald.service >/dev/null 2>&1 || :
        done
    fi
fi
