#!/usr/bin/python3
"""Plots offload_bench's JSON (bench/offload_bench.cc).

docs/offload_memory.png: memory per tier vs context length, log-log (as in
HeadInfer's Figure 1): the device memory an all-resident KV cache would need
(= KV bytes), and, with head-wise offload, the device tier's peak (flat at the
budget) and the host tier's peak (which takes the KV).
docs/offload_decode.png: decode step time vs context, resident vs offloaded,
with the offloaded step's copy and compute times.

Usage: /usr/bin/python3 bench/plot_offload.py [bench/out/offload_bench.json] [docs]
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

MIB = 1024.0 * 1024.0


def tokens_label(n, _pos=None):
    n = int(round(n))
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10}K"
    return str(n)


def bytes_label(b, _pos=None):
    if b >= 1 << 30:
        return f"{b / (1 << 30):g} GiB"
    if b >= 1 << 20:
        return f"{b / (1 << 20):g} MiB"
    if b >= 1 << 10:
        return f"{b / (1 << 10):g} KiB"
    return f"{b:g} B"


def runs_of(report, mode):
    rows = [r for r in report["runs"] if r["mode"] == mode]
    return sorted(rows, key=lambda r: r["context_tokens"])


def setup_axes(ax, contexts):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(contexts)
    ax.xaxis.set_major_formatter(FuncFormatter(tokens_label))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    ax.grid(True, which="major", alpha=0.35)
    ax.set_xlabel("context length (tokens)")


def subtitle(report):
    m = report["model"]
    kv = report["kv"]
    machine = report["machine"]
    return (
        f"synthetic Llama: {m['n_layers']} layers, {m['n_kv_heads']} kv heads x "
        f"head_dim {m['head_dim']}, {kv['dtype']} KV, {kv['block_tokens']}-token blocks; "
        f"sim device {bytes_label(report['device_mem_bytes'])}, link "
        f"{report['link_gbps']:g} GB/s\n{machine['cpu']}, {machine['cores']} cores"
    )


def plot_memory(report, path):
    off = runs_of(report, "offloaded")
    res = runs_of(report, "resident")
    rows = off or res
    contexts = [r["context_tokens"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=130)
    setup_axes(ax, contexts)
    ax.plot(contexts, [r["kv_bytes"] for r in rows], "o-", color="tab:red", lw=2,
            label="all-resident: device memory needed (= KV bytes)")
    if off:
        ax.plot(contexts,
                [max(r["device_peak_bytes"], r["device_arena_peak_bytes"]) for r in off],
                "s-", color="tab:blue", lw=2, label="head-wise offload: device tier peak")
        hosted = [r for r in off if r["host_peak_bytes"] > 0]  # log scale: skip zeros
        ax.plot([r["context_tokens"] for r in hosted], [r["host_peak_bytes"] for r in hosted],
                "^--", color="tab:green", lw=1.6, label="head-wise offload: host tier peak")
        ax.axhline(report["device_mem_bytes"], color="tab:blue", ls=":", lw=1.2,
                   label=f"device budget ({bytes_label(report['device_mem_bytes'])})")
        fits = [r for r in off if r["kv_mode"] == "resident"]
        if fits:
            names = ", ".join(tokens_label(r["context_tokens"]) for r in fits)
            ax.annotate(f"{names}: the KV fits the budget,\nso it stays resident on the device",
                        (fits[0]["context_tokens"], fits[0]["device_arena_peak_bytes"]),
                        textcoords="offset points", xytext=(4, -28), fontsize=7,
                        color="tab:blue")
    top = max(r["kv_bytes"] for r in rows)
    ticks = [float(1 << 20) * 4**i for i in range(12) if (1 << 20) * 4**i <= 2 * top]
    ax.set_yticks([t for t in [256 * 1024.0] + ticks])
    ax.yaxis.set_major_formatter(FuncFormatter(bytes_label))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    ax.set_ylabel("bytes (log scale)")
    ax.set_title("KV memory per tier vs context length", fontsize=11)
    fig.text(0.5, 0.005, subtitle(report), ha="center", va="bottom", fontsize=7, color="0.3")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def plot_decode(report, path):
    off = runs_of(report, "offloaded")
    res = runs_of(report, "resident")
    contexts = sorted({r["context_tokens"] for r in off + res})
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=130)
    setup_axes(ax, contexts)
    ms = 1e3
    if res:
        ax.plot([r["context_tokens"] for r in res], [r["step_seconds"] * ms for r in res], "o-",
                color="tab:red", lw=2, label="resident (cpu device, zero copy): step")
    if off:
        ax.plot([r["context_tokens"] for r in off], [r["step_seconds"] * ms for r in off], "s-",
                color="tab:blue", lw=2, label="offloaded (sim device): step")
        streamed = [r for r in off if r["kv_mode"] == "streaming"]
        ax.plot([r["context_tokens"] for r in streamed],
                [r["copy_seconds"] * ms for r in streamed], "v:", color="tab:purple", lw=1.2,
                label="offloaded: copy (link busy)")
        ax.plot([r["context_tokens"] for r in streamed],
                [r["compute_seconds"] * ms for r in streamed], "^:", color="tab:green", lw=1.2,
                label="offloaded: streamed compute")
        for r in streamed:
            if r.get("overlap_stream"):
                ax.annotate(f"{r['overlap_stream']:.2f}x", (r["context_tokens"],
                                                            r["step_seconds"] * ms),
                            textcoords="offset points", xytext=(-10, 7), fontsize=7,
                            color="tab:blue")
    ax.set_ylabel("ms per decode step (log scale)")
    ax.set_title("Decode step vs context (labels: stream wall / max(copy, compute))",
                 fontsize=11)
    fig.text(0.5, 0.005, subtitle(report), ha="center", va="bottom", fontsize=7, color="0.3")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "bench/out/offload_bench.json"
    out_dir = sys.argv[2] if len(sys.argv) > 2 else "docs"
    with open(src) as f:
        report = json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    plot_memory(report, os.path.join(out_dir, "offload_memory.png"))
    plot_decode(report, os.path.join(out_dir, "offload_decode.png"))
    print(f"wrote {out_dir}/offload_memory.png and {out_dir}/offload_decode.png")


if __name__ == "__main__":
    main()
