#include "runtime/common/thread_pool.h"

#include <atomic>
#include <vector>

#include "gtest/gtest.h"

namespace headwise::runtime {
namespace {

TEST(ThreadPoolTest, CoversEveryTaskExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 7, 100, 10007}) {
    std::vector<std::atomic<int>> hits(n);
    pool.Run(n, [&](int64_t begin, int64_t end) {
      ASSERT_LT(begin, end);
      for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "task " << i << " of " << n;
  }
}

TEST(ThreadPoolTest, ZeroTasksDoNothing) {
  ThreadPool pool(2);
  bool called = false;
  pool.Run(0, [&](int64_t, int64_t) { called = true; });
  EXPECT_FALSE(called);
}

TEST(ThreadPoolTest, ManyRunsAndConcurrentCallers) {
  ThreadPool pool(2);
  std::atomic<int64_t> total = 0;
  auto work = [&] {
    for (int r = 0; r < 200; ++r) {
      pool.Run(64, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
    }
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 200 * 64);
}

}  // namespace
}  // namespace headwise::runtime
