// How kernels get parallelism without owning threads: a kernel splits its work
// into independent tasks and hands them to a ParallelFor that the caller
// supplies (the runtime's thread pool; SerialFor in tests and single-threaded
// callers). Kernels never create threads themselves.
#pragma once

#include <cstdint>
#include <functional>

namespace headwise::kernels {

// Runs fn over the task range [0, n_tasks).
class ParallelFor {
 public:
  virtual ~ParallelFor() = default;

  // Calls fn(begin, end) on disjoint, non-empty ranges that together cover
  // [0, n_tasks) exactly once, possibly concurrently from several threads and
  // in any order, and returns after every call has returned. Does nothing when
  // n_tasks <= 0. fn must not throw; a kernel's tasks never write the same
  // memory, so results do not depend on how the range is split.
  virtual void Run(int64_t n_tasks,
                   const std::function<void(int64_t begin, int64_t end)>& fn) const = 0;
};

// Runs all tasks on the calling thread, in one call.
class SerialFor final : public ParallelFor {
 public:
  void Run(int64_t n_tasks,
           const std::function<void(int64_t begin, int64_t end)>& fn) const override {
    if (n_tasks > 0) fn(0, n_tasks);
  }
};

}  // namespace headwise::kernels
