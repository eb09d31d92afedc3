// PeerTransport: Strata's node-to-node protocol over a UcxEngine (docs/wire-protocol.md).
//
//  - Admission: every connection starts with the HMAC handshake of transport/wire/auth.h. Until
//    it completes, a peer gets PermissionDenied for anything else: no lookup, announce or pull.
//  - Serving: PullRequest is answered from a BlockSource (pin, send by rendezvous from the
//    registered pool, unpin when the send completes, or two request timeouts after the request
//    if it never does: a dead puller cannot keep blocks pinned); LookupRequest and Announce go to a
//    DirectoryService. A block the source must first bring into the pool (BlockSource::PinLater:
//    the node's disk tier) is answered when it is ready, while the progress thread serves on;
//    the puller takes a pull's blocks in any order.
//  - Endpoints: a session with a peer has a control endpoint (UCX peer error handling: the
//    handshake, lookups, announces) and, unless PeerTransportOptions::data_peer_errors, a data
//    endpoint without it (pull requests and the blocks they bring back), so that UCX may move
//    blocks through shared memory and cma. A dead peer fails the control endpoint (UCX sees
//    its sockets close), which fails the session's pulls and force-closes the data endpoint;
//    a silent one is cut by the request timeout; membership dropping it disconnects it.
//  - Pulling: PreparePull (resolve the session, check destinations, encode) is separate from
//    Post (issue). Every block that lands is verified (block header, key, namespace, payload
//    checksum) before it counts: by the progress thread as its receive completes (bytes still
//    in cache; PeerTransportOptions::verify_on_landing) or by the thread in PullOp::Wait; a
//    peer that dies or stalls costs at most the request timeout and yields the blocks that did
//    arrive.
//
// Threading: public methods are thread-safe and may block the caller (never the progress
// thread). REQUIRES: they are not called from a BlockSource or DirectoryService callback.
// BlockSource and DirectoryService are called on the progress thread and must not block.
//
// Ownership: the BlockSource, DirectoryService and registered regions must outlive the
// transport.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "strata/block_format.h"
#include "strata/block_key.h"
#include "strata/result.h"
#include "strata/status.h"
#include "transport/directory/directory.h"  // DirectoryService
#include "transport/ucx/ucx_engine.h"
#include "transport/wire/messages.h"

namespace strata::transport {

// A block pinned for a transfer. Contiguous form (header == nullptr): `data` holds the encoded
// block (64-byte header + payload) inside a registered region. Split form (header != nullptr):
// `header` holds the 64-byte block header (any memory; it travels in the data message's AM
// header) and `data`/`size` the payload alone, inside a registered region (sent zero-copy). The
// host tier serves the split form: it keeps headers apart from payloads.
struct PinnedBlock {
  const std::byte* data = nullptr;
  size_t size = 0;
  uint64_t pin = 0;                    // handed back to Unpin
  const std::byte* header = nullptr;  // split form: the 64-byte block header
};

// Where a pinned block's payload lies in a memfd of this process, for a same-host peer that maps
// this process's pool (docs/cluster.md, "Same-host pulls from the holder's pool mapping"):
// `fd` is this process's read-only descriptor of the slab's memfd, valid (not renewed, not
// closed) while the block stays pinned.
struct SharedPlace {
  int fd = -1;
  uint32_t slab = 0;
  uint32_t generation = 0;
  uint64_t offset = 0;  // of the payload in the memfd
};

// Called once with a block PinLater made ready (or why it could not), from any thread.
using PinReady = std::function<void(Result<PinnedBlock>)>;

class BlockSource {
 public:
  virtual ~BlockSource() = default;
  // Pins `key`. NotFound when this node does not hold it at hand.
  virtual Result<PinnedBlock> Pin(const BlockKey& key) = 0;
  // For a key Pin answered NotFound: when the source can still make the block ready off the
  // progress thread (the node's disk tier: promote it into the host pool), starts that and
  // returns true; `ready` is then called exactly once, from any thread, with the pinned block
  // or the reason it could not be pinned. Returns false when the source does not hold the key
  // at all (`ready` is not called). Must not block. Default: false.
  virtual bool PinLater(const BlockKey& key, PinReady ready) {
    (void)key;
    (void)ready;
    return false;
  }
  virtual void Unpin(uint64_t pin) = 0;
  // Whether a block of namespace `ns` may go to a pull that names no namespace (a prefetch by
  // key alone). A pull that names one gets only blocks of that namespace, whatever this says.
  // A node with private tenants answers true only for its shared tenant's namespaces
  // (docs/operations.md, "What a peer can do"). Default: true.
  virtual bool ServesUnnamed(const NamespaceId& /*ns*/) { return true; }
  // Where `block` (split form, pinned by Pin or PinLater) lies for a same-host peer that maps
  // this process's pool; false when it cannot be mapped (the block then travels as bytes).
  // Called on the progress thread; must not block. Default: false.
  virtual bool SharedPlaceOf(const PinnedBlock& /*block*/, SharedPlace* /*out*/) { return false; }
};

// The progress threads' default spin: 2000 empty rounds (~0.3 ms) where this process may run on
// 4 or more CPUs, 0 (sleep on the event fd at once) on fewer. On 2 cores two spinning progress
// threads per node compete with the threads they wait for (fetch, session, client): the 2 MiB
// prefix of `strata bench peers` loaded 3.3x faster and one-block loads 15-30x faster without
// spinning (docs/benchmarks.md, "peers", 2026-12-02). Not measured on many-core hosts.
int AutoProgressSpinRounds();

// PeerTransportOptions::pull_coalesce_bytes's default.
inline constexpr uint64_t kDefaultPullCoalesceBytes = uint64_t{4} << 20;
// Blocks of this payload size or more always travel alone (UCX rendezvous, zero-copy where the
// transport has it: cma, RDMA), whatever a pull's max_message_bytes.
inline constexpr uint64_t kCoalesceBlockBelow = uint64_t{256} << 10;

struct PeerTransportOptions {
  // This node's id in membership. REQUIRES: non-empty.
  std::string node_id;
  // The cluster secret (wire::LoadClusterSecret). REQUIRES: at least 16 bytes.
  std::string cluster_secret;
  // UCX transports (UCX_TLS syntax). Default: "" (UCX_TLS from the environment, else UCX's own).
  std::string tls;
  // An IP address of this host; UCX's network transports use only its interface
  // (UcxEngineOptions::listen_addr). "" or "*": every interface. Default: "".
  std::string listen_addr;
  // Regions registered at start-up, unit by unit (MemoryRegion::unit): the host pool, where
  // pulled blocks land and from which served blocks are sent. Default: none.
  std::vector<MemoryRegion> regions;
  // Longest a request (handshake, lookup, announce, pull) may take before it fails with
  // TimedOut and its connection is dropped. Default: 2 s.
  std::chrono::milliseconds request_timeout{2000};
  // Pulls ride the control endpoint, with UCX's peer error handling (true), or a second
  // endpoint per session without it (false), which lets UCX 1.13 use its shared-memory
  // transports (posix/sysv AM, cma) and runs tcp faster; the control endpoint, membership and
  // the request timeout then detect a dead peer (docs/cluster.md has the measurements).
  // Default: false.
  bool data_peer_errors = false;
  // Empty progress rounds before the progress thread sleeps on the worker's event fd. More
  // rounds cut pull latency (no wake-up on the path) when a core is free to spin; a negative
  // value never sleeps (busy polling). Default: AutoProgressSpinRounds().
  int progress_spin_rounds = AutoProgressSpinRounds();
  // Where a block that came as bytes on the wire is verified (header, key, namespace,
  // XXH3-64): on the thread that landed it, the moment its receive completes, while its bytes
  // are still in cache (true; the progress thread: cma's get and tcp's receive copy run there),
  // or on the thread in PullOp::Wait, overlapping later receives, so that the progress thread
  // only progresses (false). Mapped pulls always copy and verify in one pass on Wait's thread.
  // Default: false (docs/cluster.md, "Pipelined wire pulls": on tcp the hash was ~75 % of the
  // puller's progress thread; same-host pulls, where true measured better through cma, map).
  bool verify_on_landing = false;
  // Small blocks coalesced (docs/cluster.md, "Small blocks in fewer messages"): a pull asks its
  // holder to send several blocks per data message, of at most this many payload bytes in all
  // (PullRequest.max_message_bytes); the holder then puts every block whose payload is at most
  // half of it and under kCoalesceBlockBelow into such messages, the puller lands each block in its own destination and
  // verifies each alone (into one contiguous run when its places follow each other, which
  // keeps UCX's zero-copy rendezvous). 0: one block per message. Holders serve either form,
  // whatever this node asks for. Default: kDefaultPullCoalesceBytes (4 MiB: the best of 256 KiB
  // to 16 MiB measured, 1.3x one block per message in A/B pairs; docs/cluster.md).
  uint64_t pull_coalesce_bytes = kDefaultPullCoalesceBytes;
  // Same-host mapped pulls (docs/cluster.md, "Same-host pulls from the holder's pool mapping"):
  // as a holder, offer them in the handshake (AuthOk.same_host) and answer a mapped PullRequest
  // with where its blocks lie (BlockSource::SharedPlaceOf); as a puller, ask for them from a
  // holder on this host (same boot id, network and pid namespace, uid) whose descriptors this
  // process may take (pidfd_getfd), map its slabs once per session and copy each block out with
  // CopyWithChecksum on the thread in PullOp::Wait. Anything that does not hold falls back to the
  // bytes-on-the-wire path (cma/UCX), logged once per peer and counted
  // (TransferProfile::mapped_fallbacks). Default: true.
  bool mapped_pulls = true;
  // For tests only: the thread in PullOp::Wait waits this long before copying a mapped pull's
  // blocks, so that a test can make the holder's pins expire and its slots be reused meanwhile
  // (`strata serve` reads STRATA_TEST_MAPPED_COPY_DELAY_MS). Default: 0.
  std::chrono::milliseconds mapped_copy_delay_for_test{0};
  // Serves pulls. Default: none (pulls get NotFound for every key).
  BlockSource* block_source = nullptr;
  // Serves lookups and announces. Default: none (NotSupported).
  DirectoryService* directory = nullptr;
};

// One block to pull, and where it lands. Contiguous form (header_dest == nullptr): the encoded
// block (header + payload) lands at dest. Split form: the 64-byte block header is copied to
// header_dest (any memory) and the payload alone lands at dest (e.g. straight into a host-tier
// reservation), so no payload byte is copied after it arrives.
//
// Split form with `allocate` and no dest: the payload's place is chosen when the block's header
// arrives (its length is not known before): `allocate` runs on the progress thread with the
// decoded header (key and length already checked against the target) and returns where the
// payload lands (REQUIRES: inside a registered region, room for header.payload_length bytes;
// must not block), or nullptr to refuse the block (ResourceExhausted). `capacity` is then the
// largest payload accepted. Whoever allocated frees what a failed block left allocated.
struct PullTarget {
  BlockKey key;
  std::byte* dest = nullptr;         // REQUIRES: inside a registered region
  size_t capacity = 0;               // bytes reserved at dest (contiguous: header + payload)
  std::byte* header_dest = nullptr;  // split form: 64 bytes for the block header
  std::function<std::byte*(const BlockHeader& header)> allocate;  // split form, dest == nullptr

  // The contiguous form: header and payload land together at dest.
  static PullTarget Into(const BlockKey& key, std::byte* dest, size_t capacity) {
    PullTarget t;
    t.key = key;
    t.dest = dest;
    t.capacity = capacity;
    return t;
  }
};

struct PullResult {
  std::vector<Status> blocks;  // one per target: OK when verified bytes are at dest
  size_t bytes = 0;            // bytes of the verified blocks
  // Where the pull's time went (the stage profile of docs/cluster.md, "Where a pull's time
  // goes"): from Post to the first block's header arriving, from Post to the last block
  // settling, and the time spent verifying blocks (header, key, namespace, XXH3; on the
  // progress thread as each lands, or on Wait's thread: PeerTransportOptions::verify_on_landing).
  double first_data_s = 0;
  double last_data_s = 0;
  double verify_s = 0;
  // Blocks whose destination UCX may still write: a data receive it accepted into them had
  // neither completed nor been reported when the pull ended (it failed or timed out). Their
  // status is an error; their places must not be reused until the release handed to
  // PullOp::ReleaseHeld runs (docs/cluster.md, "Where a dead holder's time goes").
  std::vector<uint32_t> held;
  // Blocks verified from the first one on, without a gap.
  size_t LeadingOk() const;
};

// Counters of the transfer path since Open, both sides (docs/cluster.md, "Where a pull's time
// goes"). Read with PeerTransport::Profile(); sums only grow.
struct TransferProfile {
  // Puller side.
  uint64_t pull_requests = 0;        // PullRequests posted
  uint64_t pull_blocks = 0;          // blocks they asked for
  uint64_t max_pulls_in_flight = 0;  // most PullRequests outstanding at once (all peers)
  uint64_t landed_multi = 0;         // multi-block data messages accepted
  uint64_t landed_contiguous = 0;    // of those, received into one run of adjacent places
  uint64_t probes = 0;               // control-endpoint probes of quiet pulls' holders sent
  uint64_t probes_answered = 0;      // of those, answered (under the probe's own request id)
  uint64_t mapped_sessions = 0;      // sessions whose holder's pool this node maps
  uint64_t mapped_fallbacks = 0;     // sessions (or mappings turned off) that fell back to bytes
  uint64_t mapped_blocks = 0;        // blocks copied out of a holder's mapping, verified
  uint64_t mapped_bytes = 0;         // their payload bytes
  uint64_t mapped_failures = 0;      // mapped blocks refused (checksum, header, mapping, room)
  uint64_t mapped_slabs = 0;         // holder slabs mapped by the ready sessions (once per slab
                                     // and generation)
  double mapped_copy_s = 0;          // copying and hashing them (CopyWithChecksum)
  uint64_t held_blocks = 0;          // places a pull ended with while UCX could still write them
                                     // (PullResult::held): not reused until UCX reported
  uint64_t held_released = 0;        // of those, released (UCX reported the receive); the
                                     // difference is held now
  uint64_t failed_receives = 0;      // receives UCX ended with an error (their endpoint failed);
                                     // their places are released kFailedReceiveGrace later
  uint64_t connect_backoffs = 0;     // sessions that failed before their handshake completed:
                                     // their peer is not dialled again for 100 ms .. 2 s
  // Holder side.
  uint64_t served_requests = 0;      // PullRequests answered
  uint64_t served_blocks = 0;        // blocks sent (a payload, not a bare status) or answered
                                     // with where they lie (served_mapped)
  uint64_t served_messages = 0;      // data messages that carried them (several blocks each
                                     // when coalesced: pull_coalesce_bytes)
  uint64_t served_contiguous = 0;    // multi-block messages whose blocks lay adjacent in the
                                     // pool: sent as one contiguous buffer
  double serve_pin_s = 0;            // in BlockSource::Pin/PinLater for them
  double serve_request_s = 0;        // handling each request: pins, checks, queueing the sends
  double send_s = 0;                 // every data message's send, queued to complete (they overlap)
  uint64_t max_sends_in_flight = 0;  // most data messages outstanding at once
  uint64_t served_mapped = 0;        // blocks answered with where they lie (mapped pulls)
  uint64_t mapped_released = 0;      // of those, unpinned by the puller's PullRelease
  uint64_t mapped_expired = 0;       // of those, unpinned at their deadline (no release came)

  // Calls f(name, value) for every field, in the order the node's stats list them
  // ("transfer_profile" in `strata inspect stats`): the one list of names, so that a new counter
  // reaches every reader by being added here.
  template <typename F>
  void ForEachField(F&& f) const {
    f("pull_requests", pull_requests);
    f("pull_blocks", pull_blocks);
    f("max_pulls_in_flight", max_pulls_in_flight);
    f("served_requests", served_requests);
    f("served_blocks", served_blocks);
    f("served_messages", served_messages);
    f("served_contiguous", served_contiguous);
    f("landed_multi", landed_multi);
    f("landed_contiguous", landed_contiguous);
    f("probes", probes);
    f("probes_answered", probes_answered);
    f("serve_pin_s", serve_pin_s);
    f("serve_request_s", serve_request_s);
    f("send_s", send_s);
    f("max_sends_in_flight", max_sends_in_flight);
    f("mapped_sessions", mapped_sessions);
    f("mapped_fallbacks", mapped_fallbacks);
    f("mapped_blocks", mapped_blocks);
    f("mapped_bytes", mapped_bytes);
    f("mapped_failures", mapped_failures);
    f("mapped_slabs", mapped_slabs);
    f("mapped_copy_s", mapped_copy_s);
    f("served_mapped", served_mapped);
    f("mapped_released", mapped_released);
    f("mapped_expired", mapped_expired);
    f("held_blocks", held_blocks);
    f("held_released", held_released);
    f("failed_receives", failed_receives);
    f("connect_backoffs", connect_backoffs);
  }
};

class PeerTransport;

// A prepared pull: resolved, checked and encoded; Post() issues it. Single use.
class PullOp {
 public:
  ~PullOp();
  // Issues the request. Returns at once; Wait() for the result.
  Status Post();
  // Waits for the result: every block verified, failed, or the timeout passed. Unless the
  // progress thread verifies them (verify_on_landing), the calling thread verifies the blocks
  // as they land, while later ones are still being received.
  PullResult Wait();
  // For block `index` of PullResult::held: runs `release` (on the transport's progress thread)
  // once UCX has reported the receive into its place, at once if it has already; `release`
  // frees the place. One that UCX never reports runs when the transport is destroyed, after
  // its UCX worker. REQUIRES: Wait() returned, `index` is in its result's `held`.
  void ReleaseHeld(size_t index, std::function<void()> release);

 private:
  friend class PeerTransport;
  struct State;
  explicit PullOp(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

class PeerTransport {
 public:
  static Result<std::unique_ptr<PeerTransport>> Open(PeerTransportOptions options);
  ~PeerTransport();

  const std::string& node_id() const;
  const std::vector<std::byte>& worker_address() const;
  const std::string& tls() const;
  // UcxEngine::ReregisterUnit: registers again a unit of a region whose memory was replaced at
  // the same address (a host slab renewed for another tenant). Any thread.
  Status ReregisterUnit(const void* unit_base);
  uint64_t units_reregistered() const;
  // Data endpoints closed by flushing (UcxEngine::flushing_closes).
  uint64_t flushing_closes() const;
  TransferProfile Profile() const;
  // Whether pulls from `peer` copy out of its mapped pool (a ready session whose mapping is on;
  // docs/cluster.md, "Same-host pulls from the holder's pool mapping"). Any thread.
  bool MapsPoolOf(const std::string& peer) const;

  // Connects to `peer` at `worker_address` and runs the handshake (or reuses the session).
  // PermissionDenied when the peer refuses our secret or cannot prove it knows it.
  Status Connect(const std::string& peer, std::span<const std::byte> worker_address);
  // Drops the session with `peer` (its pending requests fail).
  void Disconnect(const std::string& peer);

  // `ns`: the namespace every pulled block must carry; NamespaceId{} (all zero) accepts the
  // namespace each block's header names (the key already hashes its namespace: a chain key
  // names one prefix of one namespace).
  Result<std::unique_ptr<PullOp>> PreparePull(const std::string& peer, const NamespaceId& ns,
                                              std::vector<PullTarget> targets);
  // PreparePull + Post + Wait.
  Result<PullResult> Pull(const std::string& peer, const NamespaceId& ns,
                          std::vector<PullTarget> targets);

  Result<wire::LookupResponse> Lookup(const std::string& peer, std::vector<BlockKey> keys);
  Status Announce(const std::string& peer, wire::Announce announce);

  // Sends raw bytes as a control message on the session with `peer`, and waits for the peer's
  // Error answer, if any, for up to `wait`. For protocol tests: malformed input must get an Error
  // and leave the peer serving. Returns the peer's error as a Status (OK when none came).
  Status SendRawForTest(const std::string& peer, std::vector<std::byte> bytes,
                        std::chrono::milliseconds wait);
  // Sends raw bytes on a fresh connection that has not done the handshake.
  Status SendRawUnauthenticatedForTest(std::span<const std::byte> worker_address,
                                       std::vector<std::byte> bytes,
                                       std::chrono::milliseconds wait);

  struct Impl;

 private:
  explicit PeerTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata::transport
