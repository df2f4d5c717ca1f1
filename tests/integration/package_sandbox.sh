#!/bin/sh
# Run by test_package.py as
#   unshare --mount --net --pid --cgroup --fork --propagation private \
#       sh package_sandbox.sh TOP DIR MODE
# An overlay of the machine's / with its writes on a tmpfs at TOP: inside,
# dpkg installs, starts and purges the package as on the machine itself,
# but nothing it does outlives this process.  Its own network namespace
# (loopback only, so port 25 is free) and PID namespace (every process left
# dies with it).  DIR (postern.deb, package_inside.py) is mounted at
# /postern-test, where the report is written.
# MODE sysv: package_inside.py runs as PID 1, as on a host without systemd.
# MODE systemd: systemd boots as PID 1 (a container) and runs
# package_inside.py as a unit of a target of our own, then exits.  It gets
# a /dev, /sys and cgroup file system of its own (the symlinks, folders and
# cgroups it makes stay in the sandbox): the caller started us in a cgroup
# of our own, the root of our cgroup namespace.
set -eu
top=$1
dir=$2
mode=$3
mount -t tmpfs -o mode=0755 tmpfs "$top"
mkdir "$top/up" "$top/work" "$top/root"
mount -t overlay overlay \
    -o "lowerdir=/,upperdir=$top/up,workdir=$top/work" "$top/root"
root=$top/root
if [ "$mode" = sysv ]; then
	mount --rbind /dev "$root/dev"
else
	mount -t tmpfs -o mode=0755 tmpfs "$root/dev"
	for n in null zero full random urandom tty; do
		touch "$root/dev/$n"
		mount --bind "/dev/$n" "$root/dev/$n"
	done
	touch "$root/dev/console"
	mount --bind /dev/null "$root/dev/console"
	mkdir "$root/dev/pts" "$root/dev/shm"
	mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
	ln -s pts/ptmx "$root/dev/ptmx"
	mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
	ln -s /proc/self/fd "$root/dev/fd"
fi
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mkdir -p "$root/postern-test"
mount --bind "$dir" "$root/postern-test"
ip link set lo up
if [ "$mode" = sysv ]; then
	exec chroot "$root" /usr/bin/env -i \
	    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
	    /usr/bin/python3 /postern-test/package_inside.py /postern-test sysv
fi
mount -t sysfs sysfs "$root/sys"
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
units=$root/etc/systemd/system
mkdir -p "$units"
cat > "$units/postern-test.service" <<'UNIT'
[Unit]
Description=install, use and purge the postern package
[Service]
Type=oneshot
Environment=LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive HOME=/root
ExecStart=/usr/bin/python3 /postern-test/package_inside.py /postern-test systemd
ExecStopPost=/bin/systemctl --no-block exit 0
TimeoutStartSec=600
StandardOutput=file:/postern-test/inside.log
StandardError=inherit
UNIT
cat > "$units/postern-test.target" <<'UNIT'
[Unit]
Description=the package test
Requires=basic.target postern-test.service
After=basic.target postern-test.service
UNIT
exec chroot "$root" /bin/sh -c 'exec /usr/bin/env -i container=postern-test \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd \
    --unit=postern-test.target --log-target=console \
    >/postern-test/systemd.log 2>&1'
