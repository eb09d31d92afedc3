// StaticMembership: members named in configuration (docs/cluster.md, "Membership").
//
//  - A fixed list (Open(std::vector<Member>)): the members never change.
//  - A shared directory (OpenInDirectory): UCX worker addresses exist only once a
//    node runs, so the nodes exchange them through a directory all of them can read: each
//    publishes <dir>/<id>.member (the JSON of EncodeMemberValue, written to a temporary file and
//    renamed, so readers never see half of it) and polls the files of the peers it was told
//    about every poll_interval. A peer is a member while its file is there; the file is removed
//    when the member is destroyed (a clean shutdown).
//
// Thread-safety: Members() and SetListener() are thread-safe. The listener runs on the caller's
// thread (the first call) and then on the polling thread, and must not block for long.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "strata/result.h"
#include "strata/status.h"
#include "transport/membership/membership.h"

namespace strata::transport {

struct StaticMembershipOptions {
  Member self;                      // published as <dir>/<self.id>.member
  std::vector<std::string> peers;   // ids of the other members; self.id is skipped
  std::string dir;                  // the shared directory. REQUIRES: non-empty
  std::chrono::milliseconds poll_interval{50};
};

class StaticMembership : public Membership {
 public:
  // A fixed list. InvalidArgument on an empty or duplicate id.
  static Result<std::unique_ptr<StaticMembership>> Open(std::vector<Member> members);
  // Through a shared directory: publishes self and starts polling. InvalidArgument without a
  // directory; IOError when self cannot be published.
  static Result<std::unique_ptr<StaticMembership>> OpenInDirectory(
      StaticMembershipOptions options);
  ~StaticMembership() override;

  std::vector<Member> Members() const override;
  void SetListener(Listener listener) override;
  // OK when the shared directory can be listed (always OK for a fixed list).
  Status Check() const;

 private:
  StaticMembership() = default;
  std::vector<Member> ReadMembers() const;  // self first, then the peers' files, sorted by id
  void PollLoop();

  StaticMembershipOptions options_;
  bool from_dir_ = false;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Member> members_;  // GUARDED_BY(mu_)
  Listener listener_;            // GUARDED_BY(mu_)
  bool stop_ = false;            // GUARDED_BY(mu_)
  std::thread poller_;
};

}  // namespace strata::transport
