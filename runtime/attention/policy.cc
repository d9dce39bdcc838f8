#include "runtime/attention/policy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kernels/key_summary.h"

namespace headwise::attention {
namespace {

// Drops the blocks of kv head h that `keep` rejects from every rank's lists;
// returns how many remain.
int64_t KeepBlocks(int32_t h, const std::vector<char>& keep, std::vector<HeadLists>& lists,
                   std::vector<HeadLists>& disk) {
  int64_t kept = 0;
  for (std::vector<HeadLists>* all : {&lists, &disk}) {
    for (HeadLists& rank : *all) {
      std::erase_if(rank[h], [&](int32_t b) { return !keep[b]; });
      kept += static_cast<int64_t>(rank[h].size());
    }
  }
  return kept;
}

// Runs select(first_head, end_head) over the kv heads, on the device's host
// threads where it has them (heads are independent: their own cache rows,
// lists and selection).
template <typename Select>
void RunPerHead(const kv::KvStore& store, Select& select) {
  const int32_t heads = store.geometry().n_kv_heads;
  if (const kernels::ParallelFor* parallel = store.device().host_parallel(); parallel != nullptr) {
    parallel->Run(heads, select);
  } else {
    select(0, heads);
  }
}

// SnapKV pools with a kernel of 7; a radius of 3 lost a 5-digit key's last
// digits at 8K tokens (its peak sits on "is", before the digits), 8 keeps them.
constexpr int64_t kPoolRadius = 8;

// Runs [begin, end) of the tokens of (layer, head) below `end` not evicted.
void LiveRuns(const std::vector<uint8_t>& evicted, int64_t end,
              std::vector<std::pair<int64_t, int64_t>>& runs) {
  runs.clear();
  for (int64_t t = 0; t < end;) {
    while (t < end && evicted[t]) ++t;
    const int64_t begin = t;
    while (t < end && !evicted[t]) ++t;
    if (t > begin) runs.push_back({begin, t});
  }
}

// Adds to mass[t] (t in the runs) `weight` times the mean over the `n_q`
// queries of their softmax over the runs' approximate scores.
void AddApproxAttention(const kv::KeyCache& cache, int32_t layer, int32_t head, const float* q,
                        int32_t n_q, float scale, float weight,
                        const std::vector<std::pair<int64_t, int64_t>>& runs,
                        std::vector<float>& scores, int64_t stride, float* mass) {
  for (const auto& [begin, end] : runs) {
    cache.Scores(layer, head, q, n_q, begin, end, scores.data(), stride);
  }
  for (int32_t j = 0; j < n_q; ++j) {
    float* s = scores.data() + int64_t(j) * stride;
    float m = -std::numeric_limits<float>::infinity();
    for (const auto& [begin, end] : runs) {
      for (int64_t t = begin; t < end; ++t) m = std::max(m, s[t] *= scale);
    }
    double z = 0;
    for (const auto& [begin, end] : runs) {
      for (int64_t t = begin; t < end; ++t) z += s[t] = std::exp(s[t] - m);
    }
    const float w = static_cast<float>(weight / z);
    for (const auto& [begin, end] : runs) {
      for (int64_t t = begin; t < end; ++t) mass[t] += w * s[t];
    }
  }
}

}  // namespace

// Per kv head: the dense blocks (the sinks' and the recent window's) and, of
// the others, those whose summary scores highest for the head's queries,
// until the budget of the sequence's tokens (open blocks included) is
// attended — per head, or with pool_heads per layer: the best (head, block)
// pairs of all heads until the heads' budgets together are spent. Ties keep
// the earlier head, then the earlier block. Heads are scored on the
// device's host threads.
void SelectHybrid(const kv::KvStore& store, const DecodeRow& row, std::vector<HeadLists>& lists,
                  std::vector<HeadLists>& disk, Selection* selection, StreamStats* stats) {
  const kv::AttentionPolicy& p = store.policy();
  const kv::KvGeometry& g = store.geometry();
  const int32_t heads = g.n_kv_heads;
  const int64_t bt = g.block_tokens, hd = g.head_dim;
  const int64_t length = store.n_tokens(row.layer);
  const int64_t sealed_tokens = int64_t(row.sealed) * bt;
  const int64_t budget = static_cast<int64_t>(std::ceil(p.budget * double(length)));
  const int64_t sink_blocks = (p.sink_tokens + bt - 1) / bt;
  const int64_t window_start = length - p.window_tokens;
  const bool by_keys = p.summary == kv::AttentionPolicy::BlockSummary::kKeys;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  selection->tokens.clear();
  selection->top_k.assign(p.token_top_k > 0 ? heads : 0,
                          std::vector<int32_t>(size_t(row.sealed), 0));

  // Scoring, per head: the dense blocks kept, the others as candidates.
  struct Candidate {
    float score;
    int32_t head, block;
  };
  std::vector<std::vector<char>> keep(static_cast<size_t>(heads));
  std::vector<std::vector<Candidate>> candidates(static_cast<size_t>(heads));
  std::vector<int64_t> attended(size_t(heads), length - sealed_tokens);  // the open blocks
  auto score = [&](int64_t first_head, int64_t end_head) {
    std::vector<float> scores, mass;
    const std::vector<std::pair<int64_t, int64_t>> sealed = {{0, sealed_tokens}};
    for (int32_t h = int32_t(first_head); h < end_head; ++h) {
      const float* q = row.q + int64_t(h) * row.group * hd;
      if (by_keys && row.sealed > 0) {
        // The group's mean approximate attention over the sealed tokens.
        scores.resize(size_t(row.group * sealed_tokens));
        mass.assign(size_t(sealed_tokens), 0.0f);
        AddApproxAttention(*store.key_cache(), row.layer, h, q, row.group, scale,
                           1.0f / float(row.group), sealed, scores, sealed_tokens, mass.data());
      }
      keep[h].assign(size_t(row.sealed), 0);
      std::vector<Candidate>& mine = candidates[h];
      mine.clear();
      for (int32_t b = 0; b < row.sealed; ++b) {
        if (b < sink_blocks || (b + 1) * bt > window_start) {
          keep[h][b] = 1;
          attended[h] += bt;
          continue;
        }
        float s = by_keys ? 0.0f : -std::numeric_limits<float>::infinity();
        if (by_keys) {
          for (int64_t t = b * bt; t < (b + 1) * bt; ++t) s += mass[t];
        } else {
          const float* bounds = store.KeyBounds(row.layer, h, b);
          for (int32_t j = 0; j < row.group; ++j) {
            s = std::max(s, kernels::KeyBoundScore(q + j * hd, bounds, bounds + hd, int32_t(hd)));
          }
        }
        mine.push_back({s, h, b});
      }
      // A block also scores what the block before it scored: what follows a
      // relevant span (a number cut by a block boundary) comes along.
      for (size_t i = mine.size(); i-- > 1;) {
        if (mine[i - 1].block + 1 == mine[i].block) {
          mine[i].score = std::max(mine[i].score, mine[i - 1].score);
        }
      }
    }
  };
  RunPerHead(store, score);

  // Choosing: the best candidates until the budget is spent.
  // Per head, the tokens the token top-k leaves out of chosen blocks.
  std::vector<int64_t> narrowed(static_cast<size_t>(heads), 0);
  auto choose = [&](std::vector<Candidate>& pool, int64_t limit, int64_t spent) {
    std::stable_sort(pool.begin(), pool.end(),
                     [](const Candidate& x, const Candidate& y) { return x.score > y.score; });
    for (const Candidate& c : pool) {
      if (spent >= limit) break;
      keep[c.head][c.block] = 1;
      attended[c.head] += bt;
      spent += bt;
      if (p.token_top_k > 0 && p.token_top_k < bt) {
        selection->top_k[c.head][c.block] = p.token_top_k;
        narrowed[c.head] += bt - p.token_top_k;
      }
    }
  };
  if (p.pool_heads) {
    std::vector<Candidate> pool;
    for (const std::vector<Candidate>& mine : candidates)
      pool.insert(pool.end(), mine.begin(), mine.end());
    choose(pool, budget * heads, std::accumulate(attended.begin(), attended.end(), int64_t{0}));
  } else {
    for (int32_t h = 0; h < heads; ++h) choose(candidates[h], budget, attended[h]);
  }

  for (int32_t h = 0; h < heads; ++h) {
    const int64_t kept = KeepBlocks(h, keep[h], lists, disk);
    if (stats != nullptr) {
      stats->blocks_attended += kept, stats->blocks_total += row.sealed;
      stats->tokens_attended += attended[h] - narrowed[h], stats->tokens_total += length;
    }
  }
}

void ObservePrefill(kv::KvStore& store, int32_t layer, const float* q, int64_t n_rows,
                    int32_t n_heads) {
  const kv::KvGeometry& g = store.geometry();
  kv::KeyCache& cache = *store.key_cache();
  const int32_t group = n_heads / g.n_kv_heads;
  const int64_t hd = g.head_dim, length = store.n_tokens(layer);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t rows = std::min<int64_t>(n_rows, kObservedRows);
  std::vector<std::pair<int64_t, int64_t>> runs;
  std::vector<float> scores(static_cast<size_t>(group * length)), qh(size_t(group * hd));
  std::vector<float> mass(static_cast<size_t>(length));
  for (int32_t h = 0; h < g.n_kv_heads; ++h) {
    std::fill(mass.begin(), mass.end(), 0.0f);
    for (int64_t r = n_rows - rows; r < n_rows; ++r) {
      // Row r sees the tokens up to its own position (causal).
      const int64_t end = length - n_rows + r + 1;
      LiveRuns(cache.evicted(layer, h), end, runs);
      const float* row = q + (r * n_heads + int64_t(h) * group) * hd;
      std::copy(row, row + group * hd, qh.begin());
      AddApproxAttention(cache, layer, h, qh.data(), group, scale, 1.0f / float(group), runs,
                         scores, length, mass.data());
    }
    cache.Observe(layer, h, mass.data(), length);
  }
}

void SelectQuantKv(kv::KvStore& store, const DecodeRow& row, std::vector<HeadLists>& lists,
                   std::vector<HeadLists>& disk, Selection* selection, StreamStats* stats) {
  const kv::AttentionPolicy& p = store.policy();
  const kv::KvGeometry& g = store.geometry();
  kv::KeyCache& cache = *store.key_cache();
  const int64_t bt = g.block_tokens, hd = g.head_dim;
  const int64_t length = store.n_tokens(row.layer);
  const int64_t sealed_tokens = int64_t(row.sealed) * bt;
  const int64_t window_start = length - p.window_tokens;
  const int64_t keep_tokens = static_cast<int64_t>(std::ceil(p.budget * double(length)));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  auto dense = [&](int64_t t) {
    return t < p.sink_tokens || t >= window_start || t >= sealed_tokens;
  };

  selection->tokens.assign(g.n_kv_heads, std::vector<std::vector<uint16_t>>(row.sealed));
  // Each range of heads has its own scratch (RunPerHead).
  struct Counts {
    int64_t blocks = 0, tokens = 0;
  };
  std::vector<Counts> counts(size_t(g.n_kv_heads));
  auto select = [&](int64_t first_head, int64_t end_head) {
    std::vector<float> scores(static_cast<size_t>(row.group * length));
    std::vector<float> mass(static_cast<size_t>(length)), pooled;
    std::vector<std::pair<int64_t, int64_t>> runs;
    std::vector<int64_t> order;
    std::vector<char> keep;
    for (int32_t h = int32_t(first_head); h < end_head; ++h) {
      std::vector<uint8_t>& evicted = cache.evicted(row.layer, h);
      std::vector<float>& acc = cache.accumulated(row.layer, h);
      // The group's mean approximate attention over the tokens still kept,
      // accumulated (HCAttention / H2O's eviction score).
      LiveRuns(evicted, length, runs);
      std::fill(mass.begin(), mass.end(), 0.0f);
      AddApproxAttention(cache, row.layer, h, row.q + int64_t(h) * row.group * hd, row.group, scale,
                         1.0f / float(row.group), runs, scores, length, mass.data());
      int64_t kept = 0;
      for (const auto& [begin, end] : runs) {
        kept += end - begin;
        for (int64_t t = begin; t < end; ++t) acc[t] += mass[t];
      }

      // Past the budget the least accumulated attention goes first.
      order.clear();
      for (const auto& [begin, end] : runs) {
        for (int64_t t = begin; t < end; ++t) {
          if (!dense(t)) order.push_back(t);
        }
      }
      if (kept > keep_tokens) {
        // Ranked by the most any token within kPoolRadius of it accumulated
        // (SnapKV's pooling): a kept token keeps its neighbours, so spans such
        // as a number's digits stay whole.
        pooled.assign(size_t(length), 0.0f);
        for (int64_t t : order) {
          const int64_t lo = std::max<int64_t>(0, t - kPoolRadius);
          const int64_t hi = std::min<int64_t>(length, t + kPoolRadius + 1);
          pooled[t] = *std::max_element(acc.begin() + lo, acc.begin() + hi);
        }
        const size_t drop = std::min<size_t>(order.size(), size_t(kept - keep_tokens));
        std::partial_sort(order.begin(), order.begin() + drop, order.end(),
                          [&](int64_t x, int64_t y) {
                            return pooled[x] < pooled[y] || (pooled[x] == pooled[y] && x > y);
                          });
        for (size_t i = 0; i < drop; ++i) evicted[order[i]] = 1, mass[order[i]] = 0;
        order.erase(order.begin(), order.begin() + drop);
      }

      // The dense tokens, then the heaviest others until they cover tau of
      // the others' mass (sinks take most of the mass in many heads: tau of
      // the whole would leave little for the rest).
      double covered = 0, total = 0;
      for (int64_t t : order) total += mass[t];
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t x, int64_t y) { return mass[x] > mass[y]; });
      size_t chosen = 0;
      const size_t cap = p.top_k > 0 ? std::min(order.size(), size_t(p.top_k)) : order.size();
      while (chosen < cap && (p.tau >= 1 || covered < p.tau * total))
        covered += mass[order[chosen++]];
      order.resize(chosen);
      std::sort(order.begin(), order.end());

      // Per sealed block: whole, some tokens, or none.
      std::vector<std::vector<uint16_t>>& tokens = selection->tokens[h];
      auto next = order.begin();
      for (int32_t b = 0; b < row.sealed; ++b) {
        for (int64_t t = b * bt; t < (b + 1) * bt; ++t) {
          const bool picked = next != order.end() && *next == t;
          next += picked;
          if (picked || (dense(t) && !evicted[t]))
            tokens[b].push_back(static_cast<uint16_t>(t - b * bt));
        }
      }
      keep.assign(size_t(row.sealed), 0);
      int64_t attended = length - sealed_tokens;
      for (int32_t b = 0; b < row.sealed; ++b) {
        keep[b] = !tokens[b].empty();
        attended += static_cast<int64_t>(tokens[b].size());
        if (int64_t(tokens[b].size()) == bt) tokens[b].clear();  // the whole block
      }
      counts[h] = {KeepBlocks(h, keep, lists, disk), attended};
    }
  };
  RunPerHead(store, select);
  if (stats == nullptr) return;
  for (const Counts& c : counts) {
    stats->blocks_attended += c.blocks, stats->blocks_total += row.sealed;
    stats->tokens_attended += c.tokens, stats->tokens_total += length;
  }
}

}  // namespace headwise::attention
