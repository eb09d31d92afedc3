#include "transport/directory/transport_peers.h"

namespace strata::transport {

void TransportDirectoryPeers::SetMembers(const std::vector<Member>& members) {
  std::lock_guard<std::mutex> lock(mu_);
  addresses_.clear();
  for (const Member& m : members) addresses_[m.id] = m.address;
}

Status TransportDirectoryPeers::Ensure(const std::string& owner) {
  std::vector<std::byte> address;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = addresses_.find(owner);
    if (it == addresses_.end()) return Status::Unavailable(owner + " is not a member");
    address = it->second;
  }
  return transport_->Connect(owner, address);  // reuses a live session
}

Result<wire::LookupResponse> TransportDirectoryPeers::Lookup(const std::string& owner,
                                                             std::vector<BlockKey> keys) {
  STRATA_RETURN_IF_ERROR(Ensure(owner));
  return transport_->Lookup(owner, std::move(keys));
}

Status TransportDirectoryPeers::Announce(const std::string& owner, wire::Announce announce) {
  STRATA_RETURN_IF_ERROR(Ensure(owner));
  return transport_->Announce(owner, std::move(announce));
}

}  // namespace strata::transport
