// Comparison helpers shared by the exactness tests (header-only, test code).
#pragma once

#include <cmath>
#include <vector>

namespace headwise::testing {

// ||a - b|| / ||b|| in double; the measure DESIGN.md's "logits within 1e-4
// relative" refers to.
inline double RelL2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  if (a.size() != b.size()) return INFINITY;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace headwise::testing
