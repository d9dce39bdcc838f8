// Tokenizer: GGUF metadata -> vocabulary, special-token partitioning, byte-level
// BPE and SentencePiece BPE encoders, decoding and streaming decoding. The merge
// loops follow llama.cpp's llm_tokenizer_bpe_session / llm_tokenizer_spm_session
// (a priority queue over adjacent pairs, so a pathological long word is
// O(n log n), not quadratic).
#include "runtime/model/tokenizer.h"

#include <algorithm>
#include <array>
#include <functional>
#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/model/gguf.h"

namespace headwise::model {
namespace {

// GPT-2's reversible byte <-> code point mapping: printable bytes map to
// themselves, the other 68 to U+0100.. in byte order.
struct Gpt2ByteMap {
  std::array<uint32_t, 256> byte_to_cp{};
  std::array<int16_t, 324> cp_to_byte{};
  Gpt2ByteMap() {
    cp_to_byte.fill(-1);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      byte_to_cp[b] = printable ? b : next++;
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};
const Gpt2ByteMap& ByteMap() {
  static const Gpt2ByteMap map;
  return map;
}

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 "▁"

// Token texts that end a turn, as llama.cpp's special_eog_ids.
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>",           "<|im_end|>", "<|end|>", "<end_of_turn>",   "<|endoftext|>",
    "<|eom_id|>",           "<EOT>",      "_<EOT>",  "<|end_of_text|>", "<end_of_utterance>",
    "<｜end▁of▁sentence｜>"};

struct PreTokenizerName {
  std::string_view name;
  PreTokenizerKind kind;
  bool ignore_merges;  // a whole word found in the vocabulary skips the merges
  bool default_add_bos;
};
// tokenizer.ggml.pre names as llama.cpp's llama_vocab::impl::load maps them.
// "default" (no name) is approximated by the GPT-2 regex.
constexpr PreTokenizerName kPreTokenizers[] = {
    {"default", PreTokenizerKind::kGpt2, false, false},
    {"gpt2", PreTokenizerKind::kGpt2, false, false},
    {"gpt-2", PreTokenizerKind::kGpt2, false, false},
    {"mpt", PreTokenizerKind::kGpt2, false, false},
    {"olmo", PreTokenizerKind::kGpt2, false, false},
    {"jais", PreTokenizerKind::kGpt2, false, false},
    {"smollm", PreTokenizerKind::kDigitsGpt2, false, false},
    {"starcoder", PreTokenizerKind::kDigitsGpt2, false, false},
    {"refact", PreTokenizerKind::kDigitsGpt2, false, false},
    {"command-r", PreTokenizerKind::kDigitsGpt2, false, false},
    {"codeshell", PreTokenizerKind::kDigitsGpt2, false, false},
    {"exaone", PreTokenizerKind::kDigitsGpt2, false, false},
    {"llama3", PreTokenizerKind::kLlama3, true, true},
    {"llama-v3", PreTokenizerKind::kLlama3, true, true},
    {"llama-bpe", PreTokenizerKind::kLlama3, true, true},
    {"falcon3", PreTokenizerKind::kLlama3, true, true},
    {"pixtral", PreTokenizerKind::kLlama3, true, true},
    {"dbrx", PreTokenizerKind::kLlama3, false, false},
    {"smaug-bpe", PreTokenizerKind::kLlama3, false, false},
    {"qwen2", PreTokenizerKind::kQwen2, false, false},
    {"stablelm2", PreTokenizerKind::kQwen2, false, false},
    {"deepseek-r1-qwen", PreTokenizerKind::kQwen2, false, false},
};

// Optional integer key: -1 when absent.
absl::StatusOr<int64_t> OptionalInt(const GgufFile& gguf, std::string_view key, int64_t absent) {
  if (gguf.Find(key) == nullptr) return absent;
  return gguf.GetInt(key);
}

absl::StatusOr<std::optional<bool>> OptionalBool(const GgufFile& gguf, std::string_view key) {
  if (gguf.Find(key) == nullptr) return std::optional<bool>();
  absl::StatusOr<int64_t> v = gguf.GetInt(key);
  if (!v.ok()) return v.status();
  return std::optional<bool>(*v != 0);
}

absl::StatusOr<std::vector<std::string>> StringArray(const GgufFile& gguf, std::string_view key) {
  absl::StatusOr<const GgufArray*> array = gguf.GetArray(key);
  if (!array.ok()) return array.status();
  std::vector<std::string> out;
  out.reserve((*array)->values.size());
  for (size_t i = 0; i < (*array)->values.size(); ++i) {
    const std::string* s = (*array)->values[i].AsString();
    if (s == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(key), "[", i, "] is ",
          std::string(GgufValueTypeName((*array)->values[i].type)), ", expected string"));
    }
    out.push_back(*s);
  }
  return out;
}

// Length of the maximal prefix of `bytes` that starts a well-formed sequence
// (at least 1): the unit replaced by one U+FFFD.
size_t MaximalSubpart(std::string_view bytes) {
  size_t k = std::min<size_t>(bytes.size(), 3);
  while (k > 1 && !IsIncompleteUtf8Sequence(bytes.substr(0, k))) --k;
  return k;
}

// The byte of a "<0xXX>" token text, or -1.
int ParseByteToken(std::string_view text) {
  if (text.size() != 6 || !text.starts_with("<0x") || text[5] != '>') return -1;
  int value = 0;
  for (char c : text.substr(3, 2)) {
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                             : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::FromGguf(const GgufFile& gguf) {
  TokenizerVocab v;
  absl::StatusOr<std::string> model = gguf.GetString("tokenizer.ggml.model");
  if (!model.ok()) return model.status();
  v.model = *std::move(model);
  if (gguf.Find("tokenizer.ggml.pre") != nullptr) {
    absl::StatusOr<std::string> pre = gguf.GetString("tokenizer.ggml.pre");
    if (!pre.ok()) return pre.status();
    v.pre = *std::move(pre);
  }
  absl::StatusOr<std::vector<std::string>> tokens = StringArray(gguf, "tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  v.tokens = *std::move(tokens);
  if (gguf.Find("tokenizer.ggml.merges") != nullptr || v.model == "gpt2") {
    absl::StatusOr<std::vector<std::string>> merges = StringArray(gguf, "tokenizer.ggml.merges");
    if (!merges.ok()) return merges.status();
    v.merges = *std::move(merges);
  }
  if (gguf.Find("tokenizer.ggml.scores") != nullptr) {
    absl::StatusOr<const GgufArray*> scores = gguf.GetArray("tokenizer.ggml.scores");
    if (!scores.ok()) return scores.status();
    for (size_t i = 0; i < (*scores)->values.size(); ++i) {
      std::optional<double> f = (*scores)->values[i].AsFloat();
      if (!f) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tokenizer.ggml.scores[", i, "] is ",
            std::string(GgufValueTypeName((*scores)->values[i].type)), ", expected a number"));
      }
      v.scores.push_back(static_cast<float>(*f));
    }
  }
  if (gguf.Find("tokenizer.ggml.token_type") != nullptr) {
    absl::StatusOr<const GgufArray*> types = gguf.GetArray("tokenizer.ggml.token_type");
    if (!types.ok()) return types.status();
    for (size_t i = 0; i < (*types)->values.size(); ++i) {
      std::optional<int64_t> t = (*types)->values[i].AsInt();
      if (!t || *t < 0 || *t > static_cast<int64_t>(TokenType::kByte)) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer.ggml.token_type[", i, "] is not a token type (0..6)"));
      }
      v.types.push_back(static_cast<TokenType>(*t));
    }
  }
  const std::pair<std::string_view, int32_t*> ids[] = {
      {"tokenizer.ggml.bos_token_id", &v.bos_id},
      {"tokenizer.ggml.eos_token_id", &v.eos_id},
      {"tokenizer.ggml.unknown_token_id", &v.unk_id},
      {"tokenizer.ggml.padding_token_id", &v.pad_id},
      {"tokenizer.ggml.eot_token_id", &v.eot_id},
      {"tokenizer.ggml.eom_token_id", &v.eom_id}};
  for (const auto& [key, field] : ids) {
    absl::StatusOr<int64_t> id = OptionalInt(gguf, key, -1);
    if (!id.ok()) return id.status();
    if (*id < -1 || *id >= static_cast<int64_t>(v.tokens.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(key), " = ", *id, " is outside the vocabulary of ", v.tokens.size()));
    }
    *field = static_cast<int32_t>(*id);
  }
  const std::pair<std::string_view, std::optional<bool>*> flags[] = {
      {"tokenizer.ggml.add_bos_token", &v.add_bos},
      {"tokenizer.ggml.add_eos_token", &v.add_eos},
      {"tokenizer.ggml.add_space_prefix", &v.add_space_prefix}};
  for (const auto& [key, field] : flags) {
    absl::StatusOr<std::optional<bool>> flag = OptionalBool(gguf, key);
    if (!flag.ok()) return flag.status();
    *field = *flag;
  }
  return FromVocab(std::move(v));
}

absl::StatusOr<Tokenizer> Tokenizer::FromVocab(TokenizerVocab vocab) {
  Tokenizer t;
  absl::Status s = t.Init(std::move(vocab));
  if (!s.ok()) return s;
  return t;
}

absl::Status Tokenizer::Init(TokenizerVocab v) {
  model_ = v.model;
  bool default_add_bos = false;
  if (v.model == "llama") {
    is_spm_ = true;
    default_add_bos = true;
  } else if (v.model == "gpt2") {
    const PreTokenizerName* pre = nullptr;
    for (const PreTokenizerName& p : kPreTokenizers) {
      if (p.name == v.pre) pre = &p;
    }
    if (pre == nullptr) {
      return absl::UnimplementedError(
          absl::StrCat("tokenizer.ggml.pre '", v.pre,
                       "' is not supported (supported: gpt2/default, smollm/starcoder family, "
                       "llama3/llama-bpe family, qwen2 family)"));
    }
    pre_kind_ = pre->kind;
    ignore_merges_ = pre->ignore_merges;
    default_add_bos = pre->default_add_bos;
  } else {
    return absl::UnimplementedError(absl::StrCat("tokenizer.ggml.model '", v.model,
                                                 "' is not supported (supported: gpt2, llama)"));
  }
  const size_t n = v.tokens.size();
  if (n == 0 || n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer has ", n, " tokens"));
  }
  if (!v.scores.empty() && v.scores.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.ggml.scores has ", v.scores.size(), " entries for ", n, " tokens"));
  }
  if (!v.types.empty() && v.types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.token_type has ", v.types.size(),
                                                   " entries for ", n, " tokens"));
  }
  for (int32_t id : {v.bos_id, v.eos_id, v.unk_id, v.pad_id, v.eot_id, v.eom_id}) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("special token id ", id, " is outside the vocabulary of ", n));
    }
  }
  tokens_ = std::move(v.tokens);
  scores_ = v.scores.empty() ? std::vector<float>(n, 0.0f) : std::move(v.scores);
  types_ = v.types.empty() ? std::vector<TokenType>(n, TokenType::kNormal) : std::move(v.types);
  token_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // The first of duplicate strings wins, as in llama.cpp's token_to_id.
    token_to_id_.try_emplace(tokens_[i], static_cast<int32_t>(i));
  }
  merge_rank_.reserve(v.merges.size());
  for (size_t i = 0; i < v.merges.size(); ++i) {
    const std::string& m = v.merges[i];
    const size_t space = m.find(' ', 1);
    if (space == std::string::npos || space + 1 >= m.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.ggml.merges[", i, "] = '", m, "' is not 'left right'"));
    }
    merge_rank_.try_emplace(m, static_cast<int32_t>(i));
  }
  for (int b = 0; b < 256; ++b) {
    std::string text;
    if (is_spm_) {
      text = absl::StrFormat("<0x%02X>", b);
    } else {
      AppendUtf8(ByteMap().byte_to_cp[b], &text);
    }
    byte_token_[b] = FindToken(text);
    if (is_spm_ && byte_token_[b] < 0) byte_token_[b] = FindToken(std::string(1, char(b)));
  }
  for (size_t i = 0; i < n; ++i) {
    const TokenType type = types_[i];
    if ((type == TokenType::kControl || type == TokenType::kUserDefined ||
         type == TokenType::kUnknown) &&
        !tokens_[i].empty()) {
      special_ids_.push_back(static_cast<int32_t>(i));
    }
    if (type == TokenType::kControl || type == TokenType::kUserDefined) {
      for (std::string_view eog : kEogTexts) {
        if (tokens_[i] == eog) eog_ids_.push_back(static_cast<int32_t>(i));
      }
    }
  }
  std::stable_sort(special_ids_.begin(), special_ids_.end(),
                   [this](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });
  for (int32_t id : {v.eos_id, v.eot_id, v.eom_id}) {
    if (id >= 0) eog_ids_.push_back(id);
  }
  std::sort(eog_ids_.begin(), eog_ids_.end());
  eog_ids_.erase(std::unique(eog_ids_.begin(), eog_ids_.end()), eog_ids_.end());
  bos_ = v.bos_id;
  eos_ = v.eos_id;
  unk_ = v.unk_id;
  pad_ = v.pad_id;
  add_bos_ = v.add_bos.value_or(default_add_bos) && bos_ >= 0;
  add_eos_ = v.add_eos.value_or(false) && eos_ >= 0;
  add_space_prefix_ = v.add_space_prefix.value_or(is_spm_);
  return absl::OkStatus();
}

int32_t Tokenizer::FindToken(std::string_view text) const {
  auto it = token_to_id_.find(text);
  return it == token_to_id_.end() ? -1 : it->second;
}

const std::string& Tokenizer::TokenText(int32_t id) const {
  static const std::string kEmpty;
  return InRange(id) ? tokens_[id] : kEmpty;
}

TokenType Tokenizer::token_type(int32_t id) const {
  return InRange(id) ? types_[id] : TokenType::kUndefined;
}

bool Tokenizer::IsEog(int32_t id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

std::vector<Tokenizer::Fragment> Tokenizer::Partition(std::string_view text,
                                                      bool parse_special) const {
  std::vector<Fragment> frags;
  if (!text.empty()) frags.push_back({text, -1});
  for (int32_t id : special_ids_) {
    if (!parse_special && types_[id] != TokenType::kUserDefined) continue;
    const std::string& special = tokens_[id];
    std::vector<Fragment> next;
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t start = 0;
      for (size_t hit = f.text.find(special); hit != std::string_view::npos;
           hit = f.text.find(special, start)) {
        if (hit > start) next.push_back({f.text.substr(start, hit - start), -1});
        next.push_back({f.text.substr(hit, special.size()), id});
        start = hit + special.size();
      }
      if (start < f.text.size()) next.push_back({f.text.substr(start), -1});
    }
    frags = std::move(next);
  }
  return frags;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && add_bos_) out.push_back(bos_);
  bool prev_special = true;  // SentencePiece: a space prefix at the start and after specials
  for (const Fragment& f : Partition(text, parse_special)) {
    if (f.token >= 0) {
      out.push_back(f.token);
      prev_special = true;
      continue;
    }
    if (is_spm_) {
      EncodeSpm(f.text, prev_special && add_space_prefix_, &out);
    } else {
      for (std::string_view word : PreTokenize(pre_kind_, f.text)) EncodeBpeWord(word, &out);
    }
    prev_special = false;
  }
  if (add_special && add_eos_) out.push_back(eos_);
  return out;
}

void Tokenizer::PushBytes(std::string_view bytes, std::vector<int32_t>* out) const {
  for (char c : bytes) {
    const int32_t id = byte_token_[static_cast<uint8_t>(c)];
    if (id >= 0) {
      out->push_back(id);
    } else if (unk_ >= 0) {
      out->push_back(unk_);
    }
  }
}

namespace {

struct Symbol {
  size_t start = 0;  // byte offset in the word being merged
  size_t len = 0;    // 0 once merged into its left neighbour
  int prev = -1;
  int next = -1;
};

// Splits `text` into one symbol per UTF-8 character (an ill-formed byte alone).
std::vector<Symbol> CharSymbols(std::string_view text) {
  std::vector<Symbol> symbols;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    DecodeUtf8(text, &pos);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({start, pos - start, index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
  }
  return symbols;
}

// A candidate merge of symbols[left] with its right neighbour.
struct Bigram {
  double priority;  // lower pops first
  int left;
  int right;
  size_t len;  // combined length when queued; a mismatch later means stale
  bool operator>(const Bigram& o) const {
    return priority != o.priority ? priority > o.priority : left > o.left;
  }
};
using BigramQueue = std::priority_queue<Bigram, std::vector<Bigram>, std::greater<Bigram>>;

// Runs the merge loop; `priority(left, right)` gives a pair's priority or nullopt.
template <typename PriorityFn>
void MergeSymbols(std::vector<Symbol>& symbols, PriorityFn priority) {
  BigramQueue queue;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    if (std::optional<double> p = priority(symbols[left], symbols[right])) {
      queue.push({*p, left, right, symbols[left].len + symbols[right].len});
    }
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& left = symbols[b.left];
    Symbol& right = symbols[b.right];
    if (left.len == 0 || right.len == 0 || left.next != b.right || left.len + right.len != b.len) {
      continue;
    }
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = b.left;
    try_add(left.prev, b.left);
    try_add(b.left, left.next);
  }
}

}  // namespace

void Tokenizer::EncodeBpeWord(std::string_view word, std::vector<int32_t>* out) const {
  std::string mapped;
  mapped.reserve(word.size() * 2);
  for (char c : word) AppendUtf8(ByteMap().byte_to_cp[static_cast<uint8_t>(c)], &mapped);
  if (ignore_merges_) {
    if (const int32_t id = FindToken(mapped); id >= 0) {
      out->push_back(id);
      return;
    }
  }
  std::vector<Symbol> symbols = CharSymbols(mapped);
  std::string key;
  MergeSymbols(symbols, [&](const Symbol& l, const Symbol& r) -> std::optional<double> {
    key.assign(mapped, l.start, l.len);
    key.push_back(' ');
    key.append(mapped, r.start, r.len);
    auto it = merge_rank_.find(key);
    if (it == merge_rank_.end()) return std::nullopt;
    return it->second;
  });
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    const std::string_view piece =
        std::string_view(mapped).substr(symbols[i].start, symbols[i].len);
    if (const int32_t id = FindToken(piece); id >= 0) {
      out->push_back(id);
      continue;
    }
    // No token for a symbol: one token per byte; a byte without a token of its
    // own is dropped, as HF tokenizers does (SmolLM2 has none for e.g. 0x04).
    size_t pos = 0;
    while (pos < piece.size()) {
      const uint32_t cp = DecodeUtf8(piece, &pos);
      const int16_t byte = cp < 324 ? ByteMap().cp_to_byte[cp] : -1;
      if (byte >= 0 && byte_token_[byte] >= 0) out->push_back(byte_token_[byte]);
    }
  }
}

void Tokenizer::EncodeSpm(std::string_view raw, bool space_prefix,
                          std::vector<int32_t>* out) const {
  std::string text;
  text.reserve(raw.size() + 4);
  if (space_prefix) text.append(kSpmSpace);
  for (char c : raw) {
    if (c == ' ') {
      text.append(kSpmSpace);
    } else {
      text.push_back(c);
    }
  }
  std::vector<Symbol> symbols = CharSymbols(text);
  MergeSymbols(symbols, [&](const Symbol& l, const Symbol& r) -> std::optional<double> {
    const int32_t id = FindToken(std::string_view(text).substr(l.start, l.len + r.len));
    if (id < 0) return std::nullopt;
    return -static_cast<double>(scores_[id]);  // highest score first
  });
  // Every merged symbol is a token; a single character may not be and then goes
  // out as byte tokens (llama.cpp's resegment reduces to this).
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    const std::string_view piece = std::string_view(text).substr(symbols[i].start, symbols[i].len);
    if (const int32_t id = FindToken(piece); id >= 0) {
      out->push_back(id);
    } else {
      PushBytes(piece, out);
    }
  }
}

std::string Tokenizer::RenderPiece(int32_t id, bool render_special, bool* at_text_start) const {
  if (!InRange(id)) return "";
  const std::string& text = tokens_[id];
  std::string piece;
  switch (types_[id]) {
    case TokenType::kControl:
    case TokenType::kUnknown:
      if (!render_special) return "";
      piece = text;
      break;
    case TokenType::kUnused:
      return "";
    case TokenType::kByte:
      if (const int byte = ParseByteToken(text); is_spm_ && byte >= 0) {
        piece.push_back(static_cast<char>(byte));
      } else {
        piece = text;
      }
      break;
    case TokenType::kUserDefined:
      piece = text;
      break;
    default:  // normal
      if (is_spm_) {
        for (size_t pos = 0; pos < text.size();) {
          if (std::string_view(text).substr(pos).starts_with(kSpmSpace)) {
            piece.push_back(' ');
            pos += kSpmSpace.size();
          } else {
            piece.push_back(text[pos++]);
          }
        }
      } else {
        for (size_t pos = 0; pos < text.size();) {
          const size_t start = pos;
          const uint32_t cp = DecodeUtf8(text, &pos);
          const int16_t byte = cp < 324 ? ByteMap().cp_to_byte[cp] : -1;
          if (byte >= 0) {
            piece.push_back(static_cast<char>(byte));
          } else {
            piece.append(text, start, pos - start);
          }
        }
      }
      break;
  }
  if (*at_text_start) {
    const bool normal = types_[id] == TokenType::kNormal || types_[id] == TokenType::kUndefined;
    if (is_spm_ && add_space_prefix_ && normal && piece.starts_with(' ')) piece.erase(0, 1);
    *at_text_start = false;
  }
  return piece;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool render_special) const {
  std::string out;
  bool at_text_start = true;
  for (int32_t id : ids) out += RenderPiece(id, render_special, &at_text_start);
  return out;
}

std::string Tokenizer::TokenPiece(int32_t id) const {
  bool at_text_start = false;
  return RenderPiece(id, /*render_special=*/true, &at_text_start);
}

std::string StreamingDecoder::Push(int32_t id) {
  pending_ += tokenizer_->RenderPiece(id, render_special_, &at_text_start_);
  return Drain(/*final=*/false);
}

std::string StreamingDecoder::Flush() {
  std::string out = Drain(/*final=*/true);
  at_text_start_ = true;
  return out;
}

std::string StreamingDecoder::Drain(bool final) {
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    const std::string_view rest = std::string_view(pending_).substr(pos);
    const size_t valid = ValidUtf8Prefix(rest);
    out.append(rest.substr(0, valid));
    pos += valid;
    if (pos == pending_.size()) break;
    if (!final && IsIncompleteUtf8Sequence(rest.substr(valid))) break;  // wait for more bytes
    AppendUtf8(kReplacementChar, &out);
    pos += MaximalSubpart(rest.substr(valid));
  }
  pending_.erase(0, pos);
  return out;
}

}  // namespace headwise::model
