"""The `headwise` command line as users and scripts meet it: exit codes, the
one-line errors, the --stats-json contract of DESIGN.md, environment twins,
and the sim device giving the cpu device's tokens. Runs the real binary on the
real model; exits 77 (skip) when the model is missing."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "util"))
from harness import check, parse_args, summary  # noqa: E402

REQUIRED_STATS = [
    "prompt_tokens", "generated_token_ids", "text", "prefill_tokens_per_s",
    "decode_tokens_per_s", "policy", "ranks", "head_group_size",
]


def run(binary, *args, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([binary, *args], capture_output=True, text=True, env=full_env,
                          timeout=600)


def main():
    a = parse_args()
    if a is None:
        return 77
    hw, model = a.headwise, a.model
    tmp = tempfile.mkdtemp(prefix="headwise-cli-")

    r = run(hw, "--version")
    check("--version", r.returncode == 0 and r.stdout.startswith("headwise "), r.stdout + r.stderr)

    r = run(hw, "inspect", model, "--json")
    info = json.loads(r.stdout) if r.returncode == 0 else {}
    check("inspect --json", info.get("architecture") == "llama" and info.get("n_layers") == 30,
          r.stdout[:300] + r.stderr)

    r = run(hw, "inspect", os.path.join(tmp, "missing.gguf"))
    check("inspect of a missing file", r.returncode == 1 and "missing.gguf" in r.stderr
          and len(r.stderr.strip().splitlines()) == 1, r.stderr)

    bad = os.path.join(tmp, "bad.gguf")
    with open(bad, "wb") as f:
        f.write(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    r = run(hw, "inspect", bad)
    check("inspect of a malformed file", r.returncode == 1 and "bad.gguf" in r.stderr
          and len(r.stderr.strip().splitlines()) == 1, r.stderr)

    r = run(hw, "generate", "-m", model)
    check("generate without a prompt", r.returncode != 0 and "--prompt" in r.stderr, r.stderr)

    r = run(hw, "generate", "-m", model, "-p", "Hi", "--kv-dtype", "f8")
    check("generate with a bad --kv-dtype", r.returncode == 1 and "f32, f16 or bf16" in r.stderr,
          r.stderr)

    r = run(hw, "generate", "-m", model, "-p", "Hi", "--device", "sim")
    check("sim without --device-mem", r.returncode == 1 and "--device-mem" in r.stderr, r.stderr)

    r = run(hw, "generate", "-m", model, "-p", "Hi", "--device", "sim", "--device-mem", "lots")
    check("a size that is not a size", r.returncode == 1 and "not a size" in r.stderr, r.stderr)

    stats_path = os.path.join(tmp, "cpu.json")
    r = run(hw, "generate", "-m", model, "--chat", "-p", "What is the capital of France?",
            "-n", "24", "--stats-json", stats_path)
    stats = json.load(open(stats_path)) if r.returncode == 0 else {}
    check("generate --chat answers", "Paris" in r.stdout, r.stdout + r.stderr)
    check("throughput line on stderr", "prefill:" in r.stderr and "decode:" in r.stderr, r.stderr)
    missing = [k for k in REQUIRED_STATS if k not in stats]
    check("--stats-json has the contract's fields", not missing, f"missing {missing}")
    tiers = (stats.get("ranks") or [{}])[0].get("tiers", {})
    check("stats list the device and host tiers with peak and budget",
          all(t in tiers and {"peak_bytes", "budget_bytes"} <= tiers[t].keys()
              for t in ("device", "host")), json.dumps(tiers))
    check("stats text is the streamed text", stats.get("text", "").strip() in r.stdout,
          stats.get("text"))

    prompt_file = os.path.join(tmp, "long.txt")
    with open(prompt_file, "w") as f:
        f.write(" ".join(f"Ledger line {i}: crate {i * 7919 % 1000} moved north." for i in range(80)))
    cpu_stats, sim_stats = os.path.join(tmp, "c.json"), os.path.join(tmp, "s.json")
    r1 = run(hw, "generate", "-m", model, "-f", prompt_file, "-n", "8", "--stats-json", cpu_stats)
    # Flags through their environment twins: HEADWISE_KV_BLOCK etc.
    r2 = run(hw, "generate", "-m", model, "-f", prompt_file, "-n", "8", "--stats-json", sim_stats,
             env={"HEADWISE_DEVICE": "sim", "HEADWISE_DEVICE_MEM": "20MiB",
                  "HEADWISE_KV_BLOCK": "32", "HEADWISE_PREFILL_CHUNK": "128"})
    ok = r1.returncode == 0 and r2.returncode == 0
    c = json.load(open(cpu_stats)) if ok else {}
    s = json.load(open(sim_stats)) if ok else {}
    check("sim device (set by env twins) streams", s.get("device") == "sim"
          and s.get("kv_mode") == "streaming" and s.get("kv_block") == 32,
          r2.stderr[-500:] + json.dumps({k: s.get(k) for k in ("device", "kv_mode", "kv_block")}))
    check("sim device gives the cpu device's tokens",
          ok and c["generated_token_ids"] == s["generated_token_ids"],
          f"{c.get('generated_token_ids')} vs {s.get('generated_token_ids')}")
    dev = (s.get("ranks") or [{}])[0].get("tiers", {}).get("device", {})
    check("device peak within its budget", dev.get("peak_bytes", 1) <= dev.get("budget_bytes", 0),
          json.dumps(dev))

    return summary()


if __name__ == "__main__":
    sys.exit(main())
