// StagingMemory: a client's staging memfd as the daemon maps it. The client writes the payloads it
// stores there; the daemon copies them into its pool (docs/data-plane.md). The daemon trusts
// nothing about the memfd but what the kernel enforces: it must be sealed against shrinking (a
// client that truncated it would make the daemon's copy fault with SIGBUS) and growing, be
// exactly the announced size, and within the daemon's limit. It is mapped read-only.
//
// Thread-safety: immutable after Map. Ownership: owns the mapping; the descriptor is closed by
// Map in every case.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "strata/result.h"

namespace strata {

class StagingMemory {
 public:
  // Maps `fd` (always closed, mapped or not). InvalidArgument when the memfd is not sealed with
  // F_SEAL_SHRINK and F_SEAL_GROW, is not `announced_bytes` long, or is larger than `max_bytes`.
  static Result<StagingMemory> Map(int fd, uint64_t announced_bytes, uint64_t max_bytes);

  StagingMemory() = default;
  StagingMemory(StagingMemory&& other) noexcept { *this = std::move(other); }
  StagingMemory& operator=(StagingMemory&& other) noexcept;
  StagingMemory(const StagingMemory&) = delete;
  StagingMemory& operator=(const StagingMemory&) = delete;
  ~StagingMemory();

  std::span<const std::byte> bytes() const { return {base_, size_}; }

 private:
  const std::byte* base_ = nullptr;
  size_t size_ = 0;
};

}  // namespace strata
