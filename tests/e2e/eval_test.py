"""`headwise eval` end to end on the real model, small: two passkey cells
and one position band, with exact, policies whose budgets cover everything
(hybrid ranked by keys, by bounds, with pooled heads; quantkv), which must
answer exactly like exact (same answers, top-1 agreement 1, KL ~0), and
quarter budgets; the JSON has what scripts/fidelity-report reads, and the
report renders from it. Exits 77 (skip) without the model."""
import json
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "util"))
from harness import check, parse_args, run, summary  # noqa: E402

REPORT = os.path.join(here, "..", "..", "scripts", "fidelity-report")


def main():
    a = parse_args()
    if a is None:
        return 77
    tmp = tempfile.mkdtemp(prefix="headwise-eval-")
    out = f"{tmp}/eval.json"
    policies = "exact,hybrid@1,quantkv@1,hybrid@0.25,quantkv@0.25,hybrid:bounds@1,hybrid:pooled@1"
    r = run(a.headwise, "eval", "-m", a.model, "--lengths", "768", "--depths", "2",
            "--band-starts", "300", "--band-tokens", "6", "--kv-block", "32",
            "--window-tokens", "64", "--quantkv-tau", "1", "--policies", policies, "-o", out)
    check("eval runs", r.returncode == 0 and os.path.exists(out), r.stderr[-800:])
    if r.returncode != 0:
        return summary()
    d = json.load(open(out))
    labels = [p["label"] for p in d["policies"]]
    check("every policy is named with its knobs", labels == policies.split(",") and
          d["policies"][3]["describe"].startswith("hybrid(budget=0.25"), str(d["policies"]))
    cells = d["passkey"]["cells"]
    check("two passkey cells of ~768 tokens", len(cells) == 2 and
          all(600 < c["prompt_tokens"] <= 768 for c in cells), str([c["prompt_tokens"] for c in cells]))
    check("exact finds both keys", all(c["results"]["exact"]["correct"] for c in cells),
          str([c["results"]["exact"]["answer"] for c in cells]))
    full = ("hybrid@1", "quantkv@1", "hybrid:bounds@1", "hybrid:pooled@1")
    same = all(c["results"][p]["answer"] == c["results"]["exact"]["answer"]
               for c in cells for p in full)
    check("budgets covering everything answer exactly like exact", same,
          str([{k: v["answer"] for k, v in c["results"].items()} for c in cells]))
    quarter = cells[0]["results"]["hybrid@0.25"]
    check("a quarter budget attends about a quarter of the tokens",
          0.15 < quarter["tokens_attended"] / quarter["tokens_total"] < 0.4, str(quarter))
    rows = d["bands"]["rows"]
    check("one band; full budgets agree on every token with KL ~0",
          len(rows) == 1 and all(rows[0]["top1"][p] == 1 and rows[0]["kl"][p] < 1e-6
                                 for p in full), str(rows))
    r = subprocess.run(["/usr/bin/python3", REPORT, out, "--out-dir", tmp, "--md",
                        f"{tmp}/FIDELITY.md"], capture_output=True, text=True, timeout=120)
    check("scripts/fidelity-report renders it", r.returncode == 0 and
          os.path.exists(f"{tmp}/fidelity_passkey.png") and "quantkv@0.25" in
          open(f"{tmp}/FIDELITY.md").read(), r.stdout + r.stderr)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
