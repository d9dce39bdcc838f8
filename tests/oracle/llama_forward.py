#!/usr/bin/env python3
"""Independent numpy forward pass for llama / qwen2-style GGUF models (the oracle).

Semantics follow llama.cpp's llama graph: token embeddings; per layer
RMSNorm -> q, k, v (+ qwen2 biases) -> RoPE (ggml NORM mode for llama: adjacent
pairs (x[2i], x[2i+1]); NEOX mode for qwen2: pairs (x[i], x[i+n_rot/2])),
theta_i = pos * base^(-2i/n_rot) [* freq_scale] [/ rope_freqs[i]] -> causal GQA
attention scaled by 1/sqrt(head_dim) -> attn_output -> residual -> RMSNorm ->
SwiGLU FFN down(silu(gate x) * up x) -> residual; output_norm; output.weight
or tied token_embd.weight -> logits.

Weights are dequantized with dequant.py (our own code) and held in the compute
dtype (float64 by default). Softmax, RMSNorm statistics and RoPE angles are
always float64. A simple KV cache makes greedy continuation incremental; it is
mathematically identical to re-running the whole sequence.

Usage:
  llama_forward.py --model M --ids 1,2,3 [--dump-layer-outputs DIR] [-n 16]
  llama_forward.py --model M --prompt TEXT [--chat] [-n 16] [--top 5]
  llama_forward.py fake-headwise {generate|inspect} ...   (test double of the
      headwise CLI contract, used by oracle_test.py --self)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dequant  # noqa: E402

ROPE_NORM, ROPE_NEOX = 0, 2
ARCH_ROPE = {"llama": ROPE_NORM, "mistral": ROPE_NORM, "qwen2": ROPE_NEOX}


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


class Model:
    def __init__(self, path: str, dtype=np.float64, load_weights: bool = True):
        from gguf import GGUFReader

        self.path = path
        self.dtype = np.dtype(dtype)
        self.reader = r = GGUFReader(path)
        arch = _field(r, "general.architecture")
        if arch not in ARCH_ROPE:
            raise NotImplementedError(f"architecture {arch!r} is not supported by the oracle")
        self.arch = arch

        def hp(key, default=None):
            v = _field(r, f"{arch}.{key}", default)
            if v is None:
                raise KeyError(f"GGUF lacks {arch}.{key}")
            return v

        self.n_embd = int(hp("embedding_length"))
        self.n_layer = int(hp("block_count"))
        self.n_ff = int(hp("feed_forward_length"))
        self.n_head = int(hp("attention.head_count"))
        self.n_head_kv = int(hp("attention.head_count_kv", self.n_head))
        self.head_dim = int(hp("attention.key_length", self.n_embd // self.n_head))
        self.head_dim_v = int(hp("attention.value_length", self.head_dim))
        self.n_rot = int(hp("rope.dimension_count", self.head_dim))
        self.rope_base = float(hp("rope.freq_base", 10000.0))
        self.eps = float(hp("attention.layer_norm_rms_epsilon"))
        self.rope_mode = ARCH_ROPE[arch]
        scaling = _field(r, f"{arch}.rope.scaling.type", "none")
        self.freq_scale = 1.0
        if scaling == "linear":
            self.freq_scale = 1.0 / float(hp("rope.scaling.factor"))
        elif scaling not in ("none", None):
            raise NotImplementedError(f"rope scaling {scaling!r} is not supported by the oracle")

        self.tensors = {t.name: t for t in r.tensors}
        self.vocab_size = int(self.tensors["token_embd.weight"].shape[1])
        self.W: dict[str, np.ndarray] = {}
        if load_weights:
            for name in self.tensors:
                self.W[name] = self._load(name)
            self.lm_head = self.W.get("output.weight", self.W["token_embd.weight"])
            ff = self.W.get("rope_freqs.weight")
            self.rope_ff = None if ff is None else ff.astype(np.float64)
        self._tok = None

    def _load(self, name):
        a = dequant.tensor_f32(self.tensors[name])
        if a.ndim == 1:  # norms, biases, rope factors: keep float64 for the arithmetic
            return a.astype(np.float64)
        return a.astype(self.dtype)

    # ------------------------------------------------------------- pieces

    def rms_norm(self, x, w):
        x64 = x.astype(np.float64)
        inv = 1.0 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + self.eps)
        return (x64 * inv * w).astype(self.dtype)

    def rope_cos_sin(self, pos: np.ndarray):
        i = np.arange(self.n_rot // 2, dtype=np.float64)
        inv_freq = self.rope_base ** (-2.0 * i / self.n_rot) * self.freq_scale
        if self.rope_ff is not None:
            inv_freq = inv_freq / self.rope_ff
        theta = pos.astype(np.float64)[:, None] * inv_freq[None, :]   # (T, n_rot/2)
        return np.cos(theta), np.sin(theta)

    def rope(self, x, cos, sin):
        """x (T, H, D); rotate the first n_rot dims."""
        x = x.astype(np.float64)
        out = x.copy()
        c, s = cos[:, None, :], sin[:, None, :]
        if self.rope_mode == ROPE_NORM:
            x0, x1 = x[..., 0:self.n_rot:2], x[..., 1:self.n_rot:2]
            out[..., 0:self.n_rot:2] = x0 * c - x1 * s
            out[..., 1:self.n_rot:2] = x0 * s + x1 * c
        else:
            h = self.n_rot // 2
            x0, x1 = x[..., 0:h], x[..., h:self.n_rot]
            out[..., 0:h] = x0 * c - x1 * s
            out[..., h:self.n_rot] = x0 * s + x1 * c
        return out.astype(self.dtype)

    @staticmethod
    def silu(x):
        x64 = x.astype(np.float64)
        return (x64 * (0.5 * (1.0 + np.tanh(0.5 * x64)))).astype(x.dtype)

    def linear(self, x, name):
        y = x @ self.W[name].T
        b = self.W.get(name.replace(".weight", ".bias"))
        if b is not None:
            y = (y + b).astype(self.dtype)
        return y

    # ------------------------------------------------------------- forward

    def new_cache(self):
        return {"n": 0, "k": [None] * self.n_layer, "v": [None] * self.n_layer}

    def forward(self, ids, cache=None, all_logits=False, hook=None):
        """Run tokens `ids` after whatever `cache` holds. Returns logits (vocab,) of the
        last position (or (T, vocab) with all_logits). hook(name, layer, array) sees
        intermediate activations."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError("ids must be a non-empty 1-D sequence")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"token id out of range [0, {self.vocab_size})")
        if cache is None:
            cache = self.new_cache()
        T, n0 = ids.size, cache["n"]
        H, Hkv, D, Dv = self.n_head, self.n_head_kv, self.head_dim, self.head_dim_v
        G = H // Hkv
        pos = np.arange(n0, n0 + T)
        cos, sin = self.rope_cos_sin(pos)
        if hook is None:
            def hook(*_):
                return None

        x = self.W["token_embd.weight"][ids].astype(self.dtype)     # (T, n_embd)
        hook("embd", -1, x)
        S = n0 + T
        # causal mask for the new queries against all S keys
        mask = np.arange(S)[None, :] > pos[:, None]                    # (T, S) True = masked
        scale = 1.0 / np.sqrt(D)
        for il in range(self.n_layer):
            p = f"blk.{il}."
            h = self.rms_norm(x, self.W[p + "attn_norm.weight"])
            q = self.linear(h, p + "attn_q.weight").reshape(T, H, D)
            k = self.linear(h, p + "attn_k.weight").reshape(T, Hkv, D)
            v = self.linear(h, p + "attn_v.weight").reshape(T, Hkv, Dv)
            q = self.rope(q, cos, sin)
            k = self.rope(k, cos, sin)
            if cache["k"][il] is None:
                cache["k"][il], cache["v"][il] = k, v
            else:
                cache["k"][il] = np.concatenate([cache["k"][il], k], axis=0)
                cache["v"][il] = np.concatenate([cache["v"][il], v], axis=0)
            K, V = cache["k"][il], cache["v"][il]                      # (S, Hkv, D)
            # GQA: q head j uses kv head j // G
            qg = q.reshape(T, Hkv, G, D).transpose(1, 2, 0, 3).reshape(Hkv, G * T, D)
            kt = K.transpose(1, 2, 0)                                   # (Hkv, D, S)
            sc = (qg @ kt).astype(np.float64).reshape(Hkv, G, T, S) * scale
            sc[:, :, mask] = -np.inf
            sc -= sc.max(axis=-1, keepdims=True)
            pr = np.exp(sc)
            pr /= pr.sum(axis=-1, keepdims=True)
            vh = V.transpose(1, 0, 2)                                   # (Hkv, S, Dv)
            o = (pr.reshape(Hkv, G * T, S).astype(self.dtype) @ vh)     # (Hkv, G*T, Dv)
            o = o.reshape(Hkv, G, T, Dv).transpose(2, 0, 1, 3).reshape(T, H * Dv)
            a = self.linear(o, p + "attn_output.weight")
            x = x + a
            h = self.rms_norm(x, self.W[p + "ffn_norm.weight"])
            f = self.silu(self.linear(h, p + "ffn_gate.weight")) * self.linear(h, p + "ffn_up.weight")
            f = self.linear(f, p + "ffn_down.weight")
            x = x + f
            for name, arr in (("q_rope", q), ("k_rope", k), ("v", v), ("attn_out", a), ("ffn_out", f),
                              ("layer_out", x)):
                hook(name, il, arr)
        cache["n"] = S
        xs = x if all_logits else x[-1:]
        hn = self.rms_norm(xs, self.W["output_norm.weight"])
        hook("output_norm", self.n_layer, hn)
        logits = (hn @ self.lm_head.T).astype(np.float64)
        return logits if all_logits else logits[0]

    def greedy(self, ids, n, stop_ids=()):
        """Greedy continuation. Returns (generated ids, first-step logits, per-step margins
        top1 - top2 of the oracle's logits)."""
        cache = self.new_cache()
        logits = self.forward(ids, cache)
        first = logits
        out, margins = [], []
        for step in range(n):
            top2 = np.argpartition(-logits, 1)[:2]
            tok = int(np.argmax(logits))
            margins.append(float(abs(logits[top2[0]] - logits[top2[1]])))
            out.append(tok)
            if tok in stop_ids or step == n - 1:
                break
            logits = self.forward([tok], cache)
        return out, first, margins

    # ------------------------------------------------------------- tokenizer

    def eog_ids(self):
        r = self.reader
        ids = set()
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            v = _field(r, key)
            if v is not None:
                ids.add(int(v))
        tokens = _field(r, "tokenizer.ggml.tokens") or []
        for i, t in enumerate(tokens):
            if t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>"):
                ids.add(i)
        return ids

    def tokenizer(self):
        if self._tok is None:
            self._tok = build_tokenizer(self.reader)
        return self._tok

    def encode(self, text):
        tok, add_bos, bos = self.tokenizer()
        ids = tok.encode(text, add_special_tokens=False).ids
        return ([bos] if add_bos else []) + ids

    def decode(self, ids):
        return self.tokenizer()[0].decode(list(ids), skip_special_tokens=False)


# Pre-tokenizer regexes of llama.cpp (llama-vocab.cpp) per tokenizer.ggml.pre.
_GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_LLAMA3_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
              r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
_QWEN2_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
             r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


def build_tokenizer(reader):
    """HF `tokenizers` byte-level BPE built from the GGUF vocab and merges.
    Returns (tokenizer, add_bos, bos_id)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise NotImplementedError(f"tokenizer model {model!r}: only byte-level BPE (gpt2) is supported")
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in ("smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva-7b"):
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split(Regex(_GPT2_RE), behavior="isolated"), bl])
    elif pre in ("gpt-2", "default", "gpt2"):
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_GPT2_RE), behavior="isolated"), bl])
    elif pre in ("llama-bpe", "llama3"):
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_LLAMA3_RE), behavior="isolated"), bl])
    elif pre in ("qwen2",):
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_QWEN2_RE), behavior="isolated"), bl])
    else:
        raise NotImplementedError(f"pre-tokenizer {pre!r} is not supported by the oracle")
    tk.decoder = decoders.ByteLevel()
    # control (3) and user-defined (4) tokens are matched whole, as llama.cpp does
    specials = [AddedToken(tokens[i], special=True, normalized=False)
                for i, ty in enumerate(types) if int(ty) in (3, 4)]
    tk.add_special_tokens(specials)
    add_bos = bool(_field(reader, "tokenizer.ggml.add_bos_token", False))
    bos = int(_field(reader, "tokenizer.ggml.bos_token_id", 1))
    return tk, add_bos, bos


def chat_prompt(user: str) -> str:
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


# ----------------------------------------------------------------- fake headwise

def fake_headwise(argv) -> int:
    """A stand-in obeying the headwise CLI contract (generate / inspect), computing
    with this oracle in --dtype (float32 by default) and dequantizing with
    gguf.quants (an implementation other than ours). Plumbing tests only."""
    ap = argparse.ArgumentParser(prog="fake-headwise")
    ap.add_argument("--dtype", default="float32")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("-m", required=True)
    g.add_argument("-p", required=True)
    g.add_argument("-n", type=int, default=16)
    g.add_argument("--temp", type=float, default=0.0)
    g.add_argument("--stats-json")
    g.add_argument("--dump-logits")
    i = sub.add_parser("inspect")
    i.add_argument("model")
    i.add_argument("--dump-tensor", required=True)
    i.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "inspect":
        from gguf import GGUFReader
        from gguf.quants import dequantize as gg_dequantize
        r = GGUFReader(a.model)
        t = next((t for t in r.tensors if t.name == a.dump_tensor), None)
        if t is None:
            print(f"no tensor {a.dump_tensor}", file=sys.stderr)
            return 1
        np.asarray(gg_dequantize(np.asarray(t.data), t.tensor_type), dtype="<f4").tofile(a.out)
        return 0
    if a.temp != 0.0:
        print("fake-headwise: only --temp 0", file=sys.stderr)
        return 2
    m = Model(a.m, dtype=np.dtype(a.dtype))
    ids = m.encode(a.p)
    t0 = time.time()
    gen, first, _ = m.greedy(ids, a.n, stop_ids=m.eog_ids())
    if a.dump_logits:
        first.astype("<f4").tofile(a.dump_logits)
    if a.stats_json:
        with open(a.stats_json, "w") as f:
            json.dump({"prompt_tokens": len(ids), "prompt_token_ids": ids, "generated_token_ids": gen,
                       "text": m.decode(gen), "policy": "exact", "fake": True,
                       "seconds": time.time() - t0}, f)
    print(m.decode(gen))
    return 0


# ----------------------------------------------------------------- CLI

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "fake-headwise":
        return fake_headwise(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ids", help="comma-separated token ids")
    src.add_argument("--prompt", help="text, tokenised with a BPE built from the GGUF")
    ap.add_argument("--chat", action="store_true", help="wrap --prompt in the ChatML user/assistant template")
    ap.add_argument("-n", "--n-predict", type=int, default=16, help="greedy tokens to generate")
    ap.add_argument("--top", type=int, default=5, help="print the top-N next tokens")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--dump-layer-outputs", metavar="DIR",
                    help="save per-layer hidden states (.npy) for the prompt to DIR")
    ap.add_argument("--dump-detail", action="store_true",
                    help="with --dump-layer-outputs, also save q/k (after RoPE), v, attn_out, ffn_out per layer")
    args = ap.parse_args(argv)

    t0 = time.time()
    m = Model(args.model, dtype=np.dtype(args.dtype))
    print(f"loaded {args.model} ({m.arch}, {m.n_layer} layers, dtype {args.dtype}) in {time.time() - t0:.1f}s")
    if args.ids is not None:
        ids = [int(x) for x in args.ids.split(",") if x.strip()]
    else:
        text = chat_prompt(args.prompt) if args.chat else args.prompt
        ids = m.encode(text)
    print(f"prompt: {len(ids)} tokens: {ids if len(ids) <= 64 else str(ids[:64])[:-1] + ', ...]'}")

    hook = None
    if args.dump_layer_outputs:
        d = args.dump_layer_outputs
        os.makedirs(d, exist_ok=True)
        keep = {"embd", "layer_out", "output_norm"}
        if args.dump_detail:
            keep |= {"q_rope", "k_rope", "v", "attn_out", "ffn_out"}

        def hook(name, layer, arr):
            if name not in keep:
                return
            fn = name if layer < 0 or name == "output_norm" else f"{name}_{layer:02d}"
            if name == "layer_out":
                fn = f"layer_{layer:02d}"
            np.save(os.path.join(d, fn + ".npy"), arr)

    t1 = time.time()
    cache = m.new_cache()
    logits = m.forward(ids, cache, hook=hook)
    t_fwd = time.time() - t1
    if args.dump_layer_outputs:
        np.save(os.path.join(args.dump_layer_outputs, "logits_last.npy"), logits)
        np.save(os.path.join(args.dump_layer_outputs, "ids.npy"), np.asarray(ids, np.int64))
        print(f"wrote per-layer hidden states to {args.dump_layer_outputs}")
    print(f"forward of {len(ids)} tokens: {t_fwd:.2f}s")
    order = np.argsort(-logits)[: args.top]
    have_tok = True
    try:
        m.tokenizer()
    except Exception as e:  # noqa: BLE001
        have_tok = False
        print(f"(no tokenizer: {e})")
    print(f"top-{args.top} next tokens:")
    for t in order:
        txt = repr(m.decode([int(t)])) if have_tok else ""
        print(f"  {int(t):6d} {logits[t]:10.4f} {txt}")
    if args.n_predict > 0:
        t2 = time.time()
        gen, _, margins = m.greedy(ids, args.n_predict, stop_ids=m.eog_ids())
        print(f"greedy {len(gen)} tokens in {time.time() - t2:.2f}s: {gen}")
        print(f"min top1-top2 margin: {min(margins):.4f}")
        if have_tok:
            print("text: " + repr(m.decode(gen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
