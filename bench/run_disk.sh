#!/usr/bin/env bash
# The SSD-tier measurement (InstInfer vs FlexGen): 2 ranks, f16 KV, a
# context whose KV is many times the memory rank's host pool, so most of it
# lives on the memory rank's disk tier; decode with near-storage attention
# (delegate: the memory rank computes as its blocks stream off its disk) vs
# fetch (pull: it reads them and ships them to rank 0, which computes), and
# the disk read rate achieved vs the same disk read-only and sequentially.
# One rank per network namespace, pinned one per core, tbf cap on every veth
# (scripts/netns-cluster); where namespaces are not permitted, plain mpirun
# on loopback instead (the summary's "where" says which).
# Writes bench/out/disk_*.json and bench/out/disk_summary.json (also printed).
#
#   bench/run_disk.sh [BUILD_DIR]      (default: build)
#   env: RATE (1gbit) CONTEXT (262144 tokens: 512 MiB of KV with the default
#        model) POOL (32MiB: the memory rank's host pool) COORD_HOST (32MiB:
#        rank 0's KV budget; its overflow goes to the memory rank)
#        DISK_DIR (/var/tmp/headwise-disk: must be a real disk, not tmpfs)
#        DISK_MEM (default: 1.25 x the KV + 64 MiB) STEPS (8) PULL_STEPS (3)
#        EXTRA (more distributed_bench arguments) RUN_TIMEOUT (600 seconds)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build="${1:-${BUILD:-build}}"
bench="$build/bench/distributed_bench"
rate="${RATE:-1gbit}"
context="${CONTEXT:-262144}"
disk_dir="${DISK_DIR:-/var/tmp/headwise-disk}"
out=bench/out
cluster=scripts/netns-cluster
[ -x "$bench" ] || { echo "run_disk: $bench not built (ninja -C $build distributed_bench)" >&2; exit 1; }
mkdir -p "$out" "$disk_dir"

# The disk tier must be on a disk: tmpfs would measure RAM (and refuses O_DIRECT).
fstype=$(df --output=fstype "$disk_dir" | tail -1 | tr -d ' ')
case "$fstype" in
  tmpfs | ramfs | overlay) echo "run_disk: $disk_dir is on $fstype, not a disk (set DISK_DIR)" >&2; exit 1 ;;
esac
device=$(df --output=source "$disk_dir" | tail -1 | tr -d ' ')

# KV bytes per token of the default synthetic model (2 layers x 4 kv heads x
# 64 dims x K,V x 2 bytes of f16) sizes the default disk budget.
kv_bytes=$((context * 2 * 4 * 64 * 2 * 2))
disk_mem="${DISK_MEM:-$((kv_bytes * 5 / 4 + (64 << 20)))}"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OMPI_MCA_btl UCX_TLS UCX_NET_DEVICES

# shellcheck disable=SC2206,SC2054
common=(--context "$context" --steps "${STEPS:-8}" --pull-steps "${PULL_STEPS:-3}" --threads 1
  --modes pull,delegate --kv-dtype f16 --pool "${POOL:-32MiB}"
  --coordinator-host "${COORD_HOST:-32MiB}" --disk-dir "$disk_dir" --disk-mem "$disk_mem"
  --rtt-context 0 --sweep-context 0 ${EXTRA:-})

run() { # name label mpirun-args...
  local name="$1" label="$2"
  shift 2
  local launch="mpirun $* $bench ${common[*]}"
  echo "== $name: $launch" >&2
  # A bounded wait: a launch where one orted never comes up hangs mpirun.
  timeout "${RUN_TIMEOUT:-600}" mpirun "$@" "$bench" "${common[@]}" --label "$label" \
    --launch "$launch" --out "$out/$name.json"
}

if why=$("$cluster" check 2>&1); then
  trap '"$cluster" down >/dev/null 2>&1 || true' EXIT INT TERM
  # shellcheck disable=SC2207
  args=($("$cluster" up 2 --rate "$rate" --pin 2>/dev/null))
  name=disk_netns_np2
  run "$name" "netns, 2 ranks pinned one per core, tbf $rate on every veth, disk $disk_dir ($fstype on $device)" \
    --allow-run-as-root --oversubscribe "${args[@]}"
  "$cluster" down >/dev/null
  where="network namespaces, tbf $rate on every veth, ranks pinned one per core"
else
  echo "run_disk: no network namespaces here ($why): plain mpirun on loopback, no rate cap" >&2
  name=disk_loopback_np2
  run "$name" "loopback (no namespaces: $why), 2 ranks bound one per core, disk $disk_dir ($fstype on $device)" \
    --allow-run-as-root -np 2 --bind-to core --map-by core --mca pml ob1 --mca btl self,vader
  where="loopback without namespaces ($why), no rate cap, ranks bound one per core"
fi

python3 - "$out/$name.json" "$out/disk_summary.json" "$where" "$fstype on $device" <<'PY'
import json, sys
path, summary_path, where, disk = sys.argv[1:]
r = json.load(open(path))
runs = {run["mode"]: run for run in r["runs"] if run["purpose"] == "main"}
near, fetch = runs["delegate"], runs["pull"]
d = r["disk"]
summary = {
    "report": path,
    "where": where,
    "disk": disk,
    "machine": {k: r["machine"].get(k) for k in ("cpu", "cores", "memory_gib", "hostname") if k in r["machine"]},
    "link_gbps_probe": r["probes"][1]["link_gbps"],
    "context_tokens": near["context_tokens"],
    "kv_bytes_per_step": near["kv_bytes"],
    "memory_rank_pool_bytes": d["memory_rank_pool_bytes"],
    "fraction_of_kv_on_disk": near["disk"]["fraction_of_kv_on_disk"],
    "disk_bytes_read_per_step": near["disk"]["disk_bytes_read_per_step"],
    "near_storage_s_per_step": near["step_seconds"],
    "fetch_s_per_step": fetch["step_seconds"],
    "speedup": fetch["step_seconds"] / near["step_seconds"],
    "achieved_read_gbps": {"near_storage": near["disk"]["achieved_read_gbps"],
                           "fetch": fetch["disk"]["achieved_read_gbps"]},
    "read_only_gbps": d["read_only_gbps"],
    "sorted_read_only_gbps": sum(x["sorted_stream_gbps"] for x in d["read_only"]),
    "sequential_gbps": d["sequential_read_gbps"],
    "probe_sequential_gbps": r["probes"][1]["disk_read_gbps"],
    "ratio_achieved_over_sequential": {"near_storage": near["disk"]["achieved_over_sequential"],
                                       "fetch": fetch["disk"]["achieved_over_sequential"]},
    "ratio_achieved_over_read_only": {"near_storage": near["disk"]["achieved_over_read_only"],
                                      "fetch": fetch["disk"]["achieved_over_read_only"]},
    "memory_rank_attention_cpu_s_per_step": near["per_rank"][1]["attention_cpu_seconds_per_step"],
    "memory_rank_disk_pool_read_s_per_step": {
        "near_storage": near["per_rank"][1]["disk_read_seconds_per_step"],
        "fetch": fetch["per_rank"][1]["disk_read_seconds_per_step"]},
    "rank0_fetch_s_per_step": fetch["disk"]["rank0_disk_seconds_per_step"],
    "fill_seconds": {"near_storage": near["fill_seconds"], "fetch": fetch["fill_seconds"]},
    "others_cpu_fraction": {"near_storage": near["others_cpu_fraction"],
                            "fetch": fetch["others_cpu_fraction"]},
    "total_seconds": r["total_seconds"],
}
json.dump(summary, open(summary_path, "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
