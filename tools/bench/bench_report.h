// Benchmark output in the format of DESIGN.md's "Benchmarks" section: one JSON object per
// measured case (bench, case, metric, value, baseline, baseline_value, ratio, plus extra fields),
// or the same figures as a table. `ratio` is value/baseline for higher-is-better metrics and
// baseline/value for lower-is-better ones, so a higher ratio is always better.
//
// Thread-safety: not thread-safe; one reporter per command.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>
#include <algorithm>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace strata::bench {

struct BenchCase {
  std::string name;    // e.g. "host_put_get/2MiB/threads=1"
  std::string metric;  // e.g. "GB/s", "us", "hit_ratio"
  double value = 0;
  std::string baseline;  // e.g. "memcpy", "xxh3_raw", "belady"
  double baseline_value = 0;
  bool higher_is_better = true;
  nlohmann::json extra = nlohmann::json::object();  // further fields, printed as they are
};

class BenchReport {
 public:
  // `bench` is the benchmark's name (the NAME of `strata bench NAME`).
  BenchReport(std::string bench, bool json) : bench_(std::move(bench)), json_(json) {}
  ~BenchReport() { Finish(); }

  // Records one case; in JSON mode prints its line at once (so partial runs are still useful).
  void Add(BenchCase c);
  // Prints the table (text mode). Called by the destructor if not called before.
  void Finish();

  static double Ratio(const BenchCase& c);
  nlohmann::json ToJson(const BenchCase& c) const;

 private:
  std::string bench_;
  bool json_;
  bool finished_ = false;
  std::vector<BenchCase> cases_;
};

// Adds the --json flag every benchmark takes.
inline void AddJsonFlag(CLI::App& cmd, bool& json) {
  cmd.add_flag("--json", json, "Print one JSON object per case (DESIGN.md, Benchmarks)");
}

// Runs `fn` `reps` times after one warm-up run and returns the median wall time in seconds.
template <typename Fn>
double MedianSeconds(int reps, Fn&& fn) {
  fn();
  std::vector<double> t;
  t.reserve(reps);
  for (int i = 0; i < reps; ++i) {
    auto start = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

// Keeps the compiler from optimising away a computed value.
template <typename T>
inline void DoNotOptimize(const T& value) {
  asm volatile("" : : "r,m"(value) : "memory");
}

}  // namespace strata::bench
