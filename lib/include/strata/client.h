// The engine-facing C++ API of Strata (docs/client-api.md).
//
// A Client talks to a `strata serve` daemon over its Unix domain socket (Client::Connect) or runs
// the same cache in-process (Client::Embedded): the two share every line of request logic. KV bytes
// never cross the socket (docs/data-plane.md): Store encodes each block with the namespace's codec
// into the client's own staging memory and the daemon copies it into its pool, computing the
// checksum itself; Load reads each block from a read-only mapping of the pool (verifying it
// against that checksum where the daemon's verify_loads asks for it) and decodes it into the
// caller's buffer. The paged forms gather from and scatter into an engine's
// paged KV cache on the way, in per-KV-head shards, so that any tensor-parallel degree can load
// what another stored.
//
// Thread-safety: a Client may be used from many threads at once. Asynchronous calls run on the
// client's worker threads; the buffers passed to them must stay valid until Wait() returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "strata/block_key.h"
#include "strata/engine_keys.h"
#include "strata/namespace.h"
#include "strata/result.h"
#include "strata/status.h"
#include "strata/tier.h"

namespace strata {

struct LookupResult {
  size_t matched_blocks = 0;   // leading blocks cached somewhere
  size_t matched_tokens = 0;   // matched_blocks x block size (token lookups only)
  std::vector<BlockKey> keys;  // every full block's key (token lookups only)
  std::vector<Tier> tiers;     // tier of each matched block
};


struct ConstBuffer {
  const void* data = nullptr;
  size_t size = 0;
};
struct MutableBuffer {
  void* data = nullptr;
  size_t size = 0;
};

// The result of an asynchronous call. Wait() blocks until it is done and may be called once.
// A call made for its waiter to run (`run_here`: claims the call's work, or does nothing when a
// worker has claimed it) starts when it is first asked for: Wait() runs it in the waiting thread,
// so a call waited for at once costs no thread hand-off and wakes no other thread; Ready(), or
// dropping the Completion before Wait(), hands it to a worker thread (`start_elsewhere`), so a
// call that is polled, or left to finish on its own, still completes. Such calls are Load,
// LoadPaged of host pages, Prefetch and a Store of one round; every other call starts on a worker
// at once. A client that is closed first runs its calls nobody started.
// Thread-safety: one Completion is used by one thread at a time.
template <typename T>
class Completion {
 public:
  Completion() = default;
  explicit Completion(std::future<Result<T>> f, std::function<void()> run_here = nullptr,
                      std::function<void()> start_elsewhere = nullptr)
      : future_(std::move(f)),
        run_here_(std::move(run_here)),
        start_elsewhere_(std::move(start_elsewhere)) {}
  Completion(Completion&& other) noexcept
      : future_(std::move(other.future_)),
        run_here_(std::exchange(other.run_here_, nullptr)),
        start_elsewhere_(std::exchange(other.start_elsewhere_, nullptr)) {}
  Completion& operator=(Completion&& other) noexcept {
    if (this != &other) {
      StartElsewhere();  // the call this one held still runs
      future_ = std::move(other.future_);
      run_here_ = std::exchange(other.run_here_, nullptr);
      start_elsewhere_ = std::exchange(other.start_elsewhere_, nullptr);
    }
    return *this;
  }
  ~Completion() { StartElsewhere(); }
  bool Ready() const {
    StartElsewhere();
    return future_.valid() &&
           future_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }
  Result<T> Wait() {
    if (!future_.valid()) return Status::InvalidArgument("Completion already waited for");
    start_elsewhere_ = nullptr;
    if (run_here_) std::exchange(run_here_, nullptr)();
    return future_.get();
  }

 private:
  void StartElsewhere() const {
    if (start_elsewhere_) std::exchange(start_elsewhere_, nullptr)();
  }
  std::future<Result<T>> future_;
  std::function<void()> run_here_;
  mutable std::function<void()> start_elsewhere_;  // null once started or waited for
};

// How an engine lays out its paged KV cache, per layer (kernels/include/strata_kernels/kv_layout.h
// draws them). Values are part of the C ABI: never reuse.
enum class KvLayout : uint8_t {
  kVllmFlashAttn = 1,  // [2, num_blocks, block_size, kv_heads, head_dim]  (vLLM flash-attn)
  kFlashInfer = 2,     // [num_blocks, 2, block_size, kv_heads, head_dim]  (FlashInfer NHD)
  kMla = 3,            // [num_blocks, block_size, latent_dim]             (MLA)
};
std::string_view KvLayoutName(KvLayout layout);
// "vllm", "flashinfer", "mla". InvalidArgument otherwise.
Result<KvLayout> ParseKvLayout(std::string_view name);

// An engine's paged KV cache, registered once (RegisterKvCache).
struct KvCacheSpec {
  KvLayout layout = KvLayout::kVllmFlashAttn;
  // One base pointer per layer (the namespace's num_layers of them), each holding num_blocks pages
  // in `layout` with this rank's KV heads, in the namespace's dtype. Must stay valid until the
  // cache is unregistered.
  std::vector<void*> layers;
  uint32_t num_blocks = 0;  // pages per layer. REQUIRES: > 0
  // Where the pages are: -1 for host memory, else the CUDA device ordinal. Default: -1.
  int device = -1;
  // Tensor-parallel position: this rank holds KV heads [tp_rank * H / tp_size, (tp_rank + 1) *
  // H / tp_size) of the namespace's H = num_kv_heads (REQUIRES: tp_size divides H). MLA: every
  // rank holds the one latent. Defaults: 0 of 1.
  uint32_t tp_rank = 0;
  uint32_t tp_size = 1;
};

using KvCacheId = uint32_t;

// How far a registered host cache is in transparent huge pages, as the client counts it
// (ClientOptions::kv_huge_pages; docs/data-plane.md, "Engine KV in huge pages").
struct KvCacheHugePages {
  uint64_t cache_bytes = 0;      // the cache's pages: layers x bytes per layer
  uint64_t advised_bytes = 0;    // the 2 MiB-aligned part that took MADV_HUGEPAGE
  uint64_t collapsed_bytes = 0;  // of that, put into huge pages by MADV_COLLAPSE so far
  // kCollapse: part of the cache is still to be collapsed (queued, or a piece in flight).
  bool collapsing = false;
  // At least three quarters of the cache collapsed: from here StorePaged (codec none, kAuto)
  // lets the daemon read the pages itself (cross-memory) instead of gathering into staging.
  bool in_huge_pages = false;
};

// A paged store whose layers arrive one at a time (the engine saves layer i as soon as its forward
// pass has written it). REQUIRES: StoreLayer for every layer, then Finish; the pages of a layer may
// be overwritten once its StoreLayer returned.
class LayerwiseStore {
 public:
  virtual ~LayerwiseStore() = default;
  // Gathers layer `layer` of every block into staging memory.
  virtual Status StoreLayer(uint32_t layer) = 0;
  // Encodes and commits the blocks; completes with how many blocks were newly stored.
  virtual Completion<size_t> Finish() = 0;
};

// A paged load whose layers complete one at a time, in order, so that attention on layer i can
// start while later layers are still being written into the engine's pages.
class LayerwiseLoad {
 public:
  virtual ~LayerwiseLoad() = default;
  // Blocks until layer `layer` of the loaded prefix is in the engine's pages; returns how many
  // leading blocks were loaded (the same for every layer: the prefix is fixed before layer 0).
  virtual Result<size_t> WaitLayer(uint32_t layer) = 0;
};

// Options of a store (Store, StorePaged, StorePagedLayerwise).
struct StoreOptions {
  // What the engine publishes for each block in its own KV events (ComputeEngineBlocks, or the
  // hashes the engine computed itself): empty, or one per key, for a namespace with an engine
  // key scheme. The daemon keeps it with the block (across tiers and restarts) so that its KV
  // events name the block as the engine's do (docs/kv-events.md, "Engine hashes"); a paged
  // store's blocks are published once each, by their head-0 shard. Copied by the call.
  // Default: none (the events name the Strata keys).
  std::span<const EngineBlock> engine_blocks;
};

// Options of an embedded (in-process) cache. Defaults as for `strata serve`.
struct EmbeddedOptions {
  uint64_t host_pool_bytes = 256ull << 20;  // Default: 256 MiB.
  std::string data_dir;                     // disk tier directory; empty: none. Default: "".
  uint64_t disk_bytes = 0;                  // Default: 0 = 80% of free space.
  // Any policy `strata serve --eviction-policy` takes ("learned", "prefix", "lru", "arc", ...);
  // empty: the node's default (NodeOptions::eviction_policy, "learned"). Default: "".
  std::string eviction_policy;
  // Loads hash every block they copy out of the pool against its checksum, as `strata serve
  // --verify-loads` has its clients do; STRATA_VERIFY_LOADS (true/false, on/off, 1/0)
  // overrides it. Default: false (the node verified each block before publishing it).
  bool verify_loads = false;
};

struct ClientOptions {
  int worker_threads = 2;       // threads running asynchronous calls. Default: 2.
  // Threads that help a large load verify and scatter its blocks (besides the calling worker;
  // 0: none). Default: -1, one per further core, at most 3.
  int copy_threads = -1;
  int request_timeout_ms = 30000;  // a daemon that does not answer in time fails the call.
  // Bytes of the client's staging memory (a memfd shared with the daemon; pages are allocated as
  // they are first written). Stores larger than it go in several rounds; a layerwise store must
  // fit whole. Default: 256 MiB.
  uint64_t staging_bytes = uint64_t{256} << 20;
  // Users trusted to run the daemon besides this process's own and root: a socket (and its
  // directory) owned by anyone else is refused before any byte is sent (it could be a socket
  // another user planted to capture KV). STRATA_DAEMON_USER (comma-separated names or uids) adds
  // to these, e.g. `strata` for the systemd service. Default: none.
  std::vector<uint32_t> trusted_daemon_uids;
  // How stores of codec none reach the daemon (docs/data-plane.md, "Cross-memory store"):
  // kAuto: a store larger than one staging round (4 MiB) is read by the daemon out of the
  // engine's buffers itself (process_vm_readv, no staging copy) when the kernel lets it, a smaller
  // one goes through staging (faster: no page pinning), and everything goes through staging when
  // the kernel refuses; kStaging: always through staging; kCrossMemory: cross-memory, one-round
  // stores too, and Connect fails (PermissionDenied) when the daemon cannot read this process.
  // STRATA_STORE_PATH (auto, staging, cross_memory) overrides it. Default: kAuto.
  enum class StorePath { kAuto, kStaging, kCrossMemory };
  StorePath store_path = StorePath::kAuto;
  // Transparent huge pages for the host KV caches given to RegisterKvCache (docs/data-plane.md,
  // "Engine KV in huge pages"); only their 2 MiB-aligned part, and a refusal by the kernel never
  // fails the registration. kOff: left as the engine allocated them. kAdvise:
  // madvise(MADV_HUGEPAGE), so pages faulted in later are huge. kCollapse: also
  // madvise(MADV_COLLAPSE) the pages already there (an engine zeroes its cache before it
  // registers it), on a background thread of the client (about 3 s per GiB measured on the
  // development VM): RegisterKvCache returns at once, StorePaged goes cross-memory (with kAuto)
  // once the cache is mostly collapsed, UnregisterKvCache and the client's destruction stop the
  // collapse after the piece in flight (32 MiB). STRATA_KV_HUGE_PAGES (off, advise, collapse)
  // overrides it. Default: kAdvise.
  enum class KvHugePages { kOff, kAdvise, kCollapse };
  KvHugePages kv_huge_pages = KvHugePages::kAdvise;
  // Whether RegisterKvCache shares a host KV cache with the daemon (docs/data-plane.md, "Engine
  // KV through the daemon's own mapping"). kMemfd: the cache's pages move onto a sealed memfd,
  // mapped shared at the same addresses (copied once; the engine must not write the cache during
  // RegisterKvCache), which the daemon maps read-only; StorePaged of codec none (store_path
  // kAuto or kCrossMemory) then has the daemon gather the rows straight from its mapping (no
  // process_vm_readv, and no ptrace permission needed). The moved pages are shmem pages, not
  // copied into a forked child (MADV_DONTFORK), and not collapsed (kv_huge_pages kCollapse
  // applies to unshared caches). A cache that is not plain private anonymous memory (pinned,
  // locked, a file or device mapping) is not moved. kOff: the cache stays private memory.
  // STRATA_KV_SHARE (off, memfd) overrides it. Default: kOff.
  enum class KvShare { kOff, kMemfd };
  KvShare kv_share = KvShare::kOff;
  // When the daemon's host pool is mapped into this process, read-only, for loads, and when this
  // process's page table for it is filled (docs/data-plane.md, "The pool mapped at connect").
  // kFirstLoad: each slab at the first load that reads from it, its page-table entries filled by
  // the faults of the loads' copies (16 pages per fault with 4 KiB pool pages: about half of a
  // 2 MiB load's time the first time its pages are read). kConnect: Connect maps every slab this
  // client may read and fills its page table (MAP_POPULATE) on the connecting thread, once, so
  // that loads never fault; it costs Connect about 0.1-0.2 s per GiB of pool, and a pool the
  // daemon is still populating is allocated by this client's fill. kBackground: Connect maps every
  // slab without filling (milliseconds), and a thread of this client (SCHED_IDLE) then fills the
  // page table of the pages the daemon already has, low slabs first; loads fault only on pages it
  // has not reached yet. kConnect and kBackground cost this process about 2 MiB of page tables per
  // GiB of pool (4 KiB pages; 2 MiB pages: a 512th of that). A slab renewed for another tenant
  // later is mapped again at its first load, as with kFirstLoad. kAuto: kConnect for a pool of at
  // most 1 GiB, else kBackground. STRATA_MAP_POOL (auto, connect, background, first_load)
  // overrides it. Default: kAuto.
  enum class MapPool { kAuto, kConnect, kFirstLoad, kBackground };
  MapPool map_pool = MapPool::kAuto;
};

class Client {
 public:
  // Connects to the daemon at `socket_path` (empty: the daemon's default path).
  static Result<std::unique_ptr<Client>> Connect(const std::string& socket_path = "",
                                                 const ClientOptions& options = {});
  // Runs the cache in this process, without a daemon.
  static Result<std::unique_ptr<Client>> Embedded(const EmbeddedOptions& options = {},
                                                  const ClientOptions& client_options = {});
  virtual ~Client() = default;

  // The longest cached prefix of `keys` and where each block is.
  virtual Result<LookupResult> Lookup(std::span<const BlockKey> keys) = 0;
  // Keys `tokens` in `ns` (full blocks only), then looks them up.
  virtual Result<LookupResult> Lookup(const Namespace& ns, std::span<const uint32_t> tokens) = 0;

  // Starts bringing disk blocks of `keys` into host memory; completes with how many were queued.
  virtual Completion<uint32_t> Prefetch(std::span<const BlockKey> keys) = 0;

  // Stores buffers[i], one uncompressed block of `ns` (ns.block_bytes() bytes, in the Strata block
  // layout of docs/kernels.md), as keys[i], encoded with the namespace's codec. Keys already
  // cached are skipped. Completes with the number of blocks newly stored. InvalidArgument for a
  // buffer of another size.
  // REQUIRES: keys.size() == buffers.size(); the buffers stay valid until Wait() returns.
  // InvalidArgument when options.engine_blocks is neither empty nor one per key.
  virtual Completion<size_t> Store(const Namespace& ns, std::span<const BlockKey> keys,
                                   std::span<const ConstBuffer> buffers,
                                   const StoreOptions& options) = 0;
  Completion<size_t> Store(const Namespace& ns, std::span<const BlockKey> keys,
                           std::span<const ConstBuffer> buffers) {
    return Store(ns, keys, buffers, StoreOptions{});
  }

  // Loads the longest cached prefix of `keys` (keys of `ns`) into `buffers`, decoding with the
  // namespace's codec (and, with the daemon's verify_loads, verifying every checksum); completes
  // with the number of leading blocks loaded, each ns.block_bytes() long (a block that fails
  // decoding or verification ends the prefix).
  // InvalidArgument when a buffer is smaller than ns.block_bytes().
  // REQUIRES: keys.size() == buffers.size(); the buffers stay valid until Wait() returns.
  virtual Completion<size_t> Load(const Namespace& ns, std::span<const BlockKey> keys,
                                  std::span<const MutableBuffer> buffers) = 0;

  // --- Paged KV: the engine data plane ---
  // Registers an engine's paged KV cache for namespace `ns`. InvalidArgument for a spec that does
  // not match the namespace (layers, heads, layout); NotSupported for device memory in a build or
  // on a machine without CUDA.
  virtual Result<KvCacheId> RegisterKvCache(const Namespace& ns, const KvCacheSpec& spec) = 0;
  virtual Status UnregisterKvCache(KvCacheId cache) = 0;
  // Where the cache's pages stand with huge pages: what was advised and what the client's
  // collapser has put into huge pages so far (nothing collapsed unless kCollapse; all zero for a
  // device cache). NotFound for a cache that is not registered.
  virtual Result<KvCacheHugePages> HugePagesOf(KvCacheId cache) = 0;
  // How many leading blocks of `keys` this rank can load now (every one of its head shards
  // cached).
  virtual Result<size_t> LookupPaged(KvCacheId cache, std::span<const BlockKey> keys) = 0;
  // Stores the pages block_ids[i] (all layers, K and V) as block keys[i]: gathered into staging,
  // encoded with the namespace's codec, checksummed and published by the daemon. Completes with
  // the number of head shards newly stored.
  virtual Completion<size_t> StorePaged(KvCacheId cache, std::span<const BlockKey> keys,
                                        std::span<const int32_t> block_ids,
                                        const StoreOptions& options) = 0;
  Completion<size_t> StorePaged(KvCacheId cache, std::span<const BlockKey> keys,
                                std::span<const int32_t> block_ids) {
    return StorePaged(cache, keys, block_ids, StoreOptions{});
  }
  // Loads the longest loadable prefix of `keys` into pages block_ids[0..n): decoded (verified
  // with verify_loads), scattered. Completes with n. Pages past n are left as they were (the engine recomputes them).
  virtual Completion<size_t> LoadPaged(KvCacheId cache, std::span<const BlockKey> keys,
                                       std::span<const int32_t> block_ids) = 0;
  // The layer-by-layer forms. The spans are copied; the pages must stay valid until Finish()'s
  // completion / the last WaitLayer.
  virtual Result<std::unique_ptr<LayerwiseStore>> StorePagedLayerwise(
      KvCacheId cache, std::span<const BlockKey> keys, std::span<const int32_t> block_ids,
      const StoreOptions& options) = 0;
  Result<std::unique_ptr<LayerwiseStore>> StorePagedLayerwise(
      KvCacheId cache, std::span<const BlockKey> keys, std::span<const int32_t> block_ids) {
    return StorePagedLayerwise(cache, keys, block_ids, StoreOptions{});
  }
  virtual Result<std::unique_ptr<LayerwiseLoad>> LoadPagedLayerwise(
      KvCacheId cache, std::span<const BlockKey> keys, std::span<const int32_t> block_ids) = 0;

  // Pins the longest cached prefix in host memory (for pin_ms; 0: the daemon default) so that a
  // later Load finds it there; returns how many leading blocks were pinned.
  virtual Result<size_t> Pin(const Namespace& ns, std::span<const BlockKey> keys,
                             uint32_t pin_ms = 0) = 0;
  virtual Status Unpin(std::span<const BlockKey> keys) = 0;

  // Daemon and tier statistics as a JSON object.
  virtual Result<std::string> Stats() = 0;
  // Erases every unpinned block of `ns` (every namespace when nullopt); returns how many.
  virtual Result<uint64_t> Clear(std::optional<NamespaceId> ns) = 0;

  // The engine's prefill rate for `ns`: the tokens a second it computes when it recomputes a
  // prefix instead of loading it (measured by the engine, e.g. prompt tokens over prefill time).
  // Sent with this client's later loads of `ns` (Load, LoadPaged, Pin), so that
  // `strata inspect funnel` tells which loads were faster than recomputing. InvalidArgument
  // unless positive and finite.
  virtual Status SetRecomputeRate(const Namespace& ns, double tokens_per_second) = 0;
};

}  // namespace strata
