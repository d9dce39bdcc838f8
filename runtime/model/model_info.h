// The shape of a Llama-family model as its GGUF metadata describes it: what
// `headwise inspect` prints and what sizing (KV bytes per token, pools) is
// computed from. Reading it validates the hyperparameters the runtime relies
// on, so a file with missing or inconsistent keys fails here with the key named.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/model/gguf.h"

namespace headwise::model {

struct ModelInfo {
  std::string architecture;  // general.architecture, e.g. "llama"
  std::string name;          // general.name; empty when absent
  uint32_t gguf_version = 0;
  uint64_t file_size = 0;  // bytes

  int64_t n_layers = 0;             // {arch}.block_count
  int64_t n_embd = 0;               // {arch}.embedding_length
  int64_t n_ff = 0;                 // {arch}.feed_forward_length (the largest, if per layer)
  int64_t n_heads = 0;              // {arch}.attention.head_count
  int64_t n_kv_heads = 0;           // {arch}.attention.head_count_kv; n_heads when absent
  int64_t head_dim = 0;             // {arch}.attention.key_length, else n_embd / n_heads
  int64_t head_dim_v = 0;           // {arch}.attention.value_length, else head_dim
  int64_t vocab_size = 0;           // {arch}.vocab_size, else tokenizer.ggml.tokens length
  int64_t context_length = 0;       // {arch}.context_length (trained context)
  int64_t rope_dims = 0;            // {arch}.rope.dimension_count, else head_dim
  double rope_freq_base = 10000.0;  // {arch}.rope.freq_base; llama.cpp's default
  double rms_eps = 0.0;             // {arch}.attention.layer_norm_rms_epsilon

  // {arch}.rope.scaling.*: empty / 0 when absent.
  std::string rope_scaling_type;  // "none", "linear", "yarn", ...
  double rope_scaling_factor = 0.0;
  int64_t rope_scaling_original_context = 0;

  std::map<std::string, int> tensor_count_by_type;  // ggml type name -> tensors
  int64_t n_tensors = 0;
  uint64_t n_params = 0;  // elements over all tensors
};

// Reads and validates the model's hyperparameters. InvalidArgument naming the
// key when a required key is missing, has the wrong type or an impossible
// value (non-positive counts, kv heads not dividing heads, ...).
absl::StatusOr<ModelInfo> ReadModelInfo(const GgufFile& file);

// KV-cache bytes one token occupies over all layers and kv heads, keys plus
// values, at `bytes_per_element` (4 for f32, 2 for f16/bf16):
// n_layers * n_kv_heads * (head_dim + head_dim_v) * bytes_per_element, which is
// 2 * n_layers * n_kv_heads * head_dim * bytes for Llama. Saturates at
// UINT64_MAX when that does not fit (absurd hyperparameters in a crafted file).
uint64_t KvBytesPerToken(const ModelInfo& info, int bytes_per_element);

}  // namespace headwise::model
