#include "bench_report.h"

#include <iostream>

#include <fmt/format.h>

namespace strata::bench {

double BenchReport::Ratio(const BenchCase& c) {
  if (c.higher_is_better) return c.baseline_value != 0 ? c.value / c.baseline_value : 0;
  return c.value != 0 ? c.baseline_value / c.value : 0;
}

nlohmann::json BenchReport::ToJson(const BenchCase& c) const {
  nlohmann::json j;
  j["bench"] = bench_;
  j["case"] = c.name;
  j["metric"] = c.metric;
  j["value"] = c.value;
  j["baseline"] = c.baseline;
  j["baseline_value"] = c.baseline_value;
  j["ratio"] = Ratio(c);
  for (auto it = c.extra.begin(); it != c.extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

void BenchReport::Add(BenchCase c) {
  if (json_) std::cout << ToJson(c).dump() << std::endl;
  cases_.push_back(std::move(c));
}

void BenchReport::Finish() {
  if (finished_) return;
  finished_ = true;
  if (json_ || cases_.empty()) return;
  size_t w = 4;
  for (const auto& c : cases_) w = std::max(w, c.name.size());
  std::cout << fmt::format("{:<{}}  {:>14} {:<10}  {:>14} {:<14}  {:>7}\n", "case", w, "value",
                           "metric", "baseline", "", "ratio");
  for (const auto& c : cases_) {
    std::cout << fmt::format("{:<{}}  {:>14.4g} {:<10}  {:>14.4g} {:<14}  {:>7.3f}\n", c.name, w,
                             c.value, c.metric, c.baseline_value, c.baseline, Ratio(c));
  }
}

}  // namespace strata::bench
