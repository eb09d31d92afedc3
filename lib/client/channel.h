// How a Client reaches its cache: over the daemon's Unix socket (SocketChannel) or in-process
// (EmbeddedChannel, which owns a Node and calls the same RequestHandler the daemon uses).
//
// Thread-safety: Call may be used from many threads; SocketChannel serialises them on its socket.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "client/pool_filler.h"
#include "daemon/request_handler.h"
#include "ipc/ipc_protocol.h"
#include "ipc/unix_socket.h"
#include "node/node.h"
#include "store/load_index.h"

namespace strata {

class Channel {
 public:
  virtual ~Channel() = default;
  // Sends `body` as a request and returns the response body, or the status of a failed request.
  virtual Result<ipc::ResponseBody> Call(ipc::RequestBody body) = 0;
  // Sends `body` without waiting for its response (one send, no wake-up of the caller): the
  // daemon answers a connection's requests in order, so every later request sees its effect; the
  // response is read and dropped by the next Call. For requests whose failure the caller cannot
  // act on (Unpin after a load: an unreleased pin still expires). Not OK: nothing was sent.
  virtual Status Post(ipc::RequestBody body) = 0;
  // Sends `body` expecting no response at all (a request the daemon never answers: AccessNotice).
  // Not OK: nothing was sent.
  virtual Status Notify(ipc::RequestBody body) { return Post(std::move(body)); }
  // The load index segment of `ns`'s tenant, mapped read-only (MapLoadIndexRequest; mapped once
  // per tenant, valid as long as the channel). NotSupported where loads have nothing to gain
  // (embedded); PermissionDenied as a Load of `ns` would be.
  virtual Result<const store::LoadIndexView*> MapLoadIndex(const NamespaceId& ns) {
    (void)ns;
    return Status::NotSupported("the load index is for clients of a daemon");
  }
  // Hands the daemon the memfd of a KV cache moved onto it (`fd`, sent with the request; the
  // caller keeps and closes its descriptor): the daemon maps it read-only and answers the share's
  // id (UnshareKvRequest takes it back). NotSupported where no daemon runs (embedded).
  virtual Result<uint64_t> ShareKv(int fd, ipc::ShareKvRequest request) {
    (void)fd, (void)request;
    return Status::NotSupported("sharing a KV cache is for clients of a daemon");
  }
  // True when [offset, offset + length) lies in one slab of the pool that this process has
  // mapped at `generation`: a load index hit can be read there with no request.
  virtual bool Readable(uint64_t offset, uint64_t length, uint32_t generation) const {
    (void)offset, (void)length, (void)generation;
    return false;
  }
  // The host pool, mapped into this process read-only (loads copy out of it).
  virtual const std::byte* pool_base() const = 0;
  virtual uint64_t pool_bytes() const = 0;
  // Makes the slabs holding `locations` readable at pool_base() + offset: a slab not mapped yet,
  // or mapped at another generation, is asked for (MapSlabRequest) and mapped read-only over its
  // place. PermissionDenied when the daemon refuses a slab. Embedded: nothing to do.
  virtual Status MapForRead(std::span<const ipc::Location> locations) = 0;
  // This client's staging memory (stores write payloads here; StoreCommit offsets index it).
  virtual std::byte* staging_base() const = 0;
  virtual uint64_t staging_bytes() const = 0;
  // The unit MapForRead maps the pool in: one slab (embedded: the whole pool, mapped always).
  virtual uint64_t slab_bytes() const = 0;
  // Whether StoreCommit may name addresses of this process's memory instead of staging offsets:
  // the daemon read the Hello's probe (docs/data-plane.md, "Cross-memory store").
  virtual bool cross_memory() const { return false; }
  // Whether loads hash every block they copy out of the pool against its checksum: the daemon's
  // verify_loads, told in its HelloReply (embedded: EmbeddedOptions::verify_loads). Otherwise
  // they copy plainly: the daemon verified every block it published (docs/data-plane.md,
  // "Verified at commit, copied at load").
  virtual bool verify_loads() const = 0;
  // `hook(slab)` runs before MapForRead maps a new generation of a slab over an older mapping of
  // it, under the channel's lock: a device registration of the old mapping is dropped there
  // (cuda_paged.h). Null: none. Embedded channels never remap.
  virtual void SetSlabRemapHook(std::function<void(uint64_t slab)> hook) { (void)hook; }
};

// A sealed memfd of `bytes` mapped read-write into this process: the client's staging memory.
class StagingMapping {
 public:
  // IOError when the memfd cannot be created, sized, sealed or mapped.
  static Result<StagingMapping> Create(uint64_t bytes);
  StagingMapping() = default;
  StagingMapping(StagingMapping&& other) noexcept { *this = std::move(other); }
  StagingMapping& operator=(StagingMapping&& other) noexcept;
  ~StagingMapping();
  int fd() const { return fd_; }
  std::byte* base() const { return base_; }
  uint64_t bytes() const { return bytes_; }

 private:
  int fd_ = -1;
  std::byte* base_ = nullptr;
  uint64_t bytes_ = 0;
};

// `bytes` of address space for the daemon's host pool (PROT_NONE, nothing allocated), starting
// on a 2 MiB boundary, where MapForRead maps each slab at its offset; the caller munmaps it.
// IOError when the address space cannot be reserved.
Result<void*> ReservePoolAddressSpace(uint64_t bytes);

class SocketChannel final : public Channel {
 public:
  // Connects, says Hello with a staging memfd of `staging_bytes` and reserves address space for
  // the pool; slabs are mapped on first use (MapForRead), each from a read-only descriptor the
  // daemon hands out only for slabs of tenants this client may use (docs/data-plane.md).
  // `trusted_daemon_uids`: ClientOptions::trusted_daemon_uids (STRATA_DAEMON_USER is added here).
  // `cross_memory`: offer the daemon cross-memory stores (it lets the daemon's pid trace this
  // process where Yama asks for that, and sends a probe with the Hello); kRequired fails the
  // connect when the daemon cannot read this process's memory.
  enum class CrossMemory { kOff, kOffer, kRequired };
  static Result<std::unique_ptr<SocketChannel>> Open(
      const std::string& socket_path, int request_timeout_ms, uint64_t staging_bytes,
      std::span<const uint32_t> trusted_daemon_uids = {},
      CrossMemory cross_memory = CrossMemory::kOff);
  ~SocketChannel() override;
  Result<ipc::ResponseBody> Call(ipc::RequestBody body) override;
  Status Post(ipc::RequestBody body) override;
  Status Notify(ipc::RequestBody body) override;
  Result<const store::LoadIndexView*> MapLoadIndex(const NamespaceId& ns) override;
  Result<uint64_t> ShareKv(int fd, ipc::ShareKvRequest request) override;
  bool Readable(uint64_t offset, uint64_t length, uint32_t generation) const override {
    const uint64_t slab = offset / slab_bytes_;
    if (slab >= pool_bytes_ / slab_bytes_ || length > slab_bytes_ ||
        offset + length > (slab + 1) * slab_bytes_)
      return false;
    return mapped_[slab].load(std::memory_order_acquire) == generation;
  }
  const std::byte* pool_base() const override { return pool_base_; }
  uint64_t pool_bytes() const override { return pool_bytes_; }
  Status MapForRead(std::span<const ipc::Location> locations) override;
  // Maps every slab of the pool this client may read (the daemon refuses the others: they stay
  // unmapped) read-only, on the calling thread; with `fill`, page-table entries filled
  // (MAP_POPULATE: ClientOptions::MapPool::kConnect). IOError when a slab cannot be mapped.
  Status MapPool(bool fill);
  // Starts filling the page table of the slabs mapped (and of those mapped later) on a thread of
  // its own, pages the daemon has only (ClientOptions::MapPool::kBackground; client/pool_filler.h).
  // REQUIRES: called once, after MapPool.
  void FillPoolInBackground();
  std::byte* staging_base() const override { return staging_.base(); }
  uint64_t staging_bytes() const override { return staging_.bytes(); }
  uint64_t slab_bytes() const override { return slab_bytes_; }
  bool cross_memory() const override { return cross_memory_; }
  bool verify_loads() const override { return verify_loads_; }
  void SetSlabRemapHook(std::function<void(uint64_t slab)> hook) override {
    std::lock_guard<std::mutex> lock(mu_);
    remap_hook_ = std::move(hook);
  }

 private:
  explicit SocketChannel(ipc::UnixConnection conn) : conn_(std::move(conn)) {}
  Result<ipc::ResponseBody> CallLocked(ipc::RequestBody body, int pass_fd, int* received_fd);
  // Asks for slab `slab` and maps it read-only over its place (with `extra_flags`, e.g.
  // MAP_POPULATE), recording its generation. REQUIRES: mu_ held.
  Status MapSlabLocked(uint64_t slab, int extra_flags);

  std::mutex mu_;
  ipc::UnixConnection conn_;  // GUARDED_BY(mu_)
  uint64_t next_id_ = 1;      // GUARDED_BY(mu_)
  // Requests sent whose response has not been read yet (those of timed-out calls and of Posts,
  // plus the call in progress). GUARDED_BY(mu_)
  uint64_t unanswered_ = 0;
  const std::byte* pool_base_ = nullptr;
  uint64_t pool_bytes_ = 0;
  uint64_t slab_bytes_ = 0;
  // Generation each slab is mapped at; kUnmapped before its first use. Written under mu_.
  static constexpr uint32_t kUnmapped = UINT32_MAX;
  std::unique_ptr<std::atomic<uint32_t>[]> mapped_;
  std::function<void(uint64_t)> remap_hook_;  // GUARDED_BY(mu_)
  // Load index segments mapped, by tenant (node-based: views keep their address).
  struct IndexMapping {
    const std::byte* base = nullptr;
    uint64_t bytes = 0;
    store::LoadIndexView view;
  };
  std::map<uint32_t, IndexMapping> indexes_;  // GUARDED_BY(mu_)
  // Reads mapped_; stopped by the destructor before the pool's mapping goes.
  std::unique_ptr<PoolFiller> filler_;
  StagingMapping staging_;
  bool cross_memory_ = false;  // set once by Open
  bool verify_loads_ = true;   // set once by Open
};

class EmbeddedChannel final : public Channel {
 public:
  static Result<std::unique_ptr<EmbeddedChannel>> Open(const NodeOptions& options,
                                                       uint64_t staging_bytes, bool verify_loads);
  ~EmbeddedChannel() override;
  Result<ipc::ResponseBody> Call(ipc::RequestBody body) override;
  Status Post(ipc::RequestBody body) override { return Call(std::move(body)).status(); }
  const std::byte* pool_base() const override { return node_->pool_base(); }
  uint64_t pool_bytes() const override { return node_->pool_bytes(); }
  Status MapForRead(std::span<const ipc::Location>) override { return Status::OK(); }
  std::byte* staging_base() const override { return staging_.base(); }
  uint64_t staging_bytes() const override { return staging_.bytes(); }
  uint64_t slab_bytes() const override { return node_->pool_bytes(); }
  bool verify_loads() const override { return verify_loads_; }

 private:
  static constexpr Node::OwnerId kOwner = 1;
  EmbeddedChannel(std::unique_ptr<Node> node, StagingMapping staging, bool verify_loads)
      : node_(std::move(node)),
        handler_(node_.get()),
        staging_(std::move(staging)),
        verify_loads_(verify_loads) {}
  std::unique_ptr<Node> node_;
  RequestHandler handler_;
  StagingMapping staging_;
  const bool verify_loads_;
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace strata
