#include "store/block_pool.h"

#include <algorithm>
#include <bit>
#include <string>

namespace strata::store {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

uint64_t KeyHash(const BlockKey& k) { return k.low ^ (k.high * 0x9E3779B97F4A7C15ULL); }

}  // namespace

// ---- PinnedBlock ----

PinnedBlock& PinnedBlock::operator=(PinnedBlock&& other) noexcept {
  if (this != &other) {
    Release();
    pool_ = other.pool_;
    slot_ = other.slot_;
    header_ = other.header_;
    payload_ = other.payload_;
    offset_ = other.offset_;
    other.pool_ = nullptr;
    other.slot_ = kNoSlot;
  }
  return *this;
}

void PinnedBlock::Release() {
  if (pool_ != nullptr) pool_->ReleaseReader(slot_);
  pool_ = nullptr;
  slot_ = kNoSlot;
  payload_ = {};
}

// ---- BlockPool ----

Status BlockPool::ValidateOptions(const BlockPoolOptions& o, uint64_t capacity_bytes,
                                  uint32_t* num_slabs, uint32_t* max_blocks) {
  if (o.slab_bytes == 0 || o.slab_bytes % (2 * kMiB) != 0 || o.slab_bytes > 256 * kMiB)
    return Status::InvalidArgument("slab_bytes must be a multiple of 2 MiB and at most 256 MiB");
  if (capacity_bytes < o.slab_bytes)
    return Status::InvalidArgument("capacity must hold at least one slab (" +
                                   std::to_string(o.slab_bytes) + " bytes)");
  const uint64_t slabs = (capacity_bytes + o.slab_bytes - 1) / o.slab_bytes;
  if (slabs > UINT32_MAX / 2) return Status::InvalidArgument("capacity too large");
  uint64_t blocks = o.max_blocks ? o.max_blocks : slabs * o.slab_bytes / (64 * 1024);
  if (blocks == 0 || blocks >= (uint64_t{1} << 31))
    return Status::InvalidArgument("max_blocks must be in [1, 2^31)");
  if (slabs * o.slab_bytes / SlabAllocator::kAlign >= (uint64_t{1} << 32))
    return Status::InvalidArgument("capacity above 16 TiB is not supported");
  if (o.tenants == 0 || o.tenants > SlabAllocator::kMaxTenants)
    return Status::InvalidArgument("tenants must be in [1, " +
                                   std::to_string(SlabAllocator::kMaxTenants) + "]");
  *num_slabs = static_cast<uint32_t>(slabs);
  *max_blocks = static_cast<uint32_t>(blocks);
  return Status::OK();
}

BlockPool::BlockPool(TierKind kind, const BlockPoolOptions& options, uint32_t num_slabs,
                     uint32_t max_blocks, PoolMemory memory,
                     std::unique_ptr<EvictionPolicy> policy)
    : kind_(kind),
      options_(options),
      max_blocks_(max_blocks),
      mem_(memory),
      epoch_(std::chrono::steady_clock::now()),
      alloc_(options.slab_bytes, num_slabs, options.tenants),
      policy_(std::move(policy)),
      slots_(new Slot[max_blocks]),
      num_buckets_(std::max<uint32_t>((max_blocks + 1) / 2, 1)),
      stripes_(new SpinLock[kStripes]),
      busy_slabs_((num_slabs + 63) / 64) {
  // Load factor 2 per bucket, exactly (not rounded to a power of two: a pool just above one would
  // pay up to twice the bucket memory): 2 bytes per slot.
  buckets_.reset(new uint32_t[num_buckets_]);
  std::fill_n(buckets_.get(), num_buckets_, kNoSlot);
  for (uint32_t i = 0; i < max_blocks; ++i)
    slots_[i].next.store(i + 1 < max_blocks ? i + 1 : kNoSlot, std::memory_order_relaxed);
  free_head_.store(0, std::memory_order_relaxed);
}

BlockPool::~BlockPool() = default;

uint32_t BlockPool::NowMs() const {
  return static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - epoch_)
                                   .count());
}

uint32_t BlockPool::PopFreeSlot() {
  uint64_t head = free_head_.load(std::memory_order_acquire);
  for (;;) {
    const uint32_t slot = static_cast<uint32_t>(head);
    if (slot == kNoSlot) return kNoSlot;
    const uint32_t next = slots_[slot].next.load(std::memory_order_relaxed);
    const uint64_t tagged = ((head >> 32) + 1) << 32 | next;
    if (free_head_.compare_exchange_weak(head, tagged, std::memory_order_acq_rel,
                                         std::memory_order_acquire))
      return slot;
  }
}

void BlockPool::PushFreeSlot(uint32_t slot) {
  uint64_t head = free_head_.load(std::memory_order_relaxed);
  for (;;) {
    slots_[slot].next.store(static_cast<uint32_t>(head), std::memory_order_relaxed);
    const uint64_t tagged = ((head >> 32) + 1) << 32 | slot;
    if (free_head_.compare_exchange_weak(head, tagged, std::memory_order_release,
                                         std::memory_order_relaxed))
      return;
  }
}

uint32_t BlockPool::FindLocked(uint32_t bucket, const BlockKey& key) const {
  for (uint32_t s = buckets_[bucket]; s != kNoSlot; s = slots_[s].next.load(std::memory_order_relaxed))
    if (slots_[s].key == key) return s;
  return kNoSlot;
}

void BlockPool::UnlinkLocked(uint32_t bucket, uint32_t slot) {
  uint32_t prev = kNoSlot;
  for (uint32_t s = buckets_[bucket]; s != kNoSlot;
       prev = s, s = slots_[s].next.load(std::memory_order_relaxed)) {
    if (s != slot) continue;
    const uint32_t next = slots_[s].next.load(std::memory_order_relaxed);
    if (prev == kNoSlot) buckets_[bucket] = next;
    else slots_[prev].next.store(next, std::memory_order_relaxed);
    return;
  }
}

bool BlockPool::Pinned(const Slot& s, uint32_t now) const {
  if ((s.refs.load(std::memory_order_acquire) >> 16) == 0) return false;
  // Wrap-safe: the deadline is at most max_pin_ttl ahead of the time it was set.
  return static_cast<int32_t>(s.pin_deadline_ms.load(std::memory_order_relaxed) - now) > 0;
}

bool BlockPool::Evictable(uint32_t slot, uint32_t now) const {
  const Slot& s = slots_[slot];
  return s.state.load(std::memory_order_acquire) == kLive &&
         (s.refs.load(std::memory_order_acquire) & 0xFFFF) == 0 && !Pinned(s, now);
}

uint32_t BlockPool::AcquireReader(const BlockKey& key) {
  const uint32_t b = Bucket(key);
  std::lock_guard lock(StripeOf(b));
  const uint32_t s = FindLocked(b, key);
  if (s == kNoSlot || slots_[s].state.load(std::memory_order_relaxed) != kLive) return kNoSlot;
  slots_[s].refs.fetch_add(kReader, std::memory_order_acq_rel);
  return s;
}

void BlockPool::ReleaseReader(uint32_t slot) {
  slots_[slot].refs.fetch_sub(kReader, std::memory_order_acq_rel);
}

Result<uint32_t> BlockPool::AllocateSlot() {
  for (;;) {
    const uint32_t s = PopFreeSlot();
    if (s != kNoSlot) return s;
    std::lock_guard lock(evict_mu_);
    STRATA_RETURN_IF_ERROR(EvictOne());
  }
}

// Room for a chunk of class `cls` comes from evicting either a block of that class (its chunk is
// reused) or every block of a slab lent to another class (the slab changes class, as memcached's
// slab rebalancing). Victims are taken in policy order, but a block of another class is a victim
// only when its whole slab can be emptied: evicting around a pinned, read or reserved block
// would free no slab and only throw cached blocks away (a pool whose every slab held one busy
// block used to be evicted completely before the put failed). Each round evicts at least one block
// or marks one more slab busy, so the loop ends.
Result<uint64_t> BlockPool::AllocatePayload(int cls) {
  uint64_t off = alloc_.Allocate(cls);
  if (off != SlabAllocator::kNoOffset) return off;
  std::lock_guard lock(evict_mu_);
  bool busy_known = false;
  for (;;) {
    off = alloc_.Allocate(cls);
    if (off != SlabAllocator::kNoOffset) return off;
    const uint32_t now = NowMs();
    const uint32_t victim = policy_->PickVictim([&](uint32_t s) {
      if (!Evictable(s, now)) return false;
      if (slots_[s].cls == cls) return true;
      if (!busy_known) {
        FindBusySlabs(now);
        busy_known = true;
      }
      return !SlabBusy(SlabOfSlot(s));
    });
    if (victim == kNoSlot) return NoRoom(cls, now);
    const int vcls = slots_[victim].cls;
    if (vcls == cls) {
      (void)EvictSlot(victim, now);  // false: read meanwhile; the next pick skips it
      continue;
    }
    const uint32_t slab = SlabOfSlot(victim);
    if (!DrainSlab(slab, vcls, now)) {
      if (!busy_known) {
        FindBusySlabs(now);
        busy_known = true;
      }
      SetSlabBusy(slab);
    }
  }
}

Status BlockPool::NoRoom(int cls, uint32_t now) const {
  // Say what holds the space: reservations (stores not yet committed, e.g. one request larger
  // than the pool) and pinned or read blocks are different problems for the operator.
  uint64_t writing = 0, writing_bytes = 0, busy = 0;
  for (uint32_t i = 0; i < max_blocks_; ++i) {
    const uint8_t state = slots_[i].state.load(std::memory_order_acquire);
    if (state == kWriting) {
      ++writing;
      writing_bytes += slots_[i].length;
    } else if (state == kLive && !Evictable(i, now)) {
      ++busy;
    }
  }
  std::string msg = std::string(TierKindName(kind_)) + " pool (" +
                    std::to_string(capacity_bytes()) + " bytes): no room for a " +
                    std::to_string(alloc_.ChunkBytes(cls)) + "-byte block: ";
  if (busy == 0)
    msg += "nothing is pinned or read; " + std::to_string(writing) + " blocks (" +
           std::to_string(writing_bytes) +
           " bytes) are being written by stores not yet committed: a store larger than the "
           "pool cannot fit, make the pool larger than the largest request";
  else
    msg += std::to_string(busy) + " blocks are pinned or being read and " +
           std::to_string(writing) + " are being written by stores not yet committed; none of "
           "them can be evicted";
  return Status::NoSpace(msg);
}

Status BlockPool::CheckFits(std::span<const uint64_t> sizes) const {
  std::vector<uint64_t> per_class(static_cast<size_t>(alloc_.num_classes()), 0);
  for (uint64_t n : sizes) {
    const int cls = alloc_.ClassOf(n);
    if (cls < 0)
      return Status::InvalidArgument("a block of " + std::to_string(n) + " bytes is larger than " +
                                     std::string(TierKindName(kind_)) + " pool slabs (" +
                                     std::to_string(alloc_.slab_bytes()) + " bytes)");
    per_class[static_cast<size_t>(cls)] += alloc_.ChunkBytes(cls);
  }
  uint64_t needed = 0;
  for (uint64_t bytes : per_class)
    needed += (bytes + alloc_.slab_bytes() - 1) / alloc_.slab_bytes() * alloc_.slab_bytes();
  if (needed <= capacity_bytes()) return Status::OK();
  const uint64_t needed_mib = (needed + (1 << 20) - 1) >> 20;
  return Status::NoSpace("a store of " + std::to_string(sizes.size()) + " blocks needs " +
                         std::to_string(needed) + " bytes of " + std::string(TierKindName(kind_)) +
                         " pool at once; the pool holds " + std::to_string(capacity_bytes()) +
                         " bytes: make it at least " + std::to_string(needed_mib) +
                         " MiB (host_pool) or store fewer blocks per request");
}

uint32_t BlockPool::SlabOfSlot(uint32_t slot) const {
  return alloc_.SlabOf(uint64_t{slots_[slot].page.load(std::memory_order_relaxed)} *
                       SlabAllocator::kAlign);
}

void BlockPool::FindBusySlabs(uint32_t now) {
  std::fill(busy_slabs_.begin(), busy_slabs_.end(), 0);
  for (uint32_t i = 0; i < max_blocks_; ++i) {
    const uint8_t state = slots_[i].state.load(std::memory_order_acquire);
    if (state == kFree || (state == kLive && Evictable(i, now))) continue;
    SetSlabBusy(SlabOfSlot(i));  // pinned, read, or a reservation
  }
}

bool BlockPool::DrainSlab(uint32_t slab, int cls, uint32_t now) {
  if (!alloc_.BeginDrain(slab, cls)) return true;  // released meanwhile: Allocate again
  const uint64_t lo = uint64_t{slab} * alloc_.slab_bytes() / SlabAllocator::kAlign;
  const uint64_t hi = lo + alloc_.slab_bytes() / SlabAllocator::kAlign;
  bool emptied = true;
  for (uint32_t i = 0; i < max_blocks_ && emptied; ++i) {
    const uint8_t state = slots_[i].state.load(std::memory_order_acquire);
    if (state == kFree) continue;
    const uint32_t page = slots_[i].page.load(std::memory_order_relaxed);
    if (page < lo || page >= hi) continue;
    // A reservation, or a block pinned or read since the victim was picked: stop here, so no
    // more of this slab is evicted in vain.
    if (state != kLive || !EvictSlot(i, now)) emptied = false;
  }
  if (alloc_.SlabClass(slab) == cls) {  // a chunk is still in use (or was allocated unseen)
    alloc_.EndDrain(slab, cls);
    return false;
  }
  return true;
}

Status BlockPool::EvictOne() {
  const uint32_t now = NowMs();
  for (int attempt = 0; attempt < 64; ++attempt) {
    const uint32_t victim = policy_->PickVictim([&](uint32_t s) { return Evictable(s, now); });
    if (victim == kNoSlot)
      return Status::NoSpace(std::string(TierKindName(kind_)) +
                             " pool is full and every block is pinned or in use");
    if (EvictSlot(victim, now)) return Status::OK();  // else pinned or read meanwhile: pick again
  }
  return Status::NoSpace(std::string(TierKindName(kind_)) +
                         " pool: no evictable block found (all busy)");
}

bool BlockPool::EvictSlot(uint32_t slot, uint32_t now) {
  Slot& s = slots_[slot];
  const uint32_t b = Bucket(s.key);
  {
    std::lock_guard lock(StripeOf(b));
    if (!Evictable(slot, now)) return false;
    UnlinkLocked(b, slot);
    OnUnpublished(slot);  // before the payload can be freed or rewritten
    s.state.store(kWriting, std::memory_order_release);  // unreachable from the index now
  }
  const uint64_t offset = uint64_t{s.page.load(std::memory_order_relaxed)} * SlabAllocator::kAlign;
  if (options_.on_evict && mem_.host_visible) {
    auto header = DecodeBlockHeader(
        std::span<const std::byte>(mem_.header_base + uint64_t{slot} * kBlockHeaderSize,
                                   kBlockHeaderSize));
    if (header.ok())
      options_.on_evict(*header, std::span<const std::byte>(mem_.payload_base + offset, s.length),
                        policy_->HasChildren(slot));
  }
  policy_->OnEvict(slot, KeyHash(s.key));
  alloc_.Free(offset, s.cls);
  counters_.blocks.fetch_sub(1, std::memory_order_relaxed);
  counters_.bytes.fetch_sub(s.length, std::memory_order_relaxed);
  counters_.evictions.fetch_add(1, std::memory_order_relaxed);
  s.refs.store(0, std::memory_order_relaxed);  // expired pins die with the block
  s.state.store(kFree, std::memory_order_release);
  PushFreeSlot(slot);
  return true;
}

Status BlockPool::Put(const BlockHeader& header, std::span<const std::byte> payload,
                      const PutOptions& options) {
  if (payload.size() != header.payload_length)
    return Status::InvalidArgument("payload size does not match the header's payload_length");
  if (options_.verify_on_put) STRATA_RETURN_IF_ERROR(VerifyPayload(header, payload));
  auto reservation = Reserve(header.key, payload.size(), TenantOf(header.ns));
  if (!reservation.ok())  // a cached key is left as it is (same key, same bytes)
    return reservation.status().code() == StatusCode::kAlreadyExists ? Status::OK()
                                                                     : reservation.status();
  mem_.copy_in(mem_.payload_base + reservation->offset, payload.data(), payload.size());
  return Commit(*reservation, header, options, /*verify=*/false);
}

Result<WriteReservation> BlockPool::Reserve(const BlockKey& key, uint64_t length,
                                           uint16_t tenant) {
  return ReserveImpl(key, length, tenant, /*may_evict=*/true);
}

Result<WriteReservation> BlockPool::TryReserve(const BlockKey& key, uint64_t length,
                                              uint16_t tenant) {
  return ReserveImpl(key, length, tenant, /*may_evict=*/false);
}

Result<WriteReservation> BlockPool::ReserveImpl(const BlockKey& key, uint64_t length,
                                               uint16_t tenant, bool may_evict) {
  const int size_class = alloc_.ClassOf(length);
  if (size_class < 0)
    return Status::InvalidArgument("payload of " + std::to_string(length) +
                                   " bytes: must be 1.." + std::to_string(alloc_.slab_bytes()));
  if (tenant == kNoTenant)
    return Status::PermissionDenied(
        "the block's namespace belongs to no tenant this node knows yet (a client of its tenant "
        "must open the namespace first)");
  if (tenant >= alloc_.tenants())
    return Status::InvalidArgument("tenant " + std::to_string(tenant) + " of " +
                                   std::to_string(alloc_.tenants()));
  const int cls = alloc_.Lane(size_class, tenant);
  const uint32_t b = Bucket(key);
  {
    std::lock_guard lock(StripeOf(b));
    if (FindLocked(b, key) != kNoSlot) return Status::AlreadyExists("block is cached");
  }
  uint32_t slot = kNoSlot;
  Result<uint64_t> off = Status::NoSpace("no free chunk without eviction");
  if (may_evict) {
    // Without eviction if it can; else the put is about to evict: before_evict (the tiered
    // store's bounded wait for demotion room) runs first, with no pool lock held.
    slot = PopFreeSlot();
    uint64_t o = slot == kNoSlot ? SlabAllocator::kNoOffset : alloc_.Allocate(cls);
    if (o == SlabAllocator::kNoOffset && options_.before_evict) options_.before_evict(length);
    if (slot == kNoSlot) {
      STRATA_ASSIGN_OR_RETURN(slot, AllocateSlot());
    }
    if (o == SlabAllocator::kNoOffset)
      off = AllocatePayload(cls);
    else
      off = o;
  } else {
    slot = PopFreeSlot();
    if (slot == kNoSlot) return Status::NoSpace("no free slot without eviction");
    if (const uint64_t o = alloc_.Allocate(cls); o != SlabAllocator::kNoOffset) off = o;
  }
  if (!off.ok()) {
    PushFreeSlot(slot);
    return off.status();
  }
  Slot& s = slots_[slot];
  s.key = key;
  s.page.store(static_cast<uint32_t>(*off / SlabAllocator::kAlign), std::memory_order_relaxed);
  s.length = static_cast<uint32_t>(length);
  s.cls = static_cast<uint16_t>(cls);
  s.refs.store(0, std::memory_order_relaxed);
  s.state.store(kWriting, std::memory_order_release);  // the evictor's FindBusySlabs sees it
  return WriteReservation{key, slot, cls, *off, length};
}

Status BlockPool::Commit(const WriteReservation& r, const BlockHeader& header,
                         const PutOptions& options, bool verify) {
  bool published = false;
  return Publish(r, header, options, verify, &published);
}

Status BlockPool::Publish(const WriteReservation& r, const BlockHeader& header,
                          const PutOptions& options, bool verify, bool* published) {
  if (r.slot >= max_blocks_ || header.key != r.key || header.payload_length != r.length) {
    Abort(r);
    return Status::InvalidArgument("commit does not match its reservation");
  }
  if (verify && mem_.host_visible) {
    Status st = VerifyPayload(header, std::span<const std::byte>(mem_.payload_base + r.offset,
                                                                 r.length));
    if (!st.ok()) {
      Abort(r);
      counters_.corrupt.fetch_add(1, std::memory_order_relaxed);
      return st;
    }
  }
  Slot& s = slots_[r.slot];
  EncodeBlockHeader(header, std::span<std::byte, kBlockHeaderSize>(
                                mem_.header_base + uint64_t{r.slot} * kBlockHeaderSize,
                                kBlockHeaderSize));
  uint32_t parent = kNoSlot;
  if (options.parent != nullptr) {
    const uint32_t pb = Bucket(*options.parent);
    std::lock_guard lock(StripeOf(pb));
    parent = FindLocked(pb, *options.parent);
  }
  // The policy learns of the block before it is published, so an Erase (which needs the index)
  // can never remove it from the policy first. Not evictable until kLive.
  policy_->OnInsert(r.slot, parent, KeyHash(r.key));
  const uint32_t b = Bucket(r.key);
  {
    std::lock_guard lock(StripeOf(b));
    if (FindLocked(b, r.key) == kNoSlot) {
      s.next.store(buckets_[b], std::memory_order_relaxed);
      buckets_[b] = r.slot;
      s.state.store(kLive, std::memory_order_release);
      OnPublished(r.slot, header, r.offset, r.cls);
      counters_.blocks.fetch_add(1, std::memory_order_relaxed);
      counters_.bytes.fetch_add(s.length, std::memory_order_relaxed);
      counters_.puts.fetch_add(1, std::memory_order_relaxed);
      *published = true;
      return Status::OK();
    }
  }
  // Lost a race with a concurrent put of the same key: theirs stays.
  {
    std::lock_guard lock(evict_mu_);
    policy_->OnRemove(r.slot);
  }
  Abort(r);
  return Status::OK();
}

void BlockPool::Abort(const WriteReservation& r) {
  if (r.slot >= max_blocks_) return;
  slots_[r.slot].state.store(kFree, std::memory_order_relaxed);
  alloc_.Free(r.offset, r.cls);
  PushFreeSlot(r.slot);
}

std::vector<BlockKey> BlockPool::Keys(const std::optional<NamespaceId>& ns) const {
  std::vector<BlockKey> out;
  for (uint32_t i = 0; i < max_blocks_; ++i) {
    if (slots_[i].state.load(std::memory_order_acquire) != kLive) continue;
    const uint32_t b = Bucket(slots_[i].key);
    std::lock_guard lock(StripeOf(b));
    if (slots_[i].state.load(std::memory_order_relaxed) != kLive) continue;
    if (ns) {
      auto header = DecodeBlockHeader(std::span<const std::byte>(
          mem_.header_base + uint64_t{i} * kBlockHeaderSize, kBlockHeaderSize));
      if (!header.ok() || header->ns != *ns) continue;
    }
    out.push_back(slots_[i].key);
  }
  return out;
}

Result<NamespaceId> BlockPool::NamespaceOf(const BlockKey& key) const {
  const uint32_t b = Bucket(key);
  std::lock_guard lock(StripeOf(b));
  const uint32_t s = FindLocked(b, key);
  if (s == kNoSlot || slots_[s].state.load(std::memory_order_relaxed) != kLive)
    return Status::NotFound("block not in " + std::string(TierKindName(kind_)) + " tier");
  // The header does not change while the block is published (the stripe lock keeps it so).
  auto header = DecodeBlockHeader(std::span<const std::byte>(
      mem_.header_base + uint64_t{s} * kBlockHeaderSize, kBlockHeaderSize));
  if (!header.ok()) return header.status();
  return header->ns;
}

Result<BlockHeader> BlockPool::Get(const BlockKey& key, std::span<std::byte> out) {
  const uint32_t slot = AcquireReader(key);
  if (slot == kNoSlot) {
    counters_.misses.fetch_add(1, std::memory_order_relaxed);
    return Status::NotFound("block not in " + std::string(TierKindName(kind_)) + " tier");
  }
  const Slot& s = slots_[slot];
  if (out.size() < s.length) {
    ReleaseReader(slot);
    return Status::InvalidArgument("output buffer smaller than the payload (" +
                                   std::to_string(s.length) + " bytes)");
  }
  auto header = DecodeBlockHeader(std::span<const std::byte>(
      mem_.header_base + uint64_t{slot} * kBlockHeaderSize, kBlockHeaderSize));
  mem_.copy_out(
      out.data(),
      mem_.payload_base + uint64_t{s.page.load(std::memory_order_relaxed)} * SlabAllocator::kAlign,
      s.length);
  policy_->OnAccess(slot);
  ReleaseReader(slot);
  if (!header.ok()) return header.status();
  counters_.hits.fetch_add(1, std::memory_order_relaxed);
  return header;
}

size_t BlockPool::Touch(std::span<const BlockKey> keys) {
  size_t touched = 0;
  for (const BlockKey& key : keys) {
    const uint32_t slot = AcquireReader(key);
    if (slot == kNoSlot) continue;
    policy_->OnAccess(slot);
    ReleaseReader(slot);
    counters_.hits.fetch_add(1, std::memory_order_relaxed);
    ++touched;
  }
  return touched;
}

Result<PinnedBlock> BlockPool::Acquire(const BlockKey& key) {
  if (!mem_.host_visible)
    return Status::NotSupported("zero-copy views need a host-visible pool");
  return AcquireInPlace(key);
}

Result<PinnedBlock> BlockPool::AcquireInPlace(const BlockKey& key) {
  const uint32_t slot = AcquireReader(key);
  if (slot == kNoSlot) {
    counters_.misses.fetch_add(1, std::memory_order_relaxed);
    return Status::NotFound("block not in " + std::string(TierKindName(kind_)) + " tier");
  }
  const Slot& s = slots_[slot];
  auto header = DecodeBlockHeader(std::span<const std::byte>(
      mem_.header_base + uint64_t{slot} * kBlockHeaderSize, kBlockHeaderSize));
  if (!header.ok()) {
    ReleaseReader(slot);
    return header.status();
  }
  policy_->OnAccess(slot);
  counters_.hits.fetch_add(1, std::memory_order_relaxed);
  PinnedBlock pb;
  pb.pool_ = this;
  pb.slot_ = slot;
  pb.header_ = *header;
  pb.offset_ = uint64_t{s.page.load(std::memory_order_relaxed)} * SlabAllocator::kAlign;
  pb.payload_ = std::span<const std::byte>(mem_.payload_base + pb.offset_, s.length);
  return pb;
}

Status BlockPool::CopyInBatch(std::span<const BatchCopy> copies) {
  for (const BatchCopy& c : copies) mem_.copy_in(c.dst, c.src, c.n);
  return Status::OK();
}

Status BlockPool::CopyOutBatch(std::span<const BatchCopy> copies) {
  for (const BatchCopy& c : copies) mem_.copy_out(c.dst, c.src, c.n);
  return Status::OK();
}

Result<size_t> BlockPool::PutBatch(std::span<const BatchPut> blocks) {
  for (const BatchPut& b : blocks) {
    if (b.payload.size() != b.header.payload_length)
      return Status::InvalidArgument("PutBatch: payload size does not match block " +
                                     b.header.key.ToHex() + "'s header");
    if (options_.verify_on_put) STRATA_RETURN_IF_ERROR(VerifyPayload(b.header, b.payload));
  }
  std::vector<WriteReservation> reserved;
  std::vector<const BatchPut*> source;
  std::vector<BatchCopy> copies;
  reserved.reserve(blocks.size());
  source.reserve(blocks.size());
  copies.reserve(blocks.size());
  Status stopped;
  for (const BatchPut& b : blocks) {
    auto r = Reserve(b.header.key, b.payload.size(), TenantOf(b.header.ns));
    if (!r.ok()) {
      if (r.status().code() == StatusCode::kAlreadyExists) continue;  // cached: same bytes
      stopped = r.status();
      break;
    }
    reserved.push_back(*r);
    source.push_back(&b);
    copies.push_back({mem_.payload_base + r->offset, b.payload.data(), b.payload.size()});
  }
  if (reserved.empty()) {
    if (!stopped.ok()) return stopped;
    return size_t{0};
  }
  if (Status st = CopyInBatch(copies); !st.ok()) {
    for (const WriteReservation& r : reserved) Abort(r);
    return st;
  }
  size_t published = 0;
  for (size_t i = 0; i < reserved.size(); ++i) {
    PutOptions o;
    o.parent = source[i]->parent;
    bool fresh = false;
    if (Publish(reserved[i], source[i]->header, o, /*verify=*/false, &fresh).ok() && fresh)
      ++published;
  }
  return published;
}

Status BlockPool::GetBatch(std::span<BatchGet> blocks) {
  std::vector<PinnedBlock> held;  // reader references, released when this returns
  std::vector<BatchCopy> copies;
  std::vector<BatchGet*> copied;
  held.reserve(blocks.size());
  copies.reserve(blocks.size());
  copied.reserve(blocks.size());
  for (BatchGet& b : blocks) {
    auto block = AcquireInPlace(b.key);
    if (!block.ok()) {
      b.status = block.status();
      continue;
    }
    if (b.out.size() < block->payload().size()) {
      b.status = Status::InvalidArgument("output buffer smaller than the payload (" +
                                         std::to_string(block->payload().size()) + " bytes)");
      continue;
    }
    b.header = block->header();
    b.status = Status::OK();
    copies.push_back({b.out.data(), block->payload().data(), block->payload().size()});
    copied.push_back(&b);
    held.push_back(std::move(block).value());
  }
  Status st = copies.empty() ? Status::OK() : CopyOutBatch(copies);
  if (!st.ok())
    for (BatchGet* b : copied) b->status = st;
  return st;
}

Result<BlockLocation> BlockPool::Find(const BlockKey& key) const {
  const uint32_t b = Bucket(key);
  std::lock_guard lock(StripeOf(b));
  const uint32_t s = FindLocked(b, key);
  if (s == kNoSlot) return Status::NotFound("block not in " + std::string(TierKindName(kind_)) + " tier");
  return BlockLocation{
      kind_, uint64_t{slots_[s].page.load(std::memory_order_relaxed)} * SlabAllocator::kAlign,
      slots_[s].length};
}

Status BlockPool::Pin(const BlockKey& key, std::chrono::milliseconds ttl) {
  if (ttl.count() <= 0) return Status::InvalidArgument("pin ttl must be positive");
  ttl = std::min(ttl, options_.max_pin_ttl);
  const uint32_t b = Bucket(key);
  std::lock_guard lock(StripeOf(b));
  const uint32_t s = FindLocked(b, key);
  if (s == kNoSlot) return Status::NotFound("cannot pin: block not in tier");
  Slot& slot = slots_[s];
  const uint32_t now = NowMs();
  if ((slot.refs.load(std::memory_order_relaxed) >> 16) == 0xFFFF)
    return Status::ResourceExhausted("too many pins on one block");
  const uint32_t deadline = now + static_cast<uint32_t>(ttl.count());
  const uint32_t old = slot.pin_deadline_ms.load(std::memory_order_relaxed);
  if (!Pinned(slot, now) || static_cast<int32_t>(deadline - old) > 0)
    slot.pin_deadline_ms.store(deadline, std::memory_order_relaxed);
  slot.refs.fetch_add(kPin, std::memory_order_acq_rel);
  return Status::OK();
}

Status BlockPool::Unpin(const BlockKey& key) {
  const uint32_t b = Bucket(key);
  std::lock_guard lock(StripeOf(b));
  const uint32_t s = FindLocked(b, key);
  if (s == kNoSlot) return Status::NotFound("cannot unpin: block not in tier");
  auto& refs = slots_[s].refs;
  uint32_t v = refs.load(std::memory_order_relaxed);
  do {
    if ((v >> 16) == 0) return Status::InvalidArgument("block is not pinned");
  } while (!refs.compare_exchange_weak(v, v - kPin, std::memory_order_acq_rel));
  return Status::OK();
}

Status BlockPool::Erase(const BlockKey& key) {
  std::lock_guard evict_lock(evict_mu_);
  const uint32_t b = Bucket(key);
  uint32_t slot;
  {
    std::lock_guard lock(StripeOf(b));
    slot = FindLocked(b, key);
    if (slot == kNoSlot) return Status::NotFound("cannot erase: block not in tier");
    const uint32_t now = NowMs();
    if (!Evictable(slot, now)) return Status::Unavailable("block is pinned or being read");
    UnlinkLocked(b, slot);
    OnUnpublished(slot);  // before the payload can be freed or rewritten
    slots_[slot].state.store(kWriting, std::memory_order_release);
  }
  Slot& s = slots_[slot];
  policy_->OnRemove(slot);
  alloc_.Free(uint64_t{s.page.load(std::memory_order_relaxed)} * SlabAllocator::kAlign, s.cls);
  counters_.blocks.fetch_sub(1, std::memory_order_relaxed);
  counters_.bytes.fetch_sub(s.length, std::memory_order_relaxed);
  s.refs.store(0, std::memory_order_relaxed);
  s.state.store(kFree, std::memory_order_release);
  PushFreeSlot(slot);
  return Status::OK();
}

TierStats BlockPool::Stats() const {
  TierStats st;
  st.blocks = static_cast<uint64_t>(std::max<int64_t>(0, counters_.blocks.load()));
  st.payload_bytes = static_cast<uint64_t>(std::max<int64_t>(0, counters_.bytes.load()));
  st.capacity_bytes = capacity_bytes();
  st.hits = counters_.hits.load();
  st.misses = counters_.misses.load();
  st.puts = counters_.puts.load();
  st.evictions = counters_.evictions.load();
  st.corrupt_dropped = counters_.corrupt.load();
  st.max_blocks = max_blocks_;
  st.lent_bytes = uint64_t{alloc_.num_slabs() - alloc_.free_slabs()} * alloc_.slab_bytes();
  st.metadata_bytes = uint64_t{max_blocks_} * (sizeof(Slot) + policy_->BytesPerSlot()) +
                      uint64_t{num_buckets_} * sizeof(uint32_t) + alloc_.MetadataBytes() +
                      busy_slabs_.size() * sizeof(uint64_t);
  st.fixed_metadata_bytes = kStripes * sizeof(SpinLock) + alloc_.FixedMetadataBytes() +
                            policy_->FixedBytes();
  return st;
}

}  // namespace strata::store
