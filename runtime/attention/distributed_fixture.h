// The fixture of the distributed-KV tests (distributed_test.cc,
// policy_test.cc): a small synthetic GQA model, a fixed prompt, the
// single-process all-resident reference run, and worlds of loopback ranks
// served by MemoryRank.
#pragma once

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/loopback_transport.h"
#include "gtest/gtest.h"
#include "runtime/attention/attend.h"
#include "runtime/attention/remote.h"
#include "runtime/common/thread_pool.h"
#include "runtime/device/device.h"
#include "runtime/model/llama.h"
#include "runtime/model/synthetic_model.h"

namespace headwise::attention {

// A fresh directory for disk tiers, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "headwise-disk-XXXXXX";
    path_ = mkdtemp(pattern.data()) != nullptr ? pattern : "";
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  // The disk tier files of `rank` in it.
  std::vector<std::string> Files(int rank) const {
    std::vector<std::string> files;
    for (const auto& entry : std::filesystem::directory_iterator(path_)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with(absl::StrCat("headwise-kv-rank", rank, "-"))) {
        files.push_back(entry.path().string());
      }
    }
    std::sort(files.begin(), files.end());
    return files;
  }

 private:
  std::string path_;
};

constexpr int32_t kBlock = 32, kChunk = 160, kPrompt = 700, kNew = 6;

struct RunResult {
  std::vector<float> prompt_logits;
  std::vector<int32_t> tokens;
  StreamStats stats;
};

class DistributedTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pool_ = new runtime::ThreadPool(2);
    model::testing::SyntheticModelSpec spec;
    spec.n_layers = 3;
    spec.n_embd = 96;
    spec.n_heads = 6;
    spec.n_kv_heads = 3;  // like SmolLM2: fewer kv heads than some worlds have ranks
    image_ = new std::vector<uint8_t>(model::testing::BuildSyntheticModel(spec));
    auto file = model::GgufFile::FromBuffer(image_->data(), image_->size(), "synthetic.gguf");
    ASSERT_TRUE(file.ok()) << file.status();
    auto llm = model::LlamaModel::FromGguf(std::move(*file), pool_);
    ASSERT_TRUE(llm.ok()) << llm.status();
    llm_ = llm->release();
    std::mt19937 rng(11);
    std::uniform_int_distribution<int32_t> token(0, 95);
    prompt_ = new std::vector<int32_t>(kPrompt);
    for (int32_t& t : *prompt_) t = token(rng);
    cpu_ = device::MakeCpuDevice(pool_).release();
    reference_ = new RunResult(*Generate(Options(cpu_)));
  }

  static int64_t BlockBytes() {
    return llm_->KvGeometryFor(kBlock, kernels::KvDtype::kF32).BlockBytes();
  }

  static kv::KvStoreOptions Options(device::Device* device) {
    kv::KvStoreOptions options;
    options.geometry = llm_->KvGeometryFor(kBlock, kernels::KvDtype::kF32);
    options.device = device;
    options.capacity_tokens = kPrompt + kNew;
    options.max_append_tokens = kChunk;
    return options;
  }

  // Chunked prefill, then greedy decode, through the store `options` makes.
  static absl::StatusOr<RunResult> Generate(const kv::KvStoreOptions& options) {
    absl::StatusOr<std::unique_ptr<kv::KvStore>> store = kv::KvStore::Create(options);
    if (!store.ok()) return store.status();
    RunResult run;
    std::vector<float> logits;
    const std::span<const int32_t> prompt(*prompt_);
    for (size_t begin = 0; begin < prompt.size(); begin += kChunk) {
      const size_t n = std::min<size_t>(kChunk, prompt.size() - begin);
      absl::Status s =
          llm_->Forward(prompt.subspan(begin, n), **store, &logits, nullptr, &run.stats);
      if (!s.ok()) return s;
    }
    run.prompt_logits = logits;
    for (int i = 0; i < kNew; ++i) {
      const int32_t next =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      run.tokens.push_back(next);
      absl::Status s =
          llm_->Forward(std::span<const int32_t>(&next, 1), **store, &logits, nullptr, &run.stats);
      if (!s.ok()) return s;
    }
    return run;
  }

  // A world of `size` loopback ranks whose memory ranks serve with
  // MemoryRank (with a disk tier of disk.bytes in disk.dir when given).
  struct World {
    explicit World(int size, int64_t pool_bytes, kv::DiskTierOptions disk = {})
        : loopback(std::vector<int64_t>(size, pool_bytes)) {
      for (int r = 1; r < size; ++r) {
        ranks.push_back(std::make_unique<MemoryRank>(loopback.transport(r), *cpu_, disk));
        EXPECT_TRUE(ranks.back()->Serve().ok());
      }
    }
    comm::LoopbackWorld loopback;
    std::vector<std::unique_ptr<MemoryRank>> ranks;
  };

  // Store options on `world` (its first `size` ranks; 1: no transport) with
  // a `host_blocks` host budget and a disk tier of `disk` on every rank.
  static kv::KvStoreOptions DiskOptions(World& world, int size, int64_t host_blocks,
                                        const kv::DiskTierOptions& disk) {
    kv::KvStoreOptions options = Options(cpu_);
    options.host_budget_bytes = host_blocks * BlockBytes();
    options.disk = disk;
    if (size > 1) {
      options.transport = &world.loopback.transport(0);
      options.costs.ranks.resize(size);
      for (cluster::RankProbe& probe : options.costs.ranks) probe.disk_bytes = disk.bytes;
    }
    return options;
  }

  static inline runtime::ThreadPool* pool_ = nullptr;
  static inline std::vector<uint8_t>* image_ = nullptr;
  static inline model::LlamaModel* llm_ = nullptr;
  static inline std::vector<int32_t>* prompt_ = nullptr;
  static inline device::Device* cpu_ = nullptr;
  static inline RunResult* reference_ = nullptr;
};

}  // namespace headwise::attention
