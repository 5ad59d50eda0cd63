#!/usr/bin/env bash
# `make test-systemd`: the shipped systemd/foundation.service under a real systemd, booted as PID 1 of private
# namespaces by harness.sh (see its header and docs/systemd.md for the guards). Root only: elsewhere it prints
# "SKIP: <reason>" and exits 0 (FDN_SYSTEMD_STRICT=1 makes a skip fail instead).
#
# Checks (each waits on a condition with a deadline, polling `systemctl show`; none sleeps and hopes):
#   start     `systemctl start` returns only after READY=1, which comes only once the whole tree runs
#   sigkill   SIGKILL of foundationd: the unit is restarted (Restart=on-failure), the old tree does not linger
#   watchdog  SIGSTOP of foundationd: WatchdogSec= kills it and the unit is restarted
#   reload    `systemctl reload`: SIGHUP applies the new config in place (same MainPID), back to running;
#             an invalid config leaves the unit running and the tree unchanged
#   upgrade   `foundationctl upgrade --wait`: foundationd re-executes itself, same MainPID, no restart, same tree
#             (an agent attached at run time included: same pid, its messages counted once)
#   stop      `systemctl stop`: Result=success, exit status 0, the daemon stopped its tree itself, nothing left
#   teardown  the namespace leaves no process, mount or cgroup behind
# Every check prints PASS:/FAIL: lines; the exit status is 1 if any failed.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/systemd/harness.sh
source "$HERE/harness.sh"
REPO=$FDN_REPO
UNIT=foundation.service
PY=$REPO/.venv/bin/python
CTL=$REPO/.venv/bin/foundationctl
SLOW_READY=2            # seconds the slow-ready worker waits before its READY=1
RELOAD_READY=1          # the same for the worker a reload adds
WORKERS="sleeper-a sleeper-b slow-ready"

T_START=$(date +%s.%N)
FAILS=0 PASSES=0 W= BOOTED=0 SKIPPED=0

skip() {
  echo "SKIP: test-systemd: $*"
  SKIPPED=1
  [ "${FDN_SYSTEMD_STRICT:-0}" = 1 ] && exit 1
  exit 0
}
pass() { echo "PASS: $*"; PASSES=$((PASSES + 1)); }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
verdict() { if [ "$1" = 0 ]; then pass "$2"; else fail "$2"; fi; }   # verdict STATUS DESCRIPTION
now() { date +%s.%N; }
phase() { echo "--- $1 (at $(since "$T_START") s)"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

# ---- reading the unit and the tree ----

declare -A P
props() {   # the unit's properties into P
  P=()
  local line
  while IFS= read -r line; do P[${line%%=*}]=${line#*=}; done < <(
    SC show -p ActiveState,SubState,MainPID,NRestarts,Result,ReloadResult,ExecMainCode,ExecMainStatus \
      -p ControlGroup,WatchdogUSec "$UNIT" 2>/dev/null)
}
unit_state() { echo "ActiveState=${P[ActiveState]:-?} SubState=${P[SubState]:-?} MainPID=${P[MainPID]:-?} NRestarts=${P[NRestarts]:-?} Result=${P[Result]:-?}"; }

# One line per worker of the running daemon: "name state pid" (pids as seen in the namespace).
tree() {
  IN env FOUNDATION_RUNTIME_DIR=/run/foundation "$CTL" status --json 2>/dev/null | "$PY" -c '
import json, sys
def walk(node):
    if node.get("type") == "worker":
        print(node["name"], node["state"], node.get("pid") or 0)
    for child in node.get("children", ()):
        walk(child)
walk(json.load(sys.stdin)["tree"])' 2>/dev/null
}
# True if every named worker is running with a pid.
tree_running() {
  local t name; t=$(tree) || return 1
  for name in "$@"; do echo "$t" | grep -qE "^$name running [1-9][0-9]*$" || return 1; done
}
pids_of() { tree | awk '$3 > 0 { print $3 }' | tr '\n' ' '; }
pid_of() { tree | awk -v n="$1" '$1 == n { print $3 }'; }
# True if none of the given pids (namespace pids) exists any more.
all_gone() { local p; for p in "$@"; do IN kill -0 "$p" 2>/dev/null && return 1; done; return 0; }

# wait_until SECONDS COMMAND...: poll COMMAND every 0.1 s until it succeeds (0) or the deadline passes (1).
wait_until() {
  local deadline=$(( $(date +%s%N) + $1 * 1000000000 )); shift
  until "$@"; do
    [ "$(date +%s%N)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}
is_up() { props; [ "${P[ActiveState]}" = active ] && [ "${P[SubState]}" = running ]; }
# Up again with a new main process and at least $2 restarts.
restarted() { props; [ "${P[ActiveState]}" = active ] && [ "${P[SubState]}" = running ] &&
  [ "${P[MainPID]}" != 0 ] && [ "${P[MainPID]}" != "$1" ] && [ "${P[NRestarts]}" -ge "$2" ]; }
# The namespace's journal: systemd's messages about the unit and foundationd's output.
journal_mark() { IN journalctl -n 0 --show-cursor --no-pager -q 2>/dev/null | sed -n 's/^-- cursor: //p'; }
journal_since() { IN journalctl --after-cursor="$1" -u "$UNIT" --no-pager -o cat 2>/dev/null; }
journal_has() { journal_since "$1" | grep -qF -- "$2"; }   # journal_has MARK TEXT

# ---- teardown (always) ----

on_exit() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ "$BOOTED" = 1 ]; then
    IN journalctl --no-pager -o short-monotonic > "$W/journal.txt" 2>&1 || true
    fdn_ns_cleanup
    if left=$(fdn_ns_check_clean); then
      pass "teardown: no process, mount namespace, mount or cgroup left behind"
    else
      fail "teardown: $left"
    fi
  fi
  if [ "$SKIPPED" = 1 ]; then
    [ -n "$W" ] && rm -rf "$W"
    exit "$rc"
  fi
  [ "$rc" -ne 0 ] && [ "$FAILS" = 0 ] && echo "test-systemd: aborted (exit status $rc)"
  if [ "$FAILS" -gt 0 ] || [ "$rc" -ne 0 ]; then
    [ -n "$W" ] && echo "logs kept in $W (journal.txt: the namespace's journal, systemd's and foundationd's lines)"
    echo "test-systemd: $PASSES passed, $FAILS failed in $(since "$T_START") s"
    exit 1
  fi
  [ -n "$W" ] && rm -rf "$W"
  echo "test-systemd: $PASSES passed, 0 failed in $(since "$T_START") s"
  exit 0
}

# ---- preflight and boot ----

reason=$(fdn_ns_preflight) || skip "$reason"
[ -x "$REPO/.venv/bin/foundationd" ] || skip "no $REPO/.venv/bin/foundationd (run make test-systemd, which builds the venv)"
W=$(mktemp -d /var/tmp/fdn-systemd.XXXXXX)
trap on_exit EXIT
trap 'exit 130' INT TERM HUP
t0=$(now)
BOOTED=1   # from here on the EXIT trap tears down whatever came up
# Not in $(...): fdn_ns_boot sets the harness's state (PID 1, cgroups) in this shell.
if ! fdn_ns_boot "$W" > "$W/boot.err"; then
  fdn_ns_cleanup
  BOOTED=0
  # Booting needs nothing that preflight did not check, so this machine cannot do it: skip, saying why.
  skip "systemd could not be booted in a namespace here: $(cat "$W/boot.err")"
fi
echo "booted systemd $("$FDN_SYSTEMD" --version | awk 'NR == 1 { print $2 }') as PID 1 of private namespaces in $(since "$t0") s (work dir $W)"

[ "$(SC is-active systemd-journald.service)" = active ]
verdict $? "boot: journald runs in the namespace (systemd's and foundationd's log lines are checked below)"

# ---- install: the shipped unit unmodified, plus a test drop-in ----

cat > "$W/tree.toml" <<EOF
# The systemd test tree: two plain workers and one that sends READY=1 late.
[supervisor]
strategy = "one_for_one"
intensity = 3
period = 5.0

[[supervisor.children]]
name = "sleeper-a"
command = ["/bin/sleep", "infinity"]

[[supervisor.children]]
name = "sleeper-b"
command = ["/bin/sleep", "infinity"]

[[supervisor.children]]
name = "slow-ready"
command = ["$PY", "$HERE/slow_ready.py", "$SLOW_READY"]
ready = "notify"
EOF
# Reload adds a worker that, like slow-ready, is ready only after RELOAD_READY s: the reload is complete then.
{ cat "$W/tree.toml"; printf '\n[[supervisor.children]]\nname = "added"\ncommand = ["%s", "%s", "%s"]\nready = "notify"\n' \
  "$PY" "$HERE/slow_ready.py" "$RELOAD_READY"; } > "$W/tree-added.toml"
printf '[supervisor]\nstrategy = "no_such_strategy"\n' > "$W/tree-invalid.toml"
cat > "$W/10-test.conf" <<EOF
# Test drop-in (tests/systemd/run.sh); the unit file next to it is systemd/foundation.service, unmodified.
[Unit]
# Guard: with the default dependencies the unit would pull in sysinit.target and with it the host's boot services.
DefaultDependencies=no

[Service]
# This checkout's foundationd and a small test tree, instead of /opt/foundation/venv and /etc/foundation's tree.
ExecStart=
ExecStart=$REPO/.venv/bin/foundationd --config /etc/foundation/foundation.toml
ExecReload=
ExecReload=$REPO/.venv/bin/foundationctl --runtime-dir /run/foundation reload
EOF
IN mkdir -p /etc/systemd/system/$UNIT.d /etc/foundation
IN cp "$REPO/systemd/foundation.service" /etc/systemd/system/$UNIT
IN cp "$W/10-test.conf" /etc/systemd/system/$UNIT.d/10-test.conf
IN cp "$W/tree.toml" /etc/foundation/foundation.toml
# A unit ordered after foundation.service references it, so systemd keeps it loaded once it is inactive: without
# it, the unit is garbage-collected when it stops and `systemctl show` reports defaults (Result=success, status 0).
printf '[Unit]\nDescription=Keeps %s loaded\nDefaultDependencies=no\nAfter=%s\n' "$UNIT" "$UNIT" > "$W/units/fdn-pin.target"
SC daemon-reload
SC start fdn-pin.target
IN cmp -s "$REPO/systemd/foundation.service" /etc/systemd/system/$UNIT
verdict $? "install: the shipped unit is installed byte for byte, only a drop-in added (paths of ExecStart/ExecReload, DefaultDependencies=no)"

# ---- start: returns only after READY=1, which comes only once the whole tree is up ----

phase start
t0=$(now)
( FDN_IN_TIMEOUT=60 SC start "$UNIT"; echo $? > "$W/start.rc" ) &
starter=$!
waited_activating=0
deadline=$(( $(date +%s%N) + 60 * 1000000000 ))
while kill -0 "$starter" 2>/dev/null && [ "$(date +%s%N)" -lt "$deadline" ]; do
  props
  if [ "${P[ActiveState]:-}" = activating ] && [ "${P[MainPID]:-0}" != 0 ] && kill -0 "$starter" 2>/dev/null; then
    waited_activating=1
  fi
  sleep 0.1
done
wait "$starter"
took=$(since "$t0")
props
after=$(tree)
[ "$(cat "$W/start.rc" 2>/dev/null)" = 0 ]
verdict $? "start: systemctl start exited 0 after $took s"
[ "$waited_activating" = 1 ]
verdict $? "start: while systemctl start was waiting, foundationd was running (MainPID set) and the unit 'activating'"
ge "$took" "$SLOW_READY"
verdict $? "start: it took $took s >= $SLOW_READY s, the delay of the slow-ready worker's READY=1"
[ "${P[ActiveState]}" = active ] && [ "${P[SubState]}" = running ]
verdict $? "start: right after it returned: $(unit_state)"
tree_running $WORKERS
verdict $? "start: right after it returned, every worker runs: $(echo "$after" | tr '\n' ';')"
[ "${P[WatchdogUSec]}" = 10s ]
verdict $? "start: the unit's watchdog is armed (WatchdogUSec=${P[WatchdogUSec]:-?})"
status_text=$(SC show -p StatusText --value "$UNIT")
case "$status_text" in *3/3*) true ;; *) false ;; esac   # the daemon's summary counts 3 of 3 workers running
verdict $? "start: the daemon's STATUS= summary is shown: '$status_text'"
[ "$(SC is-active sysinit.target)" != active ]
verdict $? "start: guard held, sysinit.target (the host's boot) stayed inactive"

# ---- SIGKILL of the daemon: restarted ----

phase sigkill
props; main=${P[MainPID]}; n0=${P[NRestarts]}; old=$(pids_of)
t0=$(now)
IN kill -KILL "$main"
wait_until 30 restarted "$main" $((n0 + 1))
verdict $? "sigkill: foundationd (pid $main) SIGKILLed, the unit is running again $(since "$t0") s later: $(unit_state)"
[ "${P[NRestarts]}" = $((n0 + 1)) ]
verdict $? "sigkill: NRestarts went from $n0 to ${P[NRestarts]}"
tree_running $WORKERS
verdict $? "sigkill: the new daemon's tree runs: $(tree | tr '\n' ';')"
# shellcheck disable=SC2086
all_gone $old
verdict $? "sigkill: the old tree's workers ($old) are gone (their parent-death signal; KillMode=mixed would SIGKILL any left)"

# ---- watchdog: a wedged daemon is killed and restarted ----

phase watchdog
props; main=${P[MainPID]}; n0=${P[NRestarts]}; old=$(pids_of)
mark=$(journal_mark)
saw=" "
killed_after=
watch_progress() {
  props
  saw="$saw${P[Result]} "
  if [ -z "$killed_after" ] && [ "${P[MainPID]}" != "$main" ]; then killed_after=$(since "$t0"); fi
  restarted "$main" $((n0 + 1))
}
t0=$(now)
IN kill -STOP "$main"
wait_until 60 watch_progress
verdict $? "watchdog: foundationd (pid $main) SIGSTOPped, the unit is running again $(since "$t0") s later: $(unit_state)"
ge "${killed_after:-999}" 0 && ! ge "${killed_after:-999}" 12
verdict $? "watchdog: the wedged daemon was killed ${killed_after:-never} s after SIGSTOP (WatchdogSec=10s, pings every 5 s)"
wait_until 5 journal_has "$mark" "Watchdog timeout"
timeout_line=$(journal_since "$mark" | grep -m1 "Watchdog timeout")
case "$saw" in *" watchdog "*) saw_result=1 ;; *) saw_result=0 ;; esac
[ -n "$timeout_line" ] && [ "$saw_result" = 1 ]
verdict $? "watchdog: systemd says so (Result=watchdog seen: $saw_result; journal: ${timeout_line:-none})"
tree_running $WORKERS
verdict $? "watchdog: the new daemon's tree runs: $(tree | tr '\n' ';')"
# shellcheck disable=SC2086
all_gone $old
verdict $? "watchdog: the wedged daemon's workers ($old) are gone"

# ---- reload ----

phase reload
reload_to() { IN cp "$W/$1" /etc/foundation/foundation.toml && SC reload "$UNIT"; }
no_added_and_up() { ! tree | grep -q '^added ' && is_up; }
added_and_up() { tree_running $WORKERS added && is_up; }
props; main=${P[MainPID]}; n0=${P[NRestarts]}; keep=$(pid_of sleeper-a)
t0=$(now)
reload_to tree-added.toml
rc=$?
took=$(since "$t0")
right_after=$(tree | tr '\n' ';')
verdict $rc "reload: systemctl reload exited $rc after $took s"
wait_until 20 tree_running $WORKERS added
verdict $? "reload: the worker added to the config runs $(since "$t0") s later: $(tree | tr '\n' ';')"
wait_until 10 is_up
verdict $? "reload: the unit is back to running (READY=1 after RELOADING=1): $(unit_state) ReloadResult=${P[ReloadResult]:-?}"
[ "${P[ReloadResult]}" = success ]
verdict $? "reload: ReloadResult=${P[ReloadResult]:-?}"
# Does `systemctl reload` wait for the daemon to finish? Freeze foundationd (SIGSTOP) and reload: a reload that
# completes while the daemon cannot run did not wait for it. (With ExecReload=kill -HUP, systemd waits for READY=1
# only if the daemon's RELOADING=1 reaches it before kill's exit does: a race, which this makes deterministic.)
# The daemon stays frozen at most 1.5 s, well inside WatchdogSec.
reload_to tree.toml >/dev/null; wait_until 20 no_added_and_up
IN cp "$W/tree-added.toml" /etc/foundation/foundation.toml
IN kill -STOP "$main"
t0=$(now)
( SC reload "$UNIT"; echo $? > "$W/reload.rc" ) &
reloader=$!
frozen_done=
for i in $(seq 15); do kill -0 "$reloader" 2>/dev/null || { frozen_done=$(since "$t0"); break; }; sleep 0.1; done
IN kill -CONT "$main"
wait "$reloader"
took=$(since "$t0")
wait_until 20 added_and_up
if [ -z "$frozen_done" ]; then
  pass "reload: systemctl reload waits for the daemon: with foundationd frozen it had not returned after 1.5 s; it returned (exit $(cat "$W/reload.rc")) once thawed, $took s after"
else
  fail "reload: systemctl reload waits for the daemon: with foundationd frozen it returned (exit $(cat "$W/reload.rc")) after $frozen_done s, before the daemon could act (ExecReload=kill -HUP only queues a signal)"
fi
props
[ "${P[MainPID]}" = "$main" ] && [ "${P[NRestarts]}" = "$n0" ] && [ "$(pid_of sleeper-a)" = "$keep" ]
verdict $? "reload: in place, no restart: MainPID $main -> ${P[MainPID]}, NRestarts $n0 -> ${P[NRestarts]}, sleeper-a pid $keep -> $(pid_of sleeper-a)"

before=$(tree)
mark=$(journal_mark)
IN cp "$W/tree-invalid.toml" /etc/foundation/foundation.toml
SC reload "$UNIT" 2> "$W/reload-invalid.err"
rc=$?
# The daemon answers an invalid config with RELOADING=1, a log line, READY=1: wait for the line, then look.
wait_until 10 journal_has "$mark" "reload refused"
wait_until 10 is_up
verdict $? "reload (invalid config): systemctl reload exited $rc and the unit stays up: $(unit_state)"
[ "${P[MainPID]}" = "$main" ] && [ "$(tree)" = "$before" ]
verdict $? "reload (invalid config): same daemon, tree unchanged"
IN cp "$W/tree-added.toml" /etc/foundation/foundation.toml

# ---- upgrade: foundationctl upgrade re-executes foundationd in place ----

phase upgrade
same_tree() { [ "$(tree)" = "$1" ] && is_up; }
FCTL() { IN "$CTL" --runtime-dir /run/foundation "$@"; }
counted() { FCTL call counter '{"get": true}' 2>/dev/null | grep -qF "\"count\":$1}"; }
# An agent too (attached at run time): its messages before and after the upgrade all count, once.
FCTL attach counter --agent agents.examples.counter:Counter > "$W/attach.out" 2>&1
verdict $? "upgrade: an agent attached at run time: $(tr '\n' ' ' < "$W/attach.out")"
printf '{"add": 1}\n%.0s' $(seq 200) | FCTL send counter - > /dev/null
wait_until 20 counted 200
verdict $? "upgrade: the agent counted 200 messages before the upgrade"
props; main=${P[MainPID]}; n0=${P[NRestarts]}; before=$(tree)
mark=$(journal_mark)
t0=$(now)
IN "$CTL" --runtime-dir /run/foundation upgrade --wait > "$W/upgrade.out" 2>&1
rc=$?
took=$(since "$t0")
verdict $rc "upgrade: foundationctl upgrade --wait exited $rc after $took s: $(tr '\n' ' ' < "$W/upgrade.out")"
wait_until 20 same_tree "$before"
verdict $? "upgrade: the unit is up with the same tree (every pid kept): $(unit_state); $(tree | tr '\n' ';')"
[ "${P[MainPID]}" = "$main" ] && [ "${P[NRestarts]}" = "$n0" ]
verdict $? "upgrade: same main pid, no restart: MainPID $main -> ${P[MainPID]}, NRestarts $n0 -> ${P[NRestarts]}"
printf '{"add": 1}\n%.0s' $(seq 200) | FCTL send counter - > /dev/null
wait_until 20 counted 400
verdict $? "upgrade: the agent, same pid $(pid_of counter), counted 400 after 200 more, each once"
wait_until 10 journal_has "$mark" "children adopted"
verdict $? "upgrade: foundationd logged the adoption: $(journal_since "$mark" | grep -m1 'children adopted')"
exited=$(journal_since "$mark" | grep -E "Main process exited|Killing process|Failed with result")
[ -z "$exited" ]
verdict $? "upgrade: systemd saw no exit of the main process and killed nothing${exited:+: $exited}"

# ---- stop ----

phase stop
props; main=${P[MainPID]}; cg=${P[ControlGroup]}; old="$main $(pids_of)"
mark=$(journal_mark)
t0=$(now)
FDN_IN_TIMEOUT=120 SC stop "$UNIT"
rc=$?
took=$(since "$t0")
props
verdict $rc "stop: systemctl stop exited $rc after $took s"
[ "${P[ActiveState]}" = inactive ] && [ "${P[SubState]}" = dead ] && [ "${P[Result]}" = success ]
verdict $? "stop: $(unit_state)"
[ "${P[ExecMainCode]}" = 1 ] && [ "${P[ExecMainStatus]}" = 0 ]
verdict $? "stop: foundationd exited with status 0 (ExecMainCode=${P[ExecMainCode]:-?} ExecMainStatus=${P[ExecMainStatus]:-?})"
# shellcheck disable=SC2086
all_gone $old && ! IN test -e "/sys/fs/cgroup$cg"
verdict $? "stop: no process left: daemon and workers ($old) gone, cgroup $cg removed"
wait_until 5 journal_has "$mark" "Deactivated successfully"
verdict $? "stop: systemd logged '$UNIT: Deactivated successfully.'"
killed=$(journal_since "$mark" | grep "Killing process")
[ -z "$killed" ]
verdict $? "stop: the daemon stopped its own tree; systemd had nothing left to kill${killed:+: $killed}"
