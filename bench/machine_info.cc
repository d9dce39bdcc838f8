// Machine description and the memory-bandwidth probe for benchmark reports.
#include "bench/machine_info.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

namespace headwise::bench {

nlohmann::json MachineInfo() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::string cpu = "unknown";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return {{"hostname", host},
          {"cpu", cpu},
          {"cores", std::thread::hardware_concurrency()},
          {"memory_gib", double(pages) * page / (1024.0 * 1024 * 1024)}};
}

bool WriteReport(const nlohmann::json& report, const std::string& path) {
  const std::string text = report.dump(2);
  if (path.empty()) {
    std::cout << text << "\n";
    return static_cast<bool>(std::cout);
  }
  std::ofstream out(path);
  out << text << "\n";
  return static_cast<bool>(out);
}

double TriadGBps(size_t bytes_per_array, int threads, int repeats) {
  const size_t n = bytes_per_array / sizeof(float);
  std::vector<float> a(n), b(n, 1.0f), c(n, 2.0f);
  threads = std::max(1, threads);
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const size_t begin = n * t / threads, end = n * (t + 1) / threads;
        for (size_t i = begin; i < end; ++i) a[i] = b[i] + 3.0f * c[i];
      });
    }
    for (auto& th : pool) th.join();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 3.0 * bytes_per_array / s / 1e9);
  }
  volatile float sink = a[n / 2];
  (void)sink;
  return best;
}

}  // namespace headwise::bench
