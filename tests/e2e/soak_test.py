"""A short soak (bench/soak.py): 4 concurrent clients for 45 s against a
3-rank `headwise serve` cluster under mpirun, with generates, sessions
opened, asked and closed, unknown sessions, cancelled clients (mid-answer
and mid-prefill), deadlines, malformed requests and a full queue. Asserts
the soak's verdict item by item: no hang, no client crash, only the
expected gRPC codes, right answers, the cluster still serving, no orphaned
session, the KV pools back to their level before the workload, bounded RSS
growth, and a clean SIGTERM. Exits 77 (skip) without the model."""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "util"))
from harness import check, parse_args, summary  # noqa: E402

SOAK = os.path.join(HERE, "..", "..", "bench", "soak.py")


def main():
    a = parse_args()
    if a is None:
        return 77
    out = os.path.join(tempfile.mkdtemp(prefix="headwise-soak-test-"), "soak.json")
    cmd = [sys.executable, SOAK, "--headwise", a.headwise, "--model", a.model,
           "--duration", "45", "--warmup", "0.3", "--clients", "4", "--hang-timeout", "90",
           "--out", out]
    print(" ".join(cmd), flush=True)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = p.communicate(timeout=270)
    except subprocess.TimeoutExpired:
        p.terminate()  # the soak then kills its cluster
        log, _ = p.communicate()
        print(log, flush=True)
        check("the soak ends within 270 s", False, "a hang outside the clients' own timeouts")
        return summary()
    print(log, flush=True)
    if p.returncode == 77:
        return 77
    check("the soak ran and wrote its JSON", os.path.exists(out), f"rc={p.returncode}")
    if not os.path.exists(out):
        return summary()
    result = json.load(open(out))
    v = result["verdict"]
    anomalies = json.dumps(result["anomalies"][:5], indent=1)
    check(f"{result['requests']} requests, outcomes {result['outcomes']}",
          result["requests"] > 0)
    check("no client hung", v["no_hangs"], anomalies)
    check("no client crashed", v["no_client_crashes"], anomalies)
    check("only the expected gRPC codes per kind", v["expected_codes_only"], anomalies)
    check("every kind of request ran",
          v["every_kind_ran"], json.dumps({k: x["requests"] for k, x in result["kinds"].items()}))
    check("the requests that ran got some refused (RESOURCE_EXHAUSTED) and some answered",
          result["outcomes"].get("RESOURCE_EXHAUSTED", 0) > 0
          and result["outcomes"].get("OK", 0) > 0, json.dumps(result["outcomes"]))
    check("every answer right (pass keys, sessions unchanged, greedy text stable)",
          v["answers_right"], anomalies)
    check("the cluster still serves", v["server_serving_at_end"],
          result["server"]["log_tail"][-1500:])
    check("no orphaned session (a client killed mid-prefill leaves none)",
          v["no_orphan_sessions"],
          f"orphans {result['orphan_sessions']}, "
          f"{result['cancel_open_killed_after_open']} clients killed after their open")
    check("every rank's KV pool back to its level before the workload",
          v["pool_back_to_before"], json.dumps(result["pool_host_kv_mib"]))
    check(f"RSS growth within {result['rss_bound']['mib']:.0f} MiB and "
          f"{100 * result['rss_bound']['frac']:.0f}% per rank", v["rss_growth_within_bound"],
          json.dumps(result["rss_growth"]))
    check("SIGTERM ends the job", v["sigterm_ends_the_job"], json.dumps(result["server"])[:1500])
    return summary()


if __name__ == "__main__":
    sys.exit(main())
