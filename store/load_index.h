// LoadIndex: the host tier's published blocks, per tenant, in shared memory that clients of that
// tenant map read-only, so that a client loads a host-tier block with no round trip to the daemon
// (docs/data-plane.md, "Loads without a round trip").
//
// One segment per tenant: a memfd sealed like the pool slabs (F_SEAL_FUTURE_WRITE, SHRINK, GROW,
// SEAL; mode 0400; the daemon keeps only a read-only reopen to hand out), mapped writable by the
// daemon alone. Layout, 64-byte lines, native byte order (client and daemon share the machine):
//
//   line 0            SegmentHeader: magic "STRTIDX1", version, probe window, entries, tenant
//   line 1 + i        Entry i, i in [0, entries + kProbe): eight 64-bit words
//     w0 seq          even: stable; odd: the daemon is changing the entry. Bumped to odd before
//                     the block's payload may be freed, reused or rewritten, to even after the
//                     entry is filled (or emptied).
//     w1, w2          key.high, key.low
//     w3, w4          namespace id high, low
//     w5              XXH3-64 payload checksum (the daemon's)
//     w6              payload offset / 4096 (bits 0..31) | payload length (bits 32..63; 0: empty)
//     w7              slab generation (bits 0..31) | codec (bits 32..47)
//
// A key lives in one of the kProbe entries from `key.low & (entries - 1)` on (no wrap: the table
// has kProbe spare entries at its end). Insert takes the first empty entry of the window with a
// CAS on its seq (even -> odd), so concurrent publishers of different keys never share an entry;
// an entry is emptied in place (no tombstones, no moves: readers scan the whole window). A block
// whose window is full is not published here (it loads over IPC; `full` counts them).
//
// Seqlock protocol. Writer (the daemon, holding the block's index stripe lock):
//   publish:  CAS seq s -> s+1 (acq_rel); fence(release); store words relaxed;
//             seq.store(s+2, release)
//   remove:   seq.store(s+1, relaxed); fence(release); length := 0; seq.store(s+2, release)
//             -- before the pool frees the payload (so before any put can rewrite it)
// Reader (a client): s1 = seq.load(acquire), odd -> skip; read words relaxed; copy and verify the
//   payload; fence(acquire); s2 = seq.load(relaxed); s1 == s2 -> the bytes read were the
//   published block's. A reuse after the copy is no concern (the reader has its bytes).
//
// Thread-safety: Publish and Unpublish of one slot are serialised by the caller (the pool's stripe
// lock of the key); different slots run concurrently. DupSegment may run at any time.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "strata/block_format.h"
#include "strata/block_key.h"
#include "strata/result.h"

namespace strata::store {

struct LoadIndexLayout {
  static constexpr uint64_t kMagic = 0x3158444954525453ull;  // "STRTIDX1" little-endian
  static constexpr uint32_t kVersion = 1;
  static constexpr uint32_t kProbe = 16;
  static constexpr uint64_t kLineBytes = 64;

  struct SegmentHeader {
    uint64_t magic;
    uint32_t version;
    uint32_t probe;
    uint64_t entries;  // a power of two; the table has entries + probe lines after the header
    uint64_t tenant;
    uint64_t reserved[4];
  };
  static_assert(sizeof(SegmentHeader) == kLineBytes);

  struct Entry {
    std::atomic<uint64_t> w[8];
  };
  static_assert(sizeof(Entry) == kLineBytes);
  static_assert(std::atomic<uint64_t>::is_always_lock_free);

  // Bytes of a segment of `entries` entries (rounded to whole pages).
  static uint64_t SegmentBytes(uint64_t entries) {
    return ((1 + entries + kProbe) * kLineBytes + 4095) / 4096 * 4096;
  }
};

// What a reader found for a key: where its payload is and what it must hash to, plus the seqlock
// snapshot to check once the bytes are read.
struct LoadIndexHit {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t checksum = 0;
  Codec codec = Codec::kNone;
  uint32_t slab_generation = 0;
  const std::atomic<uint64_t>* seq = nullptr;
  uint64_t seq_value = 0;
  // True when the entry was not changed since Find read it (call after reading the payload).
  bool StillValid() const {
    std::atomic_thread_fence(std::memory_order_acquire);
    return seq->load(std::memory_order_relaxed) == seq_value;
  }
};

// A client's read-only view of one segment. Every offset it returns is checked by the caller
// against its pool mapping, and, with verify_loads, the payload against the checksum.
class LoadIndexView {
 public:
  LoadIndexView() = default;
  // InvalidArgument when `bytes` at `base` is not a segment of this layout version.
  static Result<LoadIndexView> Attach(const std::byte* base, uint64_t bytes);
  // The entry of `key` in namespace `ns`, stable when read. False on a miss (not published, being
  // changed, another namespace).
  bool Find(const BlockKey& key, const NamespaceId& ns, LoadIndexHit* hit) const;
  uint64_t entries() const { return entries_; }
  uint16_t tenant() const { return tenant_; }

 private:
  const LoadIndexLayout::Entry* table_ = nullptr;
  uint64_t entries_ = 0;
  uint16_t tenant_ = 0;
};

class LoadIndex {
 public:
  // One segment per tenant, sized for `max_blocks` blocks each (entries: the next power of two
  // of 2 x max_blocks, at least 1024). IOError when a memfd cannot be made.
  static Result<std::unique_ptr<LoadIndex>> Create(uint16_t tenants, uint32_t max_blocks,
                                                   const std::string& name);
  ~LoadIndex();
  LoadIndex(const LoadIndex&) = delete;
  LoadIndex& operator=(const LoadIndex&) = delete;

  // Publishes pool slot `slot` (block `header`, payload at `offset`) in `tenant`'s segment.
  // False when its probe window is full (counted; the block then loads over IPC only).
  // REQUIRES: the slot is not published; the caller holds the key's stripe lock.
  bool Publish(uint32_t slot, uint16_t tenant, const BlockHeader& header, uint64_t offset,
               uint32_t slab_generation);
  // Removes slot `slot`'s entry, if published, bumping its seq to odd first. REQUIRES: before the
  // payload is freed; the caller holds the key's stripe lock.
  void Unpublish(uint32_t slot);

  // A read-only descriptor of `tenant`'s segment (the caller owns it) and its size.
  struct Segment {
    int fd = -1;
    uint64_t bytes = 0;
  };
  Result<Segment> DupSegment(uint16_t tenant) const;

  uint64_t entries() const { return entries_; }
  uint16_t tenants() const { return tenants_; }
  uint64_t published() const { return published_.load(std::memory_order_relaxed); }
  uint64_t full() const { return full_.load(std::memory_order_relaxed); }
  uint64_t bytes_per_segment() const { return LoadIndexLayout::SegmentBytes(entries_); }

 private:
  LoadIndex(uint16_t tenants, uint64_t entries, uint32_t max_blocks);

  const uint16_t tenants_;
  const uint64_t entries_;
  std::unique_ptr<int[]> fds_;                     // read-only reopens, one per tenant
  std::unique_ptr<LoadIndexLayout::Entry*[]> tables_;  // the daemon's writable mappings
  std::unique_ptr<std::byte*[]> bases_;
  // Per pool slot: (tenant << 32) | (entry + 1), 0 when not published. Written under the slot's
  // stripe lock.
  std::unique_ptr<std::atomic<uint64_t>[]> slot_entry_;
  const uint32_t max_blocks_;
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> full_{0};
};

}  // namespace strata::store
