// Test helpers for the GPU kernel tests: the run's random seed (fresh each run,
// printed; HEADWISE_TEST_SEED replays it) and a move-only device buffer that
// frees itself when an ASSERT leaves the test early.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace headwise::testing {

inline uint64_t TestSeed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("HEADWISE_TEST_SEED");
    const uint64_t s = env != nullptr ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::printf("cuda_kernels_test: HEADWISE_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

// Count of random cases: `normal`, or HEADWISE_CUDA_TEST_CASES when set (the
// sanitizer runs use fewer).
inline int TestCases(int normal) {
  const char* env = std::getenv("HEADWISE_CUDA_TEST_CASES");
  return env != nullptr ? std::atoi(env) : normal;
}

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : count_(count) {
    if (count > 0 && cudaMalloc(&ptr_, count * sizeof(T)) != cudaSuccess) ptr_ = nullptr;
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { Upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), count_(other.count_) {
    other.ptr_ = nullptr;
    other.count_ = 0;
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }

  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  bool ok() const { return count_ == 0 || ptr_ != nullptr; }

  cudaError_t Upload(const std::vector<T>& host) {
    if (host.empty()) return cudaSuccess;
    return cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  std::vector<T> Download() const {
    std::vector<T> host(count_);
    if (count_ > 0) cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
  }
  // Fills every byte with 0xff: NaN for f32 (and f16/bf16), so unwritten
  // outputs cannot pass for results.
  cudaError_t Poison() {
    return count_ > 0 ? cudaMemset(ptr_, 0xff, count_ * sizeof(T)) : cudaSuccess;
  }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace headwise::testing
