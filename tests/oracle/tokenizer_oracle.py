#!/usr/bin/env python3
"""Independent tokenizer reference for headwise.

Builds a Hugging Face `tokenizers` Tokenizer from a GGUF's vocabulary and merges
(BPE model, ByteLevel byte mapping, and the pre-tokenizer HF uses for that model
family: for SmolLM2, Sequence[Digits(individual_digits=True), ByteLevel(
add_prefix_space=False, use_regex=True)] as in its tokenizer.json) and encodes
every case of tokenizer_cases.txt. It shares no code with headwise's C++
tokenizer, so agreement is evidence, not tautology.

Modes (the model defaults to models/SmolLM2-135M-Instruct.Q4_1.gguf):
  tokenizer_oracle.py [--model M]                     print each case and its ids
  tokenizer_oracle.py --write-json OUT                write {text: ids}
  tokenizer_oracle.py --emit-cpp N                    C++ table of the first N cases
  tokenizer_oracle.py --headwise-ids JSON             compare headwise's {text: ids}
                                                      (exit 1 on any difference)
  tokenizer_oracle.py --headwise-test BIN             run runtime_tokenizer_test's
                                                      SmolLm2Test.OracleCases to get that
                                                      JSON, then compare (one ctest step)
  tokenizer_oracle.py --pretokenize KIND              HF pre-token splits of the cases
                                                      as JSON (KIND: gpt2, smollm,
                                                      llama3, qwen2); needs no model
Ids are for Encode(text, add_special=false, parse_special=true): HF always
matches added (special) tokens. Exit status 77 means "skipped" (no model file).
"""

import argparse
import json
import os
import sys
import unicodedata

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL = os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_CASES = os.path.join(REPO, "tests", "oracle", "tokenizer_cases.txt")
SKIP = 77

# The split regexes of the HF tokenizer.json files (llama.cpp's llama-vocab.cpp
# lists the same ones per tokenizer.ggml.pre).
GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = LLAMA3_RE.replace(r"\p{N}{1,3}", r"\p{N}")
PRE_FAMILIES = {
    "gpt2": ["gpt2", "gpt-2", "default", "mpt", "olmo", "jais"],
    "smollm": ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"],
    "llama3": ["llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe"],
    "qwen2": ["qwen2", "stablelm2", "deepseek-r1-qwen"],
}


def unescape(line):
    """Decodes the case-file escapes: \\n \\t \\r \\\\ and \\u{HEX}."""
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if c != "\\" or i + 1 == len(line):
            out.append(c)
            i += 1
            continue
        n = line[i + 1]
        if n in "ntr\\":
            out.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[n])
            i += 2
        elif n == "u" and line[i + 2:i + 3] == "{":
            end = line.index("}", i)
            out.append(chr(int(line[i + 3:end], 16)))
            i = end + 1
        else:
            raise ValueError(f"bad escape \\{n} in case {line!r}")
    return "".join(out)


def read_cases(path):
    with open(path, encoding="utf-8") as f:
        return [unescape(l.rstrip("\n")) for l in f if l.rstrip("\n") and not l.startswith("#")]


def family(pre):
    for name, members in PRE_FAMILIES.items():
        if pre in members:
            return name
    raise SystemExit(f"tokenizer_oracle: tokenizer.ggml.pre '{pre}' has no HF reference here")


def hf_pre_tokenizer(kind):
    from tokenizers import Regex, pre_tokenizers as P
    if kind == "gpt2":
        return P.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == "smollm":
        return P.Sequence([P.Digits(individual_digits=True),
                           P.ByteLevel(add_prefix_space=False, use_regex=True)])
    regex = LLAMA3_RE if kind == "llama3" else QWEN2_RE
    return P.Sequence([P.Split(Regex(regex), behavior="isolated", invert=False),
                       P.ByteLevel(add_prefix_space=False, use_regex=False)])


def gguf_field(reader, key):
    from gguf import GGUFValueType
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types[0] == GGUFValueType.ARRAY:
        if f.types[1] == GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    if f.types[0] == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]][0].item()


def build_tokenizer(model_path):
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models
    r = GGUFReader(model_path)
    if gguf_field(r, "tokenizer.ggml.model") != "gpt2":
        raise SystemExit("tokenizer_oracle: only byte-level BPE (tokenizer.ggml.model 'gpt2') "
                         "has an HF reference here")
    kind = family(gguf_field(r, "tokenizer.ggml.pre") or "default")
    tokens = gguf_field(r, "tokenizer.ggml.tokens")
    types = gguf_field(r, "tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in gguf_field(r, "tokenizer.ggml.merges")]
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # first of duplicates wins, as in llama.cpp
    bpe = models.BPE(vocab=vocab, merges=merges, ignore_merges=(kind == "llama3"))
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = hf_pre_tokenizer(kind)
    tk.decoder = decoders.ByteLevel()
    # Control (3) and user-defined (4) tokens are HF added tokens.
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t, ty in zip(tokens, types) if ty in (3, 4)])
    return tk


def cpp_string(s):
    """A C++ string literal for `s` (UTF-8 source; control characters escaped)."""
    esc = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}

    def one(c):
        if c in esc:
            return esc[c]
        if c != " " and unicodedata.category(c)[0] in "CZ":  # invisible: spell it out
            if ord(c) > 0xFFFF:
                return f"\\U{ord(c):08X}"
            return f"\\u{ord(c):04X}" if ord(c) >= 0x80 else f"\\{ord(c):03o}"
        return c
    return '"' + "".join(one(c) for c in s) + '"'


def run_headwise_test(binary, cases):
    """Ids from the C++ tokenizer via its gtest's dump hook (run in the repo root,
    where the test finds the model)."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ids.json")
        env = dict(os.environ, HEADWISE_TOKENIZER_IDS_OUT=out,
                   HEADWISE_TOKENIZER_CASES=os.path.abspath(cases))
        subprocess.run([binary, "--gtest_filter=SmolLm2Test.OracleCases"], cwd=REPO, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--write-json")
    ap.add_argument("--headwise-ids")
    ap.add_argument("--headwise-test")
    ap.add_argument("--emit-cpp", type=int)
    ap.add_argument("--pretokenize", choices=sorted(PRE_FAMILIES))
    args = ap.parse_args()
    cases = read_cases(args.cases)

    if args.pretokenize:
        pre = hf_pre_tokenizer(args.pretokenize)
        from tokenizers import decoders
        dec = decoders.ByteLevel()
        out = [[text, [dec.decode([p]) for p, _ in pre.pre_tokenize_str(text)]] for text in cases]
        json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
        print()
        return 0

    if not os.path.exists(args.model):
        print(f"tokenizer_oracle: SKIP: model {args.model} not found", file=sys.stderr)
        return SKIP
    tk = build_tokenizer(args.model)
    expected = {text: tk.encode(text, add_special_tokens=False).ids for text in cases}
    for text, ids in expected.items():
        if tk.decode(ids, skip_special_tokens=False) != text:
            print(f"tokenizer_oracle: HF round trip fails for {text!r}", file=sys.stderr)

    if args.write_json:
        with open(args.write_json, "w", encoding="utf-8") as f:
            json.dump(expected, f, ensure_ascii=False, indent=1)
        return 0
    if args.emit_cpp:
        for text in cases[:args.emit_cpp]:
            print(f"      {{{cpp_string(text)}, {{{', '.join(map(str, expected[text]))}}}}},")
        return 0
    if args.headwise_test:
        got = run_headwise_test(args.headwise_test, args.cases)
    elif args.headwise_ids:
        with open(args.headwise_ids, encoding="utf-8") as f:
            got = json.load(f)
    if args.headwise_test or args.headwise_ids:
        bad = 0
        for text, ids in expected.items():
            if text not in got:
                print(f"MISSING {text!r}")
                bad += 1
            elif got[text] != ids:
                first = next((i for i, (a, b) in enumerate(zip(ids, got[text])) if a != b),
                             min(len(ids), len(got[text])))
                print(f"MISMATCH {text!r} at index {first}\n  hf:       {ids}\n"
                      f"  headwise: {got[text]}")
                bad += 1
        print(f"tokenizer_oracle: {len(expected) - bad}/{len(expected)} cases agree")
        return 1 if bad else 0
    for text, ids in expected.items():
        print(f"{text!r}\n  {ids}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
