# corral %postun ($1: 0 erase, 1+ upgrade; what and why: packaging/README.md).
# RPM has no purge: the system agent's state (/var/lib/corral) stays, as
# state of other Fedora services does.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
    busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig \
        >/dev/null 2>&1 || :
fi
