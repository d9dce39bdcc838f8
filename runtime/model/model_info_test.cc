// Tests of ReadModelInfo / KvBytesPerToken on synthetic GGUF images (built
// with the in-test writer) and on the real SmolLM2 file when it is present.
#include "runtime/model/model_info.h"

#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model/gguf_test_writer.h"

namespace headwise::model {
namespace {

using ::testing::HasSubstr;
using namespace ::headwise::model::testing;  // NOLINT: writer helpers

// A minimal valid llama description; tests drop or replace keys from it.
struct Kv {
  std::string key;
  EncodedValue value;
};

std::vector<Kv> LlamaKvs() {
  return {
      {"general.architecture", Str("llama")},
      {"general.name", Str("tiny")},
      {"llama.block_count", U32(4)},
      {"llama.embedding_length", U32(256)},
      {"llama.feed_forward_length", U32(512)},
      {"llama.attention.head_count", U32(8)},
      {"llama.attention.head_count_kv", U32(2)},
      {"llama.context_length", U32(2048)},
      {"llama.attention.layer_norm_rms_epsilon", F32(1e-5f)},
      {"llama.rope.freq_base", F32(500000.0f)},
      {"tokenizer.ggml.tokens", StrArray({"a", "b", "c", "d", "e"})},
  };
}

std::vector<uint8_t> Image(const std::vector<Kv>& kvs, bool tensors = true) {
  GgufTestWriter w;
  for (const Kv& kv : kvs) w.Add(kv.key, kv.value);
  if (tensors) {
    w.AddTensor("token_embd.weight", {256, 5}, 8);  // q8_0
    w.AddTensor("output_norm.weight", {256}, 0);
    w.AddTensor("blk.0.attn_norm.weight", {256}, 0);
    w.AddTensor("blk.0.attn_q.weight", {256, 256}, 3);  // q4_1
  }
  return w.Build();
}

std::vector<Kv> Without(std::vector<Kv> kvs, const std::string& key) {
  std::erase_if(kvs, [&](const Kv& kv) { return kv.key == key; });
  return kvs;
}

std::vector<Kv> With(std::vector<Kv> kvs, const std::string& key, EncodedValue v) {
  kvs = Without(std::move(kvs), key);
  kvs.push_back({key, std::move(v)});
  return kvs;
}

absl::StatusOr<ModelInfo> Read(const std::vector<uint8_t>& image) {
  auto f = GgufFile::FromBuffer(image.data(), image.size(), "tiny.gguf");
  if (!f.ok()) return f.status();
  return ReadModelInfo(**f);
}

void ExpectInvalid(const std::vector<Kv>& kvs, const std::string& substr) {
  const auto image = Image(kvs);
  auto info = Read(image);
  ASSERT_FALSE(info.ok()) << "expected: " << substr;
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << info.status();
  EXPECT_THAT(std::string(info.status().message()), HasSubstr(substr));
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("tiny.gguf"));
}

TEST(ModelInfoTest, ReadsLlamaHyperparameters) {
  const auto image = Image(LlamaKvs());
  auto info = Read(image);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->architecture, "llama");
  EXPECT_EQ(info->name, "tiny");
  EXPECT_EQ(info->gguf_version, 3u);
  EXPECT_EQ(info->file_size, image.size());
  EXPECT_EQ(info->n_layers, 4);
  EXPECT_EQ(info->n_embd, 256);
  EXPECT_EQ(info->n_ff, 512);
  EXPECT_EQ(info->n_heads, 8);
  EXPECT_EQ(info->n_kv_heads, 2);
  EXPECT_EQ(info->head_dim, 32);  // 256 / 8
  EXPECT_EQ(info->head_dim_v, 32);
  EXPECT_EQ(info->rope_dims, 32);
  EXPECT_EQ(info->vocab_size, 5);  // from the token list
  EXPECT_EQ(info->context_length, 2048);
  EXPECT_EQ(info->rope_freq_base, 500000.0);
  EXPECT_EQ(info->rms_eps, static_cast<double>(1e-5f));
  EXPECT_EQ(info->rope_scaling_type, "");
  EXPECT_EQ(info->rope_scaling_factor, 0.0);
  EXPECT_EQ(info->n_tensors, 4);
  EXPECT_EQ(info->tensor_count_by_type,
            (std::map<std::string, int>{{"f32", 2}, {"q4_1", 1}, {"q8_0", 1}}));
  EXPECT_EQ(info->n_params, 256u * 5 + 256 + 256 + 256 * 256);
  EXPECT_EQ(KvBytesPerToken(*info, 4), 2u * 4 * 2 * 32 * 4);
  EXPECT_EQ(KvBytesPerToken(*info, 2), 2u * 4 * 2 * 32 * 2);
}

TEST(ModelInfoTest, OptionalKeysAndDefaults) {
  auto kvs = Without(Without(LlamaKvs(), "llama.attention.head_count_kv"), "llama.rope.freq_base");
  kvs = With(kvs, "llama.attention.key_length", U32(64));
  kvs = With(kvs, "llama.vocab_size", U32(32000));
  kvs = With(kvs, "llama.rope.scaling.type", Str("linear"));
  kvs = With(kvs, "llama.rope.scaling.factor", F32(4.0f));
  kvs = With(kvs, "llama.rope.scaling.original_context_length", U32(8192));
  kvs = With(kvs, "llama.feed_forward_length",
             Array(GgufValueType::kInt32, {I32(512), I32(1024), I32(768), I32(512)}));
  auto info = Read(Image(kvs, /*tensors=*/false));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->n_kv_heads, 8);  // defaults to the head count
  EXPECT_EQ(info->head_dim, 64);   // key_length wins over n_embd / n_heads
  EXPECT_EQ(info->vocab_size, 32000);
  EXPECT_EQ(info->rope_freq_base, 10000.0);
  EXPECT_EQ(info->rope_scaling_type, "linear");
  EXPECT_EQ(info->rope_scaling_factor, 4.0);
  EXPECT_EQ(info->rope_scaling_original_context, 8192);
  EXPECT_EQ(info->n_ff, 1024);  // per-layer widths: the widest
  EXPECT_EQ(info->n_tensors, 0);
  EXPECT_EQ(info->n_params, 0u);
  EXPECT_EQ(KvBytesPerToken(*info, 4), 2u * 4 * 8 * 64 * 4);
}

TEST(ModelInfoTest, MissingRequiredKeysAreNamed) {
  for (const char* key : {"general.architecture", "llama.block_count", "llama.embedding_length",
                          "llama.feed_forward_length", "llama.attention.head_count",
                          "llama.context_length", "llama.attention.layer_norm_rms_epsilon"}) {
    SCOPED_TRACE(key);
    ExpectInvalid(Without(LlamaKvs(), key),
                  std::string("required metadata key '") + key + "' is missing");
  }
  ExpectInvalid(Without(LlamaKvs(), "tokenizer.ggml.tokens"),
                "neither 'llama.vocab_size' nor 'tokenizer.ggml.tokens'");
}

TEST(ModelInfoTest, ArchitectureSelectsTheKeyPrefix) {
  auto kvs = With(LlamaKvs(), "general.architecture", Str("qwen2"));
  ExpectInvalid(kvs, "required metadata key 'qwen2.block_count' is missing");
}

TEST(ModelInfoTest, ImpossibleValuesAreNamed) {
  ExpectInvalid(With(LlamaKvs(), "llama.block_count", I32(0)),
                "metadata 'llama.block_count' = 0 must be positive");
  ExpectInvalid(With(LlamaKvs(), "llama.attention.head_count", I32(-8)),
                "'llama.attention.head_count' = -8 must be positive");
  ExpectInvalid(With(LlamaKvs(), "llama.attention.head_count_kv", U32(3)),
                "llama.attention.head_count_kv = 3 does not divide llama.attention.head_count = 8");
  ExpectInvalid(With(LlamaKvs(), "llama.attention.head_count", U32(6)),
                "llama.embedding_length = 256 is not a multiple of llama.attention.head_count = 6");
  ExpectInvalid(With(LlamaKvs(), "llama.block_count", Str("four")),
                "'llama.block_count' is string, expected an integer");
  ExpectInvalid(With(LlamaKvs(), "llama.attention.layer_norm_rms_epsilon", F32(0.0f)),
                "'llama.attention.layer_norm_rms_epsilon' = 0 is outside (0, 1)");
  ExpectInvalid(With(LlamaKvs(), "llama.rope.freq_base", F32(-1.0f)),
                "'llama.rope.freq_base' = -1 must be positive");
  ExpectInvalid(With(LlamaKvs(), "llama.rope.scaling.type", U32(1)),
                "'llama.rope.scaling.type' is uint32, expected a string");
  ExpectInvalid(With(LlamaKvs(), "tokenizer.ggml.tokens", StrArray({})),
                "tokenizer.ggml.tokens is empty");
}

// Regression (fuzz/corpus/gguf/regression_kv_bytes_overflow.gguf): head dims
// of 2^62 each are accepted, and KvBytesPerToken added them as int64 (signed
// overflow, undefined behaviour); it now saturates.
TEST(ModelInfoTest, KvBytesPerTokenOfAbsurdDimsSaturates) {
  std::vector<Kv> kvs = With(LlamaKvs(), "llama.attention.key_length", I64(int64_t{1} << 62));
  kvs = With(kvs, "llama.attention.value_length", I64(int64_t{1} << 62));
  auto info = Read(Image(kvs));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->head_dim, int64_t{1} << 62);
  EXPECT_EQ(KvBytesPerToken(*info, 2), std::numeric_limits<uint64_t>::max());
  // Just below the limit the product is exact: 2^63 + 2^63 = 2^64 does not fit.
  info->n_layers = 1;
  info->n_kv_heads = 1;
  info->head_dim = info->head_dim_v = int64_t{1} << 61;
  EXPECT_EQ(KvBytesPerToken(*info, 1), uint64_t{1} << 62);
  EXPECT_EQ(KvBytesPerToken(*info, 4), std::numeric_limits<uint64_t>::max());
}

// ---- the real model ----

constexpr char kModelPath[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

std::string FindModel() {
  std::filesystem::path dir = std::filesystem::current_path();
  for (int i = 0; i < 4; ++i, dir = dir.parent_path()) {
    if (std::filesystem::exists(dir / kModelPath)) return (dir / kModelPath).string();
  }
  return "";
}

TEST(ModelInfoRealModelTest, SmolLM2) {
  const std::string path = FindModel();
  if (path.empty()) GTEST_SKIP() << kModelPath << " not found; run scripts/fetch-model";
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  auto info = ReadModelInfo(**f);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->architecture, "llama");
  EXPECT_EQ(info->n_layers, 30);
  EXPECT_EQ(info->n_embd, 576);
  EXPECT_EQ(info->n_ff, 1536);
  EXPECT_EQ(info->n_heads, 9);
  EXPECT_EQ(info->n_kv_heads, 3);
  EXPECT_EQ(info->head_dim, 64);
  EXPECT_EQ(info->vocab_size, 49152);
  EXPECT_EQ(info->context_length, 8192);
  EXPECT_EQ(info->rope_freq_base, 100000.0);
  EXPECT_NEAR(info->rms_eps, 1e-5, 1e-12);
  EXPECT_EQ(info->n_tensors, 272);
  EXPECT_EQ(info->n_params, 134515008u);
  EXPECT_EQ(info->tensor_count_by_type,
            (std::map<std::string, int>{{"f32", 61}, {"q4_1", 210}, {"q8_0", 1}}));
  EXPECT_EQ(KvBytesPerToken(*info, 4), 46080u);  // 2 * 30 * 3 * 64 * 4
  EXPECT_EQ(KvBytesPerToken(*info, 2), 23040u);
}

}  // namespace
}  // namespace headwise::model
