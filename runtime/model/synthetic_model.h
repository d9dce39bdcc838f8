// Test-only: tiny Llama-family GGUF images with random f32 weights, built in
// memory with GgufTestWriter, for exactness tests of the forward pass and the
// KV paths without the real model, and for malformed-model tests (drop or
// reshape one tensor, shrink the vocabulary).
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "runtime/model/gguf_test_writer.h"

namespace headwise::model::testing {

struct SyntheticModelSpec {
  std::string architecture = "llama";  // or "qwen2" (adds q/k/v biases)
  int64_t n_layers = 2;
  int64_t n_embd = 64;
  int64_t n_ff = 96;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 2;
  int64_t vocab = 96;
  int64_t context_length = 1 << 20;
  float rope_base = 10000.0f;
  bool tied_output = true;
  bool rope_freqs = false;  // add a rope_freqs.weight tensor (llama3 scaling)
  uint32_t seed = 1;
  float weight_scale = 0.2f;
  // Malformations for error tests.
  std::set<std::string> drop_tensors;
  std::string reshape_tensor;     // this tensor gets one extra column
  int64_t tokenizer_tokens = -1;  // -1: vocab
  int64_t block_count = -1;       // the metadata's layer count; -1: n_layers
};

inline std::vector<uint8_t> RandomF32(std::mt19937& rng, size_t n, float scale, float mean = 0) {
  std::normal_distribution<float> normal(mean, scale);
  std::vector<float> values(n);
  for (float& v : values) v = normal(rng);
  std::vector<uint8_t> bytes(n * sizeof(float));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

inline std::vector<uint8_t> BuildSyntheticModel(const SyntheticModelSpec& s) {
  const std::string a = s.architecture;
  const int64_t head_dim = s.n_embd / s.n_heads;
  GgufTestWriter w;
  w.Add("general.architecture", Str(a))
      .Add("general.name", Str("synthetic " + a))
      .Add(a + ".block_count",
           U32(static_cast<uint32_t>(s.block_count >= 0 ? s.block_count : s.n_layers)))
      .Add(a + ".context_length", U32(static_cast<uint32_t>(s.context_length)))
      .Add(a + ".embedding_length", U32(static_cast<uint32_t>(s.n_embd)))
      .Add(a + ".feed_forward_length", U32(static_cast<uint32_t>(s.n_ff)))
      .Add(a + ".attention.head_count", U32(static_cast<uint32_t>(s.n_heads)))
      .Add(a + ".attention.head_count_kv", U32(static_cast<uint32_t>(s.n_kv_heads)))
      .Add(a + ".rope.freq_base", F32(s.rope_base))
      .Add(a + ".attention.layer_norm_rms_epsilon", F32(1e-5f));
  std::vector<std::string> tokens;
  const int64_t n_tokens = s.tokenizer_tokens >= 0 ? s.tokenizer_tokens : s.vocab;
  for (int64_t i = 0; i < n_tokens; ++i) tokens.push_back("t" + std::to_string(i));
  w.Add("tokenizer.ggml.model", Str("gpt2")).Add("tokenizer.ggml.tokens", StrArray(tokens));

  std::mt19937 rng(s.seed);
  const uint32_t f32 = static_cast<uint32_t>(kernels::GgmlType::kF32);
  auto add = [&](const std::string& name, std::vector<uint64_t> dims, float scale, float mean = 0) {
    if (s.drop_tensors.count(name)) return;
    if (name == s.reshape_tensor) dims[0] += 1;
    uint64_t n = 1;
    for (uint64_t d : dims) n *= d;
    w.AddTensor(name, dims, f32, RandomF32(rng, n, scale, mean));
  };
  const uint64_t d = s.n_embd, ff = s.n_ff, q = s.n_heads * head_dim, kv = s.n_kv_heads * head_dim;
  add("token_embd.weight", {d, uint64_t(s.vocab)}, 1.0f);
  add("output_norm.weight", {d}, 0.1f, 1.0f);
  if (!s.tied_output) add("output.weight", {d, uint64_t(s.vocab)}, s.weight_scale);
  if (s.rope_freqs) add("rope_freqs.weight", {uint64_t(head_dim / 2)}, 0.5f, 2.0f);
  for (int64_t i = 0; i < s.n_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    add(p + "attn_norm.weight", {d}, 0.1f, 1.0f);
    add(p + "attn_q.weight", {d, q}, s.weight_scale);
    add(p + "attn_k.weight", {d, kv}, s.weight_scale);
    add(p + "attn_v.weight", {d, kv}, s.weight_scale);
    if (a == "qwen2") {
      add(p + "attn_q.bias", {q}, s.weight_scale);
      add(p + "attn_k.bias", {kv}, s.weight_scale);
      add(p + "attn_v.bias", {kv}, s.weight_scale);
    }
    add(p + "attn_output.weight", {q, d}, s.weight_scale);
    add(p + "ffn_norm.weight", {d}, 0.1f, 1.0f);
    add(p + "ffn_gate.weight", {d, ff}, s.weight_scale);
    add(p + "ffn_up.weight", {d, ff}, s.weight_scale);
    add(p + "ffn_down.weight", {ff, d}, s.weight_scale);
  }
  return w.Build();
}

}  // namespace headwise::model::testing
