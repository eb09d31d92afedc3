// TransportDirectoryPeers: DirectoryPeers over a PeerTransport, connecting (with the handshake) on
// first use from the worker addresses that membership publishes.
//
// Thread-safety: thread-safe; blocks on the network.
#pragma once

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "transport/directory/directory.h"
#include "transport/membership/membership.h"
#include "transport/peer_transport.h"

namespace strata::transport {

class TransportDirectoryPeers : public DirectoryPeers {
 public:
  explicit TransportDirectoryPeers(PeerTransport* transport) : transport_(transport) {}

  // The addresses to connect to, from membership.
  void SetMembers(const std::vector<Member>& members);

  Result<wire::LookupResponse> Lookup(const std::string& owner,
                                      std::vector<BlockKey> keys) override;
  Status Announce(const std::string& owner, wire::Announce announce) override;

 private:
  Status Ensure(const std::string& owner);

  PeerTransport* transport_;
  std::mutex mu_;
  std::unordered_map<std::string, std::vector<std::byte>> addresses_;  // GUARDED_BY(mu_)
};

}  // namespace strata::transport
