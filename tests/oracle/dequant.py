#!/usr/bin/env python3
"""Independent numpy dequantizers for GGUF / ggml tensor types.

Written from the block layouts in ggml-common.h and the scalar reference
dequantize_row_* functions in ggml-quants.c (llama.cpp). The only thing taken
from the `gguf` package at run time is the file reader (layout, raw bytes);
`gguf.quants.dequantize` is used solely by --self-check as a second opinion.

Every dequantizer takes the raw bytes of a tensor (any shape, uint8) and
returns a flat float32 array. Arithmetic follows ggml's scalar reference order
in float32 (e.g. Q4_K: (d*sc)*q - (dmin*m)), without fused multiply-add.

    python dequant.py --self-check [--model M.gguf]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

# ggml type ids (enum ggml_type in ggml.h)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q4_K, Q5_K, Q6_K, BF16 = 12, 13, 14, 30

QK_K = 256
TYPE_NAMES = {F32: "F32", F16: "F16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0",
              Q5_1: "Q5_1", Q8_0: "Q8_0", Q4_K: "Q4_K", Q5_K: "Q5_K",
              Q6_K: "Q6_K", BF16: "BF16"}
# type -> (elements per block, bytes per block)
BLOCK = {
    F32: (1, 4),
    F16: (1, 2),
    BF16: (1, 2),
    Q4_0: (32, 2 + 16),             # d f16, qs[16]
    Q4_1: (32, 2 + 2 + 16),         # d f16, m f16, qs[16]
    Q5_0: (32, 2 + 4 + 16),         # d f16, qh[4], qs[16]
    Q5_1: (32, 2 + 2 + 4 + 16),     # d f16, m f16, qh[4], qs[16]
    Q8_0: (32, 2 + 32),             # d f16, qs[32] int8
    Q4_K: (QK_K, 2 + 2 + 12 + 128),  # d, dmin f16, scales[12], qs[128]
    Q5_K: (QK_K, 2 + 2 + 12 + 32 + 128),  # d, dmin, scales[12], qh[32], qs[128]
    Q6_K: (QK_K, 128 + 64 + 16 + 2),  # ql[128], qh[64], scales[16] i8, d f16
}


def _f16(b: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 -> (n, 1) float32 from little-endian IEEE half."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _blocks(raw: np.ndarray, qtype: int) -> np.ndarray:
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    bs = BLOCK[qtype][1]
    if raw.size % bs:
        raise ValueError(f"{TYPE_NAMES[qtype]}: {raw.size} bytes is not a multiple of block size {bs}")
    return raw.reshape(-1, bs)


def _nibbles_split(qs: np.ndarray) -> np.ndarray:
    """qs (n, 16) -> (n, 32): low nibbles are elements 0..15, high nibbles 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _qh_bits32(qh4: np.ndarray) -> np.ndarray:
    """qh (n, 4) bytes, a little-endian uint32 -> (n, 32) bit j as 0/16."""
    qh = np.ascontiguousarray(qh4).view("<u4")  # (n, 1)
    j = np.arange(32, dtype=np.uint32)
    return (((qh >> j) & 1) << 4).astype(np.uint8)


def deq_f32(raw):
    return np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view("<f4").astype(np.float32)


def deq_f16(raw):
    return np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view("<f2").astype(np.float32)


def deq_bf16(raw):
    u = np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view("<u2").astype(np.uint32)
    return (u << 16).view(np.float32)


def deq_q4_0(raw):
    b = _blocks(raw, Q4_0)
    d = _f16(b[:, 0:2])
    q = _nibbles_split(b[:, 2:18]).astype(np.int32) - 8
    return (q.astype(np.float32) * d).reshape(-1)


def deq_q4_1(raw):
    b = _blocks(raw, Q4_1)
    d = _f16(b[:, 0:2])
    m = _f16(b[:, 2:4])
    q = _nibbles_split(b[:, 4:20]).astype(np.float32)
    return (q * d + m).reshape(-1)


def deq_q5_0(raw):
    b = _blocks(raw, Q5_0)
    d = _f16(b[:, 0:2])
    hi = _qh_bits32(b[:, 2:6])  # bit j of qh -> 5th bit of element j (0..31)
    q = (_nibbles_split(b[:, 6:22]) | hi).astype(np.int32) - 16
    return (q.astype(np.float32) * d).reshape(-1)


def deq_q5_1(raw):
    b = _blocks(raw, Q5_1)
    d = _f16(b[:, 0:2])
    m = _f16(b[:, 2:4])
    hi = _qh_bits32(b[:, 4:8])
    q = (_nibbles_split(b[:, 8:24]) | hi).astype(np.float32)
    return (q * d + m).reshape(-1)


def deq_q8_0(raw):
    b = _blocks(raw, Q8_0)
    d = _f16(b[:, 0:2])
    q = b[:, 2:34].view(np.int8).astype(np.float32)
    return (q * d).reshape(-1)


def _k_scales_mins(s: np.ndarray):
    """6-bit packed scales/mins of Q4_K/Q5_K (get_scale_min_k4): s (n, 12) -> sc, m (n, 8)."""
    s = s.astype(np.uint8)
    sc = np.empty((s.shape[0], 8), np.uint8)
    m = np.empty((s.shape[0], 8), np.uint8)
    sc[:, 0:4] = s[:, 0:4] & 63
    m[:, 0:4] = s[:, 4:8] & 63
    sc[:, 4:8] = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    m[:, 4:8] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc.astype(np.float32), m.astype(np.float32)


def deq_q4_k(raw):
    b = _blocks(raw, Q4_K)
    n = b.shape[0]
    d = _f16(b[:, 0:2])
    dmin = _f16(b[:, 2:4])
    sc, m = _k_scales_mins(b[:, 4:16])
    qs = b[:, 16:144].reshape(n, 4, 32)  # 4 chunks of 64 elements, 32 bytes each
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32).astype(np.float32)
    d1 = (d * sc)[:, :, None]      # (n, 8, 1) sub-block scale
    m1 = (dmin * m)[:, :, None]
    return (d1 * q - m1).reshape(-1)


def deq_q5_k(raw):
    b = _blocks(raw, Q5_K)
    n = b.shape[0]
    d = _f16(b[:, 0:2])
    dmin = _f16(b[:, 2:4])
    sc, m = _k_scales_mins(b[:, 4:16])
    qh = b[:, 16:48]                       # (n, 32)
    qs = b[:, 48:176].reshape(n, 4, 32)
    lo = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32)  # sub-block j = 2c + (0|1)
    j = np.arange(8, dtype=np.uint8)       # sub-block j takes its 5th bit from qh bit j
    hi = ((qh[:, None, :] >> j[None, :, None]) & 1) << 4
    q = (lo | hi).astype(np.float32)
    d1 = (d * sc)[:, :, None]
    m1 = (dmin * m)[:, :, None]
    return (d1 * q - m1).reshape(-1)


def deq_q6_k(raw):
    b = _blocks(raw, Q6_K)
    n = b.shape[0]
    ql = b[:, 0:128].reshape(n, 2, 64)
    qh = b[:, 128:192].reshape(n, 2, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)  # (n, 16); element e uses sc[e // 16]
    d = _f16(b[:, 208:210])
    # within each 128-element half: [l], [l+32], [l+64], [l+96] for l in 0..31
    q1 = (ql[:, :, 0:32] & 0x0F) | (((qh >> 0) & 3) << 4)
    q2 = (ql[:, :, 32:64] & 0x0F) | (((qh >> 2) & 3) << 4)
    q3 = (ql[:, :, 0:32] >> 4) | (((qh >> 4) & 3) << 4)
    q4 = (ql[:, :, 32:64] >> 4) | (((qh >> 6) & 3) << 4)
    q = np.stack([q1, q2, q3, q4], axis=2).reshape(n, 16, 16).astype(np.int32) - 32
    ds = (d * sc)[:, :, None]              # (n, 16, 1)
    return (ds * q.astype(np.float32)).reshape(-1)


DEQUANT = {F32: deq_f32, F16: deq_f16, BF16: deq_bf16, Q4_0: deq_q4_0,
           Q4_1: deq_q4_1, Q5_0: deq_q5_0, Q5_1: deq_q5_1, Q8_0: deq_q8_0,
           Q4_K: deq_q4_k, Q5_K: deq_q5_k, Q6_K: deq_q6_k}


def dequantize(raw: np.ndarray, qtype: int) -> np.ndarray:
    """Raw tensor bytes (any shape/dtype; reinterpreted as bytes) -> flat float32."""
    qtype = int(qtype)
    if qtype not in DEQUANT:
        raise NotImplementedError(f"ggml type {qtype} is not supported by the oracle")
    return DEQUANT[qtype](raw)


def tensor_f32(t) -> np.ndarray:
    """A gguf.GGUFReader tensor -> float32 ndarray in numpy order (ne reversed: ne[0] fastest)."""
    qtype = int(t.tensor_type)
    shape = tuple(int(x) for x in reversed([int(v) for v in t.shape]))
    flat = dequantize(np.asarray(t.data), qtype)
    if flat.size != int(np.prod(shape)):
        raise ValueError(f"{t.name}: {flat.size} values, expected {shape}")
    return flat.reshape(shape)


# ----------------------------------------------------------------- self-check

def _random_blocks(qtype: int, nblocks: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes with every f16 field replaced by a finite random half."""
    qk, bs = BLOCK[qtype]
    if qtype == F32:
        return rng.standard_normal(nblocks).astype("<f4").view(np.uint8)
    if qtype == F16:
        return rng.standard_normal(nblocks).astype("<f2").view(np.uint8)
    if qtype == BF16:
        f = rng.standard_normal(nblocks).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype("<u2").view(np.uint8)
    b = rng.integers(0, 256, size=(nblocks, bs), dtype=np.uint8)

    def half(off):
        h = (rng.standard_normal(nblocks) * 0.05).astype("<f2")
        b[:, off:off + 2] = h.view(np.uint8).reshape(nblocks, 2)

    if qtype in (Q4_0, Q5_0, Q8_0):
        half(0)
    elif qtype in (Q4_1, Q5_1, Q4_K, Q5_K):
        half(0), half(2)
    elif qtype == Q6_K:
        half(208)
    return b


def self_check(model: str | None, nblocks: int = 4096, seed: int = 1234) -> int:
    import os
    try:
        from gguf import GGUFReader, GGMLQuantizationType
        from gguf.constants import GGML_QUANT_SIZES
        from gguf.quants import dequantize as gg_dequantize
    except ImportError as e:
        print(f"SKIP: Python package missing ({e}); run scripts/python-env")
        return 77

    rng = np.random.default_rng(seed)
    failures = 0
    print(f"synthetic: {nblocks} random blocks per type, compared with gguf.quants.dequantize")
    for qtype, name in TYPE_NAMES.items():
        gt = GGMLQuantizationType(qtype)
        if GGML_QUANT_SIZES[gt] != BLOCK[qtype]:
            print(f"  {name:5s} FAIL block size {BLOCK[qtype]} != gguf's {GGML_QUANT_SIZES[gt]}")
            failures += 1
            continue
        raw = _random_blocks(qtype, nblocks, rng)
        ours = dequantize(raw, qtype)
        theirs = np.asarray(gg_dequantize(raw.reshape(-1), gt), dtype=np.float32).reshape(-1)
        if ours.shape != theirs.shape:
            print(f"  {name:5s} FAIL shape {ours.shape} vs {theirs.shape}")
            failures += 1
            continue
        err = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
        scale = float(np.max(np.abs(theirs))) or 1.0
        ok = err <= 1e-6 * scale
        failures += not ok
        print(f"  {name:5s} {'ok  ' if ok else 'FAIL'} n={ours.size:8d} max|diff|={err:.3g} "
              f"(max|x|={scale:.3g}, bit-identical={bool(np.array_equal(ours, theirs))})")
    if model and not os.path.isfile(model):
        print(f"real tensors: skipped, {model} not found (scripts/fetch-model fetches it)")
    elif model:
        print(f"real tensors: {model}")
        r = GGUFReader(model)
        worst: dict[str, float] = {}
        for t in r.tensors:
            ours = tensor_f32(t)
            theirs = np.asarray(gg_dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32)
            theirs = theirs.reshape(ours.shape)
            err = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
            scale = float(np.max(np.abs(theirs))) or 1.0
            name = t.tensor_type.name
            worst[name] = max(worst.get(name, 0.0), err / scale)
            if err > 1e-6 * scale:
                print(f"  FAIL {t.name} {name} max|diff|={err:.3g}")
                failures += 1
        for name, e in sorted(worst.items()):
            print(f"  {name:5s} worst max|diff|/max|x| over all {len(r.tensors)} tensors' {name}: {e:.3g}")
    print("dequant self-check:", "PASS" if failures == 0 else f"{failures} FAILED")
    return 1 if failures else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--self-check", action="store_true", help="compare with gguf.quants.dequantize")
    ap.add_argument("--model", help="also check every tensor of this GGUF")
    args = ap.parse_args(argv)
    if args.self_check:
        return self_check(args.model)
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
