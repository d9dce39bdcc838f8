// The Llama-family forward pass on the CPU device (llama, incl. Mistral-style
// and SmolLM2, and qwen2 with qkv bias): f32 weights, GEMM/GEMV through
// OpenBLAS, grouped-query attention through kernels::PartialAttention over the
// KV cache's block list merged by LSE with the chunk's own causal partial —
// the machinery the distributed paths reuse. This is the exact reference every
// other path must match token for token.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "kernels/parallel.h"
#include "runtime/attention/attend.h"
#include "runtime/kv/kv_store.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model_info.h"
#include "runtime/model/weights.h"

namespace headwise::model {

class LlamaModel {
 public:
  // Opens, validates and dequantizes the model. `parallel` runs the attention
  // and element-wise tasks and must outlive the model.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& path,
                                                          const kernels::ParallelFor* parallel);
  // The same from an already parsed file (tests build models in memory).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> FromGguf(std::unique_ptr<GgufFile> file,
                                                              const kernels::ParallelFor* parallel);

  const ModelInfo& info() const { return info_; }
  const GgufFile& file() const { return *file_; }

  // A KV geometry for this model with the given block size and dtype.
  kv::KvGeometry KvGeometryFor(int32_t block_tokens, kernels::KvDtype dtype) const;

  // Runs `tokens` at positions store.length() .. +n-1, appending their K/V to
  // `store`. Writes the logits of the last token to `last_logits` (vocab
  // floats) when non-null, or of every token ([n x vocab]) to `all_logits`.
  // Streaming figures accumulate into `stats` when non-null.
  // InvalidArgument for an empty input or a token id outside the vocabulary;
  // ResourceExhausted when the store's tiers are full.
  absl::Status Forward(std::span<const int32_t> tokens, kv::KvStore& store,
                       std::vector<float>* last_logits, std::vector<float>* all_logits = nullptr,
                       attention::StreamStats* stats = nullptr);

 private:
  LlamaModel() = default;

  std::unique_ptr<GgufFile> file_;
  ModelInfo info_;
  std::unique_ptr<ModelWeights> weights_;
  kernels::RopeParams rope_;
  const kernels::ParallelFor* parallel_ = nullptr;
};

}  // namespace headwise::model
