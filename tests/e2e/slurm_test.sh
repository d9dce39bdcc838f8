#!/usr/bin/env bash
# e2e.slurm: launcher/slurm/headwise.sbatch on a one-node Slurm cluster
# started here (slurmctld + slurmd as root in a temp dir, auth/none, so no
# munge): a 3-task job per launch variant (srun --mpi=pmix, and mpirun through
# `headwise launch`) serves the model; the passkey is found over gRPC, status
# lists ranks 0, 1, 2 with KV on the memory ranks, scancel ends the job.
# Usage: slurm_test.sh HEADWISE MODEL [srun|mpirun ...]. Exits 77 (skip)
# without the model, root, or the Slurm daemons.
set -uo pipefail

hw=${1:?usage: slurm_test.sh HEADWISE MODEL [VARIANT...]}
model=${2:?usage: slurm_test.sh HEADWISE MODEL [VARIANT...]}
shift 2
hw=$(realpath "$hw" 2>/dev/null || echo "$hw")
model=$(realpath "$model" 2>/dev/null || echo "$model")
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(srun mpirun)
here=$(cd "$(dirname "$0")" && pwd)
sbatch_script=$(cd "$here/../../launcher/slurm" && pwd)/headwise.sbatch
QUESTION="What is the pass key? Answer with the number only."
KEY=71432

skip() {
  echo "SKIP: $*"
  exit 77
}
PATH=$PATH:/usr/sbin:/sbin  # slurmctld and slurmd live in sbin
[ -f "$model" ] || skip "$model not found: run scripts/fetch-model"
[ -x "$hw" ] || skip "$hw not built"
[ "$(id -u)" -eq 0 ] || skip "starting slurmd needs root"
for tool in slurmctld slurmd sbatch srun squeue sinfo scancel scontrol python3; do
  command -v "$tool" >/dev/null ||
    skip "$tool not found: install slurm-wlm (scripts/install-deps)"
done

started=$(date +%s)
passed=0
failed=0
check() {  # check NAME OK [DETAIL]
  if [ "$2" = 1 ]; then
    passed=$((passed + 1))
    echo "PASS $1"
  else
    failed=$((failed + 1))
    echo "FAIL $1: ${3:-}"
  fi
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

tmp=$(mktemp -d /tmp/headwise-slurm.XXXXXX)
export SLURM_CONF=$tmp/slurm.conf
daemons=()
jobs_submitted=()

# Processes of one of our jobs still alive (SLURM_JOB_ID and this cluster's
# SLURM_CONF in their environment): the last resort after scancel, so nothing
# outlives the test, and nothing of a cluster beside ours is touched.
job_pids() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$({ tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null |
      grep -cxE "SLURM_JOB_ID=$1|SLURM_CONF=$SLURM_CONF")" = 2 ] && echo "$pid"
  done
}
job_alive() { squeue -h -j "$1" -o %i 2>/dev/null | grep -q .; }
wait_job_gone() {  # wait_job_gone JOB SECONDS
  local until=$(($(date +%s) + $2))
  while job_alive "$1" && [ "$(date +%s)" -lt "$until" ]; do sleep 0.5; done
  ! job_alive "$1"
}

cleanup() {
  local job pid i
  [ -n "${watchdog:-}" ] && kill "$watchdog" 2>/dev/null
  for job in "${jobs_submitted[@]}"; do
    if job_alive "$job"; then
      scancel "$job" 2>/dev/null
      wait_job_gone "$job" 20
    fi
  done
  scontrol shutdown >/dev/null 2>&1
  for i in $(seq 50); do
    alive=0
    for pid in "${daemons[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for pid in "${daemons[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for job in "${jobs_submitted[@]}"; do
    for pid in $(job_pids "$job"); do kill -KILL "$pid" 2>/dev/null; done
  done
  wait 2>/dev/null
  if [ -n "${HEADWISE_TEST_KEEP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'echo "FAIL: interrupted or past the time limit"; exit 1' INT TERM
# Bounded: past 400 s (ctest allows 600; a running ask may add 180) the test
# fails and still cleans up.
(
  sleep "${HEADWISE_TEST_DEADLINE:-400}" &
  sleeper=$!
  trap 'kill $sleeper; exit 0' TERM
  wait $sleeper && kill -TERM $$
) >/dev/null 2>&1 &
watchdog=$!

# A one-node cluster: the node has the machine's real CPU count (slurmd
# refuses a node configured with more), jobs ask for 3 tasks with
# --overcommit. Own ports, a random first job id and TmpFS (PMIx keeps
# per-job files named by job id there) let two such clusters run side by side.
host=$(hostname -s)
cpus=$(nproc)
ctld_port=$(free_port)
slurmd_port=$(free_port)
mkdir -p "$tmp/state" "$tmp/spool"
: >"$tmp/plugstack.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=headwise-test
FirstJobId=$((RANDOM * 1000 + RANDOM % 1000 + 1000))
TmpFS=$tmp
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
PlugStackConfig=$tmp/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=10
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=hwnode NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=hwnode Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -f "$SLURM_CONF" >"$tmp/slurmctld.out" 2>&1 &
daemons+=($!)
slurmd -D -N hwnode -f "$SLURM_CONF" >"$tmp/slurmd.out" 2>&1 &
daemons+=($!)
state=""
for i in $(seq 60); do
  state=$(sinfo -h -N -o %T 2>/dev/null)
  [ "$state" = idle ] && break
  sleep 0.5
done
check "one-node cluster up (node $state after $(($(date +%s) - started)) s)" \
  "$([ "$state" = idle ] && echo 1)" "$(tail -n 5 "$tmp/slurmctld.log" "$tmp/slurmd.log" 2>&1)"
[ "$state" = idle ] || exit 1

doc=$tmp/passkey.txt
python3 -c "import sys; sys.path.insert(0, sys.argv[1]); from service_test import passkey_document
open(sys.argv[2], 'w').write(passkey_document(int(sys.argv[3])))" "$here" "$doc" "$KEY"

for variant in "${variants[@]}"; do
  t0=$(date +%s)
  port=$(free_port)
  addr=127.0.0.1:$port
  log=$tmp/job-$variant.log
  # Settings reach serve through the environment (sbatch exports it):
  # HEADWISE_KV_BLOCK=64 spreads this short document over the memory ranks.
  job=$(HEADWISE_BIN=$hw HEADWISE_LAUNCH=$variant HEADWISE_MODEL=$model HEADWISE_LISTEN=$addr \
    HEADWISE_KV_BLOCK=64 sbatch --parsable --nodes=1 --ntasks=3 --overcommit \
    --time=10 -D "$tmp" -o "$log" "$sbatch_script" 2>&1)
  if ! [[ "$job" =~ ^[0-9]+$ ]]; then
    check "$variant: sbatch submits the job" 0 "$job"
    continue
  fi
  jobs_submitted+=("$job")

  ready=0
  deadline=$(($(date +%s) + 120))
  while [ "$(date +%s)" -lt "$deadline" ] && job_alive "$job"; do
    if "$hw" status --server "$addr" --wait --wait-seconds 2 >/dev/null 2>&1; then
      ready=1
      break
    fi
    sleep 0.5
  done
  check "$variant: job $job serves on $addr ($(($(date +%s) - t0)) s)" "$ready" \
    "$(cat "$log" 2>/dev/null | tail -n 20)"
  if [ $ready = 1 ]; then
    t1=$(date +%s)
    out=$(timeout 180 "$hw" ask --server "$addr" -f "$doc" "$QUESTION" -n 16 2>"$tmp/ask.err")
    rc=$?
    check "$variant: ask --file finds the passkey ($(($(date +%s) - t1)) s)" \
      "$([ $rc = 0 ] && [[ "$out" == *$KEY* ]] && echo 1)" \
      "rc=$rc stdout=$out stderr=$(tail -c 400 "$tmp/ask.err")"
    st=$("$hw" status --server "$addr" 2>&1)
    ranks=$(grep -oE '^rank [0-9]+ ' <<<"$st" | awk '{print $2}' | tr '\n' ' ')
    # Ranks 1 and 2 hold KV: their peak is above zero.
    kv_ranks=$(grep -E '^rank [12] .*peak [0-9.]+ MiB' <<<"$st" |
      grep -cvE 'peak 0\.0 MiB')
    check "$variant: status lists ranks 0 1 2, KV on ranks 1 and 2" \
      "$([ "$ranks" = "0 1 2 " ] && [ "$kv_ranks" = 2 ] && echo 1)" "$st"
  fi

  t1=$(date +%s)
  scancel "$job"
  wait_job_gone "$job" 60
  gone=$?
  check "$variant: scancel ends the job ($(($(date +%s) - t1)) s)" "$([ $gone = 0 ] && echo 1)" \
    "$(squeue -j "$job" 2>&1)"
  if [ "$variant" = srun ]; then
    # srun passes scancel's SIGTERM to every task: rank 0 drains and stops.
    check "$variant: rank 0 drained on scancel" \
      "$(grep -q 'headwise serve: stopped' "$log" && echo 1)" "$(tail -n 8 "$log")"
  fi
  [ $failed = 0 ] || { echo "--- job log ($log)"; tail -n 40 "$log"; }
done

echo "$passed passed, $failed failed in $(($(date +%s) - started)) s"
[ $failed = 0 ]
