// A fixed-size thread pool that runs the CPU kernels' tasks
// (kernels::ParallelFor). The calling thread works too, so a pool of N threads
// uses N+1 cores; Run() blocks until every task range has finished. Concurrent
// Run() calls from different threads are serialised.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/parallel.h"

namespace headwise::runtime {

class ThreadPool final : public kernels::ParallelFor {
 public:
  // `threads` total workers including the caller; <= 0 means the number of
  // hardware threads (at least 1).
  explicit ThreadPool(int threads = 0);
  ~ThreadPool() override;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Run(int64_t n_tasks,
           const std::function<void(int64_t begin, int64_t end)>& fn) const override;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

 private:
  void WorkerLoop(int index);
  // Claims and runs chunks of the current job until none are left.
  void Drain() const;

  std::vector<std::thread> workers_;
  mutable std::mutex run_mutex_;  // one Run() at a time
  mutable std::mutex mutex_;
  mutable std::condition_variable wake_;
  mutable std::condition_variable done_;
  // The current job, guarded by mutex_.
  mutable const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  mutable int64_t n_tasks_ = 0;
  mutable int64_t chunk_ = 1;
  mutable int64_t next_ = 0;
  mutable int64_t finished_ = 0;
  mutable uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace headwise::runtime
