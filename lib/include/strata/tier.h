// Tier: where a block is cached. One enum for the store, the engine protocol, the client API and
// the inspector; its values are part of the IPC protocol and the stats: never reuse one.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <string_view>

namespace strata {

enum class Tier : uint8_t {
  kNone = 0,    // not cached
  kHost = 1,    // the node's host DRAM pool
  kDisk = 2,    // the node's NVMe tier
  kDevice = 3,  // a GPU pool
  kRemote = 4,  // a peer's host or disk tier (cluster)
};

// "none", "host", "disk", "device", "remote"; "unknown" for any other value.
std::string_view TierName(Tier tier);

}  // namespace strata
