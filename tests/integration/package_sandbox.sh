#!/bin/sh
# Run by test_package.py as
#   unshare --mount --net --pid --fork --propagation private \
#       sh package_sandbox.sh TOP DIR
# An overlay of the machine's / with its writes on a tmpfs at TOP: inside,
# dpkg installs, starts and purges the package as on the machine itself,
# but nothing it does outlives this process.  Its own network namespace
# (loopback only, so port 25 is free) and PID namespace (every process left
# dies with it).  DIR (postern.deb, package_inside.py) is mounted at
# /postern-test, where the report is written.
set -eu
top=$1
dir=$2
mount -t tmpfs -o mode=0755 tmpfs "$top"
mkdir "$top/up" "$top/work" "$top/root"
mount -t overlay overlay \
    -o "lowerdir=/,upperdir=$top/up,workdir=$top/work" "$top/root"
root=$top/root
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mkdir -p "$root/postern-test"
mount --bind "$dir" "$root/postern-test"
ip link set lo up
exec chroot "$root" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    /usr/bin/python3 /postern-test/package_inside.py /postern-test
