// Unicode pieces the tokenizer needs: strict UTF-8 decoding, the \p{L} / \p{N} /
// \s classes of the pre-tokenizer regexes (tables generated from Unicode 14.0, as
// in Python 3.11's unicodedata), and hand-written scanners that split text exactly
// as the pre-tokenizer regexes of llama.cpp / Hugging Face tokenizers do. std::regex
// cannot express \p{..}, and a scanner is linear time on any input.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace headwise::model {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Decodes the code point starting at text[*pos] and advances *pos past it. An
// ill-formed sequence (bad lead, overlong, surrogate, > U+10FFFF, truncated)
// yields kReplacementChar and advances by one byte.
uint32_t DecodeUtf8(std::string_view text, size_t* pos);

// Appends the UTF-8 encoding of `cp` (kReplacementChar when cp is not a scalar value).
void AppendUtf8(uint32_t cp, std::string* out);

// Length of the longest prefix of `bytes` that is well-formed UTF-8.
size_t ValidUtf8Prefix(std::string_view bytes);
inline bool IsValidUtf8(std::string_view bytes) { return ValidUtf8Prefix(bytes) == bytes.size(); }

// True when `bytes` (non-empty, ill-formed as a whole) is the start of a
// well-formed sequence that more bytes could complete, e.g. "\xF0\x9F".
bool IsIncompleteUtf8Sequence(std::string_view bytes);

// Character classes as the regex engines see them.
bool IsLetter(uint32_t cp);      // \p{L}: categories Lu Ll Lt Lm Lo
bool IsNumber(uint32_t cp);      // \p{N}: categories Nd Nl No
bool IsWhitespace(uint32_t cp);  // \s: the Unicode White_Space property

// Pre-tokenizer families for byte-level BPE, selected by tokenizer.ggml.pre.
enum class PreTokenizerKind {
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  // \p{N} split off one digit at a time first, then kGpt2 on the rest (SmolLM,
  // StarCoder: HF's Sequence[Digits(individual_digits), ByteLevel]).
  kDigitsGpt2,
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
  //   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kLlama3,
  // kLlama3 with \p{N} instead of \p{N}{1,3} (Qwen2).
  kQwen2,
};

// Splits `text` into pre-tokens; the pieces are views into `text` and their
// concatenation is `text`. Ill-formed UTF-8 bytes are classed as U+FFFD (a
// symbol), so any byte string splits without error.
std::vector<std::string_view> PreTokenize(PreTokenizerKind kind, std::string_view text);

}  // namespace headwise::model
