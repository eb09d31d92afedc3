// Turns one decoded client request into a response by calling the Node. Shared by the daemon's
// socket sessions and the embedded client, so both modes run the same request logic.
//
// Thread-safety: Handle may be called from many threads at once (the Node is thread-safe).
#pragma once

#include <span>

#include "ipc/ipc_protocol.h"
#include "node/node.h"

namespace strata {

struct RequestHandlerOptions {
  // Longest pin a client may ask for; a LoadRequest asking more (up to 0xFFFFFFFF ms) pins for
  // this long. 0 in a request still means the node's default pin time. Default: 60000 ms.
  uint32_t max_pin_ms = 60000;
};

// Who sent a request, as far as the handler's decisions go.
struct Caller {
  // An admin may Clear every namespace at once and reads the node-wide Stats; others may Clear
  // only a namespace they name and see only the pool's size in Stats (docs/operations.md).
  bool admin = false;
  // The caller's staging memory as this process maps it (read-only): StoreCommit offsets index
  // it and are checked against it. Empty: stores are refused.
  std::span<const std::byte> staging;
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

 private:
  Node* node_;
  const RequestHandlerOptions options_;
};

}  // namespace strata
