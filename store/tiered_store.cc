#include "store/tiered_store.h"

#include <cstdlib>
#include <cstring>
#include <string>

namespace strata::store {
namespace {

uint64_t KeyHash(const BlockKey& k) { return k.low ^ (k.high * 0x9E3779B97F4A7C15ULL); }

struct AlignedBuffer {
  std::byte* p = nullptr;
  size_t n = 0;
  ~AlignedBuffer() { std::free(p); }
  std::span<std::byte> Get(size_t bytes) {
    const size_t want = (bytes + 4095) / 4096 * 4096;
    if (n < want) {
      std::free(p);
      p = static_cast<std::byte*>(std::aligned_alloc(4096, want));
      n = p ? want : 0;
    }
    return {p, n};
  }
};

}  // namespace

// ---- PrefetchTicket ----

size_t PrefetchTicket::Wait() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return pending_ == 0; });
  return loaded_;
}
bool PrefetchTicket::done() const {
  std::lock_guard lock(mu_);
  return pending_ == 0;
}
size_t PrefetchTicket::loaded() const {
  std::lock_guard lock(mu_);
  return loaded_;
}
size_t PrefetchTicket::failed() const {
  std::lock_guard lock(mu_);
  return failed_;
}

// ---- TieredStore ----

TieredStore::TieredStore(const TieredStoreOptions& options)
    : options_(options),
      admission_(std::max<uint64_t>(
                     1024, (options.host.pool.max_blocks ? options.host.pool.max_blocks
                                                         : options.host.capacity_bytes / 65536) *
                               4),
                 options.disk_admission_min_frequency) {}

Result<std::unique_ptr<TieredStore>> TieredStore::Open(const TieredStoreOptions& options,
                                                       std::unique_ptr<BlockPool> device) {
  if (options.prefetch_threads == 0)
    return Status::InvalidArgument("prefetch_threads must be at least 1");
  std::unique_ptr<TieredStore> store(new TieredStore(options));
  store->device_ = std::move(device);
  if (options.disk) {
    DiskTierOptions disk = *options.disk;
    TieredStore* self = store.get();
    disk.on_evict = [self](const BlockKey& key) { self->Changed(TierKind::kDisk, key, false); };
    STRATA_ASSIGN_OR_RETURN(store->disk_, DiskTier::Open(disk));
    // The tags of the blocks the disk kept across the restart (no event: nothing changed).
    for (auto& [key, tag] : store->disk_->TakeRecoveredTags()) {
      store->tags_.Set(key, tag);
      (void)store->tags_.Changed(TierKind::kDisk, key, true);
    }
    if (options.write_policy == WritePolicy::kWriteBack && options.demotion_queue_bytes > 0) {
      TieredStore* self = store.get();
      STRATA_ASSIGN_OR_RETURN(
          store->demotion_,
          DemotionQueue::Open(options.demotion_queue_bytes,
                              [self](const BlockHeader& h, std::span<const std::byte> p) {
                                return self->WriteDemoted(h, p);
                              }));
    }
  }
  HostTierOptions host = options.host;
  {  // always: evictions end the tags of blocks nothing else holds
    TieredStore* self = store.get();
    host.pool.on_evict = [self](const BlockHeader& h, std::span<const std::byte> p, bool shared) {
      self->OnHostEvict(h, p, shared);
    };
    if (store->demotion_ && options.demotion_wait.count() > 0) {
      host.pool.before_evict = [self, wait = options.demotion_wait](uint64_t length) {
        (void)self->demotion_->WaitForRoom(length, wait);
      };
    }
  }
  STRATA_ASSIGN_OR_RETURN(store->host_, HostTier::Open(host));
  for (uint32_t i = 0; i < options.prefetch_threads; ++i)
    store->workers_.emplace_back([s = store.get()] { s->PrefetchLoop(); });
  if (store->device_) store->device_worker_ = std::thread([s = store.get()] { s->DeviceLoop(); });
  return store;
}

TieredStore::~TieredStore() {
  std::deque<Job> abandoned;
  {
    std::lock_guard lock(queue_mu_);
    stop_ = true;
    abandoned.swap(queue_);
  }
  queue_cv_.notify_all();
  for (auto& t : workers_) t.join();
  {
    std::lock_guard lock(device_mu_);
    device_stop_ = true;
    device_queue_.clear();
  }
  device_cv_.notify_all();
  if (device_worker_.joinable()) device_worker_.join();
  device_.reset();  // before host_: it unregisters the host pool's mapping from the GPU
  for (auto& job : abandoned) {
    std::lock_guard lock(job.ticket->mu_);
    ++job.ticket->failed_;
    if (--job.ticket->pending_ == 0) job.ticket->cv_.notify_all();
  }
}

void TieredStore::CountAccess(const BlockKey& key) { admission_.CountAccess(KeyHash(key)); }

void TieredStore::OnHostEvict(const BlockHeader& header, std::span<const std::byte> payload,
                              bool shared) {
  const bool write_back = disk_ != nullptr && options_.write_policy == WritePolicy::kWriteBack;
  const bool admit = write_back && admission_.Admit(KeyHash(header.key), shared);
  // The demotion carries the block's tag to the disk (WriteDemoted releases it).
  if (admit) tags_.Hold(header.key);
  if (options_.on_host_removed) options_.on_host_removed(header.key);
  Changed(TierKind::kHost, header.key, false);
  if (!write_back) return;  // no disk, or already on disk (write-through)
  if (!admit) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (demotion_) {
    // Never waits for the disk: staged (one memcpy) or dropped at once when the ring is full.
    if (!demotion_->Enqueue(header, payload)) {
      demotions_dropped_.fetch_add(1, std::memory_order_relaxed);
      tags_.Release(header.key);
    }
    return;
  }
  (void)WriteDemoted(header, payload);
}

Status TieredStore::WriteDemoted(const BlockHeader& header, std::span<const std::byte> payload) {
  const std::string tag = tags_.Get(header.key);
  PutOptions put;
  put.tag = tag;
  Status st = disk_->Put(header, payload, put);
  if (st.ok()) {
    demotions_.fetch_add(1, std::memory_order_relaxed);
    Changed(TierKind::kDisk, header.key, true);
  } else {
    // The block is lost from the hierarchy, which a cache may do; the disk error is counted and
    // the disk's state (e.g. full) shows in its own stats.
    demotion_errors_.fetch_add(1, std::memory_order_relaxed);
  }
  tags_.Release(header.key);  // the disk holds the tag now, or the block is gone
  return st;
}

Status TieredStore::Put(const BlockKey& key, const NamespaceId& ns,
                        std::span<const std::byte> payload, const PutOptions& options,
                        Codec codec) {
  return PutBlock(MakeBlockHeader(key, ns, codec, payload), payload, options);
}

Status TieredStore::PutBlock(const BlockHeader& header, std::span<const std::byte> payload,
                             const PutOptions& options) {
  CountAccess(header.key);
  if (options.tag.size() > kMaxBlockTagBytes)
    return Status::InvalidArgument("a block tag is at most " +
                                   std::to_string(kMaxBlockTagBytes) + " bytes");
  // Write-through: disk first, so that a block the disk refused never becomes visible in host.
  const bool through = disk_ && options_.write_policy == WritePolicy::kWriteThrough;
  if (through)
    STRATA_RETURN_IF_ERROR(disk_->Put(header, payload, options).WithContext("write-through"));
  tags_.Set(header.key, options.tag);
  Status st = host_->Put(header, payload, options);
  if (!st.ok() && through) (void)disk_->Erase(header.key);
  if (st.ok()) {
    if (through) Changed(TierKind::kDisk, header.key, true);
    Changed(TierKind::kHost, header.key, true);
  } else {
    tags_.DropIfUnheld(header.key);
  }
  return st;
}

Status TieredStore::CommitReserved(const WriteReservation& reservation, const BlockHeader& header,
                                   const PutOptions& options, bool verify) {
  CountAccess(header.key);
  if (options.tag.size() > kMaxBlockTagBytes) {
    host_->Abort(reservation);
    return Status::InvalidArgument("a block tag is at most " +
                                   std::to_string(kMaxBlockTagBytes) + " bytes");
  }
  Status disk_status;
  if (disk_ && options_.write_policy == WritePolicy::kWriteThrough) {
    // The reservation's bytes cannot change or move until it is committed or aborted.
    disk_status = disk_->Put(header,
                             std::span<const std::byte>(host_->payload_base() + reservation.offset,
                                                        reservation.length),
                             options)
                      .WithContext("write-through");
    if (!disk_status.ok()) {  // reported failed: nothing of it may become visible
      host_->Abort(reservation);
      return disk_status;
    }
  }
  tags_.Set(header.key, options.tag);
  Status st = host_->Commit(reservation, header, options, verify);
  if (!st.ok()) {
    if (disk_status.ok() && disk_ && options_.write_policy == WritePolicy::kWriteThrough)
      (void)disk_->Erase(header.key);
    tags_.DropIfUnheld(header.key);
    return st;
  }
  access_.RecordStored(header.ns, header.payload_length);
  if (disk_ && options_.write_policy == WritePolicy::kWriteThrough)
    Changed(TierKind::kDisk, header.key, true);
  Changed(TierKind::kHost, header.key, true);
  return Status::OK();
}

std::vector<BlockKey> TieredStore::Keys(const std::optional<NamespaceId>& ns) const {
  std::vector<BlockKey> out = host_->Keys(ns);
  if (device_) {
    std::vector<BlockKey> d = device_->Keys(ns);
    out.insert(out.end(), d.begin(), d.end());
  }
  if (disk_) {
    std::vector<BlockKey> d = disk_->Keys(ns);
    out.insert(out.end(), d.begin(), d.end());
  }
  return out;
}

Result<BlockHeader> TieredStore::Get(const BlockKey& key, std::span<std::byte> out) {
  CountAccess(key);
  auto r = host_->Get(key, out);
  if (r.ok() || !r.status().IsNotFound()) return r;
  if (device_) {
    r = device_->Get(key, out);
    if (r.ok() || !r.status().IsNotFound()) return r;
  }
  if (!disk_) return r;
  if (demotion_) {
    BlockHeader h;
    std::vector<std::byte> staged;
    if (demotion_->Read(key, &h, &staged)) {
      if (out.size() < staged.size()) return Status::InvalidArgument("output buffer too small");
      std::memcpy(out.data(), staged.data(), staged.size());
      if (host_->Put(h, std::span<const std::byte>(staged)).ok()) {
        promotions_.fetch_add(1, std::memory_order_relaxed);
        Changed(TierKind::kHost, key, true);
      }
      return h;
    }
  }
  auto d = disk_->Get(key, out);
  if (!d.ok()) return d.status().IsCorruption() ? Status::NotFound(d.status().message()) : d;
  // Promotion: a host that is full of pinned blocks just leaves the block on disk.
  if (host_->Put(*d, out.first(d->payload_length)).ok()) {
    promotions_.fetch_add(1, std::memory_order_relaxed);
    Changed(TierKind::kHost, key, true);
  }
  return d;
}

LookupResult TieredStore::Lookup(std::span<const BlockKey> chain) const {
  LookupResult out;
  out.where.reserve(chain.size());
  for (const BlockKey& key : chain) {
    if (host_->Find(key).ok()) {
      out.where.push_back(TierKind::kHost);
    } else if (device_ && device_->Find(key).ok()) {
      out.where.push_back(TierKind::kDevice);
    } else if (disk_ && (disk_->Find(key).ok() || (demotion_ && demotion_->Contains(key)))) {
      out.where.push_back(TierKind::kDisk);  // staged blocks are on their way there
    } else {
      break;
    }
  }
  out.prefix_blocks = out.where.size();
  return out;
}

std::shared_ptr<PrefetchTicket> TieredStore::Prefetch(std::span<const BlockKey> keys, bool hold) {
  auto ticket = std::make_shared<PrefetchTicket>();
  ticket->hold_ = hold;
  std::vector<BlockKey> todo;
  for (const BlockKey& key : keys)
    if (disk_ && !host_->Find(key).ok() &&
        (disk_->Find(key).ok() || (demotion_ && demotion_->Contains(key))))
      todo.push_back(key);
  if (todo.empty()) return ticket;
  {
    std::lock_guard tl(ticket->mu_);
    ticket->pending_ = todo.size();
  }
  {
    std::lock_guard lock(queue_mu_);
    for (const BlockKey& key : todo) queue_.push_back({key, ticket});
  }
  queue_cv_.notify_all();
  return ticket;
}

void TieredStore::PrefetchLoop() {
  AlignedBuffer staging;
  for (;;) {
    Job job;
    {
      std::unique_lock lock(queue_mu_);
      queue_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    bool ok = host_->Find(job.key).ok();
    if (!ok && demotion_) {
      BlockHeader h;
      std::vector<std::byte> staged;
      if (demotion_->Read(job.key, &h, &staged)) {
        ok = host_->Put(h, std::span<const std::byte>(staged)).ok();
        if (ok) {
          prefetched_.fetch_add(1, std::memory_order_relaxed);
          Changed(TierKind::kHost, job.key, true);
        }
      }
    }
    if (!ok) {
      auto loc = disk_->Find(job.key);
      if (loc.ok()) {
        auto buf = staging.Get(loc->length);
        auto h = buf.empty() ? Result<BlockHeader>(Status::ResourceExhausted("staging buffer"))
                             : disk_->Get(job.key, buf);
        if (h.ok()) ok = host_->Put(*h, buf.first(h->payload_length)).ok();
        if (ok) {
          prefetched_.fetch_add(1, std::memory_order_relaxed);
          Changed(TierKind::kHost, job.key, true);
        }
      }
    }
    Result<PinnedBlock> held = Status::NotFound("not held");
    if (ok && job.ticket->hold_) {
      held = host_->Acquire(job.key);
      ok = held.ok();  // evicted between its Put and here: not loaded for this caller
    }
    std::lock_guard tl(job.ticket->mu_);
    if (held.ok()) job.ticket->held_.push_back(std::move(held).value());
    ++(ok ? job.ticket->loaded_ : job.ticket->failed_);
    if (--job.ticket->pending_ == 0) job.ticket->cv_.notify_all();
  }
}

Status TieredStore::Pin(const BlockKey& key, std::chrono::milliseconds ttl) {
  Status st = host_->Pin(key, ttl);
  if (!st.IsNotFound()) return st;
  if (device_) {
    st = device_->Pin(key, ttl);
    if (!st.IsNotFound()) return st;
  }
  return disk_ ? disk_->Pin(key, ttl) : st;
}

Status TieredStore::Unpin(const BlockKey& key) {
  Status st = host_->Unpin(key);
  if (st.ok()) return st;
  if (device_ && device_->Unpin(key).ok()) return Status::OK();
  if (!disk_) return st;
  Status d = disk_->Unpin(key);
  return d.ok() ? d : st;
}

Status TieredStore::Erase(const BlockKey& key) {
  bool found = false;
  for (Tier* t : {static_cast<Tier*>(device_.get()), static_cast<Tier*>(host_.get()),
                  static_cast<Tier*>(disk_.get())}) {
    if (t == nullptr) continue;
    Status st = t->Erase(key);
    if (st.ok() && t == host_.get() && options_.on_host_removed) options_.on_host_removed(key);
    if (st.ok() && t != device_.get()) Changed(t->kind(), key, false);
    if (st.ok()) found = true;
    else if (!st.IsNotFound()) return st;
  }
  return found ? Status::OK() : Status::NotFound("block not in any local tier");
}

std::optional<NamespaceId> TieredStore::NamespaceOf(const BlockKey& key) const {
  if (auto ns = host_->NamespaceOf(key); ns.ok()) return *ns;
  if (device_)
    if (auto ns = device_->NamespaceOf(key); ns.ok()) return *ns;
  if (disk_)
    if (auto ns = disk_->NamespaceOf(key); ns.ok()) return *ns;
  return std::nullopt;
}

Status TieredStore::Sync() { return disk_ ? disk_->Sync() : Status::OK(); }

StoreStats TieredStore::Stats() const {
  StoreStats st;
  if (device_) st.device = device_->Stats();
  st.host = host_->Stats();
  if (disk_) st.disk = disk_->Stats();
  st.promotions = promotions_.load();
  st.prefetched = prefetched_.load();
  st.demotions = demotions_.load();
  st.demotions_rejected = rejected_.load();
  st.demotion_errors = demotion_errors_.load();
  st.demotions_dropped = demotions_dropped_.load();
  if (demotion_) {
    const DemotionQueueStats q = demotion_->Stats();
    st.demotion_staged_bytes = q.staged_bytes;
    st.demotion_waits = q.waits;
    st.demotion_wait_timeouts = q.wait_timeouts;
  }
  st.device_copies = device_copies_.load();
  st.device_copy_batches = device_copy_batches_.load();
  st.device_promotions = device_promotions_.load();
  st.device_corrupt = device_corrupt_.load();
  return st;
}

// ---- Device tier ----

size_t TieredStore::PromoteFromDevice(std::span<const BlockKey> keys) {
  if (!device_) return 0;
  std::vector<WriteReservation> reserved;
  std::vector<BatchGet> batch;
  for (const BlockKey& key : keys) {
    if (host_->Find(key).ok()) continue;
    auto loc = device_->Find(key);
    if (!loc.ok()) continue;
    auto ns = device_->NamespaceOf(key);
    if (!ns.ok()) continue;
    // In a slab of the block's tenant; a namespace no client opened yet stays on the device.
    auto r = host_->Reserve(key, loc->length, host_->TenantOf(*ns));
    if (!r.ok()) {
      if (r.status().code() == StatusCode::kAlreadyExists) continue;  // published meanwhile
      break;  // host is full of pinned blocks: the rest stays on the device
    }
    reserved.push_back(*r);
    batch.push_back(BatchGet{key, {host_->payload_base() + r->offset, r->length}, {}, {}});
  }
  if (batch.empty()) return 0;
  (void)device_->GetBatch(batch);  // per-block outcomes below
  size_t promoted = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchGet& b = batch[i];
    // A device block replaced meanwhile by one of another length fails the length check of
    // Commit (InvalidArgument) and is not promoted.
    if (!b.status.ok()) {
      host_->Abort(reserved[i]);
      continue;
    }
    Status st = host_->Commit(reserved[i], b.header, {}, /*verify=*/true);  // releases on error
    if (st.ok()) {
      ++promoted;
      Changed(TierKind::kHost, b.key, true);
    } else if (st.IsCorruption()) {
      (void)device_->Erase(b.key);
      device_corrupt_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  device_promotions_.fetch_add(promoted, std::memory_order_relaxed);
  return promoted;
}

void TieredStore::CopyToDevice(std::span<const BlockKey> keys) {
  if (!device_ || keys.empty()) return;
  {
    std::lock_guard lock(device_mu_);
    for (const BlockKey& key : keys) {
      if (device_queue_.size() >= kDeviceQueueLimit) break;
      device_queue_.push_back(key);
    }
  }
  device_cv_.notify_all();
}

void TieredStore::WaitDeviceCopies() {
  if (!device_) return;
  std::unique_lock lock(device_mu_);
  device_cv_.wait(lock, [&] { return device_stop_ || (device_queue_.empty() && !device_busy_); });
}

void TieredStore::DeviceLoop() {
  std::vector<BlockKey> batch;
  std::unique_lock lock(device_mu_);
  for (;;) {
    device_cv_.wait(lock, [&] { return device_stop_ || !device_queue_.empty(); });
    if (device_stop_) return;
    batch.assign(device_queue_.begin(), device_queue_.end());
    device_queue_.clear();
    device_busy_ = true;
    lock.unlock();
    CopyBatchToDevice(batch);
    lock.lock();
    device_busy_ = false;
    device_cv_.notify_all();
  }
}

void TieredStore::CopyBatchToDevice(std::span<const BlockKey> keys) {
  std::vector<PinnedBlock> held;  // host blocks read in place until their batch is copied
  std::vector<BatchPut> puts;
  uint64_t bytes = 0;
  auto flush = [&] {
    if (puts.empty()) return;
    auto n = device_->PutBatch(puts);
    if (n.ok()) device_copies_.fetch_add(*n, std::memory_order_relaxed);
    device_copy_batches_.fetch_add(1, std::memory_order_relaxed);
    puts.clear();
    held.clear();
    bytes = 0;
  };
  for (const BlockKey& key : keys) {
    if (device_->Find(key).ok()) continue;
    auto block = host_->Acquire(key);
    if (!block.ok()) continue;  // left host meanwhile
    if (bytes + block->payload().size() > kDeviceBatchBytes) flush();
    bytes += block->payload().size();
    puts.push_back(BatchPut{block->header(), block->payload(), nullptr});
    held.push_back(std::move(block).value());
  }
  flush();
}

}  // namespace strata::store
