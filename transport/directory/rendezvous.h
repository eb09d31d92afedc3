// Rendezvous (highest-random-weight) hashing of block keys over live members
// (docs/cluster.md, "Directory"). The owner of a key is the member with the highest
//
//   score(key, member) = XXH3-64(key canonical bytes (16) || member id bytes), seed 0
//
// ties broken by the smaller id. Every node computes the same owner from the same member list,
// and when a member joins or leaves only the keys whose owner changes move (about 1/n of them).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "strata/block_key.h"

namespace strata::transport {

uint64_t RendezvousScore(const BlockKey& key, std::string_view member_id);

// The owner among `member_ids`; "" when the list is empty.
std::string RendezvousOwner(const BlockKey& key, const std::vector<std::string>& member_ids);

}  // namespace strata::transport
