#!/usr/bin/env python3
"""Proves headwise's forward pass against the independent numpy oracle.

    oracle_test.py --headwise PATH/TO/headwise --model M.gguf
    oracle_test.py --self --model M.gguf        (plumbing test: a fake headwise
                                                 that is the oracle in float32)

Checks (one line each, then "N passed, M failed"; exit 1 on any failure):
  dequant   `headwise inspect M --dump-tensor NAME --out P.f32` against dequant.py,
            for up to 3 tensors of every ggml type in the model:
            max|diff| <= 1e-6 * max|x|
  tokenize  headwise's prompt_token_ids equal the oracle's BPE (built from the GGUF)
  logits    `headwise generate -m M -p TEXT -n 16 --temp 0 --stats-json S
            --dump-logits L.f32`: last-prompt-position logits within 1e-3 relative
            L2 of the float64 oracle run on headwise's own prompt ids
  greedy    headwise's 16 generated ids equal the oracle's greedy continuation
for a short, a medium and a ~1000-token prompt.
Exit 77 (ctest SKIP) when the model file or the Python packages are missing.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))

SHORT_PROMPT = "The capital of France is"
MEDIUM_PROMPT = (
    "The Apollo program was the third United States human spaceflight program carried out by "
    "NASA. It succeeded in preparing and landing the first humans on the Moon from 1968 to 1972. "
    "In July 1969, Neil Armstrong and Buzz Aldrin walked on the lunar surface while Michael Collins "
    "remained in orbit. Looking back, the most important consequence of the program was"
)


def long_prompt(n_sentences: int = 22) -> str:
    """Deterministic, non-periodic text with numbers (about 1,000 SmolLM2 tokens)."""
    cities = ["Lyon", "Porto", "Kraków", "Osaka", "Denver", "Tunis", "Bergen", "Quito", "Perth", "Hanoi",
              "Tallinn", "Cusco", "Dakar"]
    goods = ["copper wire", "wheat", "tin", "olive oil", "cotton", "coffee beans", "glass", "paper",
             "salt", "timber", "wool"]
    verbs = ["shipped", "received", "stored", "sold", "repaired", "counted", "returned"]
    notes = ["The clerk noted a delay caused by rain.", "Nobody could explain the difference.",
             "A second inspection confirmed the figure.", "The manager asked for a revised forecast.",
             "Two trucks arrived late that morning.", "The ledger was signed by the night shift.",
             "Prices had risen slightly since spring.", ""]
    state = 20240611

    def rnd(n):
        nonlocal state
        state = (state * 1103515245 + 12345) % (1 << 31)
        return (state >> 8) % n

    out = ["Quarterly logistics journal. Each entry records what one warehouse handled."]
    for i in range(n_sentences):
        c, g, v = cities[rnd(len(cities))], goods[rnd(len(goods))], verbs[rnd(len(verbs))]
        qty, day, delta = 100 + rnd(9900), 1 + rnd(365), 1 + rnd(250)
        more = "more" if rnd(2) else "fewer"
        s = (f"Entry {i + 1}: the warehouse in {c} {v} {qty} crates of {g} on day {day}, "
             f"which was {delta} {more} than the week before.")
        note = notes[rnd(len(notes))]
        out.append(s + (" " + note if note else ""))
    out.append("Summing up the journal, the warehouse that handled the most crates was the one in")
    return " ".join(out)


PROMPTS = [("short", SHORT_PROMPT), ("medium", MEDIUM_PROMPT), ("long", long_prompt())]


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def record(self, ok: bool, name: str, detail: str):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def run(cmd, timeout):
    t0 = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, text=True,
                           errors="replace")
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout}s: {' '.join(cmd[:4])} ...", time.time() - t0
    except OSError as e:
        return False, f"cannot run {cmd[0]}: {e}", time.time() - t0
    if p.returncode != 0:
        tail = p.stdout[-1500:].strip().replace("\n", "\n    ") or "(no output)"
        return False, f"exit {p.returncode}: {' '.join(cmd[:3])} ...\n    {tail}", time.time() - t0
    return True, p.stdout, time.time() - t0


def pick_tensors(reader, per_type: int):
    """Up to per_type tensors of each ggml type, preferring a spread over layers."""
    names = [t.name for t in reader.tensors]
    n_layer = 1 + max((int(n.split(".")[1]) for n in names if n.startswith("blk.")), default=0)
    mid, last = n_layer // 2, n_layer - 1
    preferred = ["token_embd.weight", "output.weight", "blk.0.attn_q.weight", f"blk.{mid}.ffn_down.weight",
                 f"blk.{last}.attn_v.weight", "output_norm.weight", "blk.0.attn_norm.weight",
                 f"blk.{last}.ffn_norm.weight", f"blk.{mid}.ffn_gate.weight", "blk.0.attn_k.weight"]
    by_type: dict[str, list] = {}
    order = [n for n in preferred if n in names] + [n for n in names if n not in preferred]
    tmap = {t.name: t for t in reader.tensors}
    for n in order:
        ty = tmap[n].tensor_type.name
        lst = by_type.setdefault(ty, [])
        if len(lst) < per_type:
            lst.append(tmap[n])
    return [t for ty in sorted(by_type) for t in by_type[ty]]


def check_dequant(res, hw, model_path, reader, tmp, per_type, timeout):
    import numpy as np
    import dequant

    for t in pick_tensors(reader, per_type):
        name, ty = t.name, t.tensor_type.name
        out = os.path.join(tmp, "tensor.f32")
        if os.path.exists(out):
            os.remove(out)
        ok, msg, dt = run(hw + ["inspect", model_path, "--dump-tensor", name, "--out", out], timeout)
        if not ok:
            res.record(False, f"dequant {name} ({ty})", msg)
            continue
        ref = dequant.tensor_f32(t).reshape(-1)
        try:
            got = np.fromfile(out, dtype="<f4")
        except OSError as e:
            res.record(False, f"dequant {name} ({ty})", f"no output file: {e}")
            continue
        if got.size != ref.size:
            res.record(False, f"dequant {name} ({ty})", f"{got.size} floats written, expected {ref.size}")
            continue
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        scale = float(np.max(np.abs(ref))) or 1.0
        err = float(np.nanmax(diff)) if diff.size else 0.0
        ok = bool(np.all(np.isfinite(got))) and err <= 1e-6 * scale
        where = "" if ok else f" worst at flat index {int(np.nanargmax(diff))}"
        res.record(ok, f"dequant {name} ({ty})",
                   f"n={ref.size} max|diff|={err:.3g} max|x|={scale:.3g} rel={err / scale:.3g} "
                   f"(limit 1e-6){where} [{dt:.1f}s]")


def check_prompt(res, hw, model, label, text, tmp, args, eog):
    import numpy as np

    stats, logits_path = os.path.join(tmp, f"{label}.json"), os.path.join(tmp, f"{label}.f32")
    for p in (stats, logits_path):
        if os.path.exists(p):
            os.remove(p)
    n = args.n_predict
    ok, msg, dt = run(hw + ["generate", "-m", args.model, "-p", text, "-n", str(n), "--temp", "0",
                            "--stats-json", stats, "--dump-logits", logits_path] + shlex.split(args.extra_args),
                        args.timeout)
    if not ok:
        for c in ("logits", "greedy"):
            res.record(False, f"{c} [{label}]", "headwise generate failed: " + msg)
        return
    try:
        with open(stats) as f:
            s = json.load(f)
        ids = [int(x) for x in s["prompt_token_ids"]]
        hgen = [int(x) for x in s["generated_token_ids"]]
        hlog = np.fromfile(logits_path, dtype="<f4").astype(np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        for c in ("logits", "greedy"):
            res.record(False, f"{c} [{label}]", f"bad headwise output ({type(e).__name__}: {e})")
        return
    print(f"info [{label}]: {len(ids)} prompt tokens, headwise generate took {dt:.1f}s", flush=True)

    # tokenization, against the oracle's own BPE
    try:
        mine = model.encode(text)
    except NotImplementedError as e:
        print(f"info [{label}]: tokenize check skipped ({e})")
    else:
        first = next((i for i, (a, b) in enumerate(zip(mine, ids)) if a != b), min(len(mine), len(ids)))
        ok = mine == ids
        res.record(ok, f"tokenize [{label}]", f"{len(ids)} ids" if ok else
                   f"headwise {len(ids)} ids vs oracle {len(mine)}; first difference at {first}: "
                   f"headwise {ids[first:first + 5]} oracle {mine[first:first + 5]}")

    t0 = time.time()
    cache = model.new_cache()
    ref = model.forward(ids, cache)
    t_fwd = time.time() - t0
    if hlog.size != ref.size:
        res.record(False, f"logits [{label}]", f"{hlog.size} floats in {logits_path}, expected vocab {ref.size}")
    else:
        rel = float(np.linalg.norm(hlog - ref) / np.linalg.norm(ref))
        ok = bool(np.all(np.isfinite(hlog))) and rel <= args.logits_tol
        res.record(ok, f"logits [{label}]",
                   f"rel L2={rel:.3g} (limit {args.logits_tol:g}) max|diff|={float(np.max(np.abs(hlog - ref))):.3g} "
                   f"argmax headwise {int(np.argmax(hlog))} oracle {int(np.argmax(ref))} "
                   f"[oracle forward {len(ids)} tokens {t_fwd:.1f}s]")

    # oracle greedy: n tokens regardless of end-of-generation tokens
    t0 = time.time()
    ogen, margins, step_logits = [], [], []
    logits = ref
    for step in range(n):
        tok = int(np.argmax(logits))
        top2 = np.partition(logits, -2)[-2:]
        margins.append(float(top2[1] - top2[0]))
        step_logits.append(logits)
        ogen.append(tok)
        if step < n - 1:
            logits = model.forward([tok], cache)
    t_gen = time.time() - t0
    name = f"greedy [{label}]"
    info = f"min top1-top2 margin {min(margins):.3g} [oracle {t_gen:.1f}s]"
    k = next((i for i, (a, b) in enumerate(zip(hgen, ogen)) if a != b), None)
    if k is not None:
        gap = float(step_logits[k][ogen[k]] - step_logits[k][hgen[k]])
        if gap <= args.tie_eps:
            res.record(True, name, f"first {k} ids equal, then a near-tie at step {k}: oracle logit gap "
                                   f"{gap:.3g} <= --tie-eps {args.tie_eps:g}; {info}")
        else:
            res.record(False, name, f"differs at step {k}: headwise {hgen} oracle {ogen}; oracle logit gap of "
                                    f"headwise's token {gap:.3g}; {info}")
    elif len(hgen) == n:
        res.record(True, name, f"{n} ids equal {hgen}; {info}")
    elif len(hgen) > n:
        res.record(False, name, f"headwise generated {len(hgen)} ids for -n {n}")
    else:
        m = len(hgen)
        stopped = (m > 0 and ogen[m - 1] in eog) or ogen[m] in eog
        res.record(stopped, name, f"{m} ids equal, headwise stopped " +
                   ("at an end-of-generation token" if stopped else f"early without one (oracle next {ogen[m]})") +
                   f"; {info}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--headwise", help="path to the headwise binary")
    ap.add_argument("--self", action="store_true",
                    help="use a fake headwise (the oracle in float32, gguf.quants dequant) to test this harness")
    ap.add_argument("--self-dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--model", required=True)
    ap.add_argument("-n", "--n-predict", type=int, default=16)
    ap.add_argument("--logits-tol", type=float, default=1e-3, help="relative L2 limit for logits")
    ap.add_argument("--tie-eps", type=float, default=0.0,
                    help="accept a greedy divergence where the oracle's logit gap is at most this (default 0: strict)")
    ap.add_argument("--tensors-per-type", type=int, default=3)
    ap.add_argument("--prompts", default="short,medium,long", help="comma-separated subset of short,medium,long")
    ap.add_argument("--skip-dequant", action="store_true")
    ap.add_argument("--extra-args", default="", help="more flags for `headwise generate`, e.g. --extra-args='--kv-dtype f32'")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per headwise invocation")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)

    if not os.path.isfile(args.model):
        print(f"SKIP: model file {args.model} not found (scripts/fetch-model fetches it)")
        return SKIP
    try:
        import numpy as np  # noqa: F401
        import gguf  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as e:
        print(f"SKIP: Python package missing ({e}); run scripts/python-env")
        return SKIP
    sys.path.insert(0, HERE)
    import numpy as np
    import llama_forward

    if args.self:
        hw = [sys.executable, os.path.join(HERE, "llama_forward.py"), "fake-headwise", "--dtype", args.self_dtype]
        print(f"info: --self: fake headwise = oracle in {args.self_dtype}")
    else:
        if not args.headwise or not (os.path.isfile(args.headwise) and os.access(args.headwise, os.X_OK)):
            print(f"FAIL setup: headwise binary {args.headwise!r} is not an executable file")
            print("0 passed, 1 failed")
            return 1
        hw = [args.headwise]

    res = Results()
    tmp = tempfile.mkdtemp(prefix="headwise-oracle-")
    t_start = time.time()
    try:
        t0 = time.time()
        model = llama_forward.Model(args.model, dtype=np.float64)
        print(f"info: oracle loaded {os.path.basename(args.model)} ({model.arch}, {model.n_layer} layers, "
              f"float64) in {time.time() - t0:.1f}s; temp dir {tmp}", flush=True)
        if not args.skip_dequant:
            check_dequant(res, hw, args.model, model.reader, tmp, args.tensors_per_type, args.timeout)
        wanted = [p.strip() for p in args.prompts.split(",") if p.strip()]
        eog = model.eog_ids()
        for label, text in PROMPTS:
            if label in wanted:
                check_prompt(res, hw, model, label, text, tmp, args, eog)
    finally:
        if args.keep:
            print(f"info: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"info: total {time.time() - t_start:.1f}s")
    print(f"{res.passed} passed, {res.failed} failed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
