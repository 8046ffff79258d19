# armorwatch %post ($1: 1 = install, 2 = upgrade): user, directories, AppArmor profile, unit.
systemd-sysusers /usr/lib/sysusers.d/armorwatch.conf || :
systemd-tmpfiles --create /usr/lib/tmpfiles.d/armorwatch.conf || :
if [ -x /usr/sbin/apparmor_parser ] && [ -d /sys/kernel/security/apparmor ]; then
    apparmor_parser -r -T -W /etc/apparmor.d/usr.bin.armorwatch || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
if [ "$1" -eq 1 ]; then
    systemctl enable armorwatch.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl start armorwatch.service || :
    fi
fi
