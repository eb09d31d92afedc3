// Membership: who is in the cluster now (docs/cluster.md, "Membership").
//
//  - StaticMembership (static_membership.h): the members are named in configuration; their
//    addresses come from a fixed list or from files in a shared directory.
//  - EtcdMembership (etcd_membership.h): each node registers under a lease with a TTL and keeps it
//    alive; every node watches the member prefix; a member whose lease expired is dropped.
//
// Thread-safety: Members() and SetListener() are thread-safe. The listener runs on the
// membership's own thread (or the caller's, for static membership) and must not block for long.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/result.h"
#include "strata/status.h"

namespace strata::transport {

struct Member {
  std::string id;                  // unique node id
  std::vector<std::byte> address;  // UCX worker address
  std::string host;                // host name: "same host" peers are preferred for pulls
  // What operators see of the member (`strata inspect peers`, `--all`); "" when not published.
  std::string listen_addr;  // the interface its UCX network transports use
  std::string socket;       // its daemon's socket: how `strata inspect --all` reaches it on a host
  // HOST:PORT of its inspect endpoint (`strata serve --inspect-addr`): how `strata inspect --all`
  // reaches it from another host, authenticated with the cluster secret.
  std::string inspect_addr;
  std::string version;      // its strata version

  friend bool operator==(const Member&, const Member&) = default;
};

class Membership {
 public:
  using Listener = std::function<void(const std::vector<Member>& members)>;

  virtual ~Membership() = default;
  // The live members, this node included, sorted by id.
  virtual std::vector<Member> Members() const = 0;
  // Calls `listener` with the full member list after every change (and once now).
  virtual void SetListener(Listener listener) = 0;
};

// Base64 (RFC 4648, with padding): how member addresses travel in etcd values and configs.
std::string Base64Encode(std::span<const std::byte> bytes);
Result<std::vector<std::byte>> Base64Decode(std::string_view text);

}  // namespace strata::transport
