// EtcdMembership: cluster membership kept in a real etcd (docs/cluster.md, "Membership").
//
// Registration: the node grants a lease of `lease_ttl`, puts `<prefix><node id>` = JSON
// {"id", "address" (base64 UCX worker address), "host"} with that lease, and refreshes the lease
// every lease_ttl/3. If the lease is lost (etcd restarted, the node stalled past its TTL), the node
// grants a new one and registers again.
// Discovery: the node ranges the prefix, then watches it from the next revision; a PUT adds or
// updates a member, a DELETE (explicit, or etcd expiring the lease of a dead node) drops it. A
// broken watch is re-established by ranging again.
// No consensus of our own: etcd's leases and revisions are the whole protocol.
//
// Thread-safety: Members()/SetListener() are thread-safe; two background threads (keep-alive,
// watch) run until the object is destroyed, which revokes the lease (a clean leave).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "transport/membership/membership.h"

namespace strata::transport {

struct EtcdMembershipOptions {
  // etcd client URL. Default: "http://127.0.0.1:2379".
  std::string endpoint = "http://127.0.0.1:2379";
  // Key prefix under which members register. Default: "/strata/members/".
  std::string prefix = "/strata/members/";
  // Lease TTL: a node that stops refreshing leaves membership within this time. Default: 10 s.
  std::chrono::seconds lease_ttl{10};
  // Timeout of each etcd call. Default: 2 s.
  std::chrono::milliseconds call_timeout{2000};
  // This node. REQUIRES: non-empty id.
  Member self;
};

class EtcdMembership : public Membership {
 public:
  // Registers this node and loads the current members. Unavailable when etcd cannot be reached.
  static Result<std::unique_ptr<EtcdMembership>> Open(EtcdMembershipOptions options);
  // Stops the threads and revokes the lease.
  ~EtcdMembership() override;

  std::vector<Member> Members() const override;
  void SetListener(Listener listener) override;

  struct Impl;

 private:
  explicit EtcdMembership(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The JSON value a member registers; and its parse (Corruption on bad input).
std::string EncodeMemberValue(const Member& m);
Result<Member> DecodeMemberValue(const std::string& value);

}  // namespace strata::transport
