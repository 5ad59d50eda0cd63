#!/bin/bash
# Runs as PID 1 of the new namespaces that harness.sh made with unshare, builds the container's root and ends by
# exec'ing systemd. Adapted from shared/tools/systemd-ns.sh; each step that keeps systemd off the host says so.
# Arguments: W (work dir shared with the host, same path inside), R (overlay dir), REPO (this repository),
# SYSTEMD (the systemd binary), TARGET (the boot unit).
set -euo pipefail
W=$1 R=$2 REPO=$3 SYSTEMD=$4 TARGET=$5

# Guard: only ever run as PID 1 of a fresh PID namespace (i.e. started by `unshare --pid --fork`). Anywhere else
# the mounts below would be made in the caller's mount namespace.
[ $$ -eq 1 ] || { echo "ns-init: refusing to run: not PID 1 of a new PID namespace (pid $$)" >&2; exit 1; }

M="mount -n"   # -n: never write /etc/mtab

# Guard: overlay root. The host's / is the read-only lower layer; every write (systemd's, the daemon's, the test's)
# lands in a tmpfs upper layer that exists only in this mount namespace and vanishes with it.
$M -t tmpfs -o mode=755 tmpfs "$R"
mkdir "$R/upper" "$R/work" "$R/root"
$M -t overlay overlay -o "lowerdir=/,upperdir=$R/upper,workdir=$R/work" "$R/root"
N=$R/root

# Guard: a /proc of the new PID namespace (systemd sees only its own processes), with /proc/sys read-only (no
# sysctl reaches the host kernel) and, added here, /proc/sysrq-trigger read-only (no emergency sync/reboot).
$M -t proc proc "$N/proc"
for p in sys sysrq-trigger; do
  [ -e "$N/proc/$p" ] || continue   # kernels built without magic SysRq have no sysrq-trigger
  $M --bind "$N/proc/$p" "$N/proc/$p"
  $M -o remount,bind,ro "$N/proc/$p"
done

# Guard: a private, read-only /sys (systemd mounts its own cgroup2 on /sys/fs/cgroup, which the cgroup namespace
# roots at our sub-cgroup), and a private /dev holding only harmless device nodes, no disks.
$M -t sysfs -o ro,nosuid,nodev,noexec sysfs "$N/sys"
# Guard: cgroup v2 only, mounted by us before systemd starts. unshare --cgroup rooted this namespace at our own
# sub-cgroup, so the mount shows that subtree only. systemd follows an already mounted hierarchy; left to itself on
# a host whose controllers are bound to cgroup v1 (hybrid), it would mount the v1 hierarchies, whose roots are the
# host's, and create init.scope at their top (seen on this kind of host: /sys/fs/cgroup/pids/init.scope).
$M -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$N/sys/fs/cgroup"
$M -t tmpfs -o mode=755,nosuid tmpfs "$N/dev"
for d in null zero full random urandom tty; do touch "$N/dev/$d"; $M --bind "/dev/$d" "$N/dev/$d"; done
mkdir "$N/dev/pts" "$N/dev/shm"
$M -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$N/dev/pts"; ln -s pts/ptmx "$N/dev/ptmx"
$M -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$N/dev/shm"
# /dev/console is a file of the work dir, never the host's console.
touch "$W/console.log" "$N/dev/console"; $M --bind "$W/console.log" "$N/dev/console"

# Guard: a private /run, so systemctl inside can only ever reach this systemd's /run/systemd/private, and the
# daemon's RuntimeDirectory (/run/foundation) is not the host's.
$M -t tmpfs -o mode=755,nosuid,nodev tmpfs "$N/run"

# The work dir is shared with the host (read-write: logs, the test config). The repository is bound read-only
# (added): foundationd runs from its .venv, and nothing inside can change the checkout.
mkdir -p "$N$W"; $M --bind "$W" "$N$W"
mkdir -p "$N$REPO"; $M --bind "$REPO" "$N$REPO"; $M -o remount,bind,ro "$N$REPO"

# Switch to the new root and drop every host mount from this namespace.
cd "$N"; mkdir -p .oldroot; pivot_root . .oldroot; umount -l /.oldroot; rmdir /.oldroot

# container=: systemd runs in container mode (no kernel modules, no hardware, no console setup).
# SYSTEMD_UNIT_PATH: our units first; the trailing ':' appends the normal search path (the overlay's /etc/systemd).
export container=fdn-test SYSTEMD_UNIT_PATH=$W/units:
# systemd logs to the namespace's journald (the boot target starts it); /dev/console above is a plain file, which
# systemd does not log to (not a tty), but it keeps the host's console out of reach.
exec "$SYSTEMD" --system --unit="$TARGET" --log-level=info
