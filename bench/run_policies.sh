#!/usr/bin/env bash
# Decode speed and KV bytes per tier of the attention policies at one
# context, side by side: exact vs hybrid vs quantkv on the same placement,
# in one process and with ranks (mpirun on this host, delegate mode; every
# rank's pool HOST_MEM, so each holds its kv heads' share). The default
# model, a passkey document of LENGTH tokens, STEPS tokens decoded.
# Writes bench/out/policy_<ranks>_<policy>.json (generate's --stats-json) and
# bench/out/policy_summary.json (also printed).
#
#   bench/run_policies.sh [BUILD_DIR]      (default: build)
#   env: LENGTH (8000) STEPS (48) RANKS ("1 3") HOST_MEM (96MiB: every
#        rank's KV pool; the KV is ~180 MB) BUDGET (0.25)
#        POLICIES ("exact hybrid hybrid:bounds quantkv"; NAME[:SUMMARY],
#        the summary hybrid's --hybrid-summary)
#        MODEL (models/SmolLM2-135M-Instruct.Q4_1.gguf)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build="${1:-${BUILD:-build}}"
hw="$build/launcher/headwise"
model="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
length="${LENGTH:-8000}"
steps="${STEPS:-48}"
budget="${BUDGET:-0.25}"
out=bench/out
[ -x "$hw" ] || { echo "run_policies: $hw not built" >&2; exit 1; }
[ -f "$model" ] || { echo "run_policies: $model missing (make model)" >&2; exit 1; }
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 \
  OMPI_MCA_btl=self,vader

# A passkey document of about LENGTH tokens (~24 tokens per filler line).
doc="$out/policy_doc.txt"
/usr/bin/python3 - "$doc" "$length" <<'PY'
import sys
path, tokens = sys.argv[1], int(sys.argv[2])
filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
repeats = max(1, (tokens - 60) // 25)
parts = ["There is an important piece of information hidden inside a lot of irrelevant text. "
         "Find it and memorize it. I will quiz you about it.\n"] + [filler] * repeats
parts.insert(repeats * 2 // 5, "The pass key is 68215. Remember it. 68215 is the pass key. ")
open(path, "w").write("".join(parts) + "\nWhat is the pass key? Answer with the number only.")
PY

knobs=(--kv-block 32 --kv-dtype f16 --window-tokens 64 --hybrid-budget "$budget"
  --kv-budget "$budget")
for ranks in ${RANKS:-1 3}; do
  for spec in ${POLICIES:-exact hybrid hybrid:bounds quantkv}; do
    policy=(--policy "${spec%%:*}")
    [[ "$spec" == *:* ]] && policy+=(--hybrid-summary "${spec#*:}")
    stats="$out/policy_${ranks}_${spec/:/-}.json"
    cmd=("$hw" generate -m "$model" -f "$doc" --chat -n "$steps" --ignore-eos "${knobs[@]}"
      "${policy[@]}" --stats-json "$stats")
    if [ "$ranks" -gt 1 ]; then
      cmd=(mpirun -np "$ranks" --oversubscribe "${cmd[@]}" --host-mem "${HOST_MEM:-96MiB}"
        --mode delegate)
    fi
    echo "== $ranks rank(s), $spec: ${cmd[*]}" >&2
    "${cmd[@]}" > /dev/null
  done
done

/usr/bin/python3 - "$out" <<'PY'
import glob, json, os, platform, sys
out = sys.argv[1]
rows = []
for path in sorted(glob.glob(os.path.join(out, "policy_*_*.json"))):
    if path.endswith("summary.json"):
        continue
    s = json.load(open(path))
    tiers, attended = {}, {}
    for rank in s["ranks"]:
        for tier, t in rank["tiers"].items():
            tiers[f"rank{rank['rank']}.{tier}"] = t["peak_bytes"]
        if rank["rank"] > 0:
            attended[f"rank{rank['rank']}"] = rank["attention_bytes"]
    rows.append({"world_size": s["world_size"], "policy": s["policy"],
                 "prompt_tokens": s["prompt_tokens"],
                 "decode_tokens_per_s": round(s["decode_tokens_per_s"], 2),
                 "tokens_attended_fraction": round(s["tokens_attended"] / max(1, s["tokens_total"]), 3),
                 "key_cache_bytes": s["key_cache_bytes"], "tokens_evicted": s["tokens_evicted"],
                 "peak_bytes_per_tier": tiers, "kv_bytes_attended_by_memory_ranks": attended,
                 "text": s["text"].strip()})
summary = {"machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
           "runs": rows}
for world in sorted({r["world_size"] for r in rows}):
    exact = [r for r in rows if r["world_size"] == world and r["policy"] == "exact"]
    for r in rows:
        if exact and r["world_size"] == world:
            r["speedup_vs_exact"] = round(r["decode_tokens_per_s"] / exact[0]["decode_tokens_per_s"], 2)
json.dump(summary, open(os.path.join(out, "policy_summary.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
