// The approximate attention policies on the distributed-KV fixture: each
// reduces to exact when its budget covers everything (same greedy tokens on
// every world), hybrid attends the sinks', window's and best blocks within
// its budget, quantkv evicts past its KV budget but never sinks or window,
// and its token-level selection gives the same tokens wherever the selected
// tokens live (this rank, memory ranks' pools, disks; pulled or delegated).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/attention/distributed_fixture.h"
#include "runtime/attention/policy.h"
#include "tests/util/numerics.h"

namespace headwise::attention {
namespace {

using ::headwise::testing::RelL2;

kv::AttentionPolicy QuantKv(double budget, double tau, int32_t window = 64) {
  kv::AttentionPolicy p;
  p.kind = kv::AttentionPolicy::Kind::kQuantKv;
  p.budget = budget;
  p.tau = tau;
  p.window_tokens = window;
  return p;
}

TEST_F(DistributedTest, HybridWithAFullBudgetIsExactOnEveryWorld) {
  using Summary = kv::AttentionPolicy::BlockSummary;
  for (Summary summary : {Summary::kKeys, Summary::kBounds}) {
    for (int size : {1, 3}) {
      World world(size, int64_t{64} << 20);
      kv::KvStoreOptions options = Options(cpu_);
      if (size > 1) options.transport = &world.loopback.transport(0);
      options.mode = cluster::ExecMode::kDelegate;
      options.policy = {kv::AttentionPolicy::Kind::kHybrid, 4, 64, 1.0};
      options.policy.summary = summary;
      options.policy.pool_heads = summary == Summary::kKeys && size == 3;
      absl::StatusOr<RunResult> run = Generate(options);
      ASSERT_TRUE(run.ok()) << run.status();
      EXPECT_EQ(run->tokens, reference_->tokens)
          << size << " ranks, " << kv::BlockSummaryName(summary);
      EXPECT_EQ(run->stats.blocks_attended, run->stats.blocks_total);
    }
  }
}

TEST_F(DistributedTest, HybridAttendsSinksWindowAndTheBestBlocksWithinItsBudget) {
  // 700 tokens of 32-token blocks: 21 sealed blocks per (layer, kv head).
  kv::KvStoreOptions options = Options(cpu_);
  options.keep_key_summaries = true;  // prefilled once, decoded under two budgets
  auto store = kv::KvStore::Create(options);
  ASSERT_TRUE(store.ok());
  std::vector<float> logits;
  for (size_t begin = 0; begin < prompt_->size(); begin += kChunk) {
    const size_t n = std::min<size_t>(kChunk, prompt_->size() - begin);
    ASSERT_TRUE(llm_->Forward(std::span(*prompt_).subspan(begin, n), **store, &logits).ok());
  }
  const int64_t heads = int64_t(llm_->info().n_layers) * llm_->info().n_kv_heads;
  const int32_t token = reference_->tokens[0];
  using Summary = kv::AttentionPolicy::BlockSummary;
  for (Summary summary : {Summary::kKeys, Summary::kBounds}) {
    SCOPED_TRACE(kv::BlockSummaryName(summary));
    // A tiny budget: only the sink block (0) and the window's blocks (19, 20:
    // they hold positions past 701 - 64) are attended.
    kv::AttentionPolicy policy{kv::AttentionPolicy::Kind::kHybrid, 4, 64, 0.01};
    policy.summary = summary;
    ASSERT_TRUE((*store)->set_policy(policy).ok());
    StreamStats tiny;
    ASSERT_TRUE(
        llm_->Forward(std::span<const int32_t>(&token, 1), **store, &logits, nullptr, &tiny).ok());
    EXPECT_EQ(tiny.blocks_total, heads * 21);
    EXPECT_EQ(tiny.blocks_attended, heads * 3);
    ASSERT_TRUE((*store)->Truncate(kPrompt).ok());
    // A quarter: ceil(0.25 * 701) = 176 tokens; the 29 open tokens and the 3
    // dense blocks make 125, two blocks chosen by their summaries 189.
    policy.budget = 0.25;
    ASSERT_TRUE((*store)->set_policy(policy).ok());
    StreamStats quarter;
    ASSERT_TRUE(
        llm_->Forward(std::span<const int32_t>(&token, 1), **store, &logits, nullptr, &quarter)
            .ok());
    EXPECT_EQ(quarter.blocks_attended, heads * 5);
    ASSERT_TRUE((*store)->Truncate(kPrompt).ok());
  }
  EXPECT_EQ((*store)->policy().Describe(),
            "hybrid(budget=0.25, summary=bounds, window=64, sinks=4)");
  EXPECT_EQ((kv::AttentionPolicy{kv::AttentionPolicy::Kind::kHybrid, 4, 64, 0.25}.Describe()),
            "hybrid(budget=0.25, summary=keys, key_bits=4, window=64, sinks=4)");
  EXPECT_FALSE((kv::AttentionPolicy{kv::AttentionPolicy::Kind::kHybrid, 4, 64, 0}.Validate().ok()));
}

TEST_F(DistributedTest, HybridPooledHeadsShareTheLayersBudget) {
  // Layer 0 of 21 sealed blocks of synthetic keys. Head 0's queries point at
  // one key (token 163, block 5): its attention is all there. Heads 1 and 2
  // have zero queries: their attention is spread evenly over every block.
  kv::KvStoreOptions options = Options(cpu_);
  options.policy = {kv::AttentionPolicy::Kind::kHybrid, 4, 64, 0.25};
  auto store = kv::KvStore::Create(options);
  ASSERT_TRUE(store.ok()) << store.status();
  const kv::KvGeometry& g = (*store)->geometry();
  const int32_t heads = g.n_kv_heads, hd = g.head_dim, group = 3, sealed = 21;
  ASSERT_EQ(heads, 3);
  const int64_t n = int64_t(sealed) * kBlock, row = int64_t(heads) * hd;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> k(size_t(n * row)), v(k.size());
  for (float& x : k) x = normal(rng);
  for (float& x : v) x = normal(rng);
  std::vector<float> q(size_t(heads) * group * hd, 0.0f);
  for (int32_t i = 0; i < hd; ++i) {
    k[size_t(163 * row + i)] = i % 2 ? 4.0f : -4.0f;
    for (int32_t j = 0; j < group; ++j) q[size_t(j * hd + i)] = i % 2 ? 4.0f : -4.0f;
  }
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t rows = std::min<int64_t>(kChunk, n - begin);
    ASSERT_TRUE(
        (*store)->Append(0, &k[size_t(begin * row)], &v[size_t(begin * row)], rows, row).ok());
  }
  auto select = [&](bool pooled) {
    kv::AttentionPolicy policy = options.policy;
    policy.pool_heads = pooled;
    EXPECT_TRUE((*store)->set_policy(policy).ok());
    std::vector<int32_t> all(sealed);
    std::iota(all.begin(), all.end(), 0);
    std::vector<HeadLists> lists(1, HeadLists(size_t(heads), all)),
        disk(1, HeadLists(size_t(heads)));
    Selection selection;
    StreamStats stats;
    SelectHybrid(**store, {0, q.data(), group, sealed}, lists, disk, &selection, &stats);
    return std::make_pair(lists[0], stats);
  };
  // Per head: ceil(0.25 * 672) = 168 tokens; the sink block and the window's
  // two blocks make 96, three more blocks 192.
  const auto [uniform, uniform_stats] = select(false);
  for (int32_t h = 0; h < heads; ++h) EXPECT_EQ(uniform[h].size(), 6u) << "head " << h;
  // Pooled: 3 x 168 = 504 for the layer; 9 dense blocks make 288, seven more
  // 512. Head 0 takes block 5 and the block after it (which inherits its
  // score); the spread heads the other five (ties: the earlier head first).
  const auto [pooled, pooled_stats] = select(true);
  EXPECT_EQ(pooled[0], (std::vector<int32_t>{0, 5, 6, 19, 20}));
  EXPECT_EQ(pooled[1].size() + pooled[2].size(), 6u + 5u);
  EXPECT_EQ(pooled_stats.tokens_attended, 16 * kBlock);
  EXPECT_EQ(uniform_stats.tokens_attended, 18 * kBlock);
  EXPECT_EQ((*store)->policy().Describe(),
            "hybrid(budget=0.25, summary=keys, key_bits=4, pool_heads=1, window=64, sinks=4)");
  kv::AttentionPolicy bounds = options.policy;
  bounds.pool_heads = true;
  bounds.summary = kv::AttentionPolicy::BlockSummary::kBounds;
  EXPECT_EQ(bounds.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DistributedTest, HybridNeedsTheSummaryItRanksBy) {
  // A sequence filled under one summary cannot switch to the other: the
  // other's summaries of the tokens already in it were never made.
  using Summary = kv::AttentionPolicy::BlockSummary;
  for (Summary filled : {Summary::kKeys, Summary::kBounds}) {
    kv::KvStoreOptions options = Options(cpu_);
    options.policy = {kv::AttentionPolicy::Kind::kHybrid, 4, 64, 0.25};
    options.policy.summary = filled;
    auto store = kv::KvStore::Create(options);
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<float> logits;
    ASSERT_TRUE(llm_->Forward(std::span(*prompt_).subspan(0, 64), **store, &logits).ok());
    kv::AttentionPolicy other = options.policy;
    other.summary = filled == Summary::kKeys ? Summary::kBounds : Summary::kKeys;
    const absl::Status s = (*store)->set_policy(other);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_TRUE((*store)->set_policy(options.policy).ok());
    EXPECT_EQ((*store)->key_cache() != nullptr, filled == Summary::kKeys);
  }
}

TEST_F(DistributedTest, HybridTokenTopKIsChosenWhereTheBlocksLive) {
  // A token top-k of a whole block changes nothing; of 8 it attends 8 tokens
  // of each chosen block, scored on whichever rank (or disk) holds it: the
  // same tokens on every world and mode.
  kv::AttentionPolicy whole{kv::AttentionPolicy::Kind::kHybrid, 4, 64, 1.0};
  whole.token_top_k = kBlock;
  kv::KvStoreOptions options = Options(cpu_);
  options.policy = whole;
  absl::StatusOr<RunResult> all = Generate(options);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->tokens, reference_->tokens);
  kv::AttentionPolicy narrow{kv::AttentionPolicy::Kind::kHybrid, 4, 64, 0.5};
  narrow.token_top_k = 8;
  options.policy = narrow;
  absl::StatusOr<RunResult> one = Generate(options);
  ASSERT_TRUE(one.ok()) << one.status();
  narrow.token_top_k = 0;
  options.policy = narrow;
  absl::StatusOr<RunResult> blocks = Generate(options);
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  EXPECT_LT(one->stats.tokens_attended, blocks->stats.tokens_attended);
  EXPECT_EQ(one->stats.blocks_attended, blocks->stats.blocks_attended);
  narrow.token_top_k = 8;
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int64_t block = BlockBytes();
  for (cluster::ExecMode mode : {cluster::ExecMode::kPull, cluster::ExecMode::kDelegate}) {
    World world(3, 8 * block, {dir.path(), 512 * block});
    kv::KvStoreOptions spread = DiskOptions(world, 3, 60, {dir.path(), 512 * block});
    spread.mode = mode;
    spread.policy = narrow;
    absl::StatusOr<RunResult> run = Generate(spread);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->tokens, one->tokens) << cluster::ExecModeName(mode);
    EXPECT_LT(RelL2(run->prompt_logits, one->prompt_logits), 1e-5) << cluster::ExecModeName(mode);
  }
  EXPECT_EQ(narrow.Describe(),
            "hybrid(budget=0.5, summary=keys, key_bits=4, token_top_k=8, window=64, sinks=4)");
}

TEST_F(DistributedTest, QuantKvCoveringEverythingIsExactOnEveryWorld) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int64_t block = BlockBytes();
  for (int size : {1, 3}) {
    for (cluster::ExecMode mode : {cluster::ExecMode::kPull, cluster::ExecMode::kDelegate}) {
      World world(size, 8 * block, {dir.path(), 512 * block});
      kv::KvStoreOptions options = DiskOptions(world, size, 60, {dir.path(), 512 * block});
      options.mode = mode;
      options.policy = QuantKv(1.0, 1.0);
      absl::StatusOr<RunResult> run = Generate(options);
      ASSERT_TRUE(run.ok()) << run.status();
      const std::string where = absl::StrCat(size, " ranks, ", cluster::ExecModeName(mode));
      EXPECT_EQ(run->tokens, reference_->tokens) << where;
      EXPECT_LT(RelL2(run->prompt_logits, reference_->prompt_logits), 1e-5) << where;
      EXPECT_EQ(run->stats.tokens_attended, run->stats.tokens_total) << where;
      EXPECT_GT(run->stats.disk_bytes_read + run->stats.bytes_fetched, 0) << where;
    }
  }
}

TEST_F(DistributedTest, QuantKvSelectsTheSameTokensWhereverTheyLive) {
  // A quarter of the KV kept and 90% of the approximate attention attended:
  // blocks attended in part, gathered where they are (this rank's memory,
  // memory ranks' pools and disks, pulled or delegated), give one answer.
  const kv::AttentionPolicy policy = QuantKv(0.25, 0.9);
  kv::KvStoreOptions local = Options(cpu_);
  local.policy = policy;
  absl::StatusOr<RunResult> one = Generate(local);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_LT(one->stats.tokens_attended, one->stats.tokens_total / 2);
  EXPECT_GT(one->stats.blocks_attended, 0);
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int64_t block = BlockBytes();
  for (cluster::ExecMode mode : {cluster::ExecMode::kPull, cluster::ExecMode::kDelegate}) {
    World world(3, 8 * block, {dir.path(), 512 * block});
    kv::KvStoreOptions options = DiskOptions(world, 3, 60, {dir.path(), 512 * block});
    options.mode = mode;
    options.policy = policy;
    absl::StatusOr<RunResult> run = Generate(options);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->tokens, one->tokens) << cluster::ExecModeName(mode);
    EXPECT_EQ(run->stats.tokens_attended, one->stats.tokens_attended)
        << cluster::ExecModeName(mode);
  }
}

TEST_F(DistributedTest, QuantKvEvictsPastItsBudgetButNeverSinksOrTheWindow) {
  kv::KvStoreOptions options = Options(cpu_);
  options.policy = QuantKv(0.25, 0.9);
  auto store = kv::KvStore::Create(options);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<float> logits;
  for (size_t begin = 0; begin < prompt_->size(); begin += kChunk) {
    const size_t n = std::min<size_t>(kChunk, prompt_->size() - begin);
    ASSERT_TRUE(llm_->Forward(std::span(*prompt_).subspan(begin, n), **store, &logits).ok());
  }
  kv::KeyCache& cache = *(*store)->key_cache();
  EXPECT_EQ(cache.n_evicted(), 0);  // prefill is exact
  for (int step = 0; step < 3; ++step) {
    const int32_t token = reference_->tokens[step];
    ASSERT_TRUE(llm_->Forward(std::span<const int32_t>(&token, 1), **store, &logits).ok());
  }
  const int64_t length = (*store)->length();  // 703: the last step's token is attended too
  const int64_t keep = static_cast<int64_t>(std::ceil(0.25 * double(length - 1)));
  for (int32_t layer = 0; layer < llm_->info().n_layers; ++layer) {
    for (int32_t h = 0; h < llm_->info().n_kv_heads; ++h) {
      const std::vector<uint8_t>& evicted = cache.evicted(layer, h);
      int64_t kept = 0;
      for (int64_t t = 0; t < int64_t(evicted.size()); ++t) {
        kept += !evicted[t];
        if (t < 4 || t >= int64_t(evicted.size()) - 64) {
          EXPECT_EQ(evicted[t], 0) << "layer " << layer << ", head " << h << ", token " << t;
        }
      }
      EXPECT_LE(kept, keep + 1) << "layer " << layer << ", head " << h;
      EXPECT_GE(kept, keep) << "layer " << layer << ", head " << h;
    }
  }
  EXPECT_GT(cache.bytes(), 0);
  // head_dim 16 in int4 groups of 16: 8 bytes of codes and a scale and zero
  // per token and kv head, an eighth of its f32 K and V.
  EXPECT_EQ(cache.bytes() * 8, (*store)->length() * BlockBytes() / kBlock * llm_->info().n_layers *
                                   llm_->info().n_kv_heads);
  // The end of a request (truncation) gives the next one the whole context.
  ASSERT_TRUE((*store)->Truncate(kPrompt).ok());
  EXPECT_EQ(cache.n_evicted(), 0);
  EXPECT_EQ((*store)->policy().Describe(),
            "quantkv(kv_budget=0.25, tau=0.9, top_k=0, key_bits=4, window=64, sinks=4)");
  // A store that kept no quantized keys cannot switch to quantkv.
  auto exact = kv::KvStore::Create(Options(cpu_));
  ASSERT_TRUE(exact.ok());
  ASSERT_TRUE(llm_->Forward(std::span(*prompt_).subspan(0, 10), **exact, &logits).ok());
  EXPECT_EQ((*exact)->set_policy(QuantKv(0.25, 0.9)).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(QuantKv(0.25, 0).Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantKv(0, 0.9).Validate().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace headwise::attention
