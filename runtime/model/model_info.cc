// ModelInfo from GGUF metadata (runtime/model/model_info.h). Keys follow
// llama.cpp's naming ({arch}.block_count, ...), and optional keys take
// llama.cpp's defaults so the same files load the same way.
#include "runtime/model/model_info.h"

#include <algorithm>
#include <limits>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace headwise::model {
namespace {

absl::Status Invalid(const GgufFile& f, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(f.path(), ": ", what));
}

// A required integer key, which must be positive.
absl::StatusOr<int64_t> RequiredCount(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.Find(key);
  if (v == nullptr) return Invalid(f, absl::StrCat("required metadata key '", key, "' is missing"));
  absl::StatusOr<int64_t> i = f.GetInt(key);
  if (!i.ok()) return i.status();
  if (*i <= 0) return Invalid(f, absl::StrCat("metadata '", key, "' = ", *i, " must be positive"));
  return *i;
}

// An optional positive integer key; nullopt when absent.
absl::StatusOr<std::optional<int64_t>> OptionalCount(const GgufFile& f, const std::string& key) {
  if (f.Find(key) == nullptr) return std::optional<int64_t>();
  absl::StatusOr<int64_t> i = RequiredCount(f, key);
  if (!i.ok()) return i.status();
  return std::optional<int64_t>(*i);
}

// The feed-forward width: an integer, or per-layer widths (the largest wins).
absl::StatusOr<int64_t> FeedForward(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.Find(key);
  if (v != nullptr && v->AsArray() != nullptr) {
    int64_t widest = 0;
    for (const GgufValue& e : v->AsArray()->values) {
      const std::optional<int64_t> w = e.AsInt();
      if (!w || *w < 0) {
        return Invalid(f,
                       absl::StrCat("metadata '", key, "' holds a non-integer or negative width"));
      }
      widest = std::max(widest, *w);
    }
    if (widest <= 0) return Invalid(f, absl::StrCat("metadata '", key, "' has no positive width"));
    return widest;
  }
  return RequiredCount(f, key);
}

#define HW_ASSIGN_OR_RETURN(lhs, expr) \
  do {                                 \
    auto _s = (expr);                  \
    if (!_s.ok()) return _s.status();  \
    lhs = *std::move(_s);              \
  } while (0)

}  // namespace

absl::StatusOr<ModelInfo> ReadModelInfo(const GgufFile& f) {
  ModelInfo info;
  info.gguf_version = f.version();
  info.file_size = f.file_size();
  if (f.Find("general.architecture") == nullptr) {
    return Invalid(f, "required metadata key 'general.architecture' is missing");
  }
  HW_ASSIGN_OR_RETURN(info.architecture, f.GetString("general.architecture"));
  if (info.architecture.empty()) return Invalid(f, "general.architecture is empty");
  if (f.Find("general.name") != nullptr)
    HW_ASSIGN_OR_RETURN(info.name, f.GetString("general.name"));
  const std::string& a = info.architecture;

  HW_ASSIGN_OR_RETURN(info.n_layers, RequiredCount(f, a + ".block_count"));
  HW_ASSIGN_OR_RETURN(info.n_embd, RequiredCount(f, a + ".embedding_length"));
  HW_ASSIGN_OR_RETURN(info.n_ff, FeedForward(f, a + ".feed_forward_length"));
  HW_ASSIGN_OR_RETURN(info.n_heads, RequiredCount(f, a + ".attention.head_count"));
  HW_ASSIGN_OR_RETURN(info.context_length, RequiredCount(f, a + ".context_length"));

  std::optional<int64_t> opt;
  HW_ASSIGN_OR_RETURN(opt, OptionalCount(f, a + ".attention.head_count_kv"));
  info.n_kv_heads = opt.value_or(info.n_heads);
  if (info.n_heads % info.n_kv_heads != 0) {
    return Invalid(
        f, absl::StrCat(a, ".attention.head_count_kv = ", info.n_kv_heads, " does not divide ", a,
                        ".attention.head_count = ", info.n_heads));
  }
  HW_ASSIGN_OR_RETURN(opt, OptionalCount(f, a + ".attention.key_length"));
  if (opt) {
    info.head_dim = *opt;
  } else if (info.n_embd % info.n_heads != 0) {
    return Invalid(f, absl::StrCat(a, ".embedding_length = ", info.n_embd, " is not a multiple of ",
                                   a, ".attention.head_count = ", info.n_heads, " and ", a,
                                   ".attention.key_length is absent"));
  } else {
    info.head_dim = info.n_embd / info.n_heads;
  }
  HW_ASSIGN_OR_RETURN(opt, OptionalCount(f, a + ".attention.value_length"));
  info.head_dim_v = opt.value_or(info.head_dim);
  HW_ASSIGN_OR_RETURN(opt, OptionalCount(f, a + ".rope.dimension_count"));
  info.rope_dims = opt.value_or(info.head_dim);

  HW_ASSIGN_OR_RETURN(opt, OptionalCount(f, a + ".vocab_size"));
  if (opt) {
    info.vocab_size = *opt;
  } else if (f.Find("tokenizer.ggml.tokens") != nullptr) {
    const GgufArray* tokens = nullptr;
    HW_ASSIGN_OR_RETURN(tokens, f.GetArray("tokenizer.ggml.tokens"));
    info.vocab_size = static_cast<int64_t>(tokens->values.size());
    if (info.vocab_size == 0) return Invalid(f, "tokenizer.ggml.tokens is empty");
  } else {
    return Invalid(f, absl::StrCat("neither '", a, ".vocab_size' nor 'tokenizer.ggml.tokens' is ",
                                   "present, so the vocabulary size is unknown"));
  }

  const std::string eps_key = a + ".attention.layer_norm_rms_epsilon";
  if (f.Find(eps_key) == nullptr) {
    return Invalid(f, absl::StrCat("required metadata key '", eps_key, "' is missing"));
  }
  HW_ASSIGN_OR_RETURN(info.rms_eps, f.GetFloat(eps_key));
  if (!(info.rms_eps > 0.0 && info.rms_eps < 1.0)) {
    return Invalid(f,
                   absl::StrCat("metadata '", eps_key, "' = ", info.rms_eps, " is outside (0, 1)"));
  }
  if (f.Find(a + ".rope.freq_base") != nullptr) {
    HW_ASSIGN_OR_RETURN(info.rope_freq_base, f.GetFloat(a + ".rope.freq_base"));
    if (!(info.rope_freq_base > 0.0)) {
      return Invalid(f, absl::StrCat("metadata '", a, ".rope.freq_base' = ", info.rope_freq_base,
                                     " must be positive"));
    }
  }
  if (f.Find(a + ".rope.scaling.type") != nullptr) {
    HW_ASSIGN_OR_RETURN(info.rope_scaling_type, f.GetString(a + ".rope.scaling.type"));
  }
  if (f.Find(a + ".rope.scaling.factor") != nullptr) {
    HW_ASSIGN_OR_RETURN(info.rope_scaling_factor, f.GetFloat(a + ".rope.scaling.factor"));
  }
  if (f.Find(a + ".rope.scaling.original_context_length") != nullptr) {
    HW_ASSIGN_OR_RETURN(info.rope_scaling_original_context,
                        f.GetInt(a + ".rope.scaling.original_context_length"));
  }

  for (const TensorInfo& t : f.tensors()) {
    const auto traits = kernels::TypeTraits(static_cast<uint32_t>(t.type));
    ++info.tensor_count_by_type[traits ? std::string(traits->name) : "unknown"];
    info.n_params += t.n_elements;
  }
  info.n_tensors = static_cast<int64_t>(f.tensors().size());
  return info;
}

uint64_t KvBytesPerToken(const ModelInfo& info, int bytes_per_element) {
  // Unsigned and saturating: the hyperparameters come from the file, each up to
  // INT64_MAX, so even head_dim + head_dim_v can overflow int64.
  uint64_t bytes = static_cast<uint64_t>(info.head_dim) + static_cast<uint64_t>(info.head_dim_v);
  for (const uint64_t factor :
       {static_cast<uint64_t>(info.n_layers), static_cast<uint64_t>(info.n_kv_heads),
        static_cast<uint64_t>(bytes_per_element)}) {
    if (factor != 0 && bytes > std::numeric_limits<uint64_t>::max() / factor) {
      return std::numeric_limits<uint64_t>::max();
    }
    bytes *= factor;
  }
  return bytes;
}

#undef HW_ASSIGN_OR_RETURN

}  // namespace headwise::model
