// The forward pass on synthetic models: chunked prefill, block size and
// decode steps give the same logits as one whole-prompt forward (the LSE
// merge of partials is exact); qwen2 biases and llama3 rope factors are used;
// malformed models fail with errors naming the problem.
#include "runtime/model/llama.h"

#include <cmath>
#include <numeric>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/parallel.h"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/model/synthetic_model.h"
#include "tests/util/numerics.h"

namespace headwise::model {
namespace {

using ::headwise::testing::RelL2;

using testing::BuildSyntheticModel;
using ::testing::HasSubstr;
using testing::SyntheticModelSpec;

struct Loaded {
  std::vector<uint8_t> image;
  std::unique_ptr<LlamaModel> model;
};

absl::StatusOr<Loaded> Load(const SyntheticModelSpec& spec, const kernels::ParallelFor* parallel) {
  Loaded out;
  out.image = BuildSyntheticModel(spec);
  auto file = GgufFile::FromBuffer(out.image.data(), out.image.size(), "synthetic.gguf");
  if (!file.ok()) return file.status();
  auto model = LlamaModel::FromGguf(std::move(*file), parallel);
  if (!model.ok()) return model.status();
  out.model = std::move(*model);
  return out;
}

std::vector<int32_t> Prompt(int n, int vocab) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = (i * 37 + 11) % vocab;
  return ids;
}

std::unique_ptr<kv::KvStore> MakeStore(LlamaModel& model, device::Device& device, int block,
                                       kernels::KvDtype dtype, int64_t device_budget = 0,
                                       int32_t max_append = 4096, int64_t capacity = 4096) {
  kv::KvStoreOptions options;
  options.geometry = model.KvGeometryFor(block, dtype);
  options.device = &device;
  options.device_budget_bytes = device_budget;
  options.capacity_tokens = capacity;
  options.max_append_tokens = max_append;
  auto store = kv::KvStore::Create(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

// Logits of every prompt position, prefilling in chunks of `chunk`.
std::vector<float> ChunkedLogits(LlamaModel& model, const std::vector<int32_t>& prompt, int chunk,
                                 int block, kernels::KvDtype dtype = kernels::KvDtype::kF32,
                                 device::Device* device = nullptr, int64_t device_budget = 0) {
  std::unique_ptr<device::Device> cpu = device::MakeCpuDevice(nullptr);
  auto store = MakeStore(model, device != nullptr ? *device : *cpu, block, dtype, device_budget,
                         chunk, static_cast<int64_t>(prompt.size()));
  if (store == nullptr) return {};
  kv::KvStore& cache = *store;
  std::vector<float> all, part;
  for (size_t b = 0; b < prompt.size(); b += chunk) {
    const size_t n = std::min<size_t>(chunk, prompt.size() - b);
    EXPECT_TRUE(
        model.Forward(std::span<const int32_t>(prompt).subspan(b, n), cache, nullptr, &part).ok());
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

class LlamaSyntheticTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaSyntheticTest, ChunkedPrefillAndBlockSizeDoNotChangeLogits) {
  runtime::ThreadPool pool(2);
  SyntheticModelSpec spec;
  spec.architecture = GetParam();
  spec.rope_freqs = GetParam() == "llama";
  auto loaded = Load(spec, &pool);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  LlamaModel& model = *loaded->model;
  const std::vector<int32_t> prompt = Prompt(37, spec.vocab);
  const std::vector<float> whole = ChunkedLogits(model, prompt, 37, 256);
  ASSERT_EQ(whole.size(), prompt.size() * spec.vocab);
  for (auto [chunk, block] : {std::pair{1, 4}, {5, 4}, {16, 7}, {37, 1}, {8, 256}}) {
    EXPECT_LT(RelL2(ChunkedLogits(model, prompt, chunk, block), whole), 1e-5)
        << "chunk " << chunk << " block " << block;
  }
}

TEST_P(LlamaSyntheticTest, LastLogitsEqualTheLastRowOfAllLogits) {
  SyntheticModelSpec spec;
  spec.architecture = GetParam();
  auto loaded = Load(spec, nullptr);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const std::vector<int32_t> prompt = Prompt(9, spec.vocab);
  std::unique_ptr<device::Device> cpu = device::MakeCpuDevice(nullptr);
  auto a = MakeStore(*loaded->model, *cpu, 4, kernels::KvDtype::kF32);
  auto b = MakeStore(*loaded->model, *cpu, 4, kernels::KvDtype::kF32);
  std::vector<float> last, all;
  ASSERT_TRUE(loaded->model->Forward(prompt, *a, &last).ok());
  ASSERT_TRUE(loaded->model->Forward(prompt, *b, nullptr, &all).ok());
  std::vector<float> tail(all.end() - spec.vocab, all.end());
  EXPECT_LT(RelL2(last, tail), 1e-6);
  EXPECT_EQ(a->length(), 9);
}

TEST_P(LlamaSyntheticTest, HalfPrecisionKvStaysClose) {
  SyntheticModelSpec spec;
  spec.architecture = GetParam();
  auto loaded = Load(spec, nullptr);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const std::vector<int32_t> prompt = Prompt(20, spec.vocab);
  const std::vector<float> f32 = ChunkedLogits(*loaded->model, prompt, 20, 8);
  EXPECT_LT(RelL2(ChunkedLogits(*loaded->model, prompt, 20, 8, kernels::KvDtype::kF16), f32), 1e-2);
  EXPECT_LT(RelL2(ChunkedLogits(*loaded->model, prompt, 20, 8, kernels::KvDtype::kBF16), f32),
            3e-2);
}

TEST_P(LlamaSyntheticTest, SimDeviceStreamingGivesTheSameLogits) {
  SyntheticModelSpec spec;
  spec.architecture = GetParam();
  auto loaded = Load(spec, nullptr);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  LlamaModel& model = *loaded->model;
  const std::vector<int32_t> prompt = Prompt(150, spec.vocab);
  for (auto dtype : {kernels::KvDtype::kF32, kernels::KvDtype::kF16, kernels::KvDtype::kBF16}) {
    for (int block : {4, 16}) {
      const std::vector<float> cpu = ChunkedLogits(model, prompt, 20, block, dtype);
      const kv::KvGeometry g = model.KvGeometryFor(block, dtype);
      // Tails + two layers' open blocks for a 20-token chunk + 2 x 3 staging
      // blocks: far less than the 150-token KV, so most of it streams.
      const int64_t budget = g.BlockBytes() * (int64_t(g.n_layers) * g.n_kv_heads +
                                               2 * g.n_kv_heads * ((20 + block - 1) / block) + 6);
      ASSERT_LT(budget, g.TokenBytes() * 150 / 2);
      auto sim = device::MakeSimDevice({budget, 0.0}, nullptr);
      ASSERT_TRUE(sim.ok()) << sim.status();
      const std::vector<float> streamed =
          ChunkedLogits(model, prompt, 20, block, dtype, sim->get(), budget);
      ASSERT_EQ(streamed.size(), cpu.size());
      // DESIGN.md: logits within 1e-4 relative; only the merge order differs.
      EXPECT_LT(RelL2(streamed, cpu), 1e-4) << "dtype " << int(dtype) << " block " << block;
      EXPECT_LE((*sim)->memory_stats().peak_bytes, budget);
      EXPECT_GT((*sim)->copy_stats().bytes_to_device, 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, LlamaSyntheticTest, ::testing::Values("llama", "qwen2"));

TEST(LlamaModelTest, Qwen2BiasesAreApplied) {
  SyntheticModelSpec spec;
  spec.architecture = "qwen2";
  auto with_bias = Load(spec, nullptr);
  ASSERT_TRUE(with_bias.ok()) << with_bias.status();
  spec.weight_scale = 0.2f;
  spec.seed = 2;
  auto other = Load(spec, nullptr);
  ASSERT_TRUE(other.ok());
  const std::vector<int32_t> prompt = Prompt(5, spec.vocab);
  EXPECT_GT(RelL2(ChunkedLogits(*with_bias->model, prompt, 5, 4),
                  ChunkedLogits(*other->model, prompt, 5, 4)),
            1e-3);
}

TEST(LlamaModelTest, RejectsTokensOutsideTheVocabulary) {
  auto loaded = Load(SyntheticModelSpec{}, nullptr);
  ASSERT_TRUE(loaded.ok());
  std::unique_ptr<device::Device> cpu = device::MakeCpuDevice(nullptr);
  auto cache = MakeStore(*loaded->model, *cpu, 4, kernels::KvDtype::kF32);
  std::vector<int32_t> bad = {1, 96};
  std::vector<float> logits;
  absl::Status status = loaded->model->Forward(bad, *cache, &logits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("token id 96"));
  EXPECT_FALSE(loaded->model->Forward({}, *cache, &logits).ok());
}

// A malformed model: how the spec is broken, and what the error must say.
struct Malformed {
  const char* name;
  void (*mutate)(SyntheticModelSpec&);
  const char* message;
};

class MalformedModelTest : public ::testing::TestWithParam<Malformed> {};

TEST_P(MalformedModelTest, FailsToLoadNamingTheProblem) {
  SyntheticModelSpec spec;
  GetParam().mutate(spec);
  auto loaded = Load(spec, nullptr);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MalformedModelTest,
    ::testing::Values(
        Malformed{"MissingTensor",
                  [](SyntheticModelSpec& s) { s.drop_tensors = {"blk.1.ffn_up.weight"}; },
                  "'blk.1.ffn_up.weight' is missing"},
        Malformed{"MissingOutputNorm",
                  [](SyntheticModelSpec& s) { s.drop_tensors = {"output_norm.weight"}; },
                  "'output_norm.weight' is missing"},
        Malformed{"WrongShape",
                  [](SyntheticModelSpec& s) { s.reshape_tensor = "blk.0.attn_k.weight"; },
                  "'blk.0.attn_k.weight' has shape [65, 32], expected [64, 32]"},
        Malformed{"VocabularyShorterThanEmbedding",
                  [](SyntheticModelSpec& s) { s.tokenizer_tokens = 50; },
                  "has 50 tokens but token_embd.weight has 96"},
        Malformed{"BlockCountPastTheTensors",  // was an allocation of 2^30 layers
                  [](SyntheticModelSpec& s) { s.block_count = int64_t{1} << 30; },
                  "block_count 1073741824 but the file has 20 tensors"},
        Malformed{"UnsupportedArchitecture",
                  [](SyntheticModelSpec& s) { s.architecture = "mamba"; }, "mamba"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace headwise::model
