// LocalNode: the Node over the local tier hierarchy (store::TieredStore).
#include "node/node.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <condition_variable>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "client/copy_threads.h"
#include "core/cross_memory.h"
#include "node/block_activity.h"
#include "node/cluster.h"
#include "node/doctor.h"
#include "node/funnel_log.h"
#include "node/tenant_map.h"
#include "node/live_view.h"
#include "node/namespace_registry.h"
#include "node/removal_log.h"
#include "strata/block_format.h"
#include "strata/key_chain.h"
#include "store/tiered_store.h"
#ifdef STRATA_WITH_DEVICE_TIER
#include "store/device_tier.h"
#endif
#include "strata_kernels/codec.h"
#include "events/node_events.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t DefaultHostPoolBytes() {
  const long pages = ::sysconf(_SC_AVPHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  uint64_t avail = (pages > 0 && page > 0) ? uint64_t(pages) * uint64_t(page) : (4ull << 30);
  uint64_t bytes = std::min<uint64_t>(avail / 4, 64ull << 30);
  return std::max<uint64_t>(bytes, 64ull << 20);
}

uint64_t DefaultDiskBytes(const std::string& dir) {
  struct statvfs vfs;
  if (::statvfs(dir.c_str(), &vfs) != 0) return 64ull << 30;
  return uint64_t(vfs.f_bavail) * vfs.f_frsize / 10 * 8;
}

nlohmann::json TierJson(const store::TierStats& s) {
  return {{"blocks", s.blocks},         {"payload_bytes", s.payload_bytes},
          {"capacity_bytes", s.capacity_bytes}, {"hits", s.hits},
          {"misses", s.misses},         {"puts", s.puts},
          {"evictions", s.evictions},   {"corrupt_dropped", s.corrupt_dropped},
          {"metadata_bytes", s.metadata_bytes}};
}

// The disk tier adds what compression does: payload_bytes is what its blocks take on disk.
nlohmann::json DiskTierJson(const store::TierStats& s) {
  nlohmann::json j = TierJson(s);
  j["raw_payload_bytes"] = s.raw_payload_bytes;
  j["compressed_blocks"] = s.compressed_blocks;
  j["stored_raw"] = s.stored_raw;
  j["decompress_errors"] = s.decompress_errors;
  return j;
}

nlohmann::json CountsJson(const store::NamespaceCounts& c) {
  return {{"hits", c.hits},
          {"misses", c.misses},
          {"blocks_stored", c.blocks_stored},
          {"bytes_stored", c.bytes_stored},
          {"blocks_served", c.blocks_served},
          {"bytes_served", c.bytes_served}};
}

// Every block a lookup asked about is a hit or a miss: hit_blocks + miss_blocks = blocks.
nlohmann::json LookupsJson(const store::AccessSnapshot& a) {
  return {{"requests", a.lookups},
          {"empty", a.empty_lookups},
          {"blocks", a.lookup_blocks},
          {"hit_blocks", a.hit_blocks},
          {"miss_blocks", a.miss_blocks},
          {"hit_ratio", a.lookup_blocks ? double(a.hit_blocks) / a.lookup_blocks : 0.0}};
}

// Namespace id (hex) -> counts; "other" sums the namespaces past the table's cap, "unattributed"
// the misses of lookups that matched nothing (a lookup does not name its namespace).
nlohmann::json NamespacesJson(const store::AccessSnapshot& a) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [id, c] : a.namespaces) out[id.ToHex()] = CountsJson(c);
  out["other"] = CountsJson(a.other);
  out["unattributed"] = CountsJson(a.unattributed);
  return out;
}

// The least bytes of a Store's copies given to one copy thread: a wake-up costs tens of
// microseconds, which a copy of 1 MiB (~0.1-0.3 ms) repays.
constexpr uint64_t kParallelStoreMin = uint64_t{1} << 20;

class LocalNode final : public Node {
 public:
  // `cluster_ref` is what the store's tier-change hook reads; it is pointed at `cluster` here and
  // cleared before the cluster is destroyed.
  LocalNode(std::unique_ptr<store::TieredStore> store, const NodeOptions& options,
            std::unique_ptr<Cluster> cluster,
            std::shared_ptr<std::atomic<Cluster*>> cluster_ref,
            std::shared_ptr<RemovalLog> removals)
      : store_(std::move(store)),
        options_(options),
        cluster_(std::move(cluster)),
        cluster_ref_(std::move(cluster_ref)),
        removals_(std::move(removals)),
        registry_(options.data_dir.empty() ? std::string()
                                           : options.data_dir + "/namespaces.json"),
        reaper_([this] { ReapLoop(); }) {
    cluster_ref_->store(cluster_.get());
  }

  ~LocalNode() override {
    cluster_ref_->store(nullptr);
    cluster_.reset();  // stops serving peers and leaves membership before the store goes
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    reaper_.join();
    std::unordered_map<OwnerId, OwnerState> owners;
    {
      std::lock_guard<std::mutex> lock(mu_);
      owners.swap(owners_);
    }
  }

  uint64_t pool_bytes() const override { return store_->host().size(); }
  std::byte* pool_base() const override { return store_->host().base(); }
  uint64_t pool_slab_bytes() const override { return store_->host().slab_bytes(); }
  Result<PoolSlab> OpenPoolSlab(uint32_t slab) const override {
    STRATA_ASSIGN_OR_RETURN(auto d, store_->host().DupSlab(slab));
    return PoolSlab{d.fd, d.generation, d.tenant};
  }
  Result<LoadIndexSegment> OpenLoadIndex(uint16_t tenant) const override {
    STRATA_ASSIGN_OR_RETURN(auto seg, store_->host().load_index().DupSegment(tenant));
    return LoadIndexSegment{seg.fd, seg.bytes};
  }
  size_t NoteAccess(const ipc::AccessNotice& notice) override {
    const std::span<const BlockKey> keys(notice.keys);
    const size_t touched = store_->host().Touch(keys);
    notices_.fetch_add(1, std::memory_order_relaxed);
    noticed_blocks_.fetch_add(touched, std::memory_order_relaxed);
    activity_.Accessed(keys);
    // The loads: what PinForLoad records of a Load request (the funnel's event, the blocks
    // served from the host tier), here with the client's time, which is the whole load.
    const size_t n = notice.load_blocks.size();
    bool valid = n == notice.load_seconds.size() && n <= ipc::kMaxKeysPerRequest &&
                 std::isfinite(notice.recompute_tokens_per_second) &&
                 notice.recompute_tokens_per_second >= 0;
    uint64_t blocks = 0;
    for (size_t i = 0; valid && i < n; ++i) {
      valid = std::isfinite(notice.load_seconds[i]) && notice.load_seconds[i] >= 0 &&
              notice.load_blocks[i] > 0 && notice.load_blocks[i] <= ipc::kMaxKeysPerRequest;
      blocks += notice.load_blocks[i];
    }
    if (!valid || n == 0) return touched;
    if (notice.recompute_tokens_per_second > 0)
      ReportRecomputeRate(notice.ns, notice.recompute_tokens_per_second);
    index_loads_.fetch_add(n, std::memory_order_relaxed);
    for (size_t i = 0; i < n; ++i)
      funnel_.Load(notice.ns, notice.load_blocks[i], notice.load_blocks[i],
                   notice.load_seconds[i]);
    // Per block, the bytes spread evenly (their sum exact): the notice carries the total.
    for (uint64_t b = 0; b < blocks; ++b)
      store_->access().RecordServed(notice.ns, Tier::kHost,
                                    notice.bytes / blocks + (b < notice.bytes % blocks ? 1 : 0));
    return touched;
  }
  Status SetNamespaceTenant(const NamespaceId& ns, uint16_t tenant) override {
    if (tenant >= options_.tenants)
      return Status::InvalidArgument("tenant " + std::to_string(tenant) + " of " +
                                     std::to_string(options_.tenants));
    return tenants_->Set(ns, tenant);
  }
  uint16_t NamespaceTenant(const NamespaceId& ns) const override {
    return options_.tenants == 1 ? 0 : tenants_->Get(ns);
  }

  std::vector<Tier> Lookup(std::span<const BlockKey> keys,
                           const std::optional<NamespaceId>& ns) override {
    store::LookupResult r = store_->Lookup(keys);
    std::vector<Tier> out(r.where.begin(), r.where.end());
    if (cluster_ && out.size() < keys.size()) {
      const size_t remote = cluster_->RemotePrefix(keys, out.size());
      cluster_->PullOnLookup(keys.subspan(out.size()), remote, ns);
      out.insert(out.end(), remote, ipc::Tier::kRemote);
    }
    const std::optional<NamespaceId> counted = CountLookup(keys, r, out.size(), ns);
    activity_.Hit(keys.first(r.prefix_blocks));
    std::array<uint32_t, 4> found{};
    for (Tier t : out) ++found[store::TierRank(t)];
    funnel_.Lookup(counted, static_cast<uint32_t>(keys.size()), found);
    return out;
  }

  // Whether blocks of `sizes` bytes fit the empty host pool; a block larger than a slab is
  // refused naming the setting that raises the limit (host_slab). `what` prefixes the message
  // (empty: none, where the caller already names the operation).
  Status FitsHostPool(std::span<const uint64_t> sizes, std::string_view what) const {
    Status fits = store_->host().CheckFits(sizes);
    if (fits.ok()) return fits;
    const std::string prefix = what.empty() ? std::string() : std::string(what) + ": ";
    if (fits.code() == StatusCode::kInvalidArgument)
      return Status::InvalidArgument(prefix + std::string(fits.message()) +
                                     "; a larger host_slab holds it (docs/config.md)");
    return what.empty() ? fits : fits.WithContext(what);
  }

  size_t Fetch(std::span<const BlockKey> keys) override {
    const size_t local = store_->Lookup(keys).prefix_blocks;
    if (!cluster_ || local >= keys.size()) return local;
    return cluster_->Fetch(keys, local, NamespaceId{});
  }

  Result<std::vector<uint8_t>> Exists(std::span<const BlockKey> keys,
                                      std::span<const uint64_t> sizes) override {
    std::vector<uint8_t> out(keys.size(), 0);
    std::vector<uint64_t> uncached;
    std::vector<BlockKey> begun;
    for (size_t i = 0; i < keys.size(); ++i) {
      out[i] = Cached(keys[i]) ? 1 : 0;
      if (!out[i] && i < sizes.size()) {
        uncached.push_back(sizes[i]);
        begun.push_back(keys[i]);
      }
    }
    // The store's first step: the client's error already says "Store".
    if (!uncached.empty()) STRATA_RETURN_IF_ERROR(FitsHostPool(uncached, ""));
    activity_.Begun(begun);  // a store's first step: in flight until committed
    return out;
  }

  Result<StoreOutcome> Store(const NamespaceId& ns, Codec codec,
                             std::span<const StagedBlock> blocks) override {
    // Every key must carry ns's tag (docs/keys.md, "Namespace tag"): checked before anything is
    // reserved, so a refused store leaves nothing.
    for (const StagedBlock& b : blocks) {
      if (KeyInNamespace(b.key, ns)) continue;
      std::vector<BlockKey> keys;  // the error path only: CheckKeysInNamespace names the block
      for (const StagedBlock& k : blocks) keys.push_back(k.key);
      return CheckKeysInNamespace(keys, ns, "Store");
    }
    StoreOutcome outcome;
    store::HostTier& host = store_->host();
    // The committed blocks are noted for the inspector once, whichever way this returns.
    struct NoteStored {
      BlockActivity& activity;
      const NamespaceId& ns;
      std::vector<BlockActivity::StoredBlock> blocks;
      ~NoteStored() { activity.Stored(ns, blocks); }
    } note{activity_, ns, {}};
    const uint16_t tenant = NamespaceTenant(ns);  // unknown: Reserve refuses (PermissionDenied)
    // A request the empty pool could not hold is refused before anything is stored (storing it
    // block by block would evict its own first blocks to make room for its last).
    std::vector<uint64_t> sizes;
    sizes.reserve(blocks.size());
    for (const StagedBlock& b : blocks) sizes.push_back(b.size());
    STRATA_RETURN_IF_ERROR(FitsHostPool(sizes, "Store"));
    // 1. Reserve room for every block not cached yet, up to the first refusal.
    struct Reserved {
      const StagedBlock* block;
      store::WriteReservation r;
      Result<uint64_t> checksum = uint64_t{0};
    };
    std::vector<Reserved> reserved;
    reserved.reserve(blocks.size());
    Status refused;
    for (const StagedBlock& b : blocks) {
      if (b.size() == 0) {
        refused = Status::InvalidArgument("Store: block " + b.key.ToHex() + " is empty");
        break;
      }
      if ((b.client_memory || b.client_gather) && codec != Codec::kNone) {
        refused = Status::InvalidArgument("Store: a cross-memory commit must be of codec none");
        break;
      }
      if (!b.client_memory && !b.client_gather) {
        if (Status framing = CheckPayloadFraming(codec, b); !framing.ok()) {
          refused = framing;
          break;
        }
      }
      if (Cached(b.key)) {
        ++outcome.existed;
        continue;
      }
      auto r = host.Reserve(b.key, b.size(), tenant);
      if (!r.ok()) {
        if (r.status().code() == StatusCode::kAlreadyExists) {
          ++outcome.existed;
          continue;
        }
        refused = r.status().WithContext("Store");
        break;
      }
      reserved.push_back({&b, *r});
    }
    // 2. The copies: the one copy of the store path on the daemon's side, split by blocks over
    // this thread and the copy threads. Each checksum is of the bytes written into the pool, so
    // a client that rewrites its staging memory or its own buffer meanwhile changes nothing
    // published but what was hashed with it.
    // Units of work: one block, or the shards of one block gathered together (they read the
    // same engine chunks once).
    std::byte* const pool = host.payload_base();
    std::vector<size_t> units;  // first reserved index of each unit
    for (size_t i = 0; i < reserved.size(); ++i) {
      const auto& g = reserved[i].block->client_gather;
      const auto& prev = i > 0 ? reserved[i - 1].block->client_gather : std::nullopt;
      if (i == 0 || !g || !prev || g->chunks.data() != prev->chunks.data()) units.push_back(i);
    }
    units.push_back(reserved.size());
    uint64_t bytes = 0;
    for (const Reserved& x : reserved) bytes += x.r.length;
    const size_t n_units = units.size() - 1;
    // Through staging the client is gathering its next round meanwhile: one thread here, so the
    // two do not take each other's cores (measured: split copies made paged stores slower on 2
    // cores). Cross-memory, the client waits idle: split by units.
    const bool client_idle = !reserved.empty() && (reserved[0].block->client_memory ||
                                                   reserved[0].block->client_gather);
    const uint64_t per_range =
        client_idle ? std::max<uint64_t>(1, kParallelStoreMin /
                                                std::max<uint64_t>(1, bytes / std::max<size_t>(
                                                                              1, n_units)))
                    : std::max<size_t>(1, n_units);
    copy_threads_.ParallelFor(n_units, per_range, [&](size_t begin, size_t end) {
      std::vector<ShardOut> shards;
      for (size_t u = begin; u < end; ++u) {
        Reserved& first = reserved[units[u]];
        if (const auto& g = first.block->client_gather) {
          shards.clear();
          for (size_t i = units[u]; i < units[u + 1]; ++i)
            shards.push_back({reserved[i].block->client_gather->head, pool + reserved[i].r.offset});
          const ChunkShape shape{g->rows, g->heads, g->row_bytes};
          const Status st = g->mapped ? GatherFromMapping(g->chunks, shape, shards)
                                      : GatherFromProcess({g->pid, g->pidfd}, g->chunks, shape,
                                                          shards);
          for (size_t i = units[u]; i < units[u + 1]; ++i) {
            if (st.ok()) reserved[i].checksum = shards[i - units[u]].checksum;
            else reserved[i].checksum = st;
          }
          continue;
        }
        std::byte* dst = pool + first.r.offset;
        if (const auto& cm = first.block->client_memory)
          first.checksum =
              CopyFromProcessWithChecksum({cm->pid, cm->pidfd}, cm->address, cm->length, dst);
        else
          first.checksum =
              CopyWithChecksum(dst, first.block->payload.data(), first.block->payload.size());
      }
    });
    // 3. A client payload that could not be read fails the whole call: nothing of it is
    // published (the client named memory it does not have, or unmapped it mid-call).
    for (const Reserved& x : reserved) {
      if (x.checksum.ok()) continue;
      for (const Reserved& y : reserved) host.Abort(y.r);
      return x.checksum.status().WithContext("Store");
    }
    // 4. Headers, written by the node, and publication in the request's order.
    for (size_t i = 0; i < reserved.size(); ++i) {
      const Reserved& x = reserved[i];
      BlockHeader header;
      header.codec = codec;
      header.payload_length = x.r.length;
      header.key = x.block->key;
      header.ns = ns;
      header.payload_checksum = *x.checksum;
      store::PutOptions put;
      if (x.block->parent) put.parent = &*x.block->parent;
      put.tag = x.block->tag;
      Status st = store_->CommitReserved(x.r, header, put, /*verify=*/false);
      if (!st.ok()) {
        for (size_t j = i + 1; j < reserved.size(); ++j) host.Abort(reserved[j].r);
        return Partial(outcome, st);
      }
      ++outcome.committed;
      note.blocks.push_back({x.block->key, x.block->parent});
      StorePathCounters& path = store_paths_[static_cast<size_t>(PathOf(*x.block))];
      path.blocks.fetch_add(1, std::memory_order_relaxed);
      path.bytes.fetch_add(x.r.length, std::memory_order_relaxed);
    }
    if (!refused.ok()) return Partial(outcome, refused);
    return outcome;
  }

  Result<std::vector<ipc::Location>> PinForLoad(OwnerId owner, const NamespaceId& ns,
                                                std::span<const BlockKey> keys,
                                                uint32_t pin_ms) override {
    const Clock::time_point began = Clock::now();
    load_requests_.fetch_add(1, std::memory_order_relaxed);
    // Pull the part of the prefix that only peers hold first (blocks from `local_before` on came
    // from peers).
    size_t local_before = keys.size();
    if (cluster_) {
      // The pull names the caller's namespace: holders serve a private tenant's blocks only so.
      local_before = store_->Lookup(keys).prefix_blocks;
      cluster_->ReadAhead(keys, ns);  // the next chunk of a streamed Load, on the fetch thread
      if (local_before < keys.size()) (void)cluster_->Fetch(keys, local_before, ns);
    }
    const store::LookupResult present = store_->Lookup(keys);
    // Bring the device- and disk-resident parts of the prefix into host first.
    std::vector<BlockKey> on_device, on_disk;
    for (size_t i = 0; i < present.prefix_blocks; ++i) {
      if (present.where[i] == store::TierKind::kDevice) on_device.push_back(keys[i]);
      if (present.where[i] == store::TierKind::kDisk) on_disk.push_back(keys[i]);
    }
    // What is in host now stays there while the rest is brought in (pinned until the loop below
    // pins it for the client): promotions into a full pool evict, and must not evict the prefix
    // they extend. Each promoted block is held by its ticket the same way. A prefix the empty
    // pool could not hold whole is not held (holding its host tail would leave no room for the
    // blocks before it: the load gets the longest prefix that fits instead).
    // held[i]: the pin of the prefix's i-th block, taken here and handed to the client below.
    std::vector<std::optional<store::PinnedBlock>> held(present.prefix_blocks);
    uint64_t largest_held = 0;  // the others taken as large as the largest held (codecs vary sizes)
    for (size_t i = 0; i < present.prefix_blocks && (!on_device.empty() || !on_disk.empty()); ++i)
      if (present.where[i] == store::TierKind::kHost)
        if (auto b = store_->host().Acquire(keys[i]); b.ok()) {
          largest_held = std::max<uint64_t>(largest_held, b->header().payload_length);
          held[i] = std::move(b).value();
        }
    if (largest_held > 0 &&
        !store_->host().CheckFits(std::vector<uint64_t>(present.prefix_blocks, largest_held)).ok())
      for (std::optional<store::PinnedBlock>& h : held) h.reset();
    if (!on_device.empty()) (void)store_->PromoteFromDevice(on_device);
    std::shared_ptr<store::PrefetchTicket> prefetched;
    if (!on_disk.empty()) {
      prefetched = store_->Prefetch(on_disk, /*hold=*/true);
      prefetched->Wait();
    }

    const auto deadline =
        Clock::now() + std::chrono::milliseconds(pin_ms ? pin_ms : options_.default_pin_ms);
    std::vector<ipc::Location> out;
    std::vector<std::pair<BlockKey, Pin>> pins;
    for (size_t i = 0; i < present.prefix_blocks; ++i) {
      Result<store::PinnedBlock> block =
          held[i] ? Result<store::PinnedBlock>(std::move(*held[i])) : store_->host().Acquire(keys[i]);
      if (!block.ok()) break;  // evicted meanwhile, or on a tier clients cannot map
      if (block->header().ns != ns) break;  // a key of another namespace: not this caller's
      const uint32_t slab = static_cast<uint32_t>(block->offset() / store_->host().slab_bytes());
      out.push_back({block->offset(),
                     block->header().payload_length, block->header().payload_checksum,
                     block->header().codec, store_->host().SlabGeneration(slab)});
      store_->access().RecordServed(
          block->header().ns,
          i < local_before ? present.where[i] : Tier::kRemote,
          block->header().payload_length);
      pins.emplace_back(keys[i], Pin{std::move(block).value(), deadline});
    }
    // What was loaded is what the device tier keeps (copied in the background, in batches).
    if (store_->device() != nullptr && !out.empty())
      store_->CopyToDevice(keys.first(out.size()));
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto& st = owners_[owner];
      for (auto& [k, p] : pins) st.pins.emplace(k, std::move(p));
    }
    activity_.Accessed(keys.first(out.size()));
    funnel_.Load(ns, static_cast<uint32_t>(keys.size()), static_cast<uint32_t>(out.size()),
                 std::chrono::duration<double>(Clock::now() - began).count());
    return out;
  }

  void Unpin(OwnerId owner, std::span<const BlockKey> keys) override {
    std::vector<Pin> released;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = owners_.find(owner);
      if (it == owners_.end()) return;
      for (const BlockKey& k : keys) {
        auto p = it->second.pins.find(k);
        if (p == it->second.pins.end()) continue;
        released.push_back(std::move(p->second));
        it->second.pins.erase(p);
      }
    }
    // `released` unpins as it goes out of scope, outside the lock.
  }

  uint32_t Prefetch(std::span<const BlockKey> keys) override {
    const store::LookupResult present = store_->Lookup(keys);
    std::vector<BlockKey> on_device, on_disk;
    for (size_t i = 0; i < present.prefix_blocks; ++i) {
      if (present.where[i] == store::TierKind::kDevice) on_device.push_back(keys[i]);
      if (present.where[i] == store::TierKind::kDisk) on_disk.push_back(keys[i]);
    }
    // Device blocks come back at once (one batch copy); disk blocks on the prefetch threads.
    if (!on_device.empty()) (void)store_->PromoteFromDevice(on_device);
    if (!on_disk.empty()) store_->Prefetch(on_disk);
    size_t queued = on_device.size() + on_disk.size();
    if (cluster_ && present.prefix_blocks < keys.size()) {
      // Remote blocks: fetched in the background by the cluster's fetch thread.
      cluster_->FetchAsync(std::vector<BlockKey>(keys.begin(), keys.end()));
      queued += keys.size() - present.prefix_blocks;
    }
    return static_cast<uint32_t>(queued);
  }

  uint64_t Clear(std::optional<NamespaceId> ns) override {
    std::vector<BlockKey> victims = store_->Keys(ns);
    uint64_t erased = 0;
    const bool every = !ns.has_value();
    for (const BlockKey& k : victims)
      if (store_->Erase(k).ok()) {
        ++erased;
        removals_->Record(k, /*cleared=*/true);
      }
    // A clear of everything that left nothing behind (no pins) is announced as such.
    if (events_ && every && store_->Keys(std::nullopt).empty()) events_->OnAllCleared();
    return erased;
  }

  nlohmann::json StorePathsJson() const {
    static constexpr const char* kNames[] = {"staging", "cross_memory", "cross_memory_gather",
                                             "mapped_gather"};
    static_assert(std::size(kNames) == static_cast<size_t>(StorePath::kCount));
    nlohmann::json j = nlohmann::json::object();
    for (size_t i = 0; i < std::size(kNames); ++i)
      j[kNames[i]] = {{"blocks", store_paths_[i].blocks.load(std::memory_order_relaxed)},
                      {"bytes", store_paths_[i].bytes.load(std::memory_order_relaxed)}};
    return j;
  }

  std::string StatsJson() override {
    store::StoreStats s = store_->Stats();
    size_t sessions = 0, pins = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      sessions = owners_.size();
      for (auto& [id, st] : owners_) pins += st.pins.size();
    }
    const store::AccessSnapshot a = store_->access().Snapshot();
    nlohmann::json j = {{"host", TierJson(s.host)},
                        {"disk", DiskTierJson(s.disk)},
                        {"lookups", LookupsJson(a)},
                        {"namespaces", NamespacesJson(a)},
                        {"promotions", s.promotions},
                        {"prefetched", s.prefetched},
                        {"demotions", s.demotions},
                        {"demotions_rejected", s.demotions_rejected},
                        {"demotion_errors", s.demotion_errors},
                        {"demotions_dropped", s.demotions_dropped},
                        {"demotion_waits", s.demotion_waits},
                        {"demotion_wait_timeouts", s.demotion_wait_timeouts},
                        {"device_copies", s.device_copies},
                        {"device_copy_batches", s.device_copy_batches},
                        {"device_promotions", s.device_promotions},
                        {"device_corrupt", s.device_corrupt},
                        {"owners", sessions},
                        {"pins", pins},
                        {"pool_bytes", pool_bytes()},
                        {"pool_populated_bytes", store_->host().populated_bytes()},
                        {"pool_populating", store_->host().populating()},
                        {"pool_pages", store_->host().page_kind()},
                        {"namespace_fingerprint_mismatches", registry_.mismatches()},
                        {"load_requests", load_requests_.load(std::memory_order_relaxed)},
                        {"store_paths", StorePathsJson()},
                        {"load_index",
                         {{"entries", store_->host().load_index().entries()},
                          {"tenants", store_->host().load_index().tenants()},
                          {"published", store_->host().load_index().published()},
                          {"full", store_->host().load_index().full()},
                          {"notices", notices_.load(std::memory_order_relaxed)},
                          {"noticed_blocks", noticed_blocks_.load(std::memory_order_relaxed)},
                          {"loads", index_loads_.load(std::memory_order_relaxed)}}}};
    if (store_->device() != nullptr) j["device"] = TierJson(s.device);
    // Lookup hits and misses and load service by tier (store/access_stats.h); the tier's own
    // read counters (Get/Acquire) stay as reads / read_misses.
    auto tier = [&](const char* name, Tier src, bool present) {
      nlohmann::json& t = j[name];
      if (t.is_null()) t = nlohmann::json::object();
      if (t.contains("hits")) {
        t["reads"] = t["hits"];
        t["read_misses"] = t["misses"];
      }
      const size_t i = static_cast<size_t>(src);
      t["hits"] = a.hits[i];
      t["misses"] = present ? a.Misses(src) : 0;
      t["served_blocks"] = a.served_blocks[i];
      t["served_bytes"] = a.served_bytes[i];
    };
    if (store_->device() != nullptr) tier("device", Tier::kDevice, true);
    tier("host", Tier::kHost, true);
    tier("disk", Tier::kDisk, store_->disk() != nullptr);
    if (cluster_) tier("remote", Tier::kRemote, true);
    if (cluster_) j["cluster"] = nlohmann::json::parse(cluster_->StatsJson());
    if (events_) j.update(nlohmann::json::parse(events_->StatsJson()));
    return j.dump();
  }

  Result<std::string> Inspect(const ipc::InspectRequest& request, bool admin) override {
    if (request.command == "node") {
      if (!admin)
        return Status::PermissionDenied("inspect node: node-wide views are for admin users");
      NodeFacts facts;
      facts.options = &options_;
      facts.uptime_s = std::chrono::duration<double>(Clock::now() - started_).count();
      facts.fingerprint_mismatches = registry_.mismatches();
      facts.stats_json = StatsJson();
      {
        std::lock_guard<std::mutex> lock(mu_);
        facts.pin_owners = owners_.size();
        for (auto& [id, st] : owners_) facts.pins += st.pins.size();
      }
      return InspectNode(store_.get(), cluster_.get(), facts);
    }
    if (request.command == "peers" || request.command == "funnel" ||
        request.command == "doctor") {
      if (!admin)
        return Status::PermissionDenied("inspect " + request.command +
                                        ": node-wide views are for admin users");
      nlohmann::json out = {{"schema_version", inspect::kSchemaVersion},
                            {"command", request.command},
                            {"source", "live"}};
      if (request.command == "peers") {
        out["clustered"] = cluster_ != nullptr;
        if (cluster_) out.update(nlohmann::json::parse(cluster_->PeersJson()));
        else out["members"] = nlohmann::json::array();
      } else if (request.command == "funnel") {
        FunnelLog::Query q;
        if (request.window_s > 0) q.window_s = request.window_s;
        if (request.deadline_ms > 0) q.deadline_s = request.deadline_ms / 1000.0;
        if (request.recompute_tokens_per_second > 0)
          q.recompute_tokens_per_second = request.recompute_tokens_per_second;
        if (options_.recompute_tokens_per_second > 0)
          q.configured_tokens_per_second = options_.recompute_tokens_per_second;
        q.block_size = [this](const NamespaceId& id) -> std::optional<uint32_t> {
          for (const auto& e : registry_.Entries())
            if (e.id == id) return e.spec.block_size;
          return std::nullopt;
        };
        out.update(nlohmann::json::parse(funnel_.Funnel(q)));
      } else {
        DoctorFacts facts;
        facts.options = &options_;
        facts.host_pool_bytes = store_->host().size();
        if (store_->disk() != nullptr) {
          const store::StoreStats s = store_->Stats();
          facts.disk_capacity_bytes = s.disk.capacity_bytes;
          facts.disk_used_bytes = s.disk.payload_bytes;
        }
        for (const auto& e : registry_.Entries()) facts.namespaces.emplace_back(e.id, e.spec);
        if (cluster_) {
          facts.peers_json = cluster_->PeersJson();
          facts.membership = cluster_->CheckMembership();
        }
        out.update(nlohmann::json::parse(RunDoctor(facts)));
      }
      return out.dump();
    }
    LiveView view(store_.get(), cluster_.get(), &registry_, removals_.get(),
                  [this](const BlockKey& key) { return PinsOf(key); }, &activity_);
    return inspect::Run(view, request, admin);
  }

  bool DescribeNamespace(const NamespaceId& id, const NamespaceSpec& spec) override {
    return registry_.Describe(id, spec);
  }

  void ReportRecomputeRate(const NamespaceId& ns, double tokens_per_second) override {
    funnel_.ReportRate(ns, tokens_per_second);
  }

  void ReleaseOwner(OwnerId owner) override {
    OwnerState st;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = owners_.find(owner);
      if (it == owners_.end()) return;
      st = std::move(it->second);
      owners_.erase(it);
    }
    // st.pins release their blocks as st goes out of scope.
  }

  // Writes every host block that the disk tier lacks to disk (a clean shutdown loses nothing a
  // restart could have served), then makes the disk tier durable.
  Status Flush() override {
    store::DiskTier* disk = store_->disk();
    if (disk == nullptr) return Status::OK();
    Status first_error;
    for (const BlockKey& key : store_->host().Keys(std::nullopt)) {
      if (disk->Find(key).ok()) continue;
      auto block = store_->host().Acquire(key);
      if (!block.ok()) continue;  // evicted meanwhile
      Status st = disk->Put(block->header(), block->payload());
      if (!st.ok() && first_error.ok())
        first_error = st.WithContext("flushing host blocks to disk");
    }
    Status synced = store_->Sync();
    return first_error.ok() ? synced : first_error;
  }

 private:
  struct Pin {
    store::PinnedBlock block;
    Clock::time_point deadline;
  };
  struct OwnerState {
    std::unordered_multimap<BlockKey, Pin, BlockKeyHash> pins;
  };

  // Load pins that clients hold on `key` now.
  uint32_t PinsOf(const BlockKey& key) {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t n = 0;
    for (auto& [id, st] : owners_) n += static_cast<uint32_t>(st.pins.count(key));
    return n;
  }

  // Counts a lookup of `keys` whose first `matched` blocks were found, the local ones where `r`
  // says and the rest at peers (store/access_stats.h). Every key asked is a hit or a miss.
  // Returns the namespace it was counted under (nullopt: unattributed).
  std::optional<NamespaceId> CountLookup(std::span<const BlockKey> keys,
                                         const store::LookupResult& r, size_t matched,
                                         std::optional<NamespaceId> ns) {
    std::vector<Tier> where(r.where.begin(), r.where.end());
    where.resize(matched, Tier::kRemote);
    if (!ns && r.prefix_blocks > 0) ns = store_->NamespaceOf(keys[0]);
    store_->access().RecordLookup(ns, where, keys.size());
    return ns;
  }

  // The codec in a block's header is the codec of its bytes, always: an encoded payload must
  // carry the codec's own header (kernels/codec.h: magic, this codec, a body that fills it). The
  // daemon cannot decode (it does not know the block's shape) but it refuses a mislabel.
  static Status CheckPayloadFraming(Codec codec, const StagedBlock& b) {
    if (codec == Codec::kNone) return Status::OK();
    kernels::PayloadHeader h;
    if (b.payload.size() >= kernels::kPayloadHeaderBytes)
      std::memcpy(&h, b.payload.data(), sizeof(h));
    if (b.payload.size() < kernels::kPayloadHeaderBytes || h.magic != kernels::kPayloadMagic ||
        h.codec != static_cast<uint16_t>(codec) ||
        uint64_t{h.body_bytes} + kernels::kPayloadHeaderBytes != b.payload.size())
      return Status::InvalidArgument("Store: block " + b.key.ToHex() + " is not a " +
                                     std::string(CodecName(codec)) + " payload");
    return Status::OK();
  }

  // True when a local tier holds `key` (no access is recorded).
  bool Cached(const BlockKey& key) {
    if (store_->host().Find(key).ok()) return true;
    if (store_->device() != nullptr && store_->device()->Find(key).ok()) return true;
    return store_->disk() != nullptr && store_->disk()->Find(key).ok();
  }

  // `outcome` when some block was published before `error`, else `error`.
  static Result<StoreOutcome> Partial(const StoreOutcome& outcome, Status error) {
    if (outcome.committed > 0) return outcome;
    return error;
  }

  // Releases pins whose client did not unpin in time (a hung or crashed engine).
  void ReapLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(250));
      const auto now = Clock::now();
      std::vector<Pin> expired;
      for (auto& [id, st] : owners_) {
        for (auto it = st.pins.begin(); it != st.pins.end();) {
          if (it->second.deadline <= now) {
            expired.push_back(std::move(it->second));
            it = st.pins.erase(it);
          } else {
            ++it;
          }
        }
      }
      lock.unlock();
      expired.clear();
      lock.lock();
    }
  }

  std::unique_ptr<store::TieredStore> store_;
  const NodeOptions options_;
  std::unique_ptr<Cluster> cluster_;  // null for a single node
  std::shared_ptr<std::atomic<Cluster*>> cluster_ref_;
  std::shared_ptr<RemovalLog> removals_;  // written by the host tier's removal hook
  NamespaceRegistry registry_;
  BlockActivity activity_;  // per-block age, hits, last access; stores in flight
  // PinForLoad calls (Load requests) and the access notices of loads through the load index.
  std::atomic<uint64_t> load_requests_{0}, notices_{0}, noticed_blocks_{0}, index_loads_{0};
  // Blocks Store published, and their payload bytes, by the way their bytes came (Stats:
  // `store_paths`): which path a client's stores took, e.g. a paged store's switch from staging
  // to cross-memory once its cache is in huge pages (docs/data-plane.md).
  enum class StorePath { kStaging, kCrossMemory, kCrossMemoryGather, kMappedGather, kCount };
  static StorePath PathOf(const StagedBlock& b) {
    return b.client_gather ? (b.client_gather->mapped ? StorePath::kMappedGather
                                                      : StorePath::kCrossMemoryGather)
           : b.client_memory ? StorePath::kCrossMemory
                             : StorePath::kStaging;
  }
  struct StorePathCounters {
    std::atomic<uint64_t> blocks{0}, bytes{0};
  };
  StorePathCounters store_paths_[static_cast<size_t>(StorePath::kCount)];
  FunnelLog funnel_;        // recent lookups and loads per namespace
  const Clock::time_point started_ = Clock::now();
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                                   // GUARDED_BY(mu_)
  std::unordered_map<OwnerId, OwnerState> owners_;      // GUARDED_BY(mu_)
  std::thread reaper_;
  // Splits a cross-memory Store's copies into the pool by blocks (one helper per further core, at
  // most 3): one core hashes and copies at about half a memcpy's speed (docs/benchmarks.md).
  CopyThreads copy_threads_{CopyThreads::DefaultHelpers()};

 public:
  // KV events (events/node_events.h); null when off. Set once by Node::Open.
  std::shared_ptr<events::NodeEvents> events_;
  std::shared_ptr<TenantMap> tenants_;  // shared with the host tier's tenant_of; set by Open
};

// The device tier of `options` (none when device_pool_bytes is 0).
Result<std::unique_ptr<store::BlockPool>> OpenDeviceTier(const NodeOptions& options) {
  if (options.device_pool_bytes == 0) return std::unique_ptr<store::BlockPool>();
  STRATA_RETURN_IF_ERROR(DevicePoolAvailable(options.device));
#ifdef STRATA_WITH_DEVICE_TIER
  store::DeviceTierOptions o;
  o.device = static_cast<int>(options.device);
  o.capacity_bytes = options.device_pool_bytes;
  o.pool.verify_on_put = false;  // filled from host blocks, verified when they were stored
  auto policy = store::ParsePolicyKind(options.eviction_policy);
  if (policy.ok()) o.pool.policy.kind = *policy;
  // Slabs no larger than the pool itself, so that small pools (tests) still open.
  while (o.pool.slab_bytes > (uint64_t{2} << 20) && o.pool.slab_bytes > o.capacity_bytes)
    o.pool.slab_bytes /= 2;
  auto tier = store::DeviceTier::Open(o);
  if (!tier.ok()) return tier.status();
  return std::unique_ptr<store::BlockPool>(std::move(tier).value());
#else
  return Status::Internal("unreachable: DevicePoolAvailable without a device tier");
#endif
}

}  // namespace

Status DevicePoolAvailable(uint32_t device) {
#ifdef STRATA_WITH_DEVICE_TIER
  return store::DeviceTier::CheckDevice(static_cast<int>(device));
#else
  (void)device;
  return Status::NotSupported(
      "this build has no CUDA (configured with STRATA_WITH_CUDA=off, or nvcc was not found): "
      "it cannot hold a device pool");
#endif
}

namespace {

// The data directory holds every tenant's KV bytes: created 0700, and an existing one that
// others could read (made by an earlier version, or by hand) is made 0700, logged. Files in it
// are created 0600 by their writers (PayloadFile, the RocksDB index, the namespace registry).
Status MakeDataDirPrivate(const std::string& dir) {
  auto octal = [](mode_t m) {
    char b[8];
    std::snprintf(b, sizeof b, "0%o", static_cast<unsigned>(m & 0777));
    return std::string(b);
  };
  std::error_code ec;
  const bool existed = std::filesystem::exists(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create data_dir '" + dir + "': " + ec.message());
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    return Status::IOError("data_dir '" + dir + "': " + std::strerror(errno));
  if ((st.st_mode & 077) == 0) return Status::OK();
  if (::chmod(dir.c_str(), st.st_mode & 0700) != 0)
    return Status::PermissionDenied("data_dir '" + dir + "' is open to other users (mode " +
                                    octal(st.st_mode) + ") and cannot be made 0700: " +
                                    std::strerror(errno));
  if (existed)
    std::cerr << "strata: data_dir '" << dir << "' was mode " << octal(st.st_mode)
              << ", made 0700 (it holds every tenant's KV)" << std::endl;
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<Node>> Node::Open(const NodeOptions& options) {
  store::TieredStoreOptions so;
  so.host.capacity_bytes =
      options.host_pool_bytes ? options.host_pool_bytes : DefaultHostPoolBytes();
  if (options.host_slab_bytes != 0) so.host.pool.slab_bytes = options.host_slab_bytes;
  auto policy = store::ParsePolicyKind(options.eviction_policy);
  if (!policy.ok()) return policy.status().WithContext("eviction_policy");
  so.host.pool.policy.kind = *policy;
  so.write_policy =
      options.write_through ? store::WritePolicy::kWriteThrough : store::WritePolicy::kWriteBack;
  so.disk_admission_min_frequency = options.disk_admission_min_frequency;
  if (!options.data_dir.empty()) {
    STRATA_RETURN_IF_ERROR(MakeDataDirPrivate(options.data_dir));
    store::DiskTierOptions disk;
    disk.path = options.data_dir;
    disk.capacity_bytes =
        options.disk_bytes ? options.disk_bytes : DefaultDiskBytes(options.data_dir);
    disk.policy.kind = store::DiskPolicyFor(*policy);  // eviction_policy.h: why
    auto compression = store::ParseDiskCompression(options.disk_compression);
    if (!compression.ok()) return compression.status().WithContext("disk_compression");
    disk.compression = *compression;
    disk.direct_io = options.disk_direct_io;
    so.disk = disk;
  }
  // Every block that leaves the host tier is noted for the inspector ("evicted at T"), and again
  // when it leaves the disk tier (below).
  auto cluster_ref = std::make_shared<std::atomic<Cluster*>>(nullptr);
  auto removals = std::make_shared<RemovalLog>();
  so.on_host_removed = [removals](const BlockKey& key) {
    removals->Record(key, /*cleared=*/false);
  };
  // The tiers' gains and losses go to the cluster directory (blocks in host or disk are
  // announced; a no-op until the cluster is up) and to the KV event publisher
  // (events/node_events.h). A block the disk tier evicts has left the node: noted for the
  // inspector at that time (its host eviction, noted above, was a demotion).
  auto node_events = events::NodeEvents::Open(options.kv_events, options.engine_events);
  if (!node_events.ok()) return node_events.status();
  so.on_tier_change = [cluster_ref, ev = *node_events, removals](
                          Tier tier, const BlockKey& key, bool added, std::string_view tag) {
    if (tier == Tier::kDisk && !added) removals->Record(key, /*cleared=*/false);
    if (Cluster* c = cluster_ref->load(std::memory_order_acquire))
      c->TierChanged(tier, key, added);
    if (ev) ev->OnTierChange(tier, key, added, tag);
  };
  // Tenants: the host tier takes each block into slabs of its namespace's tenant.
  auto tenant_map = std::make_shared<TenantMap>();
  so.host.pool.tenants = options.tenants;
  if (options.tenants > 1) {
    // A slab that changes tenant gets fresh memory; the GPU's registration (below) and UCX's
    // (Cluster) follow each renewal (docs/data-plane.md, "Tenants").
    so.host.pool.tenant_of = [tenant_map](const NamespaceId& ns) { return tenant_map->Get(ns); };
  }
  // The device tier goes first: a missing GPU or a build without CUDA is the error to report.
  Status device_error;
  auto open_store = [&]() -> Result<std::unique_ptr<store::TieredStore>> {
    auto device = OpenDeviceTier(options);
    if (!device.ok()) {
      device_error = device.status().WithContext("device_pool");
      return device_error;
    }
    return store::TieredStore::Open(so, std::move(device).value());
  };
  auto store = open_store();
  if (!store.ok() && device_error.ok() && so.disk && so.disk->direct_io) {
    // Filesystems without O_DIRECT (tmpfs, some overlays) still get a disk tier, buffered.
    so.disk->direct_io = false;
    store = open_store();
  }
  if (!store.ok()) return store.status();
  if (store::BlockPool* device_tier = (*store)->device(); device_tier != nullptr) {
#ifdef STRATA_WITH_DEVICE_TIER
    // Page-lock the host pool, slab by slab, so that batch copies between it and the GPU are
    // DMA; a slab that gets fresh memory for another tenant is registered again before any
    // block is written there (else the GPU would keep copying the old memory's pages).
    auto* gpu = static_cast<store::DeviceTier*>(device_tier);
    store::HostTier& host = (*store)->host();
    STRATA_RETURN_IF_ERROR(gpu->RegisterHostMemory(host.base(), host.size(), host.slab_bytes())
                               .WithContext("device_pool"));
    host.AddSlabRenewedListener([gpu](uint32_t slab, std::byte* base, uint64_t) {
      if (Status st = gpu->ReregisterHostUnit(base); !st.ok())
        std::cerr << "strata: device tier: host slab " << slab
                  << " stays unregistered (copies to and from it are staged): " << st.ToString()
                  << std::endl;
    });
#endif
  }
  if (store::DiskTier* disk = (*store)->disk(); disk != nullptr) {
    const store::DiskTierOpenInfo& info = disk->open_info();
    if (!info.index_recovery.empty())
      std::cerr << "strata: disk tier: " << info.index_recovery << std::endl;
    if (info.old_format_dropped > 0)
      std::cerr << "strata: disk tier: dropped " << info.old_format_dropped
                << " blocks of an older block format (keys without namespace tags; this build "
                   "writes block format "
                << kBlockFormatVersion
                << ", docs/keys.md \"Namespace tag\"); clients store them again under their "
                   "tagged keys"
                << std::endl;
  }
  std::unique_ptr<Cluster> cluster;
  if (!options.cluster.membership.empty()) {
#ifdef STRATA_HAVE_UCX
    auto c = Cluster::Open(options.cluster, store->get());
    if (!c.ok()) return c.status().WithContext("cluster");
    cluster = std::move(c).value();
#else
    return Status::NotSupported("cluster: this build has no UCX transport");
#endif
  }
  std::unique_ptr<LocalNode> node(
      new LocalNode(std::move(store).value(), options, std::move(cluster), cluster_ref,
                    std::move(removals)));
  node->events_ = *std::move(node_events);
  node->tenants_ = std::move(tenant_map);
  return std::unique_ptr<Node>(std::move(node));
}

}  // namespace strata
