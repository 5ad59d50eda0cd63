# shellcheck shell=bash
# Boot a real systemd as PID 1 of private namespaces on a tmpfs overlay of the host root, to test
# systemd/foundation.service for real. Adapted from shared/tools/systemd-ns.sh: every guard of that script is kept,
# one of its guards is fixed (see 1) and a few are added. Without them the systemd started here acts on the host:
#
#  1. Own sub-cgroup first. systemd adopts the cgroup it starts in as the root of its tree and takes over every
#     process in it. We make a fresh child of our own cgroup in the cgroup v2 hierarchy (and in the v1
#     name=systemd one if the host has it), move into it before unshare and check the move took effect.
#     (Fixed: systemd-ns.sh took the path from the v1 "memory" line of /proc/self/cgroup and only looked at
#     /sys/fs/cgroup/{systemd,unified}: on a pure cgroup v2 host the guard silently does nothing, and on a hybrid
#     host whose memory path differs from the others, mkdir -p creates that path and cleanup leaves it behind.)
#  2. cgroup v2 only, in a cgroup namespace (added). unshare --cgroup roots the namespace at our sub-cgroup, and
#     ns-init.sh mounts cgroup2 on /sys/fs/cgroup before systemd starts, so systemd sees its own subtree only.
#     Left to itself on a host whose controllers are bound to cgroup v1 (hybrid, like the machine this was written
#     on), systemd 252 mounts the v1 hierarchies too, whose roots are the host's, and creates init.scope at their
#     top. We check after boot that no v1 hierarchy is mounted inside.
#  3. DefaultDependencies=no on the boot target and on every unit we start (foundation.service gets it from a
#     drop-in). Otherwise sysinit.target and basic.target pull in the host's boot services (tmpfiles, which
#     clears /tmp, fsck, mounts, networking...). We check sysinit.target is not active after boot.
#  4. Overlay root (host / read-only underneath, writes in a tmpfs), private /dev (no disks) and /sys (read-only),
#     private /run, read-only /proc/sys and (added) /proc/sysrq-trigger. The repository is bound read-only (added).
#  5. Private PID, mount (propagation private: nothing propagates back), UTS, IPC and (added) network namespaces:
#     no host process is visible, no host interface or abstract socket reachable.
#  6. IN/SC refuse to run unless the target process is our namespace's PID 1 (child of our unshare, in another
#     mount namespace than ours): a systemctl that ran in the host's namespaces would talk to the host's systemd.
#  7. unshare --kill-child: if unshare dies, the kernel kills systemd and with it the whole PID namespace; and
#     (added) unshare runs with a parent-death signal, SIGKILL when the shell that sourced this dies, so even a
#     SIGKILLed test run takes its namespace with it (only its empty sub-cgroups stay; see docs/systemd.md).
#  8. Teardown: SIGKILL to the namespace's PID 1 (the kernel kills everything in the PID namespace; nothing of the
#     host's shutdown units runs), then the sub-cgroups are removed and the absence of leftover processes, mount
#     namespace and cgroups is checked (fdn_ns_check_clean).
#
# Usage: source this; fdn_ns_preflight || skip; fdn_ns_boot W (W: an empty work dir, not under /tmp, shared with
#        the namespace at the same path); then SC ... (systemctl inside), IN ... (any command inside);
#        fdn_ns_cleanup at the end (idempotent; call it from an EXIT trap); fdn_ns_check_clean to verify.

FDN_HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FDN_REPO=$(cd "$FDN_HARNESS_DIR/../.." && pwd)
FDN_TARGET=fdn-test.target
FDN_W= FDN_R= FDN_UNSHARE= FDN_PID1= FDN_SYSTEMD= FDN_NS_PID= FDN_NS_MNT= FDN_CG_BEFORE=
FDN_CG_DIRS=()

_fdn_systemd_binary() {
  local p
  for p in /lib/systemd/systemd /usr/lib/systemd/systemd; do [ -x "$p" ] && { echo "$p"; return 0; }; done
  return 1
}

# The cgroup v2 mount: /sys/fs/cgroup (unified host) or /sys/fs/cgroup/unified (hybrid host).
_fdn_cgroup2_root() {
  local p
  for p in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    [ "$(stat -fc %T "$p" 2>/dev/null)" = cgroup2fs ] && { echo "$p"; return 0; }
  done
  return 1
}

# Print why the harness cannot run here (and return 1), or return 0.
fdn_ns_preflight() {
  local c v2 cur probe
  [ "$(id -u)" -eq 0 ] || { echo "needs root (mounts, namespaces, cgroups)"; return 1; }
  for c in unshare nsenter setpriv mount umount pivot_root mountpoint systemctl pgrep timeout stat findmnt; do
    command -v "$c" >/dev/null || { echo "'$c' is not installed"; return 1; }
  done
  setpriv --help 2>&1 | grep -q -- '--pdeathsig' || { echo "setpriv has no --pdeathsig (util-linux too old)"; return 1; }
  unshare --help 2>&1 | grep -q -- '--kill-child' || { echo "unshare has no --kill-child (util-linux too old)"; return 1; }
  unshare --help 2>&1 | grep -q -- '--cgroup' || { echo "unshare has no --cgroup (util-linux too old)"; return 1; }
  _fdn_systemd_binary >/dev/null || { echo "no systemd binary (/lib/systemd/systemd or /usr/lib/systemd/systemd)"; return 1; }
  grep -qw overlay /proc/filesystems || { echo "the kernel has no overlayfs loaded (not loading modules on the host)"; return 1; }
  v2=$(_fdn_cgroup2_root) || { echo "no cgroup v2 hierarchy mounted (systemd in the namespace needs one)"; return 1; }
  cur=$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
  probe="$v2${cur%/}/fdn-probe-$$"
  mkdir "$probe" 2>/dev/null && rmdir "$probe" || { echo "cgroup v2 is not writable at $v2${cur%/}"; return 1; }
  return 0
}

# Remove the empty sub-cgroups a SIGKILLed earlier run left next to ours (fdn-systemd-PID, PID gone). rmdir only:
# a cgroup that still holds a process is never touched.
_fdn_cg_sweep_stale() {
  local parent d pid
  for parent in "$(_fdn_cgroup2_root)$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)" \
                "/sys/fs/cgroup/systemd$(awk -F: '$2 == "name=systemd" {print $3}' /proc/self/cgroup)"; do
    for d in "${parent%/}"/fdn-systemd-*; do
      [ -d "$d" ] || continue
      pid=${d##*-}
      [ -e "/proc/$pid" ] && continue
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null && echo "removed the stale cgroup $d of an earlier run"
    done
  done
}

# Make the sub-cgroups (guard 1); fills FDN_CG_DIRS. The move itself happens in the subshell that execs unshare.
_fdn_cg_make() {
  local v2 cur v1
  v2=$(_fdn_cgroup2_root) || return 1
  cur=$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
  FDN_CG_DIRS=("$v2${cur%/}/fdn-systemd-$$")
  if [ "$(stat -fc %T /sys/fs/cgroup/systemd 2>/dev/null)" = cgroupfs ]; then   # hybrid/legacy host
    v1=$(awk -F: '$2 == "name=systemd" {print $3}' /proc/self/cgroup)
    FDN_CG_DIRS+=("/sys/fs/cgroup/systemd${v1%/}/fdn-systemd-$$")
  fi
  local d
  for d in "${FDN_CG_DIRS[@]}"; do mkdir "$d" || return 1; done
}

fdn_ns_boot() {
  FDN_W=$1; FDN_R=$FDN_W.ovl
  case "$FDN_W" in
    /tmp|/tmp/*) echo "fdn_ns_boot: the work dir must not be under /tmp (PrivateTmp= may mount over it)"; return 1 ;;
    /?*) ;;
    *) echo "fdn_ns_boot: the work dir must be an absolute path"; return 1 ;;
  esac
  FDN_SYSTEMD=$(_fdn_systemd_binary) || { echo "no systemd binary"; return 1; }
  mkdir -p "$FDN_W/units" "$FDN_R"
  # Guard 3: the boot target has no default dependencies and pulls in only journald (whose units have none either),
  # so that the namespace keeps a journal: systemd's messages and the services' output (journalctl via IN).
  cat > "$FDN_W/units/$FDN_TARGET" <<'EOF'
[Unit]
Description=Foundation test boot target
DefaultDependencies=no
Wants=systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service
After=systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service
EOF
  _fdn_cg_sweep_stale >&2
  FDN_CG_BEFORE=$(_fdn_systemd_cgroups)
  _fdn_cg_make || { echo "cannot create the sub-cgroups ${FDN_CG_DIRS[*]}"; return 1; }
  local want_cg=${FDN_CG_DIRS[0]#"$(_fdn_cgroup2_root)"}
  (
    for d in "${FDN_CG_DIRS[@]}"; do echo "$BASHPID" > "$d/cgroup.procs" || exit 1; done
    now=$(awk -F: '$1 == "0" {print $3}' "/proc/$BASHPID/cgroup")
    [ "$now" = "$want_cg" ] || { echo "guard: not in the sub-cgroup $want_cg (in '$now'); not starting systemd"; exit 1; }
    exec setpriv --pdeathsig KILL -- unshare --pid --fork --kill-child --mount --propagation private --uts --ipc --net --cgroup \
      "$FDN_HARNESS_DIR/ns-init.sh" "$FDN_W" "$FDN_R" "$FDN_REPO" "$FDN_SYSTEMD" "$FDN_TARGET"
  ) > "$FDN_W/unshare.log" 2>&1 &
  FDN_UNSHARE=$!
  FDN_PID1=
  local i
  for i in $(seq 100); do
    FDN_PID1=$(pgrep -P "$FDN_UNSHARE" -x systemd || true)
    [ -n "$FDN_PID1" ] && break
    kill -0 "$FDN_UNSHARE" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$FDN_PID1" ]; then
    local how="within 10 s"
    if ! kill -0 "$FDN_UNSHARE" 2>/dev/null; then wait "$FDN_UNSHARE"; how="(unshare exited with status $?)"; fi
    echo "systemd did not start $how: $(tail -3 "$FDN_W/unshare.log" | tr '\n' ' ')"
    return 1
  fi
  FDN_NS_PID=$(readlink "/proc/$FDN_PID1/ns/pid"); FDN_NS_MNT=$(readlink "/proc/$FDN_PID1/ns/mnt")
  _fdn_ns_ok || { echo "guard: pid $FDN_PID1 is not in namespaces of its own"; return 1; }
  local st=
  for i in $(seq 300); do
    st=$(SC is-system-running 2>/dev/null || true)
    [[ $st = running || $st = degraded ]] && break
    kill -0 "$FDN_PID1" 2>/dev/null || break
    sleep 0.1
  done
  if ! [[ $st = running || $st = degraded ]]; then
    echo "systemd did not finish booting (state '${st:-none}'): $(tail -3 "$FDN_W/unshare.log" 2>/dev/null | tr '\n' ' ')"
    return 1
  fi
  # Guard 1/2, checked: systemd uses the cgroup v2 mount we gave it and mounted no v1 hierarchy.
  if [ -n "$(IN findmnt -rn -t cgroup -o TARGET)" ] || [ "$(IN stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    echo "guard: systemd in the namespace mounted cgroup v1 hierarchies (host's roots); stopping"
    return 1
  fi
  # Guard 3, checked: nothing of the host's boot ran.
  if [ "$(SC is-active sysinit.target 2>/dev/null)" = active ]; then
    echo "guard: sysinit.target became active in the namespace; stopping"
    return 1
  fi
  return 0
}

# Cgroups named like the ones systemd creates first, anywhere in the host's hierarchies (see fdn_ns_check_clean).
_fdn_systemd_cgroups() {
  find /sys/fs/cgroup -mindepth 1 -type d \( -name init.scope -o -name system.slice \) 2>/dev/null | sort
}

# Guard 6: the process we nsenter is our namespace's PID 1, not anything in the host's namespaces.
_fdn_ns_ok() {
  [ -n "$FDN_PID1" ] && [ -e "/proc/$FDN_PID1" ] || return 1
  [ "$(ps -o ppid= -p "$FDN_PID1" | tr -d ' ')" = "$FDN_UNSHARE" ] || return 1
  [ "$(readlink "/proc/$FDN_PID1/ns/mnt")" = "$FDN_NS_MNT" ] || return 1
  [ "$(readlink "/proc/$FDN_PID1/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] || return 1
  [ "$(readlink "/proc/$FDN_PID1/ns/pid")" != "$(readlink /proc/self/ns/pid)" ] || return 1
}

IN() {
  _fdn_ns_ok || { echo "IN: the test namespace is not running; refusing to run '$*' on the host" >&2; return 125; }
  timeout --kill-after=5 "${FDN_IN_TIMEOUT:-30}" \
    nsenter --target "$FDN_PID1" --mount --pid --uts --ipc --net --cgroup -- "$@"
}
SC() { IN systemctl "$@"; }

fdn_ns_cleanup() {
  set +e
  local d p i
  if [ -n "$FDN_UNSHARE" ]; then
    # Guard 8: SIGKILL to the namespace's init ends every process in the PID namespace.
    # The kernel reaps the namespace's other processes before PID 1 is gone; unshare then exits by itself.
    if _fdn_ns_ok; then
      kill -KILL "$FDN_PID1" 2>/dev/null
      for i in $(seq 100); do [ -e "/proc/$FDN_PID1" ] || break; sleep 0.1; done
    fi
    for i in $(seq 50); do kill -0 "$FDN_UNSHARE" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$FDN_UNSHARE" 2>/dev/null   # --kill-child: takes PID 1 with it if it is still there
    wait "$FDN_UNSHARE" 2>/dev/null
    FDN_UNSHARE=
  fi
  # Backstop: everything the harness started lives in our sub-cgroups (only the subshell that exec'd unshare was
  # moved there); kill whatever is still in them, e.g. if PID 1 was lost track of.
  for d in "${FDN_CG_DIRS[@]}"; do
    [ -d "$d" ] || continue
    if [ -e "$d/cgroup.kill" ]; then echo 1 > "$d/cgroup.kill" 2>/dev/null; fi
    for p in $(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
  # Sub-cgroups, deepest first; a cgroup whose last task is still exiting refuses rmdir for a moment.
  for d in "${FDN_CG_DIRS[@]}"; do
    for i in $(seq 50); do
      [ -d "$d" ] || break
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$d" ] || break
      sleep 0.1
    done
  done
  # The overlay mount point: its tmpfs only ever existed in the namespace, so on the host it is an empty dir.
  if [ -n "$FDN_R" ] && [ -d "$FDN_R" ] && ! mountpoint -q "$FDN_R"; then rmdir "$FDN_R" 2>/dev/null; fi
  return 0
}

# After fdn_ns_cleanup: print what is left behind (and return 1), or return 0.
fdn_ns_check_clean() {
  local left=0 p d
  if [ -n "$FDN_NS_PID" ]; then
    # Every process whose PID or mount namespace is the test's (one find; brackets escaped for -lname's glob).
    local pat_pid=${FDN_NS_PID//[/\\[} pat_mnt=${FDN_NS_MNT//[/\\[}
    for p in $(find /proc/[0-9]*/ns -maxdepth 1 \( -lname "${pat_pid//]/\\]}" -o -lname "${pat_mnt//]/\\]}" \) 2>/dev/null |
               cut -d/ -f3 | sort -u); do
      echo "left behind: process $p ($(cat "/proc/$p/comm" 2>/dev/null)) in the test namespace"; left=1
    done
  fi
  for d in "${FDN_CG_DIRS[@]}"; do [ -d "$d" ] && { echo "left behind: cgroup $d"; left=1; }; done
  for d in $(comm -13 <(echo "$FDN_CG_BEFORE") <(_fdn_systemd_cgroups)); do
    echo "left behind: cgroup $d (outside our sub-cgroup)"; left=1
  done
  if findmnt -rn -o TARGET | grep -qF "${FDN_W:-/nonexistent}"; then echo "left behind: a mount under $FDN_W"; left=1; fi
  [ -n "$FDN_R" ] && [ -d "$FDN_R" ] && { echo "left behind: $FDN_R"; left=1; }
  return $left
}
