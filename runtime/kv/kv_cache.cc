// Blocks are allocated whole when a (layer, kv head) needs one and never move;
// callers still re-take views after Append because the tail block grows.
#include "runtime/kv/kv_cache.h"

#include <algorithm>

namespace headwise::kv {

int64_t KvGeometry::BlockBytes() const {
  return 2 * int64_t(block_tokens) * head_dim * int64_t(kernels::KvDtypeSize(dtype));
}

KvCache::KvCache(const KvGeometry& geometry)
    : blocks_(geometry.n_layers), n_tokens_(geometry.n_layers, 0), geometry_(geometry) {
  for (auto& layer : blocks_) layer.resize(geometry.n_kv_heads);
}

int64_t KvCache::length() const {
  return n_tokens_.empty() ? 0 : *std::min_element(n_tokens_.begin(), n_tokens_.end());
}

int64_t KvCache::allocated_bytes() const {
  int64_t blocks = 0;
  for (const auto& layer : blocks_) {
    for (const auto& head : layer) blocks += static_cast<int64_t>(head.size());
  }
  return blocks * geometry_.BlockBytes();
}

void KvCache::Append(int32_t layer, const float* k, const float* v, int64_t rows,
                     int64_t row_stride) {
  const int64_t hd = geometry_.head_dim;
  const int64_t elem = static_cast<int64_t>(kernels::KvDtypeSize(geometry_.dtype));
  const int64_t block_elems = int64_t(geometry_.block_tokens) * hd;
  int64_t pos = n_tokens_[layer];
  for (int64_t r = 0; r < rows; ++r, ++pos) {
    const int64_t in_block = pos % geometry_.block_tokens;
    for (int32_t h = 0; h < geometry_.n_kv_heads; ++h) {
      auto& head = blocks_[layer][h];
      if (in_block == 0 && static_cast<int64_t>(head.size()) == pos / geometry_.block_tokens) {
        auto block = std::make_unique<Block>();
        block->k.resize(block_elems * elem);
        block->v.resize(block_elems * elem);
        head.push_back(std::move(block));
      }
      Block& block = *head[pos / geometry_.block_tokens];
      const float* k_row = k + r * row_stride + h * hd;
      const float* v_row = v + r * row_stride + h * hd;
      kernels::ToKvDtype(geometry_.dtype, k_row, block.k.data() + in_block * hd * elem, hd);
      kernels::ToKvDtype(geometry_.dtype, v_row, block.v.data() + in_block * hd * elem, hd);
      block.n_tokens = static_cast<int32_t>(in_block + 1);
    }
  }
  n_tokens_[layer] = pos;
}

int32_t KvCache::Views(int32_t layer, std::vector<kernels::KvBlockView>& views) const {
  const auto& heads = blocks_[layer];
  const int32_t n_blocks = heads.empty() ? 0 : static_cast<int32_t>(heads[0].size());
  views.resize(size_t(geometry_.n_kv_heads) * n_blocks);
  for (int32_t h = 0; h < geometry_.n_kv_heads; ++h) {
    for (int32_t b = 0; b < n_blocks; ++b) {
      const Block& block = *heads[h][b];
      views[size_t(h) * n_blocks + b] = {block.k.data(), block.v.data(), block.n_tokens,
                                         b * geometry_.block_tokens};
    }
  }
  return n_blocks;
}

void KvCache::Truncate(int64_t n_tokens) {
  for (int32_t layer = 0; layer < geometry_.n_layers; ++layer) {
    if (n_tokens_[layer] <= n_tokens) continue;
    const int64_t keep_blocks = (n_tokens + geometry_.block_tokens - 1) / geometry_.block_tokens;
    for (auto& head : blocks_[layer]) {
      head.resize(keep_blocks);
      if (keep_blocks > 0) {
        head.back()->n_tokens =
            static_cast<int32_t>(n_tokens - (keep_blocks - 1) * geometry_.block_tokens);
      }
    }
    n_tokens_[layer] = n_tokens;
  }
}

}  // namespace headwise::kv
