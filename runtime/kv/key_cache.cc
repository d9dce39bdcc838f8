#include "runtime/kv/key_cache.h"

#include <algorithm>

namespace headwise::kv {

KeyCache::KeyCache(int32_t n_layers, int32_t n_kv_heads, int32_t head_dim, int32_t bits)
    : n_kv_heads_(n_kv_heads),
      format_{bits, head_dim % 32 == 0 ? 32 : head_dim, head_dim},
      n_tokens_(n_layers, 0),
      heads_(size_t(n_layers) * n_kv_heads) {}

void KeyCache::Append(int32_t layer, const float* k, int64_t rows, int64_t row_stride) {
  const int64_t first = n_tokens_[layer];
  for (int32_t h = 0; h < n_kv_heads_; ++h) {
    Head& head = heads_[Index(layer, h)];
    head.codes.resize(size_t((first + rows) * format_.CodeBytes()));
    head.scale_zero.resize(size_t((first + rows) * format_.Groups() * 2));
    head.observed.resize(size_t(first + rows), 0.0f);
    head.acc.resize(size_t(first + rows), 0.0f);
    head.evicted.resize(size_t(first + rows), 0);
    kernels::QuantizeKeys(format_, k + int64_t(h) * format_.dim, row_stride, rows,
                          head.codes.data() + first * format_.CodeBytes(),
                          head.scale_zero.data() + first * format_.Groups() * 2);
  }
  n_tokens_[layer] = first + rows;
}

void KeyCache::Observe(int32_t layer, int32_t head, const float* mass, int64_t rows_end) {
  Head& h = heads_[Index(layer, head)];
  for (size_t t = 0; t < h.acc.size(); ++t) h.observed[t] += mass[t], h.acc[t] += mass[t];
  observed_end_ = std::max(observed_end_, rows_end);
}

void KeyCache::Truncate(int64_t n_tokens) {
  const bool keep_observed = n_tokens >= observed_end_;
  if (!keep_observed) observed_end_ = 0;
  for (size_t layer = 0; layer < n_tokens_.size(); ++layer) {
    n_tokens_[layer] = std::min(n_tokens_[layer], n_tokens);
    for (int32_t h = 0; h < n_kv_heads_; ++h) {
      Head& head = heads_[Index(int32_t(layer), h)];
      const int64_t n = n_tokens_[layer];
      head.codes.resize(size_t(n * format_.CodeBytes()));
      head.scale_zero.resize(size_t(n * format_.Groups() * 2));
      head.observed.resize(size_t(n));
      if (!keep_observed) std::fill(head.observed.begin(), head.observed.end(), 0.0f);
      head.acc = head.observed;
      head.evicted.assign(size_t(n), 0);
    }
  }
}

void KeyCache::Scores(int32_t layer, int32_t head, const float* q, int32_t n_q, int64_t begin,
                      int64_t end, float* scores, int64_t stride) const {
  const Head& h = heads_[Index(layer, head)];
  kernels::QuantizedKeyScoresMulti(format_, q, n_q, h.codes.data() + begin * format_.CodeBytes(),
                                   h.scale_zero.data() + begin * format_.Groups() * 2, end - begin,
                                   scores + begin, stride);
}

int64_t KeyCache::n_evicted() const {
  int64_t n = 0;
  for (const Head& head : heads_) n += std::count(head.evicted.begin(), head.evicted.end(), 1);
  return n;
}

int64_t KeyCache::bytes() const {
  int64_t n = 0;
  for (const Head& head : heads_) {
    n += int64_t(head.codes.size()) + int64_t(head.scale_zero.size() * sizeof(float));
  }
  return n;
}

}  // namespace headwise::kv
