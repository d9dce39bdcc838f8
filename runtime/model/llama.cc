// One forward over n tokens: per layer RMSNorm -> q,k,v -> RoPE -> attention
// (earlier blocks + the chunk's own causal part, LSE-merged) -> o_proj ->
// residual -> RMSNorm -> SwiGLU MLP -> residual; then the final norm and the
// output projection for the rows whose logits are wanted.
#include "runtime/model/llama.h"

#include <cblas.h>

#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace headwise::model {
namespace {

// out[n x w.rows] = x[n x w.cols] * w^T (+ bias)
void Linear(const float* x, int64_t n, const Matrix& w, const std::vector<float>& bias,
            float* out) {
  if (n == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, w.rows, w.cols, 1.0f, w.data.data(), w.cols, x, 1,
                0.0f, out, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, w.rows, w.cols, 1.0f, x, w.cols,
                w.data.data(), w.cols, 0.0f, out, w.rows);
  }
  if (!bias.empty()) {
    for (int64_t r = 0; r < n; ++r)
      kernels::Add(out + r * w.rows, out + r * w.rows, bias.data(), w.rows);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& path,
                                                             const kernels::ParallelFor* parallel) {
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
  if (!file.ok()) return file.status();
  return FromGguf(std::move(*file), parallel);
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::FromGguf(
    std::unique_ptr<GgufFile> file, const kernels::ParallelFor* parallel) {
  std::unique_ptr<LlamaModel> model(new LlamaModel());
  model->parallel_ = parallel;
  model->file_ = std::move(file);
  const std::string& path = model->file_->path();
  absl::StatusOr<ModelInfo> info = ReadModelInfo(*model->file_);
  if (!info.ok()) return info.status();
  model->info_ = std::move(*info);
  const ModelInfo& mi = model->info_;
  if (mi.n_heads % mi.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", mi.n_heads,
                                                   " attention heads are not a multiple of ",
                                                   mi.n_kv_heads, " kv heads"));
  }
  if (mi.head_dim > kernels::kMaxHeadDim || mi.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": head_dim ", mi.head_dim, " is unsupported (even, <= ", kernels::kMaxHeadDim, ")"));
  }
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = LoadWeights(*model->file_, mi);
  if (!weights.ok()) return weights.status();
  model->weights_ = std::move(*weights);
  // Every token the tokenizer can produce must have an embedding row and
  // every row a token, or generation could reach ids with no text.
  if (const GgufValue* tokens = model->file_->Find("tokenizer.ggml.tokens")) {
    const GgufArray* array = tokens->AsArray();
    const int64_t rows = model->weights_->token_embd.rows;
    if (array != nullptr && static_cast<int64_t>(array->values.size()) != rows) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": the vocabulary (tokenizer.ggml.tokens) has ", array->values.size(),
                       " tokens but token_embd.weight has ", rows, " rows"));
    }
  }

  kernels::RopeParams& rope = model->rope_;
  rope.mode = mi.architecture == "qwen2" ? kernels::RopeMode::kNeox : kernels::RopeMode::kNorm;
  rope.n_rot = mi.rope_dims > 0 ? mi.rope_dims : mi.head_dim;
  rope.freq_base = static_cast<float>(mi.rope_freq_base);
  rope.freq_scale = mi.rope_scaling_type == "linear" && mi.rope_scaling_factor > 0
                        ? static_cast<float>(1.0 / mi.rope_scaling_factor)
                        : 1.0f;
  rope.freq_factors =
      model->weights_->rope_freqs.empty() ? nullptr : model->weights_->rope_freqs.data();
  return model;
}

kv::KvGeometry LlamaModel::KvGeometryFor(int32_t block_tokens, kernels::KvDtype dtype) const {
  return kv::KvGeometry{static_cast<int32_t>(info_.n_layers),
                        static_cast<int32_t>(info_.n_kv_heads),
                        static_cast<int32_t>(info_.head_dim), block_tokens, dtype};
}

absl::Status LlamaModel::Forward(std::span<const int32_t> tokens, kv::KvStore& store,
                                 std::vector<float>* last_logits, std::vector<float>* all_logits,
                                 attention::StreamStats* stats) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return absl::InvalidArgumentError("forward of an empty token list");
  const int64_t vocab = weights_->token_embd.rows;
  for (int32_t id : tokens) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  const int64_t start = store.length();
  const int64_t d = info_.n_embd, ff = info_.n_ff;
  const int64_t q_dim = int64_t(info_.n_heads) * info_.head_dim;
  const int64_t kv_dim = int64_t(info_.n_kv_heads) * info_.head_dim;
  const float eps = static_cast<float>(info_.rms_eps);

  std::vector<float> x(n * d), h(n * d), q(n * q_dim), k(n * kv_dim), v(n * kv_dim),
      attn(n * q_dim), gate(n * ff), up(n * ff);
  for (int64_t r = 0; r < n; ++r) {
    const float* row = weights_->token_embd.data.data() + int64_t(tokens[r]) * d;
    std::copy(row, row + d, x.data() + r * d);
  }
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), static_cast<int32_t>(start));

  for (int32_t il = 0; il < static_cast<int32_t>(info_.n_layers); ++il) {
    const LayerWeights& l = weights_->layers[il];
    kernels::RmsNorm(h.data(), x.data(), l.attn_norm.data(), n, d, eps);
    Linear(h.data(), n, l.wq, l.bq, q.data());
    Linear(h.data(), n, l.wk, l.bk, k.data());
    Linear(h.data(), n, l.wv, l.bv, v.data());
    kernels::Rope(q.data(), pos.data(), n, info_.n_heads, info_.head_dim, rope_);
    kernels::Rope(k.data(), pos.data(), n, info_.n_kv_heads, info_.head_dim, rope_);
    attention::AttendArgs attend{
        il, n, static_cast<int32_t>(info_.n_heads), q.data(), k.data(), v.data(), attn.data()};
    if (absl::Status s = attention::Attend(store, attend, stats); !s.ok()) return s;
    Linear(attn.data(), n, l.wo, {}, h.data());
    kernels::Add(x.data(), x.data(), h.data(), n * d);

    kernels::RmsNorm(h.data(), x.data(), l.ffn_norm.data(), n, d, eps);
    Linear(h.data(), n, l.w_gate, {}, gate.data());
    Linear(h.data(), n, l.w_up, {}, up.data());
    kernels::SwiGlu(gate.data(), gate.data(), up.data(), n * ff);
    Linear(gate.data(), n, l.w_down, {}, h.data());
    kernels::Add(x.data(), x.data(), h.data(), n * d);
  }

  const Matrix& out = weights_->output_matrix();
  if (all_logits != nullptr) {
    kernels::RmsNorm(h.data(), x.data(), weights_->output_norm.data(), n, d, eps);
    all_logits->resize(n * vocab);
    Linear(h.data(), n, out, {}, all_logits->data());
  }
  if (last_logits != nullptr) {
    kernels::RmsNorm(h.data(), x.data() + (n - 1) * d, weights_->output_norm.data(), 1, d, eps);
    last_logits->resize(vocab);
    Linear(h.data(), 1, out, {}, last_logits->data());
  }
  return absl::OkStatus();
}

}  // namespace headwise::model
