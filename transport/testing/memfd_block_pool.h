// MemfdBlockPool: a memfd-backed region cut into fixed slots, each holding one encoded block
// (64-byte header + payload), with a key -> slot index and pin counts. It is the BlockSource the
// transfer benchmark and the transport tests serve from, standing in for the store's host tier
// until the node wires that in (same shape: one memfd mapping registered with UCX, blocks at
// offsets).
//
// Thread-safety: Pin/Unpin/Insert/Find are thread-safe (one mutex); the bytes of a slot are
// written only by its single owner before Insert or by a transfer into a slot it reserved.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "strata/block_format.h"
#include "strata/result.h"
#include "transport/peer_transport.h"

namespace strata::transport::testing {

class MemfdBlockPool : public BlockSource {
 public:
  // A pool of `slots` slots of `slot_bytes` bytes each. IOError when memfd/mmap fail.
  static Result<std::unique_ptr<MemfdBlockPool>> Open(size_t slots, size_t slot_bytes);
  ~MemfdBlockPool() override;

  MemoryRegion region() const { return MemoryRegion{base_, size_}; }
  int fd() const { return fd_; }
  size_t slots() const { return slots_; }
  size_t slot_bytes() const { return slot_bytes_; }
  std::byte* slot(size_t i) const { return base_ + i * slot_bytes_; }

  // Encodes a block (header + payload) into slot `i` and indexes it under `key`.
  // REQUIRES: i < slots(), kBlockHeaderSize + payload.size() <= slot_bytes().
  void Put(size_t i, const BlockKey& key, const NamespaceId& ns,
           std::span<const std::byte> payload);
  // Indexes slot `i`, whose bytes already hold a verified block, under `key`.
  void Insert(size_t i, const BlockKey& key);
  std::optional<size_t> Find(const BlockKey& key) const;
  size_t pinned() const;

  Result<PinnedBlock> Pin(const BlockKey& key) override;
  void Unpin(uint64_t pin) override;

 private:
  MemfdBlockPool() = default;
  int fd_ = -1;
  std::byte* base_ = nullptr;
  size_t size_ = 0;
  size_t slots_ = 0;
  size_t slot_bytes_ = 0;
  mutable std::mutex mu_;
  std::unordered_map<BlockKey, size_t, BlockKeyHash> index_;  // GUARDED_BY(mu_)
  std::vector<uint32_t> pins_;                                // GUARDED_BY(mu_)
};

}  // namespace strata::transport::testing
