// UcxEngine: one UCP context and one worker per node, driven by one progress thread that sleeps on
// the worker's event fd when idle. Control messages are UCP active messages (id kAmControl); bulk
// block data are active messages (id kAmData) sent with UCX rendezvous and received with
// ucp_am_recv_data_nbx straight into a registered region (zero-copy where the transport does RMA:
// cma, posix shm, RDMA; pipelined on tcp). Memory regions are registered at Open, one UCX
// registration per unit (a host-pool slab), and a unit whose memory was replaced at the same
// address is registered again alone (ReregisterUnit).
//
// Below UcxEngineOptions::rndv_threshold, UCX picks the protocol itself.
//
// Endpoints: Connect() creates an endpoint from a peer's worker address, by default with
// UCP_ERR_HANDLING_MODE_PEER, so a dead peer fails its requests instead of hanging them (see
// PeerFailure for the other mode and its price). Messages
// are sent with UCP_AM_SEND_FLAG_REPLY; a peer that connected to us is answered on the endpoint
// UCX hands to the receive handler ("reply connection"), so replies and data travel back on the
// connection the requester owns and can force-close to cancel them.
//
// Threading: every UCP call runs on the progress thread, except ucp_mem_map / ucp_mem_unmap of
// ReregisterUnit, which run on the caller's thread (the context is created thread-shared for
// them: UCP_PARAM_FIELD_MT_WORKERS_SHARED). The public methods are thread-safe: they queue work
// for the progress thread. Handlers are called on the progress thread and must
// not block; they may call the engine's methods.
//
// Ownership: the engine does not own registered memory; it must outlive the engine.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "strata/result.h"
#include "strata/status.h"

namespace strata::transport {

// A contiguous range of host memory registered with UCX.
struct MemoryRegion {
  void* base = nullptr;
  size_t size = 0;
  // Registered as one UCX registration per `unit` bytes (the last unit may be shorter), so that
  // one unit can be registered again alone (UcxEngine::ReregisterUnit); a transfer's memory
  // handle is found by arithmetic (O(1) per region). A transfer that crosses a unit boundary
  // goes without a handle (UCX then registers it itself). 0: one unit, the whole region.
  size_t unit = 0;
};

using ConnId = uint64_t;  // 0 is never a valid connection

// One piece of a data message: `length` bytes at `data`. A message that carries several blocks
// is a list of pieces, sent or received in order (a UCX iov datatype).
struct DataPiece {
  std::byte* data = nullptr;
  size_t length = 0;
};

// The pieces lie one right after the other in memory (and there is at least one): the message
// can travel as one contiguous buffer (UcxEngine::SendDataPieces, the puller's receive).
inline bool Adjacent(std::span<const DataPiece> pieces) {
  for (size_t i = 1; i < pieces.size(); ++i)
    if (pieces[i].data != pieces[i - 1].data + pieces[i - 1].length) return false;
  return !pieces.empty();
}

// Who notices that the peer of an endpoint died.
enum class PeerFailure {
  // UCP_ERR_HANDLING_MODE_PEER: UCX does; the endpoint's requests fail and on_conn_error runs.
  // UCX 1.13 then refuses its shared-memory active-message transports (posix, sysv: "no peer
  // failure handler"), so a same-host pair talks over tcp, and tcp itself runs slower.
  kDetectedByUcx,
  // UCP_ERR_HANDLING_MODE_NONE: every transport, shared memory and cma included. A dead peer's
  // requests may never complete: the caller bounds them (timeouts, membership, or a
  // kDetectedByUcx endpoint to the same peer) and then Close()s the endpoint with force.
  kDetectedByCaller,
};

struct UcxHandlers {
  // A control message arrived on `conn`.
  std::function<void(ConnId conn, std::span<const std::byte> message)> on_control;
  // A data message with AM header `header` announces `length` bytes. Set *dest to where they go
  // (REQUIRES: inside a registered region when set, with room for `length`), or fill *pieces
  // with the places its bytes go in order (any memory; lengths summing to `length`: a message
  // carrying several blocks), and *cookie to anything; leave both empty to refuse the data (the
  // sender's send then fails).
  std::function<void(ConnId conn, std::span<const std::byte> header, size_t length,
                     std::byte** dest, std::vector<DataPiece>* pieces, uint64_t* cookie)>
      on_data;
  // The bytes of an accepted data message landed (OK) or will never land (error). Called once
  // per accepted data message; after it, the engine no longer touches *dest.
  std::function<void(ConnId conn, uint64_t cookie, const Status& status)> on_data_done;
  // `conn` failed (peer died, transport error, forced close); its requests have failed.
  std::function<void(ConnId conn, const Status& status)> on_conn_error;
  // Called on the progress thread at least every UcxEngineOptions::tick (timeouts live here).
  std::function<void()> on_tick;
};

struct UcxEngineOptions {
  // Name of the UCP context and worker, for UCX's logs. Default: "strata".
  std::string name = "strata";
  // Transports for this context (UCX_TLS syntax, e.g. "tcp" or "posix,cma,tcp"). Default: ""
  // (the UCX_TLS environment variable if set, else UCX's own choice).
  std::string tls;
  // An IP address of this host: UCX's network transports use only the interface that holds it
  // (UCX_NET_DEVICES), so its TCP listening sockets exist on that interface alone. "127.0.0.1"
  // or "::1": loopback, for nodes on one host; "*" or "": every interface (UCX's own choice).
  // Same-host transports (posix, sysv, cma) open no sockets and are not affected. An address no
  // interface holds: InvalidArgument at Open. Default: "" (every interface).
  std::string listen_addr;
  // Regions registered with ucp_mem_map at Open, unit by unit, e.g. the host pool. Default: none.
  std::vector<MemoryRegion> regions;
  // Data messages of at least this many bytes are forced to rendezvous (zero-copy into the
  // receiver's registered pool); smaller ones go by UCX's own choice (eager copies for small
  // sizes, which pipeline better). Default: 256 KiB.
  size_t rndv_threshold = 256 * 1024;
  // Largest control message accepted; a peer announcing a longer one is refused before any
  // buffer is allocated. Default: 8 MiB.
  size_t max_control_bytes = size_t{8} << 20;
  // Empty progress rounds before the progress thread sleeps on the event fd. Default: 2000.
  int spin_rounds = 2000;
  // Longest sleep of the progress thread; on_tick runs at least this often. Default: 10 ms.
  std::chrono::milliseconds tick{10};
  UcxHandlers handlers;
};

class UcxEngine {
 public:
  static constexpr unsigned kAmControl = 1;
  static constexpr unsigned kAmData = 2;

  // Creates the context and worker, registers the regions, starts the progress thread.
  static Result<std::unique_ptr<UcxEngine>> Open(UcxEngineOptions options);
  // Stops the progress thread, force-closes endpoints (their pending operations fail), then
  // deregisters memory and destroys the worker and context.
  ~UcxEngine();

  // Stops and joins the progress thread: no handler runs after it returns (the last round may
  // still run handlers while it waits). Idempotent; the destructor calls it. An owner whose
  // handlers reach the engine through a pointer calls it before resetting that pointer (a
  // unique_ptr is null while its object is being destroyed).
  void Stop();

  UcxEngine(const UcxEngine&) = delete;
  UcxEngine& operator=(const UcxEngine&) = delete;

  // This worker's address, to publish through membership.
  const std::vector<std::byte>& worker_address() const;
  // The network interface the engine is confined to (options.listen_addr's), or "" for all.
  const std::string& net_device() const;
  // The transports UCX selected for this context (from UCX_TLS / options), for reports.
  const std::string& tls() const;

  // Registers again the unit of a registered region that starts at `unit_base`, after its
  // memory was replaced at the same address (a host slab renewed for another tenant: a
  // registration keeps the pages it was made on, e.g. pinned for RDMA, so transfers would move
  // the old memory's bytes). The old registration is released first; until the new one is made,
  // transfers in the unit go without a handle. REQUIRES: no transfer into or out of the unit is
  // in flight (the pool renews only free slabs). Thread-safe, any thread, the progress thread
  // included. InvalidArgument when no unit starts there; the UCX error when ucp_mem_map fails
  // (the unit then stays without a handle: still correct, UCX registers per transfer).
  Status ReregisterUnit(const void* unit_base);
  // Units registered again so far (ReregisterUnit calls that succeeded).
  uint64_t units_reregistered() const;
  // Endpoints without peer error handling closed by flushing them, where a forced close was
  // asked for (UCX refuses to force-close those).
  uint64_t flushing_closes() const;

  // Creates an endpoint to the worker at `worker_address`. Blocks until created (local work).
  Result<ConnId> Connect(std::span<const std::byte> worker_address,
                         PeerFailure failure = PeerFailure::kDetectedByUcx);
  // Sends a control message. `done` (may be empty) runs on the progress thread.
  void SendControl(ConnId conn, std::vector<std::byte> message,
                   std::function<void(const Status&)> done = {});
  // Sends `length` bytes at `data` as one data message with AM header `header`, by rendezvous.
  // REQUIRES: `data` stays valid until `done` runs; header.size() <= 128.
  void SendData(ConnId conn, std::span<const std::byte> header, const std::byte* data,
                size_t length, std::function<void(const Status&)> done);
  // Sends the pieces `pieces` (in order, as one message of their summed length) with AM header
  // `header` (at most max_am_header() bytes): several blocks in one data message. Forced to
  // rendezvous from rndv_threshold bytes on, as SendData. Pieces that follow each other in
  // memory inside one registered unit go as one contiguous buffer (UCX 1.13 offers its
  // zero-copy rendezvous get only for a contiguous send); others as a UCX iov, in fragments.
  // REQUIRES: the pieces stay valid until `done` runs.
  void SendDataPieces(ConnId conn, std::span<const std::byte> header, std::vector<DataPiece> pieces,
                      std::function<void(const Status&)> done);
  // The largest AM header UCX carries on this worker (its transports' smallest), from
  // ucp_worker_query.
  size_t max_am_header() const;
  // Closes `conn`. force: its sends, and receives that get their bytes through it (a cma get),
  // fail at once (their callbacks run with an error); otherwise they are flushed first. A data
  // receive that waits for the peer to send its bytes (tcp fragments) is not reported: UCX
  // cannot cancel it, and tcp keeps reading a force-closed endpoint's connection, so it may
  // still complete later (on_data_done) or never; its *dest stays UCX's until then.
  void Close(ConnId conn, bool force);
  // Runs `fn` on the progress thread.
  void Post(std::function<void()> fn);
  // True when called on the progress thread.
  bool OnProgressThread() const;

 private:
  struct Impl;
  explicit UcxEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata::transport
