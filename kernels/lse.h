// Log-sum-exp merge of partial attentions. A partial over a set of keys is
// (o, lse): o is the softmax-weighted sum of values normalised by the set's own
// denominator, lse = log(sum(exp(scaled scores))). An empty set is
// (o = 0, lse = -inf). Merging is associative and commutative, so the same
// function serves a local loop, an MPI reduction and a tree of partials.
#pragma once

#include <cstdint>

namespace headwise::kernels {

// Merges (o_in, lse_in) into (o_acc, lse_acc) in place, row by row:
//   lse = log(exp(lse_acc) + exp(lse_in)); o_acc = w_acc*o_acc + w_in*o_in
// with w = exp(lse_x - lse). `o_*` are rows x dim, row-major; `lse_*` are rows.
// Rows where both sides are -inf stay (0, -inf). All pointers non-null unless
// rows == 0; o_acc may not alias o_in.
void LseMerge(float* o_acc, float* lse_acc, const float* o_in, const float* lse_in, int64_t rows,
              int64_t dim);

}  // namespace headwise::kernels
