// Generated request traces (chains of block ids, as policy_replay.h replays them) with the reuse
// shapes of three workloads, for `strata bench trace --variants` and the policy tests: they check
// that the default eviction policy generalises beyond the one real trace (docs/store.md). Each is
// deterministic for a seed.
#pragma once

#include <cstdint>

#include "policy_replay.h"

namespace strata::bench {

// A multi-turn chat service: a few shared system prompts (Zipf), sessions whose every turn resends
// the whole conversation plus a few new blocks; sessions interleave.
Chains SyntheticConversation(uint64_t seed);
// Tool-using agents: a handful of long agent prompts, tasks that run many quick steps, each
// appending a tool call and its result.
Chains SyntheticAgent(uint64_t seed);
// Coding assistants: repository contexts (Zipf popularity, 8-60 blocks) re-sent with a new
// question each time; a context is revised now and then (its tail changes).
Chains SyntheticCoding(uint64_t seed);

}  // namespace strata::bench
