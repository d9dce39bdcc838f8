// One forward over n tokens: per layer RMSNorm -> q,k,v -> RoPE -> attention
// (earlier blocks + the chunk's own causal part, LSE-merged) -> o_proj ->
// residual -> RMSNorm -> SwiGLU MLP -> residual; then the final norm and the
// output projection for the rows whose logits are wanted.
#include "runtime/model/llama.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace headwise::model {
namespace {

struct Projection {
  const Matrix* w;
  const std::vector<float>* bias;  // may be empty
  float* out;                      // [n x w->rows]
};

// out[n x w.rows] = x[n x w.cols] * w^T (+ bias) for every projection of the
// same input in one parallel run: the output features of all of them are
// cut into slices run on `parallel` (BLAS itself runs single-threaded; see
// LlamaModel::FromGguf), each slice one sgemm (or sgemv for one row). One run
// per group keeps the pool's dispatch cost off the decode step.
void Project(const float* x, int64_t n, std::initializer_list<Projection> projections,
             const kernels::ParallelFor* parallel) {
  constexpr int64_t kSlice = 128;  // output features per task
  struct Slice {
    const Projection* p;
    int64_t r0, r1;
  };
  std::vector<Slice> slices;
  for (const Projection& p : projections) {
    for (int64_t r = 0; r < p.w->rows; r += kSlice) {
      slices.push_back({&p, r, std::min(p.w->rows, r + kSlice)});
    }
  }
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Matrix& w = *slices[i].p->w;
      const int64_t r0 = slices[i].r0, r1 = slices[i].r1;
      const float* rows = w.data.data() + r0 * w.cols;
      float* out = slices[i].p->out + r0;
      if (n == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, r1 - r0, w.cols, 1.0f, rows, w.cols, x, 1, 0.0f,
                    out, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1 - r0, w.cols, 1.0f, x, w.cols,
                    rows, w.cols, 0.0f, out, w.rows);
      }
    }
  };
  const int64_t count = static_cast<int64_t>(slices.size());
  if (parallel != nullptr) {
    parallel->Run(count, run);
  } else {
    run(0, count);
  }
  for (const Projection& p : projections) {
    if (p.bias == nullptr || p.bias->empty()) continue;
    for (int64_t r = 0; r < n; ++r) {
      float* row = p.out + r * p.w->rows;
      kernels::Add(row, row, p.bias->data(), p.w->rows);
    }
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
  // With a pool of our own, BLAS runs single-threaded and the pool splits the
  // GEMMs: OpenBLAS's idle workers spin in sched_yield and starved the copy
  // engine and the attention tasks (offloaded 256K decode: 1.40x -> 1.08x of
  // max(copy, compute) on 2 cores, docs/PERF.md).
  if (parallel != nullptr) openblas_set_num_threads(1);
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
    Project(h.data(), n,
            {{&l.wq, &l.bq, q.data()}, {&l.wk, &l.bk, k.data()}, {&l.wv, &l.bv, v.data()}},
            parallel_);
    kernels::Rope(q.data(), pos.data(), n, info_.n_heads, info_.head_dim, rope_);
    kernels::Rope(k.data(), pos.data(), n, info_.n_kv_heads, info_.head_dim, rope_);
    attention::AttendArgs attend{
        il, n, static_cast<int32_t>(info_.n_heads), q.data(), k.data(), v.data(), attn.data()};
    if (absl::Status s = attention::Attend(store, attend, stats); !s.ok()) return s;
    Project(attn.data(), n, {{&l.wo, nullptr, h.data()}}, parallel_);
    kernels::Add(x.data(), x.data(), h.data(), n * d);

    kernels::RmsNorm(h.data(), x.data(), l.ffn_norm.data(), n, d, eps);
    Project(h.data(), n, {{&l.w_gate, nullptr, gate.data()}, {&l.w_up, nullptr, up.data()}},
            parallel_);
    kernels::SwiGlu(gate.data(), gate.data(), up.data(), n * ff);
    Project(gate.data(), n, {{&l.w_down, nullptr, h.data()}}, parallel_);
    kernels::Add(x.data(), x.data(), h.data(), n * d);
  }

  const Matrix& out = weights_->output_matrix();
  if (all_logits != nullptr) {
    kernels::RmsNorm(h.data(), x.data(), weights_->output_norm.data(), n, d, eps);
    all_logits->resize(n * vocab);
    Project(h.data(), n, {{&out, nullptr, all_logits->data()}}, parallel_);
  }
  if (last_logits != nullptr) {
    kernels::RmsNorm(h.data(), x.data() + (n - 1) * d, weights_->output_norm.data(), 1, d, eps);
    last_logits->resize(vocab);
    Project(h.data(), 1, {{&out, nullptr, last_logits->data()}}, parallel_);
  }
  return absl::OkStatus();
}

}  // namespace headwise::model
