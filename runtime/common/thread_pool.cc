// Work is split into about 4 chunks per thread so uneven tasks balance; each
// chunk is claimed under the mutex (chunks are coarse, so contention is low).
#include "runtime/common/thread_pool.h"

#include <algorithm>

namespace headwise::runtime {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(threads - 1);
  for (int i = 0; i + 1 < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Drain() const {
  std::unique_lock<std::mutex> lock(mutex_);
  while (job_ != nullptr && next_ < n_tasks_) {
    const int64_t begin = next_;
    const int64_t end = std::min(n_tasks_, begin + chunk_);
    next_ = end;
    const auto* job = job_;
    lock.unlock();
    (*job)(begin, end);
    lock.lock();
    finished_ += end - begin;
    if (finished_ == n_tasks_) done_.notify_all();
  }
}

void ThreadPool::WorkerLoop(int) {
  uint64_t seen = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    Drain();
  }
}

void ThreadPool::Run(int64_t n_tasks,
                     const std::function<void(int64_t begin, int64_t end)>& fn) const {
  if (n_tasks <= 0) return;
  if (workers_.empty() || n_tasks == 1) {
    fn(0, n_tasks);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    n_tasks_ = n_tasks;
    chunk_ = std::max<int64_t>(1, n_tasks / (4 * size()));
    next_ = 0;
    finished_ = 0;
    ++generation_;
  }
  wake_.notify_all();
  Drain();
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return finished_ == n_tasks_; });
  job_ = nullptr;
}

}  // namespace headwise::runtime
