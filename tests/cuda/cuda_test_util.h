// Shared helpers of the GPU tests: skip cleanly without a GPU, check CUDA calls.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "gtest/gtest.h"

namespace headwise::testing {

// Empty when a usable GPU is present; otherwise why not (for GTEST_SKIP).
inline std::string NoGpuReason() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return std::string("no usable CUDA GPU: ") + cudaGetErrorString(err);
  if (count == 0) return "no CUDA GPU on this machine";
  return "";
}

#define HEADWISE_SKIP_WITHOUT_GPU()                          \
  do {                                                       \
    std::string reason = ::headwise::testing::NoGpuReason(); \
    if (!reason.empty()) GTEST_SKIP() << reason;             \
  } while (0)

#define HEADWISE_CUDA_ASSERT(call) \
  ASSERT_EQ((call), cudaSuccess) << #call << ": " << cudaGetErrorString(cudaGetLastError())

}  // namespace headwise::testing
