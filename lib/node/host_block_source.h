// HostBlockSource: the cluster node's transport::BlockSource over the host tier (docs/cluster.md,
// "The cluster node").
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "store/tiered_store.h"
#include "strata/block_format.h"
#include "transport/peer_transport.h"

namespace strata {

// Serves peers' pulls from the host tier: the payload zero-copy from the pool (a reader
// reference keeps it in place until the send completes), the 64-byte header from a copy encoded
// at pin time (the pool keeps decoded headers apart from payloads).
// Thread-safety: Pin/Unpin run on the transport's progress thread; one mutex guards the pins.
class HostBlockSource final : public transport::BlockSource {
 public:
  explicit HostBlockSource(store::TieredStore* store) : store_(store) {}

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

  uint64_t served() const { return served_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  struct PinState {
    store::PinnedBlock block;
    std::array<std::byte, kBlockHeaderSize> header;
  };
  store::TieredStore* store_;
  std::mutex mu_;
  uint64_t next_ = 1;                                              // GUARDED_BY(mu_)
  std::unordered_map<uint64_t, std::unique_ptr<PinState>> pins_;  // GUARDED_BY(mu_)
  std::atomic<uint64_t> served_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace strata
