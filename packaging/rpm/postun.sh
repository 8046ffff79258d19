# armorwatch %postun ($1: 0 = erase, 1 = upgrade): restart on upgrade; on erase drop the
# state, logs, the loaded profile and the system user.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart armorwatch.service || :
    fi
fi
if [ "$1" -eq 0 ]; then
    if [ -x /usr/sbin/apparmor_parser ] && [ -d /sys/kernel/security/apparmor ]; then
        echo "profile armorwatch {}" | apparmor_parser -R >/dev/null 2>&1 || :
    fi
    rm -rf /var/lib/armorwatch /var/log/armorwatch
    rm -f /var/cache/apparmor/*/usr.bin.armorwatch /etc/apparmor.d/cache/usr.bin.armorwatch
    userdel armorwatch >/dev/null 2>&1 || :
    groupdel armorwatch >/dev/null 2>&1 || :
fi
