// Turns one decoded client request into a response by calling the Node. Shared by the daemon's
// socket sessions and the embedded client, so both modes run the same request logic.
//
// Thread-safety: Handle may be called from many threads at once (the Node is thread-safe).
#pragma once

#include <sys/types.h>

#include <span>
#include <utility>
#include <string>
#include <vector>

#include "daemon/shared_kv.h"
#include "ipc/ipc_protocol.h"
#include "node/node.h"

namespace strata {

struct RequestHandlerOptions {
  // Longest pin a client may ask for; a LoadRequest asking more (up to 0xFFFFFFFF ms) pins for
  // this long. 0 in a request still means the node's default pin time. Default: 60000 ms.
  uint32_t max_pin_ms = 60000;
  // The private tenants' salts: tenant i + 1 is private_salts[i]; every other salt is the shared
  // tenant 0 (docs/data-plane.md, "Tenants"). REQUIRES: the node was opened with
  // private_salts.size() + 1 tenants. Default: none.
  std::vector<std::string> private_salts;
  // Whether clients hash every block they load against its checksum (HelloReply::verify_loads;
  // docs/data-plane.md, "Verified at commit, copied at load"). Default: false.
  bool verify_loads = false;
};

// Who sent a request, as far as the handler's decisions go.
struct Caller {
  // An admin may Clear every namespace at once and reads the node-wide Stats; others may Clear
  // only a namespace they name and see only the pool's size in Stats (docs/operations.md).
  bool admin = false;
  // The caller's staging memory as this process maps it (read-only): StoreCommit offsets index
  // it and are checked against it. Empty: stores are refused.
  std::span<const std::byte> staging;
  // The caller's pid when it permitted cross-memory stores and the daemon read its Hello's probe
  // (StoreCommit may then name addresses of its memory); 0: staging only.
  pid_t cross_memory_pid = 0;
  int cross_memory_pidfd = -1;  // a pidfd of cross_memory_pid (owned by the session)
  // The engine KV caches the caller moved onto memfds and shared (ShareKvRequest), as this
  // process maps them: a gathered commit whose chunks lie in one is read from there, also from a
  // caller without cross-memory reads. Null: none (the embedded client).
  const SharedKvSet* shared_kv = nullptr;
  // The tenants whose namespaces the caller may open and whose slabs it may map: tenants[t] != 0
  // for tenant t. Empty: every tenant (root, the daemon's own user, the embedded client).
  std::vector<uint8_t> tenants;
  bool MayUse(uint16_t tenant) const {
    return tenants.empty() || (tenant < tenants.size() && tenants[tenant] != 0);
  }
};

class RequestHandler {
 public:
  // REQUIRES: node outlives the handler.
  explicit RequestHandler(Node* node, RequestHandlerOptions options = {})
      : node_(node), options_(options) {}

  // Handles every request type but Hello (the session answers Hello, since it also hands over the
  // pool descriptor), on behalf of `caller`.
  ipc::Response Handle(Node::OwnerId owner, const ipc::Request& request, const Caller& caller);
  // The embedded client: its own process owns the node, so it is an admin.
  ipc::Response Handle(Node::OwnerId owner, const ipc::Request& request) {
    Caller caller;
    caller.admin = true;
    return Handle(owner, request, caller);
  }

  // The reply to a Hello: NotSupported for another protocol version.
  ipc::Response HandleHello(const ipc::Request& request, const ipc::Hello& hello);

  // The slab a MapSlabRequest names, whose descriptor the session sends with the reply (the
  // caller closes it). PermissionDenied when the slab holds bytes of a tenant `caller` may not
  // use; InvalidArgument for a slab out of range.
  Result<Node::PoolSlab> MapSlab(const ipc::MapSlabRequest& request, const Caller& caller);
  // The load index segment of the tenant of the namespace a MapLoadIndexRequest names, whose
  // descriptor the session sends with the reply (the caller closes it), and the tenant.
  // PermissionDenied as a Load of that namespace would be.
  Result<std::pair<Node::LoadIndexSegment, uint16_t>> MapLoadIndex(
      const ipc::MapLoadIndexRequest& request, const Caller& caller);

 private:
  // The tenant of a namespace's salt (0: shared).
  uint16_t TenantOfSalt(const std::string& salt) const;
  // OK when `caller` may name namespace `ns`: always with one tenant; otherwise `ns` must have
  // been opened (its tenant known) and its tenant be one the caller may use.
  Status CheckNamespace(const NamespaceId& ns, const Caller& caller) const;
  // OK when a non-admin `caller` may see the view `q` asks for: one of its tenants' namespaces.
  Status CheckInspect(const ipc::InspectRequest& q, const Caller& caller) const;
  ipc::Response OpenNamespace(const ipc::Request& request, const ipc::OpenNamespaceRequest& q,
                              const Caller& caller);

  Node* node_;
  const RequestHandlerOptions options_;
};

}  // namespace strata
