#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ (committed; rerun after editing).

GGUF seeds are written byte by byte (the format is small, and most seeds are
deliberately malformed in the shapes of known GGUF reader CVEs: huge counts,
size and offset overflows, huge string and array lengths, deep nesting). When
gguf-py is importable (e.g. .venv/bin/python), the valid seeds are also checked
against its reader. Request seeds are protobuf wire bytes encoded by hand, so
nothing here needs the network or a protobuf package.

Usage: fuzz/make_seeds.py   (any python3; .venv/bin/python adds the gguf-py check)
"""
import os
import random
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")

U64_MAX = (1 << 64) - 1

# ---------------------------------------------------------------------- GGUF

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)

# ggml type -> (elements per block, bytes per block)
GGML = {
    "F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34), "Q2_K": (10, 256, 84),
    "Q3_K": (11, 256, 110), "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210), "IQ4_NL": (20, 32, 18), "I8": (24, 1, 1), "BF16": (30, 1, 2),
}


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return u64(len(b)) + b


def val(t, v):
    """Encodes a value of type t (without its type tag)."""
    if t == T_ARR:
        elem_type, elems = v
        return u32(elem_type) + u64(len(elems)) + b"".join(val(elem_type, e) for e in elems)
    if t == T_STR:
        return gstr(v)
    fmt = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i",
           T_F32: "<f", T_BOOL: "<B", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}[t]
    return struct.pack(fmt, v)


def kv(key, t, v):
    return gstr(key) + u32(t) + val(t, v)


def tensor_bytes(type_name, dims):
    _, block, size = GGML[type_name]
    rows = 1
    for d in dims[1:]:
        rows *= d
    return rows * (dims[0] // block) * size


def gguf(kvs, tensors=(), version=3, alignment=32, n_kv=None, n_tensors=None, seed=1):
    """kvs: [(key, type, value)]; tensors: [(name, dims, type_name)] laid out
    aligned with random data. n_kv / n_tensors override the header counts."""
    rng = random.Random(seed)
    out = b"GGUF" + u32(version)
    out += u64(len(tensors) if n_tensors is None else n_tensors)
    out += u64(len(kvs) if n_kv is None else n_kv)
    out += b"".join(kv(*x) for x in kvs)
    datas, offset = [], 0
    for name, dims, type_name in tensors:
        n = tensor_bytes(type_name, dims)
        out += gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims)
        out += u32(GGML[type_name][0]) + u64(offset)
        data = bytes(rng.randrange(256) for _ in range(n))
        if type_name in ("F32",):
            data = b"".join(struct.pack("<f", rng.uniform(-1, 1)) for _ in range(n // 4))
        datas.append(data + b"\0" * (-len(data) % alignment))
        offset += len(datas[-1])
    if tensors:
        out += b"\0" * (-len(out) % alignment)
        out += b"".join(datas)
    return out


def llama_kvs(arch="llama", vocab=None, extra=(), int_type=T_U32):
    tokens = vocab or ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "h", "e", "l", "o", "he",
                       "ll", "hell", "hello", "\u0120", "\u0120w", "w", "o", "r", "d", "or"]
    return [
        ("general.architecture", T_STR, arch),
        ("general.name", T_STR, "fuzz seed"),
        ("general.alignment", T_U32, 32),
        (arch + ".block_count", T_U32, 1),
        (arch + ".context_length", T_U32, 2048),
        (arch + ".embedding_length", int_type, 32),
        (arch + ".feed_forward_length", T_U32, 64),
        (arch + ".attention.head_count", int_type, 4),
        (arch + ".attention.head_count_kv", T_U32, 2),
        (arch + ".rope.freq_base", T_F32, 10000.0),
        (arch + ".rope.dimension_count", T_U32, 8),
        (arch + ".attention.layer_norm_rms_epsilon", T_F32, 1e-5),
        ("tokenizer.ggml.model", T_STR, "gpt2"),
        ("tokenizer.ggml.pre", T_STR, "smollm"),
        ("tokenizer.ggml.tokens", T_ARR, (T_STR, tokens)),
        ("tokenizer.ggml.token_type", T_ARR, (T_I32, [3, 3, 3] + [1] * (len(tokens) - 3))),
        ("tokenizer.ggml.merges", T_ARR, (T_STR, ["h e", "l l", "he ll", "hell o",
                                                  "\u0120 w", "o r"])),
        ("tokenizer.ggml.bos_token_id", T_U32, 1),
        ("tokenizer.ggml.eos_token_id", T_U32, 2),
        ("tokenizer.ggml.add_bos_token", T_BOOL, 0),
        ("tokenizer.chat_template", T_STR,
         "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
         "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"),
    ] + list(extra)


LLAMA_TENSORS = [
    ("token_embd.weight", [32, 18], "F16"),
    ("output_norm.weight", [32], "F32"),
    ("blk.0.attn_q.weight", [32, 4], "Q8_0"),
    ("blk.0.attn_k.weight", [32, 16], "Q4_0"),
    ("blk.0.attn_v.weight", [32, 16], "Q4_1"),
    ("blk.0.attn_output.weight", [32, 4], "F32"),
    ("blk.0.ffn_gate.weight", [32, 2], "Q5_0"),
    ("blk.0.ffn_up.weight", [32, 2], "Q5_1"),
    ("blk.0.ffn_down.weight", [256], "Q4_K"),
    ("blk.0.ffn_norm.weight", [256], "Q6_K"),
    ("rope_freqs.weight", [4], "BF16"),
    ("extra.q2k", [256], "Q2_K"),
    ("extra.q3k", [256], "Q3_K"),
    ("extra.q5k", [256], "Q5_K"),
    ("extra.iq4nl", [32], "IQ4_NL"),
    ("extra.i8", [3, 2, 2, 1], "I8"),
]

ALL_TYPES_KVS = [
    ("t.u8", T_U8, 255), ("t.i8", T_I8, -128), ("t.u16", T_U16, 65535), ("t.i16", T_I16, -1),
    ("t.u32", T_U32, 0xFFFFFFFF), ("t.i32", T_I32, -(1 << 31)), ("t.f32", T_F32, float("nan")),
    ("t.bool", T_BOOL, 1), ("t.str", T_STR, "\u00e9\u2581x"), ("t.u64", T_U64, U64_MAX),
    ("t.i64", T_I64, -(1 << 63)), ("t.f64", T_F64, float("-inf")),
    ("t.arr.i64", T_ARR, (T_I64, [1, -2, 3])),
    ("t.arr.nested", T_ARR, (T_ARR, [(T_U8, [1, 2]), (T_STR, ["a", ""]), (T_ARR, [])])),
    ("t.arr.empty", T_ARR, (T_F64, [])),
]


def header(n_tensors, n_kv, version=3):
    return b"GGUF" + u32(version) + u64(n_tensors) + u64(n_kv)


def tensor_entry(name, dims, type_id, offset):
    return gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(type_id) + u64(offset)


def nested_array(depth, leaf_count=1):
    """An array nesting `depth` arrays around `leaf_count` uint8s (value only)."""
    inner = u32(T_U8) + u64(leaf_count) + b"\x07" * leaf_count
    for _ in range(depth - 1):
        inner = u32(T_ARR) + u64(1) + inner
    return inner


def gguf_seeds():
    seeds = {}
    # Counts as uint32 (v3) and as uint64 (v2): both are accepted.
    valid = gguf(llama_kvs(), LLAMA_TENSORS)
    seeds["valid_llama_v3.gguf"] = valid
    seeds["valid_llama_v2.gguf"] = gguf(llama_kvs(int_type=T_U64), LLAMA_TENSORS, version=2)
    seeds["valid_all_value_types.gguf"] = gguf(ALL_TYPES_KVS, [("x", [4], "F32")])
    seeds["valid_qwen2_ff_array_spm.gguf"] = gguf(
        [("general.architecture", T_STR, "qwen2"),
         ("qwen2.block_count", T_U32, 2), ("qwen2.context_length", T_U64, 4096),
         ("qwen2.embedding_length", T_U32, 16),
         ("qwen2.feed_forward_length", T_ARR, (T_U32, [32, 48])),
         ("qwen2.attention.head_count", T_U32, 2),
         ("qwen2.attention.key_length", T_U32, 8), ("qwen2.attention.value_length", T_U32, 8),
         ("qwen2.attention.layer_norm_rms_epsilon", T_F64, 1e-6),
         ("qwen2.rope.scaling.type", T_STR, "yarn"), ("qwen2.rope.scaling.factor", T_F32, 4.0),
         ("qwen2.rope.scaling.original_context_length", T_U32, 1024),
         ("qwen2.vocab_size", T_U32, 8),
         ("tokenizer.ggml.model", T_STR, "llama"),
         ("tokenizer.ggml.tokens", T_ARR,
          (T_STR, ["<unk>", "<s>", "</s>", "<0x41>", "\u2581", "\u2581h", "h", "i"])),
         ("tokenizer.ggml.scores", T_ARR, (T_F32, [0, 0, 0, 0, -1, -2, -3, -3])),
         ("tokenizer.ggml.token_type", T_ARR, (T_I32, [2, 3, 3, 6, 1, 1, 1, 1])),
         ("tokenizer.ggml.unknown_token_id", T_I32, 0),
         ("tokenizer.ggml.add_space_prefix", T_BOOL, 1),
         ("tokenizer.chat_template", T_STR,
          "<|start_header_id|>{{ role }}<|end_header_id|> Cutting Knowledge Date: Dec 2023\n"
          "{% set date_string = \"1 Jan 2025\" %}")],
        [("token_embd.weight", [16, 8], "F32")], seed=2)
    seeds["valid_alignment_64.gguf"] = gguf(
        [("general.alignment", T_U32, 64), ("a", T_STR, "b")], [("x", [2], "F32")], alignment=64)
    seeds["alignment_u64_no_tensors.gguf"] = gguf(
        [("general.alignment", T_U64, 64), ("a", T_STR, "b")])
    seeds["valid_empty_header.gguf"] = header(0, 0)

    # Counts no file can hold (CVE-2024-25664/25665/25666-style n_kv /
    # n_tensors overflows: count * element size wraps 64 bits).
    for name, n in [("max", U64_MAX), ("2pow63", 1 << 63), ("2pow60", 1 << 60),
                    ("2pow59_plus1", (1 << 59) + 1)]:
        seeds[f"cve_n_kv_{name}.gguf"] = header(0, n) + kv("a", T_U8, 1)
        seeds[f"cve_n_tensors_{name}.gguf"] = header(n, 0) + tensor_entry("t", [1], 0, 0)
    seeds["cve_n_kv_and_n_tensors_fill.gguf"] = header(3, 2) + kv("a", T_U8, 1) * 2
    # Size accumulation: two tensors whose sizes each fit but whose sum (the
    # ctx size llama.cpp accumulates) wraps; and element counts that wrap.
    big = (1 << 61)  # F32: 2^63 bytes each
    def with_data(directory):  # header padded to 32, then 64 bytes of data
        return directory + b"\0" * (-len(directory) % 32) + b"\0" * 64

    seeds["cve_size_accumulation_overflow.gguf"] = with_data(
        header(2, 0) + tensor_entry("a", [big], 0, 0) + tensor_entry("b", [big], 0, 1 << 63))
    seeds["cve_n_elements_overflow.gguf"] = with_data(
        header(1, 0) + tensor_entry("a", [1 << 32, 1 << 32, 4], 0, 0))
    seeds["cve_n_bytes_overflow.gguf"] = with_data(header(1, 0) + tensor_entry("a", [1 << 62], 0, 0))
    seeds["cve_n_bytes_overflow_rows.gguf"] = with_data(
        header(1, 0) + tensor_entry("a", [2, 1 << 61], 0, 0))
    # Tensor size just under 2^64 that wraps when padded to the alignment
    # (GGML_PAD(size, 32) in llama.cpp's gguf_init).
    seeds["cve_size_overflow_after_alignment_padding.gguf"] = with_data(
        header(1, 0) + tensor_entry("a", [(1 << 62) - 1], 0, 0))
    seeds["cve_size_overflow_after_alignment_padding_i8.gguf"] = with_data(
        header(1, 0) + tensor_entry("a", [(1 << 63) - 1, 1], GGML["I8"][0], 0))
    seeds["cve_size_overflow_after_alignment_padding_2d.gguf"] = with_data(
        header(1, 0) + tensor_entry("a", [(1 << 31) - 1, (1 << 31) + 1], 0, 0))
    # Data offsets past the end of the file, and offset + size wrapping.
    body = header(1, 0) + tensor_entry("a", [8], 0, 0)
    body += b"\0" * (-len(body) % 32)
    seeds["cve_tensor_data_past_eof.gguf"] = body + b"\0" * 16
    for name, off in [("2pow63", 1 << 63), ("max_aligned", U64_MAX - 31), ("eof", 64),
                      ("unaligned", 4)]:
        e = header(1, 0) + tensor_entry("a", [8], 0, off)
        e += b"\0" * (-len(e) % 32)
        seeds[f"cve_tensor_offset_{name}.gguf"] = e + b"\0" * 32
    seeds["cve_header_padding_past_eof.gguf"] = header(1, 0) + tensor_entry("a", [1], 0, 0)
    for name, t, a in [("2pow63", T_U64, 1 << 63), ("2pow62", T_I64, 1 << 62)]:
        seeds[f"cve_huge_alignment_{name}.gguf"] = with_data(
            header(1, 1) + kv("general.alignment", t, a) + tensor_entry("a", [1], 0, 0))
        seeds[f"cve_huge_alignment_{name}_no_tensors.gguf"] = (
            header(0, 1) + kv("general.alignment", t, a))
    # Huge string lengths: key, value, tensor name.
    for name, n in [("max", U64_MAX), ("2pow63", 1 << 63), ("one_past", 2)]:
        seeds[f"cve_key_length_{name}.gguf"] = header(0, 1) + u64(n) + b"k" * 32
        seeds[f"cve_string_length_{name}.gguf"] = header(0, 1) + gstr("k") + u32(T_STR) + u64(n)
        seeds[f"cve_tensor_name_length_{name}.gguf"] = header(1, 0) + u64(n) + b"t" * 40
    # Huge array lengths, per element type (count * size wraps for 8-byte types).
    for name, t, n in [("u8_max", T_U8, U64_MAX), ("u64_2pow61", T_U64, 1 << 61),
                       ("str_2pow60", T_STR, 1 << 60), ("arr_2pow62", T_ARR, 1 << 62),
                       ("f32_2pow62", T_F32, (1 << 62) + 1)]:
        seeds[f"cve_array_length_{name}.gguf"] = (
            header(0, 1) + gstr("a") + u32(T_ARR) + u32(t) + u64(n) + b"\0" * 64)
    seeds["cve_array_of_strings_huge_inner.gguf"] = (
        header(0, 1) + gstr("a") + u32(T_ARR) + u32(T_STR) + u64(2) + gstr("x") + u64(U64_MAX))
    # Nested arrays: at the depth limit, past it, and far past it.
    for depth in (8, 9, 64):
        seeds[f"cve_nested_arrays_depth_{depth}.gguf"] = (
            header(0, 1) + gstr("n") + u32(T_ARR) + nested_array(depth))
    seeds["cve_nested_arrays_wide.gguf"] = (
        header(0, 1) + gstr("n") + u32(T_ARR) + u32(T_ARR) + u64(100) +
        (u32(T_ARR) + u64(0)) * 100)
    # Other malformations.
    seeds["bad_magic.gguf"] = b"GGML" + valid[4:64]
    seeds["bad_version_1.gguf"] = b"GGUF" + u32(1) + valid[8:64]
    seeds["bad_version_big_endian.gguf"] = b"GGUF" + struct.pack(">I", 3) + valid[8:64]
    seeds["bad_value_type.gguf"] = header(0, 1) + gstr("k") + u32(13) + b"\0" * 8
    seeds["bad_array_element_type.gguf"] = header(0, 1) + gstr("k") + u32(T_ARR) + u32(99) + u64(1)
    seeds["bad_bool.gguf"] = header(0, 1) + gstr("k") + u32(T_BOOL) + b"\x02"
    seeds["bad_duplicate_key.gguf"] = header(0, 2) + kv("k", T_U8, 1) * 2
    seeds["bad_duplicate_tensor.gguf"] = (
        header(2, 0) + tensor_entry("t", [8], 0, 0) + tensor_entry("t", [8], 0, 32) + b"\0" * 96)
    seeds["bad_n_dims_0.gguf"] = header(1, 0) + tensor_entry("t", [], 0, 0) + b"\0" * 40
    seeds["bad_n_dims_5.gguf"] = header(1, 0) + tensor_entry("t", [1] * 5, 0, 0) + b"\0" * 40
    seeds["bad_n_dims_max.gguf"] = header(1, 0) + gstr("t") + u32(0xFFFFFFFF) + b"\0" * 40
    seeds["bad_dim_0.gguf"] = header(1, 0) + tensor_entry("t", [0], 0, 0) + b"\0" * 40
    seeds["bad_tensor_type.gguf"] = header(1, 0) + tensor_entry("t", [32], 1000, 0) + b"\0" * 200
    seeds["bad_block_size.gguf"] = header(1, 0) + tensor_entry("t", [33], 2, 0) + b"\0" * 200
    for name, t, v in [("zero", T_U32, 0), ("three", T_U32, 3), ("negative", T_I32, -32),
                       ("string", T_STR, "32"), ("bool", T_BOOL, 1)]:
        seeds[f"bad_alignment_{name}.gguf"] = header(0, 1) + kv("general.alignment", t, v)
    # Regressions: head dims the reader accepts whose sum overflowed int64 in
    # KvBytesPerToken (model_info.cc; UBSan reports it).
    def with_kvs(replace, extra=()):
        kvs = [(k, *replace[k]) if k in replace else (k, t, v) for k, t, v in llama_kvs()]
        return gguf(kvs + list(extra), [("x", [4], "F32")])

    seeds["regression_kv_bytes_overflow_head_dims.gguf"] = with_kvs({}, [
        ("llama.attention.key_length", T_I64, 1 << 62),
        ("llama.attention.value_length", T_I64, 1 << 62)])
    seeds["regression_kv_bytes_overflow_embd.gguf"] = with_kvs({
        "llama.embedding_length": (T_U64, (1 << 63) - 1),
        "llama.attention.head_count": (T_U32, 1),
        "llama.attention.head_count_kv": (T_U32, 1)})
    seeds["bad_tokenizer_ids.gguf"] = gguf(llama_kvs()[:17] + [
        ("tokenizer.ggml.bos_token_id", T_I64, 1 << 40),
        ("tokenizer.ggml.eos_token_id", T_I32, -2)])
    seeds["truncated_header.gguf"] = valid[:20]
    seeds["truncated_metadata.gguf"] = valid[:300]
    seeds["truncated_directory.gguf"] = valid[:len(valid) // 2]
    seeds["truncated_data.gguf"] = valid[:-1]
    seeds["empty.gguf"] = b""
    seeds["magic_only.gguf"] = b"GGUF"
    return seeds


def check_with_gguf_py(path):
    """Parses a valid seed with gguf-py's reader, when it is installed."""
    try:
        import gguf as gguf_py  # noqa: F401
        from gguf import GGUFReader
    except ImportError:
        return False
    reader = GGUFReader(path)
    assert len(reader.fields) > 0 or os.path.getsize(path) == 24, path
    return True

# ----------------------------------------------------------------- tokenizer


def tokenizer_seeds():
    texts = [
        b"Hello world", b"hello world 123 4567", b"  leading and   inner   spaces  \n\n\t",
        "caf\u00e9 na\u00efve \u4e2d\u6587 \U0001F600 \u0661\u0662".encode(),
        b"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", b"<tool>x<tool><|im",
        b"it's we're they've I'm you'll he'd IT'S", b"\xff\xfe\x80\xc0\xaf\xed\xa0\x80\xf4\x90",
        b"\xe2\x96\x81hello\xe2\x96\x81world", b"<s>hi</s><unk><0x41>", b"aaaaaaaaaaaaaaaa",
        b"\r\n\r\n  \n x", b"", b"12345678901234567890", b"\x00\x01\x02\x1f\x7f",
    ]
    seeds = {}
    for i, text in enumerate(texts):
        for tok in range(7):
            flags = tok | (0x08 if i % 2 else 0) | (0x10 if i % 3 else 0) | 0x20
            seeds[f"encode_{tok}_{i:02d}.bin"] = bytes([flags]) + text
    id_lists = [[0, 1, 2, 3, 4, 5], [-1, -2147483648, 2147483647, 49151, 49152, 300],
                [3 + 0xE2, 3 + 0x96, 3 + 0x81, 3 + 0xF0, 3 + 0x9F], [1, 9, 10, 11, 12, 2],
                list(range(250, 290))]
    for i, ids in enumerate(id_lists):
        for tok in range(7):
            flags = tok | 0x40 | (0x20 if i % 2 else 0)
            seeds[f"decode_{tok}_{i:02d}.bin"] = bytes([flags]) + struct.pack(
                f"<{len(ids)}i", *ids)
    return seeds

# -------------------------------------------------------------- chat template


SMOL = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}")
QWEN = ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
        "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou "
        "are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
        "{%- endif %}")
LLAMA31 = ("{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = "
           "\"26 Jul 2024\" %}\n{%- endif %}\n{{- \"<|start_header_id|>system<|end_header_id|>"
           "\\n\\n\" }}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today "
           "Date: \" + date_string + \"\\n\\n\" }}")


def chat_seeds():
    convo = ["system", " Be brief.\n", "user", "Hi \u00e9\u3000", "assistant", "Hello!",
             "tool", "{}", "ipython", "x"]
    seeds = {}
    for i, tmpl in enumerate([SMOL, QWEN, LLAMA31, "<|start_header_id|>", "<|im_start|>",
                              "{{ unknown }}", "", "Cutting Knowledge Date: <|start_header_id|>"]):
        fields = [tmpl] + convo[: 2 + 2 * (i % 5)]
        seeds[f"template_{i}.bin"] = bytes([i & 1]) + "\0".join(fields).encode()
    for source in (1, 2, 3):
        for gen in (0, 1):
            for n in (0, 1, 3, 5):
                fields = convo[: 2 * n]
                seeds[f"builtin_{source}_{gen}_{n}.bin"] = (
                    bytes([gen | source << 1]) + "\0".join(fields).encode())
    seeds["builtin_2_odd_fields.bin"] = bytes([5]) + b"user\0 \t\xe3\x80\x80 x \n\0user"
    return seeds

# ------------------------------------------------------------------ requests


def varint(v):
    out = b""
    v &= U64_MAX
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 2:
        return key + varint(len(payload)) + payload
    if wire == 5:
        return key + payload
    raise ValueError(wire)


def pstr(num, s):
    return field(num, 2, s.encode() if isinstance(s, str) else s)


def pf32(num, v):
    return field(num, 5, struct.pack("<f", v))


def sampling(max_tokens=0, temperature=0.0, top_p=0.0, top_k=0, min_p=0.0, rep=0.0, seed=0,
             stop=(), stop_ids=(), ignore_eos=False):
    out = b""
    if max_tokens:
        out += field(1, 0, max_tokens)
    if temperature:
        out += pf32(2, temperature)
    if top_p:
        out += pf32(3, top_p)
    if top_k:
        out += field(4, 0, top_k)
    if min_p:
        out += pf32(5, min_p)
    if rep:
        out += pf32(6, rep)
    if seed:
        out += field(7, 0, seed)
    for s in stop:
        out += pstr(8, s)
    if stop_ids:
        out += field(9, 2, b"".join(varint(i) for i in stop_ids))  # packed
    if ignore_eos:
        out += field(10, 0, 1)
    return out


def policy(name, params=()):
    out = pstr(1, name)
    for k, v in params:
        out += field(2, 2, pstr(1, k) + pstr(2, v))
    return out


def request_seeds():
    nan, inf = float("nan"), float("inf")
    chat = field(2, 2, field(1, 2, pstr(1, "user") + pstr(2, "Hi")) +
                 field(1, 2, pstr(1, "assistant") + pstr(2, "Hello")))
    generate = {
        "text": pstr(1, "Hello") + field(4, 2, sampling(max_tokens=16, temperature=0.7,
                                                        top_p=0.9, top_k=40, seed=7)),
        "chat": chat + field(5, 2, policy("exact")),
        "chat_no_role": field(2, 2, field(1, 2, pstr(2, "no role"))),
        "chat_empty": field(2, 2, b""),
        "token_ids": field(3, 2, field(1, 2, b"".join(varint(i) for i in [1, 2, 49151]))),
        "token_ids_out_of_range": field(3, 2, field(1, 2, varint(49152) + varint(-1))),
        "no_input": field(4, 2, sampling(max_tokens=1)),
        "policy_hybrid": pstr(1, "x") + field(5, 2, policy("hybrid", [("k", "v")])),
        "policy_unknown": pstr(1, "x") + field(5, 2, policy("bogus")),
        "max_tokens_huge": pstr(1, "x") + field(4, 2, sampling(max_tokens=0xFFFFFFFF)),
        "max_tokens_limit": pstr(1, "x") + field(4, 2, sampling(max_tokens=1 << 24)),
        "temperature_nan": pstr(1, "x") + field(4, 2, sampling(temperature=nan)),
        "temperature_negative": pstr(1, "x") + field(4, 2, sampling(temperature=-1.0)),
        "top_p_inf": pstr(1, "x") + field(4, 2, sampling(top_p=inf)),
        "min_p_one": pstr(1, "x") + field(4, 2, sampling(min_p=1.0)),
        "repetition_penalty_negative": pstr(1, "x") + field(4, 2, sampling(rep=-2.0)),
        "top_k_huge": pstr(1, "x") + field(4, 2, sampling(top_k=0xFFFFFFFF)),
        "stop_empty": pstr(1, "x") + field(4, 2, sampling(stop=["", "a"])),
        "stop_ids": pstr(1, "x") + field(4, 2, sampling(stop=["\n"], stop_ids=[2, -5],
                                                        ignore_eos=True)),
        "bad_utf8": pstr(1, b"\xff\xfe"),
        "unknown_fields": pstr(1, "x") + field(99, 0, 5) + field(100, 2, b"zz"),
        "truncated": (pstr(1, "Hello") + field(4, 2, sampling(max_tokens=5)))[:-2],
    }
    seeds = {f"generate_{k}.bin": b"\x00" + v for k, v in generate.items()}

    def parts(*messages):
        return b"".join(struct.pack("<H", len(m)) + m for m in messages)

    sessions = {
        "chunks": parts(pstr(1, "The pass key is "), pstr(1, "12345."), pstr(1, "")),
        "path": parts(pstr(2, "ctx.txt")),
        "path_bad": parts(pstr(2, "../etc/passwd")),
        "chunk_then_path": parts(pstr(1, "a"), pstr(2, "ctx.txt")),
        "empty_chunk_then_path": parts(pstr(1, ""), pstr(2, "ctx.txt")),
        "path_then_chunk": parts(pstr(2, "ctx.txt"), pstr(1, "a")),
        "two_paths": parts(pstr(2, "a.txt"), pstr(2, "b.txt")),
        "policy_quantkv": parts(pstr(1, "a") + field(3, 2, policy("quantkv"))),
        "policy_exact": parts(pstr(1, "a") + field(3, 2, policy("exact"))),
        "no_parts": b"",
        "undecodable_part": parts(b"\x0a\xff"),
    }
    seeds.update({f"open_session_{k}.bin": b"\x01" + v for k, v in sessions.items()})
    ask = {
        "ok": pstr(1, "s-1") + pstr(2, "What is the pass key?") +
        field(3, 2, sampling(max_tokens=8)),
        "bad_sampling": pstr(1, "s-1") + field(3, 2, sampling(top_p=-0.5)),
        "empty": b"",
    }
    seeds.update({f"ask_{k}.bin": b"\x02" + v for k, v in ask.items()})
    seeds["close_session.bin"] = b"\x03" + pstr(1, "s-1") + field(2, 0, 1)
    seeds["close_session_bad_utf8.bin"] = b"\x03" + pstr(1, b"\xc0\xaf")
    seeds["list_sessions.bin"] = b"\x04"
    seeds["get_model_info.bin"] = b"\x05" + field(1, 0, 3)
    seeds["get_cluster_stats.bin"] = b"\x06"
    seeds["sampling_only.bin"] = b"\x07" + sampling(max_tokens=3, temperature=1.5, min_p=0.05,
                                                    rep=1.1, stop=["</s>"])
    return seeds

# ---------------------------------------------------------------------------


def write(name, seeds):
    d = os.path.join(CORPUS, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    for file_name, data in sorted(seeds.items()):
        with open(os.path.join(d, file_name), "wb") as f:
            f.write(data)
    print(f"{name}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")


def main():
    g = gguf_seeds()
    write("gguf", g)
    checked = [n for n in sorted(g) if n.startswith("valid_") and
               check_with_gguf_py(os.path.join(CORPUS, "gguf", n))]
    print("gguf-py parsed: " + (", ".join(checked) if checked else "(gguf-py not installed)"))
    write("tokenizer", tokenizer_seeds())
    write("chat_template", chat_seeds())
    write("request", request_seeds())


if __name__ == "__main__":
    sys.exit(main())
