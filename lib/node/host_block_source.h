// HostBlockSource: the cluster node's transport::BlockSource over the host tier (docs/cluster.md,
// "The cluster node" and "Disk-tier blocks").
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "store/thread_annotations.h"
#include "store/tiered_store.h"
#include "strata/block_format.h"
#include "transport/peer_transport.h"

namespace strata {

// Serves peers' pulls from the host tier: the payload zero-copy from the pool (a reader
// reference keeps it in place until the send completes), the 64-byte header from a copy encoded
// at pin time (the pool keeps decoded headers apart from payloads).
//
// A block this node holds only on its disk tier (or its device tier) is served too: Pin answers
// NotFound, the transport calls PinLater, and the promotion thread brings the block into the
// host tier (TieredStore::Prefetch, or PromoteFromDevice; the store's own threads, which may
// evict and write back), pins it there and hands it to the transport, which sends it from the
// progress thread. Keys that queue up while a promotion runs go together in the next batch.
// A block that cannot be promoted (gone meanwhile, no host room, corrupt on disk) is answered
// NotFound, so the puller asks another holder.
//
// Thread-safety: Pin/Unpin/PinLater run on the transport's progress thread and never block on
// I/O; one mutex guards the pins, another the promotion queue. The destructor joins the
// promotion thread (queued promotions are answered Aborted).
class HostBlockSource final : public transport::BlockSource {
 public:
  explicit HostBlockSource(store::TieredStore* store) : store_(store) {}

  ~HostBlockSource() override {
    std::deque<Job> abandoned;
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      stop_ = true;
      abandoned.swap(queue_);
    }
    queue_cv_.notify_all();
    if (promoter_.joinable()) promoter_.join();
    for (Job& job : abandoned) job.ready(Status::Aborted("node shutting down"));
  }

  Result<transport::PinnedBlock> Pin(const BlockKey& key) override {
    auto block = store_->host().Acquire(key);
    if (!block.ok()) return block.status();
    auto pin = std::make_unique<PinState>();
    EncodeBlockHeader(block->header(), std::span<std::byte, kBlockHeaderSize>(pin->header));
    transport::PinnedBlock out;
    out.data = block->payload().data();
    out.size = block->payload().size();
    out.header = pin->header.data();
    pin->block = std::move(block).value();
    std::lock_guard<std::mutex> lock(mu_);
    out.pin = next_++;
    pins_.emplace(out.pin, std::move(pin));
    served_.fetch_add(1, std::memory_order_relaxed);
    return out;
  }

  bool PinLater(const BlockKey& key, transport::PinReady ready) override {
    // Only what a local tier holds (the index lookups are in memory; no I/O here).
    const store::LookupResult where = store_->Lookup(std::span<const BlockKey>(&key, 1));
    if (where.prefix_blocks != 1) return false;
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (stop_) return false;
    if (!promoter_.joinable()) promoter_ = std::thread([this] { PromoteLoop(); });
    queue_.push_back({key, where.where[0], std::move(ready)});
    queue_cv_.notify_all();
    return true;
  }

  void Unpin(uint64_t pin) override {
    std::unique_ptr<PinState> released;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pins_.find(pin);
    if (it == pins_.end()) return;
    released = std::move(it->second);  // the reader reference drops with it
    pins_.erase(it);
  }

  // Only the shared tenant's blocks (tenant 0: every block without private tenants) go to a pull
  // that names no namespace; a private tenant's, or one of a namespace this node has not seen
  // opened since it started, needs the pull to name its namespace. Counted in refused().
  bool ServesUnnamed(const NamespaceId& ns) override {
    if (store_->host().TenantOf(ns) == 0) return true;
    refused_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  // Where a pinned block's payload lies in its slab's memfd, for a same-host peer that maps this
  // node's pool. The pin keeps the slab from being renewed, so fd and generation hold as long.
  bool SharedPlaceOf(const transport::PinnedBlock& block, transport::SharedPlace* out) override {
    const store::HostTier& host = store_->host();
    const std::byte* base = host.payload_base();
    const uint64_t slab_bytes = host.slab_bytes();
    if (block.data < base || block.data + block.size > base + host.size() || slab_bytes == 0)
      return false;
    const uint64_t at = static_cast<uint64_t>(block.data - base);
    const auto slab = static_cast<uint32_t>(at / slab_bytes);
    if ((at + block.size - 1) / slab_bytes != slab) return false;
    out->fd = host.SlabFd(slab);
    out->slab = slab;
    out->generation = host.SlabGeneration(slab);
    out->offset = at % slab_bytes;
    return out->fd >= 0;
  }

  uint64_t served() const { return served_.load(std::memory_order_relaxed); }
  // Blocks promoted into the host tier to serve a peer's pull, and those that could not be.
  uint64_t promoted() const { return promoted_.load(std::memory_order_relaxed); }
  uint64_t promotion_failures() const {
    return promotion_failures_.load(std::memory_order_relaxed);
  }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  struct PinState {
    store::PinnedBlock block;
    std::array<std::byte, kBlockHeaderSize> header;
  };
  struct Job {
    BlockKey key;
    store::TierKind tier;  // where Lookup found it (disk or device)
    transport::PinReady ready;
  };

  // Takes every queued job, promotes their blocks in one batch, pins and answers each.
  void PromoteLoop() {
    for (;;) {
      std::vector<Job> batch;
      {
        std::unique_lock<std::mutex> lock(queue_mu_);
        queue_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        batch.assign(std::make_move_iterator(queue_.begin()),
                     std::make_move_iterator(queue_.end()));
        queue_.clear();
      }
      std::vector<BlockKey> from_device, from_disk;
      for (const Job& j : batch)
        (j.tier == store::TierKind::kDevice ? from_device : from_disk).push_back(j.key);
      if (!from_device.empty()) (void)store_->PromoteFromDevice(from_device);
      if (!from_disk.empty()) store_->Prefetch(from_disk)->Wait();
      for (Job& j : batch) {
        auto pinned = Pin(j.key);
        if (pinned.ok()) {
          promoted_.fetch_add(1, std::memory_order_relaxed);
          j.ready(std::move(pinned));
        } else {
          promotion_failures_.fetch_add(1, std::memory_order_relaxed);
          j.ready(Status::NotFound("block could not be promoted from the " +
                                   std::string(j.tier == store::TierKind::kDevice ? "device"
                                                                                  : "disk") +
                                   " tier: " + std::string(pinned.status().message())));
        }
      }
    }
  }

  store::TieredStore* store_;
  std::mutex mu_;
  uint64_t next_ = 1;                                              // GUARDED_BY(mu_)
  std::unordered_map<uint64_t, std::unique_ptr<PinState>> pins_;  // GUARDED_BY(mu_)
  std::atomic<uint64_t> served_{0}, promoted_{0}, promotion_failures_{0};
  std::atomic<uint64_t> refused_{0};

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Job> queue_ GUARDED_BY(queue_mu_);
  bool stop_ GUARDED_BY(queue_mu_) = false;
  std::thread promoter_;  // started by the first PinLater
};

}  // namespace strata
