// Node: one Strata cache node — the local tier hierarchy (store/) plus, when configured, the
// cluster (transport/). The daemon's request handler and the embedded client both drive a Node;
// engines never see it directly.
//
// KV bytes never cross a socket and the node trusts no byte a client writes (docs/data-plane.md):
// a client writes the payloads it stores into its own staging memory, and Store copies each one
// into the host pool, computing its checksum from the bytes it copied and writing the header
// itself, so what is published is exactly what was hashed and no client can touch it afterwards.
// Loads pin blocks in the host pool and return their locations; the client reads them through a
// read-only mapping and unpins. Every pin belongs to an *owner* (a client session); ReleaseOwner
// drops them when the session ends, and pins also expire, so a crashed client leaks nothing.
//
// Thread-safety: every method may be called from many threads at once.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "events/engine_events.h"
#include "events/kv_event_publisher.h"
#include "ipc/ipc_protocol.h"
#include "strata/block_key.h"
#include "strata/namespace.h"
#include "strata/result.h"

namespace strata {

// Cluster settings (docs/cluster.md, docs/config.md). Clustering is on when `membership` is not
// empty; without it the node is a single node.
struct ClusterOptions {
  // "" (single node), "etcd" or "static". Default: "".
  std::string membership;
  // This node's id in membership. Default: "" = "<hostname>-<pid>".
  std::string node_id;
  // The cluster secret (>= 16 bytes), or a file holding it (trailing newline ignored); the
  // STRATA_CLUSTER_SECRET variable also sets it. REQUIRES (clustered): one of them. Default: "".
  std::string secret;
  std::string secret_file;
  // etcd membership: client URL, key prefix, lease TTL. Defaults: "http://127.0.0.1:2379",
  // "/strata/members/", 10 s.
  std::string etcd_endpoint = "http://127.0.0.1:2379";
  std::string etcd_prefix = "/strata/members/";
  uint32_t etcd_lease_ttl_s = 10;
  // static membership: a directory shared by the nodes (e.g. a volume or NFS), where each node
  // publishes "<node_id>.member" (its id, UCX worker address, host as JSON) at start-up and
  // reads the others'; `static_peers` lists the other node ids. The node starts serving at once
  // and connects to each peer as its file appears. Defaults: "", empty.
  std::string static_dir;
  std::vector<std::string> static_peers;
  // UCX transports (UCX_TLS syntax). Default: "" (UCX_TLS from the environment, else UCX's own).
  std::string ucx_tls;
  // An IP address of this host: UCX's network transports, and so their listening sockets, use
  // only the interface that holds it. "*": every interface. The loopback default suits nodes on
  // one host; a cluster spanning hosts must name each node's cluster-facing address (peers on
  // other hosts cannot reach a loopback-confined node). An address no interface holds makes the
  // node fail to start. Default: "127.0.0.1".
  std::string listen_addr = "127.0.0.1";
  // Longest a peer request (handshake, directory call, pull) may take. Default: 2000 ms.
  uint32_t request_timeout_ms = 2000;
  // Pulls ride endpoints with UCX's peer error handling (true) or without it (false: UCX may use
  // shared memory and cma between nodes on one host, and tcp runs faster; a dead holder is then
  // detected through the session's control endpoint, membership and request_timeout_ms).
  // Default: false.
  bool ucx_peer_errors = false;
  // Largest data message a pull asks its holder for when it coalesces small blocks (blocks of
  // at most half of it travel several per message); 0: one block per message
  // (transport::PeerTransportOptions::pull_coalesce_bytes). Default: 4 MiB (docs/cluster.md,
  // "Small blocks in one contiguous message").
  uint64_t pull_coalesce_bytes = uint64_t{4} << 20;
  // Same-host pulls from the holder's pool mapping (docs/cluster.md): a holder on this host (same
  // boot id, network and pid namespace, uid) whose descriptors this daemon may take
  // (pidfd_getfd, the ptrace access cma needs too) answers a pull with where its blocks lie;
  // this node maps the holder's slabs once per session and copies each block out with one
  // copy-and-checksum pass. Anything else falls back to cma/UCX by itself (logged once per peer,
  // counted in cluster stats `transfer_profile.mapped_fallbacks`). false: neither asks nor
  // offers it (transport::PeerTransportOptions::mapped_pulls). Default: true.
  bool pull_mapped = true;
  // Empty rounds the UCX progress thread spins before it sleeps on its event fd; -1 never sleeps.
  // Default: unset = transport::AutoProgressSpinRounds() (2000 with 4 or more CPUs, else 0).
  std::optional<int> progress_spin_rounds;
  // A Load that comes in chunks (a streamed client Load) has the next chunk of the chain the
  // client looked up pulled on the fetch thread while this one is pulled and copied, so that
  // two pulls per holder are in flight (docs/cluster.md, "Read-ahead" and "Pipelined wire
  // pulls"): a window of two chunks (2 x 64 MiB, or as many blocks as the Load's chunk) per
  // chain. true: always; false: never. Unset (auto): for chunks whose holders send bytes on the
  // wire (tcp, another host or network namespace, mapping off), not when a known holder of the
  // next chunk is a same-host peer whose pool this node maps (not measured faster there).
  // Default: unset (auto).
  std::optional<bool> pull_read_ahead;
  // A client Lookup that finds blocks only peers hold starts pulling the first
  // kPullOnLookupBlocks of them at once on the fetch thread, so that the pull runs while the
  // Lookup's answer travels back and the client's Load comes in; that Load waits for it
  // instead of pulling again (docs/cluster.md, "Pulling on lookup"). A Lookup an engine never
  // follows with a Load leaves those blocks cached. Default: false.
  bool pull_on_lookup = false;
  // How long a holder this node learned of (a directory answer, a block it pulled and verified)
  // answers a client Lookup without the directory: a Lookup whose blocks beyond the local
  // prefix all have a remembered holder that is still a live member skips the directory round
  // trip, and the Load that follows pulls from that holder. A holder that no longer has the
  // block answers NotFound, the pull's second round asks the directory, and the key is
  // forgotten (docs/cluster.md, "Remembered holders"). The same holders tell a Load (a Fetch)
  // where to pull without asking the directory. 0: off, every such Lookup and every Fetch asks
  // the directory. Default: 2000.
  uint32_t holder_memory_ms = 2000;
  // How often announces are flushed to the directory shards. Default: 50 ms.
  uint32_t announce_interval_ms = 50;
  // The daemon's socket, published in membership so that `strata inspect --all` on the same
  // host reaches this node (docs/operations.md, "Inspector"). Default: "" (not published).
  std::string inspect_socket;
  // HOST:PORT of the daemon's inspect endpoint (`strata serve --inspect-addr`), published in
  // membership so that `strata inspect --all` on another host reaches this node over HTTP,
  // authenticated with the cluster secret (docs/operations.md, "Inspector"). Default: "".
  std::string inspect_addr;
};

struct NodeOptions {
  // Bytes of the shared host pool. Default: 0 = a quarter of the machine's available memory,
  // capped at 64 GiB.
  uint64_t host_pool_bytes = 0;
  // Bytes of one host-pool slab: the largest block the host tier holds (store/slab_allocator.h).
  // A multiple of 2 MiB, at most 256 MiB. Default: 0 = 16 MiB.
  uint64_t host_slab_bytes = 0;
  // Directory of the disk tier; empty disables it. Default: "./strata-data".
  std::string data_dir = "./strata-data";
  // Bytes the disk tier may use (stored bytes: compressed ones count as their compressed size).
  // Default: 0 = 80% of the free space at start-up.
  uint64_t disk_bytes = 0;
  // Lossless compression of the disk tier's payloads (store/disk_compression.h): "none", "lz4",
  // "zstd" or "zstd:LEVEL". Blocks are compressed when written to disk and decompressed when read
  // back; a block that would not shrink is written raw. Default: "none".
  std::string disk_compression = "none";
  // true: blocks are also written to disk when stored (write-through); false: written when
  // demoted from host (write-back). Default: false.
  bool write_through = false;
  // Write-back admission to the disk tier (store/disk_admission.h): a host victim is written to
  // disk only when the frequency sketch has seen its key this many times, or it is a shared
  // prefix. 0 or 1: every victim (the most hits); 2: no one-hit wonders on the SSD (fewer
  // writes, fewer hits: docs/store.md "Hierarchy"). At most 15. Default: 0.
  uint32_t disk_admission_min_frequency = 0;
  // true: the disk tier's payload file is written and read with O_DIRECT (the bytes of an
  // acknowledged write-through store are on the device, and the tier's reads do not fill the page
  // cache); false: through the page cache (an acknowledged store is in the kernel's memory, so it
  // survives the daemon's crash but not the machine's, as a buffered file write does). A
  // filesystem without O_DIRECT (tmpfs) gets buffered I/O either way. Default: true.
  bool disk_direct_io = true;
  // Bytes of GPU memory for the device tier (docs/store.md "The device tier in the node"): a
  // cache of the blocks clients loaded, copied from host in batches, that serves them back to
  // host when host has dropped them. 0: no device tier. CUDA builds only; Node::Open fails when
  // the build has no CUDA or the device is missing. Default: 0.
  uint64_t device_pool_bytes = 0;
  // CUDA device ordinal of the device tier. Default: 0.
  uint32_t device = 0;
  // Eviction policy of the host, device and disk tiers (store/eviction_policy.h): "learned",
  // "prefix", "lru", "arc", "s3fifo", "wtinylfu" or "gdsf". Default: "learned".
  std::string eviction_policy = "learned";
  // How long a load pin lives unless the client unpins first. Default: 30000 ms.
  uint32_t default_pin_ms = 30000;
  // The engines' prefill rate in tokens per second, for `strata inspect funnel` when an engine
  // reports none (Client::SetRecomputeRate). 0: unknown (the funnel's benefit is null).
  // Default: 0.
  double recompute_tokens_per_second = 0;
  // Default: single node.
  ClusterOptions cluster;
  // Tenants of the host pool (docs/data-plane.md, "Tenants"): tenant 0 is the shared one, 1..N-1
  // the private ones the daemon was configured with; their blocks never share a slab. Default: 1.
  uint16_t tenants = 1;
  // KV events (docs/kv-events.md): the blocks the host and disk tiers gain and lose, published
  // in vLLM's format. Default: off (no endpoint).
  events::KvEventsOptions kv_events;
  // Engines whose vLLM KV events the node follows (which blocks each holds on its GPU), shown in
  // the statistics under "engines". Default: none.
  events::EngineEventsOptions engine_events;
};

// OK when a device tier can be opened on CUDA device `device`; otherwise why not:
// NotSupported "this build has no CUDA ..." or Unavailable "no CUDA device: ...".
Status DevicePoolAvailable(uint32_t device);

class Node {
 public:
  using OwnerId = uint64_t;

  static Result<std::unique_ptr<Node>> Open(const NodeOptions& options);
  virtual ~Node() = default;

  // The host pool: pool_bytes() mapped at pool_base(), made of slabs of pool_slab_bytes(), each
  // a memfd of its own that holds one tenant's payloads (docs/data-plane.md, "Tenants").
  virtual uint64_t pool_bytes() const = 0;
  virtual std::byte* pool_base() const = 0;
  virtual uint64_t pool_slab_bytes() const = 0;
  // What a client receives for slab `slab`: a read-only descriptor of its memfd (the caller
  // closes it), its generation (ipc::Location::generation) and the tenant whose bytes it holds.
  struct PoolSlab {
    int fd = -1;
    uint32_t generation = 0;
    uint16_t tenant = 0;
  };
  virtual Result<PoolSlab> OpenPoolSlab(uint32_t slab) const = 0;
  // A read-only descriptor of tenant `tenant`'s load index segment (the caller closes it) and
  // its size (store/load_index.h; docs/data-plane.md, "Loads without a round trip").
  struct LoadIndexSegment {
    int fd = -1;
    uint64_t bytes = 0;
  };
  virtual Result<LoadIndexSegment> OpenLoadIndex(uint16_t tenant) const = 0;
  // Blocks of `notice.ns` a client loaded through the load index, with no request: each key
  // counts as an access (a hit) for the host tier's eviction policy and the statistics (keys no
  // longer cached are skipped); each of its loads as a load of the namespace, served from the
  // host tier, in the per-namespace counters and `strata inspect funnel`, as a Load request
  // would (the load entries are ignored when they do not add up: lists of different lengths, a
  // time not finite or negative). Returns how many keys were cached.
  virtual size_t NoteAccess(const ipc::AccessNotice& notice) = 0;
  // Records the tenant of namespace `ns` (decided by the daemon from the namespace's salt);
  // blocks of `ns` are stored in, and promoted to, slabs of that tenant from then on.
  virtual Status SetNamespaceTenant(const NamespaceId& ns, uint16_t tenant) = 0;
  // The tenant of `ns`, or kUnknownTenant when nobody opened it since start.
  static constexpr uint16_t kUnknownTenant = UINT16_MAX;
  virtual uint16_t NamespaceTenant(const NamespaceId& ns) const = 0;

  // Tiers of the longest prefix of `keys` cached in any local tier or, when clustered, held by a
  // live peer according to the directory (those blocks are Tier::kRemote). `ns`, when given, is
  // the namespace the keys belong to, for the per-namespace hit and miss counters.
  virtual std::vector<Tier> Lookup(std::span<const BlockKey> keys,
                                   const std::optional<NamespaceId>& ns = std::nullopt) = 0;

  // Brings the remote part of the longest prefix of `keys` into the local host pool (DESIGN.md
  // "Cluster": directory, holder choice, pin at the holder, transfer, verify, insert, unpin).
  // Returns how many leading blocks of `keys` are now local. A dead or stalled peer costs at most
  // the request timeout and yields the blocks that did arrive. Single node: the local prefix.
  virtual size_t Fetch(std::span<const BlockKey> keys) = 0;

  // One flag per key: 1 when the key is cached in a local tier. With `sizes` (one per key, an
  // upper bound of its payload), NoSpace when the empty pool could not hold the uncached ones at
  // once: a store that cannot fit is refused before the client encodes anything, with the size
  // the pool would need.
  virtual Result<std::vector<uint8_t>> Exists(std::span<const BlockKey> keys,
                                              std::span<const uint64_t> sizes = {}) = 0;

  // Where a cross-memory payload lies: `length` bytes at `address` in process `pid` (a connected
  // client that permitted the daemon to read its memory; docs/data-plane.md).
  struct ClientMemory {
    pid_t pid = 0;
    int pidfd = -1;  // of `pid`, taken at connect time (core/cross_memory.h: ClientProcess)
    uint64_t address = 0;
    uint64_t length = 0;
  };
  // A payload to publish. `payload` points into memory the caller mapped from a client (its
  // staging memfd); or, with `client_memory` set (and `payload` empty), the payload is read out of
  // the client's own memory. The node only reads either, once.
  struct StagedBlock {
    BlockKey key;
    std::optional<BlockKey> parent;  // the chain's previous block, for prefix-aware eviction
    std::span<const std::byte> payload;
    // The block's store tag (store::PutOptions::tag; events/block_tag.h: the engine's hash for
    // its KV events); empty: none.
    std::string tag;
    std::optional<ClientMemory> client_memory = std::nullopt;
    // Set instead (cross-memory paged store): a head shard the node gathers out of the client's
    // engine chunks; the shards of one block share `chunks` and are gathered together.
    struct ClientGather {
      pid_t pid = 0;
      int pidfd = -1;
      std::span<const uint64_t> chunks;  // the block's engine chunks, in the client's memory
      // True: `chunks` are addresses in this process, in its read-only mapping of a KV cache the
      // client shared (daemon/shared_kv.h), read directly instead of with process_vm_readv.
      bool mapped = false;
      uint32_t rows = 0, heads = 0, head = 0;
      uint64_t row_bytes = 0;
      uint64_t length() const { return chunks.size() * rows * row_bytes; }
    };
    std::optional<ClientGather> client_gather = std::nullopt;
    uint64_t size() const {
      return client_memory ? client_memory->length
             : client_gather ? client_gather->length()
                             : payload.size();
    }
  };
  struct StoreOutcome {
    uint32_t committed = 0;  // newly published
    uint32_t existed = 0;    // skipped: cached already
  };
  // Copies each payload into the host pool, computing its XXH3-64 from the copied bytes, writes
  // its header (namespace `ns`, `codec`) and publishes it. Keys already cached are skipped. The
  // copies of one call are split by blocks over the calling thread and the node's copy threads.
  // NoSpace when the pool cannot hold a block even after eviction; the blocks before it stay
  // published (the outcome is returned when at least one was, the error otherwise). A payload
  // in client memory that cannot be read whole (InvalidArgument: EFAULT, a short read) or at all
  // (PermissionDenied, NotFound) fails the call with nothing of it published. Client memory
  // payloads need codec none (InvalidArgument otherwise).
  virtual Result<StoreOutcome> Store(const NamespaceId& ns, Codec codec,
                                     std::span<const StagedBlock> blocks) = 0;

  // Pins the longest cached prefix of `keys` in the host pool (fetching the part that only peers
  // hold, promoting from disk) and returns where each block is. A block whose header names
  // another namespace than `ns` ends the prefix (keys are never trusted to belong to `ns`).
  virtual Result<std::vector<ipc::Location>> PinForLoad(OwnerId owner, const NamespaceId& ns,
                                                        std::span<const BlockKey> keys,
                                                        uint32_t pin_ms) = 0;
  virtual void Unpin(OwnerId owner, std::span<const BlockKey> keys) = 0;

  // Starts bringing disk blocks of `keys` into the host pool, and (clustered) remote blocks in
  // the background; returns how many were queued.
  virtual uint32_t Prefetch(std::span<const BlockKey> keys) = 0;

  // Erases every block of `ns` (every block when nullopt) that is not pinned; returns how many.
  virtual uint64_t Clear(std::optional<NamespaceId> ns) = 0;

  // Node and tier statistics as a JSON object.
  virtual std::string StatsJson() = 0;

  // Operator introspection (`strata inspect`, node/inspect.h): the JSON reply to `request`, for
  // an admin caller or a restricted one (who must name a namespace and sees only its blocks).
  // "node" is admin-only: configuration, uptime, health and per-tier usage.
  virtual Result<std::string> Inspect(const ipc::InspectRequest& request, bool admin) = 0;
  // Records `spec` as the namespace behind `id` for the inspector (node/namespace_registry.h);
  // false (counted as a fingerprint mismatch) when it does not fingerprint to `id`.
  virtual bool DescribeNamespace(const NamespaceId& id, const NamespaceSpec& spec) = 0;

  // The engine's prefill rate for `ns`, reported with a load (Client::SetRecomputeRate): the loads
  // of `ns` that follow are weighed against recomputing at it (`strata inspect funnel`).
  // REQUIRES: tokens_per_second > 0 and finite.
  virtual void ReportRecomputeRate(const NamespaceId& ns, double tokens_per_second) = 0;

  // Drops every pin of `owner` (its session ended).
  virtual void ReleaseOwner(OwnerId owner) = 0;

  // Persists what a restart should find: host blocks the disk tier lacks are written to it, and
  // the disk tier is synced. Called on clean shutdown.
  virtual Status Flush() = 0;
};

}  // namespace strata
