// CPU log-sum-exp merge of partial attentions (kernels/lse.h). The merge is
// written around the larger lse so exp() never overflows, and -inf (an empty
// partial) is handled before any subtraction so -inf - -inf never makes a NaN.
#include "kernels/lse.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace headwise::kernels {

void LseMerge(float* o_acc, float* lse_acc, const float* o_in, const float* lse_in, int64_t rows,
              int64_t dim) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    float* acc = o_acc + r * dim;
    const float* in = o_in + r * dim;
    const float a = lse_acc[r];
    const float b = lse_in[r];
    if (b == kNegInf) {
      // Nothing to add. An empty accumulator is re-zeroed so that (0, -inf)
      // holds even if its o was never written.
      if (a == kNegInf) std::fill(acc, acc + dim, 0.0f);
      continue;
    }
    if (a == kNegInf) {
      std::copy(in, in + dim, acc);
      lse_acc[r] = b;
      continue;
    }
    // Both finite. Weights relative to the larger lse: one of them is exactly 1,
    // the other in (0, 1], so their sum is in [1, 2] and log() is well defined.
    // The scalar work is done in double: it is per row, not per element.
    const double m = std::max(a, b);
    const double wa = std::exp(static_cast<double>(a) - m);
    const double wb = std::exp(static_cast<double>(b) - m);
    const double sum = wa + wb;
    const float ca = static_cast<float>(wa / sum);
    const float cb = static_cast<float>(wb / sum);
    for (int64_t d = 0; d < dim; ++d) acc[d] = ca * acc[d] + cb * in[d];
    lse_acc[r] = static_cast<float>(m + std::log(sum));
  }
}

}  // namespace headwise::kernels
