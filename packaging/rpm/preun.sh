# armorwatch %preun ($1: 0 = erase, 1 = upgrade): stop and disable on erase.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop armorwatch.service || :
    fi
    systemctl disable armorwatch.service >/dev/null 2>&1 || :
fi
