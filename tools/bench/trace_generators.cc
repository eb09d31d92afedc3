#include "trace_generators.h"

#include <cmath>
#include <queue>
#include <random>

namespace strata::bench {

// A multi-turn chat service: a few shared system prompts (Zipf), sessions whose every turn resends
// the whole conversation plus a few new blocks; sessions interleave.
Chains SyntheticConversation(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int kPrompts = 12, kSessions = 3000;
  std::vector<std::vector<uint64_t>> prompts(kPrompts);
  uint64_t next_id = 1;
  for (auto& p : prompts) {
    int len = 2 + static_cast<int>(rng() % 7);
    for (int i = 0; i < len; ++i) p.push_back(next_id++);
  }
  std::vector<double> w(kPrompts);
  for (int i = 0; i < kPrompts; ++i) w[i] = 1.0 / (i + 1);
  std::discrete_distribution<int> pick_prompt(w.begin(), w.end());
  std::geometric_distribution<int> turns(1.0 / 5);    // mean 5 turns
  std::exponential_distribution<double> think(1.0 / 40);  // requests between turns
  struct Event { double t; int session; };
  auto later = [](const Event& a, const Event& b) { return a.t > b.t; };
  std::priority_queue<Event, std::vector<Event>, decltype(later)> q(later);
  std::vector<std::vector<uint64_t>> conv(kSessions);
  std::vector<int> left(kSessions);
  for (int s = 0; s < kSessions; ++s) {
    conv[s] = prompts[pick_prompt(rng)];
    left[s] = 1 + turns(rng);
    q.push({s * 3.0, s});
  }
  Chains out;
  while (!q.empty()) {
    auto [t, s] = q.top();
    q.pop();
    int add = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < add; ++i) conv[s].push_back(next_id++);
    out.push_back(conv[s]);
    if (--left[s] > 0) q.push({t + think(rng), s});
  }
  return out;
}

// Tool-using agents: a handful of long agent prompts (system + tool schemas), tasks that run many
// quick steps, each appending a tool call and its result.
Chains SyntheticAgent(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int kAgents = 4, kTasks = 600;
  std::vector<std::vector<uint64_t>> agents(kAgents);
  uint64_t next_id = 1;
  for (auto& a : agents) {
    int len = 10 + static_cast<int>(rng() % 20);
    for (int i = 0; i < len; ++i) a.push_back(next_id++);
  }
  std::geometric_distribution<int> steps(1.0 / 10);
  std::exponential_distribution<double> gap(1.0 / 8);
  struct Event { double t; int task; };
  auto later = [](const Event& a, const Event& b) { return a.t > b.t; };
  std::priority_queue<Event, std::vector<Event>, decltype(later)> q(later);
  std::vector<std::vector<uint64_t>> ctx(kTasks);
  std::vector<int> left(kTasks);
  for (int t = 0; t < kTasks; ++t) {
    ctx[t] = agents[rng() % kAgents];
    ctx[t].push_back(next_id++);  // the task statement
    left[t] = 1 + steps(rng);
    q.push({t * 6.0, t});
  }
  Chains out;
  while (!q.empty()) {
    auto [t, k] = q.top();
    q.pop();
    int add = 1 + static_cast<int>(rng() % 3);
    for (int i = 0; i < add; ++i) ctx[k].push_back(next_id++);
    out.push_back(ctx[k]);
    if (--left[k] > 0) q.push({t + gap(rng), k});
  }
  return out;
}

// Coding assistants: repository contexts (Zipf popularity, 8-60 blocks) that are re-sent with a
// new question each time; a context is revised now and then (its tail changes).
Chains SyntheticCoding(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int kRepos = 300, kRequests = 6000;
  std::vector<std::vector<uint64_t>> repos(kRepos);
  uint64_t next_id = 1;
  for (auto& r : repos) {
    int len = 8 + static_cast<int>(rng() % 53);
    for (int i = 0; i < len; ++i) r.push_back(next_id++);
  }
  std::vector<double> w(kRepos);
  for (int i = 0; i < kRepos; ++i) w[i] = 1.0 / std::pow(i + 1, 0.8);
  std::discrete_distribution<int> pick(w.begin(), w.end());
  Chains out;
  for (int i = 0; i < kRequests; ++i) {
    auto& r = repos[pick(rng)];
    if (rng() % 20 == 0) {  // revision: rewrite the last quarter of the context
      size_t keep = r.size() * 3 / 4;
      r.resize(keep);
      while (r.size() < keep + keep / 3 + 1) r.push_back(next_id++);
    }
    std::vector<uint64_t> chain = r;
    int q = 1 + static_cast<int>(rng() % 3);
    for (int j = 0; j < q; ++j) chain.push_back(next_id++);
    out.push_back(std::move(chain));
  }
  return out;
}

}  // namespace strata::bench
