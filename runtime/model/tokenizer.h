// Text <-> token ids for GGUF models, matching llama.cpp's tokenizer (and hence the
// Hugging Face tokenizer the GGUF was converted from): byte-level BPE
// (tokenizer.ggml.model "gpt2", ranked merges, a pre-tokenizer regex chosen by
// tokenizer.ggml.pre) and SentencePiece-style BPE ("llama": score-ranked merges,
// "▁" for spaces, <0xXX> byte fallback). Special token texts are recognised
// before pre-tokenization, longest first, as llama.cpp's tokenizer_st_partition.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/unicode.h"

namespace headwise::model {

class GgufFile;

// tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Everything a tokenizer is built from, as the GGUF stores it; tests fill it by
// hand to build tiny vocabularies. Ids are -1 when absent.
struct TokenizerVocab {
  std::string model = "gpt2";   // "gpt2" (byte-level BPE) or "llama" (SentencePiece)
  std::string pre = "default";  // tokenizer.ggml.pre; used by "gpt2" only
  std::vector<std::string> tokens;
  std::vector<float> scores;        // "llama": merge priority per token; empty = all 0
  std::vector<TokenType> types;     // empty = all kNormal
  std::vector<std::string> merges;  // "gpt2": "left right", highest priority first
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  int32_t eot_id = -1;  // tokenizer.ggml.eot_token_id
  int32_t eom_id = -1;  // tokenizer.ggml.eom_token_id
  // Unset = the model's default: add_bos true for "llama" and for the Llama-3
  // pre-tokenizers, false otherwise; add_eos false; add_space_prefix true for
  // "llama", false for "gpt2".
  std::optional<bool> add_bos;
  std::optional<bool> add_eos;
  std::optional<bool> add_space_prefix;
};

// Immutable after construction; all methods are const and thread-safe.
class Tokenizer {
 public:
  // Reads the tokenizer.* metadata. Errors: NotFound naming a missing required
  // key, InvalidArgument naming a key/element of the wrong type or an id out of
  // range, Unimplemented naming an unsupported tokenizer model or pre-tokenizer.
  static absl::StatusOr<Tokenizer> FromGguf(const GgufFile& gguf);
  // Same checks on a hand-built vocabulary.
  static absl::StatusOr<Tokenizer> FromVocab(TokenizerVocab vocab);

  // Token ids of `text` (any bytes; ill-formed UTF-8 is tokenized byte-wise).
  // add_special: prepend BOS / append EOS as the GGUF's add_bos_token /
  // add_eos_token say. parse_special: control and unknown-type token texts
  // (e.g. "<|im_start|>") in `text` become their ids; user-defined tokens are
  // always recognised, as in llama.cpp. Bytes no token covers: byte-level BPE
  // drops them, as HF tokenizers does (SmolLM2 has no token for e.g. 0x04 or
  // 0xF5..0xFF); SentencePiece uses <0xXX> tokens, else the unk id.
  std::vector<int32_t> Encode(std::string_view text, bool add_special, bool parse_special) const;

  // Concatenated bytes of the ids' pieces (not necessarily valid UTF-8 when the
  // ids split a character). render_special: control tokens render as their
  // text; otherwise as nothing. For SentencePiece vocabularies with a space
  // prefix, the leading space of the first text piece is removed, so
  // Decode(Encode(s, false, ...)) == s. Ids out of range render as nothing.
  std::string Decode(std::span<const int32_t> ids, bool render_special = true) const;

  // Bytes of one token (control tokens as their text); empty for an id out of range.
  std::string TokenPiece(int32_t id) const;
  // The vocabulary string as stored (byte-level tokens in GPT-2's mapped form).
  const std::string& TokenText(int32_t id) const;
  TokenType token_type(int32_t id) const;
  // Id of an exact vocabulary string, or -1.
  int32_t FindToken(std::string_view text) const;

  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  int32_t unk() const { return unk_; }
  int32_t pad() const { return pad_; }
  bool add_bos() const { return add_bos_; }
  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  // End of generation: eos, eot, eom, and control tokens such as <|im_end|>,
  // <|eot_id|>, <|end_of_text|>, <|endoftext|>.
  bool IsEog(int32_t id) const;
  const std::string& model() const { return model_; }

 private:
  friend class StreamingDecoder;
  struct Fragment {
    std::string_view text;
    int32_t token = -1;  // >= 0: a special token matched in the input
  };

  Tokenizer() = default;
  absl::Status Init(TokenizerVocab vocab);
  bool InRange(int32_t id) const { return id >= 0 && id < vocab_size(); }
  std::vector<Fragment> Partition(std::string_view text, bool parse_special) const;
  void EncodeBpeWord(std::string_view word, std::vector<int32_t>* out) const;
  void EncodeSpm(std::string_view text, bool space_prefix, std::vector<int32_t>* out) const;
  void PushBytes(std::string_view bytes, std::vector<int32_t>* out) const;
  // Piece of `id` for decoding; *at_text_start tracks the SentencePiece prefix space.
  std::string RenderPiece(int32_t id, bool render_special, bool* at_text_start) const;

  // Hash for heterogeneous (std::string_view) look-ups.
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  std::string model_;
  bool is_spm_ = false;
  PreTokenizerKind pre_kind_ = PreTokenizerKind::kGpt2;
  bool ignore_merges_ = false;
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  StringMap token_to_id_;
  StringMap merge_rank_;              // "left right" -> rank
  std::vector<int32_t> special_ids_;  // longest text first
  std::vector<int32_t> eog_ids_;
  int32_t byte_token_[256] = {};  // token of each byte alone, -1 when none
  int32_t bos_ = -1, eos_ = -1, unk_ = -1, pad_ = -1;
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
};

// Turns ids produced one at a time into text that is always well-formed UTF-8:
// bytes of a character split across tokens are held back until it completes;
// ill-formed bytes become U+FFFD. The concatenation of all Push results and
// Flush equals Decode(ids) whenever that is valid UTF-8. Not thread-safe; the
// tokenizer must outlive it.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool render_special = true)
      : tokenizer_(&tokenizer), render_special_(render_special) {}

  // Text completed by `id` (possibly empty).
  std::string Push(int32_t id);
  // Whatever is held back, with an incomplete trailing sequence as U+FFFD; the
  // decoder then starts afresh.
  std::string Flush();

 private:
  std::string Drain(bool final);

  const Tokenizer* tokenizer_;
  bool render_special_;
  bool at_text_start_ = true;
  std::string pending_;
};

}  // namespace headwise::model
