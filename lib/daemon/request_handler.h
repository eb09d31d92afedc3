// Turns one decoded client request into a response by calling the Node. Shared by the daemon's
// socket sessions and the embedded client, so both modes run the same request logic.
//
// Thread-safety: Handle may be called from many threads at once (the Node is thread-safe).
#pragma once

#include "ipc/ipc_protocol.h"
#include "node/node.h"

namespace strata {

class RequestHandler {
 public:
  // REQUIRES: node outlives the handler.
  explicit RequestHandler(Node* node) : node_(node) {}

  // Handles every request type but Hello (the session answers Hello, since it also hands over the
  // pool descriptor).
  ipc::Response Handle(Node::OwnerId owner, const ipc::Request& request);

  // The reply to a Hello: NotSupported for another protocol version.
  ipc::Response HandleHello(const ipc::Request& request, const ipc::Hello& hello);

 private:
  Node* node_;
};

}  // namespace strata
