// Llama-family weights dequantized to f32 at load (the CPU reference keeps
// f32 compute). Matrices are row-major [out_features x in_features], exactly
// the GGUF layout (ne[0] = in_features is the fastest dimension), so y = W x is
// one sgemv and Y = X W^T one sgemm.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model_info.h"

namespace headwise::model {

struct Matrix {
  int64_t rows = 0;  // out features
  int64_t cols = 0;  // in features
  std::vector<float> data;
  bool empty() const { return data.empty(); }
};

struct LayerWeights {
  std::vector<float> attn_norm;
  Matrix wq, wk, wv, wo;
  std::vector<float> bq, bk, bv;  // qwen2 only; empty otherwise
  std::vector<float> ffn_norm;
  Matrix w_gate, w_up, w_down;
};

struct ModelWeights {
  Matrix token_embd;  // [vocab x n_embd]
  std::vector<LayerWeights> layers;
  std::vector<float> output_norm;
  Matrix output;                  // empty when tied to token_embd
  std::vector<float> rope_freqs;  // llama3 rope scaling factors; may be empty

  const Matrix& output_matrix() const { return output.empty() ? token_embd : output; }
};

// Dequantizes and shape-checks every tensor the architecture needs.
// InvalidArgument names the tensor and the expected vs found shape, a missing
// required tensor, or a type that cannot be dequantized.
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadWeights(const GgufFile& file,
                                                          const ModelInfo& info);

// Dequantizes one tensor to f32, row-major as stored.
absl::StatusOr<std::vector<float>> DequantizeTensor(const TensorInfo& tensor);

}  // namespace headwise::model
