// CopyThreads (lib/client/copy_threads.h): the ranges of one ParallelFor cover [0, n) exactly
// once, at least `min_items` long, on the caller and the helpers; calls from several threads at
// once all complete (a caller never waits for a range nobody started).
#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "lib/client/copy_threads.h"

namespace strata {
namespace {

TEST_CASE("copy threads: ranges cover every item once", "[lib]") {
  for (int helpers : {0, 1, 3}) {
    CopyThreads threads(helpers);
    CHECK(threads.helpers() == helpers);
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{64}, size_t{1001}})
      for (size_t min_items : {size_t{1}, size_t{10}, size_t{5000}}) {
        INFO("helpers " << helpers << " n " << n << " min " << min_items);
        std::vector<std::atomic<int>> seen(n);
        std::mutex mu;
        std::vector<std::pair<size_t, size_t>> ranges;
        std::set<std::thread::id> ran_on;
        threads.ParallelFor(n, min_items, [&](size_t begin, size_t end) {
          for (size_t i = begin; i < end; ++i) seen[i].fetch_add(1);
          std::lock_guard<std::mutex> lock(mu);
          ranges.emplace_back(begin, end);
          ran_on.insert(std::this_thread::get_id());
        });
        for (size_t i = 0; i < n; ++i) REQUIRE(seen[i].load() == 1);
        if (n == 0) {
          CHECK(ranges.empty());
          continue;
        }
        CHECK(ranges.size() <= size_t(helpers) + 1);
        if (ranges.size() > 1)
          for (const auto& [b, e] : ranges) CHECK(e - b >= min_items);
        if (n < 2 * min_items) CHECK(ranges.size() == 1);
        CHECK(ran_on.size() <= ranges.size());
      }
  }
}

TEST_CASE("copy threads: concurrent callers all finish", "[lib]") {
  CopyThreads threads(2);
  std::atomic<uint64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int r = 0; r < 300; ++r)
        threads.ParallelFor(100, 10, [&](size_t b, size_t e) { total.fetch_add(e - b); });
    });
  for (auto& t : callers) t.join();
  CHECK(total.load() == 4u * 300u * 100u);
}

}  // namespace
}  // namespace strata
