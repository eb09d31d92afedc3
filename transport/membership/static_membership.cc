#include "transport/membership/static_membership.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "transport/membership/etcd_membership.h"  // EncodeMemberValue, DecodeMemberValue

namespace strata::transport {
namespace {

void SortById(std::vector<Member>& members) {
  std::sort(members.begin(), members.end(),
            [](const Member& a, const Member& b) { return a.id < b.id; });
}

Status Publish(const std::string& dir, const Member& self) {
  // Other nodes, possibly of other users, read the directory and the files: 0755 and 0644 even
  // under `strata serve`'s umask 077 (a member file holds a node's id and address only). Every
  // directory this call creates is 0755, the parents of `dir` included (a 0700 parent would keep
  // other users' nodes out of the whole tree); directories that existed keep their modes.
  namespace fs = std::filesystem;
  constexpr auto kReadable = fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read;
  constexpr auto kDirMode = kReadable | fs::perms::owner_write | fs::perms::owner_exec |
                            fs::perms::group_exec | fs::perms::others_exec;
  std::error_code ec;
  fs::path at;
  for (const fs::path& part : fs::absolute(dir, ec).lexically_normal()) {
    at /= part;
    if (part.empty() || fs::exists(at, ec)) continue;
    if (!fs::create_directory(at, ec) && ec)
      return Status::IOError("cannot create " + at.string() + ": " + ec.message());
    fs::permissions(at, kDirMode, ec);
  }
  const auto path = std::filesystem::path(dir) / (self.id + ".member");
  const auto tmp = std::filesystem::path(dir) / (self.id + ".member.tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << EncodeMemberValue(self);
    if (!out) return Status::IOError("cannot write " + tmp.string());
  }
  fs::permissions(tmp, kReadable | fs::perms::owner_write, ec);
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::IOError("cannot publish " + path.string() + ": " + ec.message());
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<StaticMembership>> StaticMembership::Open(std::vector<Member> members) {
  std::set<std::string> ids;
  for (const Member& m : members) {
    if (m.id.empty()) return Status::InvalidArgument("static membership: a member has no id");
    if (!ids.insert(m.id).second)
      return Status::InvalidArgument("static membership: member id " + m.id + " is listed twice");
  }
  SortById(members);
  std::unique_ptr<StaticMembership> s(new StaticMembership());
  s->members_ = std::move(members);
  return s;
}

Result<std::unique_ptr<StaticMembership>> StaticMembership::OpenInDirectory(
    StaticMembershipOptions options) {
  if (options.dir.empty())
    return Status::InvalidArgument("static membership needs static_dir (docs/config.md)");
  if (options.self.id.empty())
    return Status::InvalidArgument("static membership: this member has no id");
  std::unique_ptr<StaticMembership> s(new StaticMembership());
  s->options_ = std::move(options);
  s->from_dir_ = true;
  STRATA_RETURN_IF_ERROR(Publish(s->options_.dir, s->options_.self));
  s->members_ = s->ReadMembers();
  s->poller_ = std::thread([p = s.get()] { p->PollLoop(); });
  return s;
}

StaticMembership::~StaticMembership() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  if (from_dir_) {
    std::error_code ec;
    std::filesystem::remove(std::filesystem::path(options_.dir) / (options_.self.id + ".member"),
                            ec);
  }
}

std::vector<Member> StaticMembership::Members() const {
  std::lock_guard<std::mutex> lock(mu_);
  return members_;
}

void StaticMembership::SetListener(Listener listener) {
  std::vector<Member> now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    listener_ = listener;
    now = members_;
  }
  if (listener) listener(now);
}

Status StaticMembership::Check() const {
  if (!from_dir_) return Status::OK();
  std::error_code ec;
  std::filesystem::directory_iterator it(options_.dir, ec);
  if (ec)
    return Status::IOError("static membership directory '" + options_.dir +
                           "': " + ec.message());
  return Status::OK();
}

std::vector<Member> StaticMembership::ReadMembers() const {
  std::vector<Member> out{options_.self};
  for (const std::string& id : options_.peers) {
    if (id == options_.self.id) continue;
    std::ifstream in(std::filesystem::path(options_.dir) / (id + ".member"));
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    auto m = DecodeMemberValue(ss.str());
    if (m.ok() && m->id == id) out.push_back(std::move(m).value());
  }
  SortById(out);
  return out;
}

void StaticMembership::PollLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, options_.poll_interval);
    if (stop_) break;
    lock.unlock();
    std::vector<Member> now = ReadMembers();
    lock.lock();
    if (now == members_) continue;
    members_ = now;
    Listener listener = listener_;
    lock.unlock();
    if (listener) listener(now);
    lock.lock();
  }
}

}  // namespace strata::transport
