#include "node/doctor.h"

#include <sys/resource.h>
#include <sys/statvfs.h>

#include <chrono>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "node/namespace_registry.h"
#include "strata/namespace.h"
#include "strata/version.h"

namespace strata {
namespace {

using nlohmann::json;

// The host pool hands out payload space in pages of this size (store/slab_allocator.h).
constexpr uint64_t kPoolPage = 4096;

// Sizes as the CLI prints them: MiB below 1 GiB, GiB above.
std::string Mib(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30)) return fmt::format("{:.1f} GiB", double(bytes) / (1 << 30));
  return fmt::format("{:.1f} MiB", double(bytes) / (1 << 20));
}

json Check(const char* name, const char* status, std::string detail, std::string fix = "") {
  return {{"name", name},
          {"status", status},
          {"detail", std::move(detail)},
          {"fix", fix.empty() ? json(nullptr) : json(std::move(fix))}};
}

// Namespaces that differ only in their hash seed: engines that key with different seeds (an
// unseeded vLLM draws a random root per process) never share a block.
json KeySchemeCheck(const DoctorFacts& f) {
  if (f.namespaces.empty())
    return Check("key_scheme_reproducible", "skip", "no namespace has been described yet");
  for (size_t i = 0; i < f.namespaces.size(); ++i)
    for (size_t k = i + 1; k < f.namespaces.size(); ++k) {
      const auto diffs = RedactedDifferences(f.namespaces[i].second, f.namespaces[k].second);
      if (diffs.size() == 1 && diffs[0].rfind("hash_seed", 0) == 0)
        return Check("key_scheme_reproducible", "fail",
                     fmt::format("namespaces {} and {} differ only in the hash seed ({}): "
                                 "engines key the same tokens differently and never share "
                                 "blocks",
                                 f.namespaces[i].first.ToHex().substr(0, 12),
                                 f.namespaces[k].first.ToHex().substr(0, 12), diffs[0]),
                     "start every engine with the same seed: PYTHONHASHSEED=0 (any fixed "
                     "value, the same everywhere) for vLLM, and the same hash_seed in the "
                     "Strata connector's namespace");
    }
  for (const auto& [id, s] : f.namespaces)
    if (s.key_scheme == KeyScheme::kVllmXxhashCbor && s.hash_seed.empty())
      return Check("key_scheme_reproducible", "fail",
                   fmt::format("namespace {} uses vllm-xxhash-cbor without a seed",
                               id.ToHex().substr(0, 12)),
                   "set PYTHONHASHSEED in every engine and pass it as hash_seed");
  return Check("key_scheme_reproducible", "pass",
               fmt::format("{} namespaces; none differs from another only in its hash seed",
                           f.namespaces.size()));
}

json BlockAlignmentCheck(const DoctorFacts& f) {
  if (f.namespaces.empty())
    return Check("block_size_alignment", "skip", "no namespace has been described yet");
  for (const auto& [id, s] : f.namespaces) {
    auto ns = Namespace::Create(s);
    if (!ns.ok()) continue;
    const uint64_t bytes = ns->block_bytes();
    if (bytes % kPoolPage != 0) {
      const uint64_t padded = (bytes + kPoolPage - 1) / kPoolPage * kPoolPage;
      return Check("block_size_alignment", "warn",
                   fmt::format("namespace {}: a block of {} tokens is {} bytes, not a multiple "
                               "of the pool's {}-byte pages: {:.1f}% of its space is padding",
                               id.ToHex().substr(0, 12), s.block_size, bytes, kPoolPage,
                               100.0 * double(padded - bytes) / double(padded)),
                   "choose the engine's block size so that block bytes are a multiple of "
                   "4096 (block_size 16 or a multiple of it for common layouts)");
    }
  }
  return Check("block_size_alignment", "pass",
               "every namespace's block bytes are a multiple of 4096");
}

json MemlockCheck(const DoctorFacts& f) {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_MEMLOCK, &rl) != 0)
    return Check("memlock_limit", "warn", "getrlimit(RLIMIT_MEMLOCK) failed");
  const bool needed = !f.options->cluster.membership.empty() || f.options->device_pool_bytes > 0;
  const std::string limit = rl.rlim_cur == RLIM_INFINITY ? "unlimited" : Mib(rl.rlim_cur);
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= f.host_pool_bytes)
    return Check("memlock_limit", "pass",
                 fmt::format("memlock {} covers the host pool ({})", limit,
                             Mib(f.host_pool_bytes)));
  const std::string detail =
      fmt::format("memlock limit {} is below the host pool ({}): RDMA registration and CUDA "
                  "page-locking of the pool can fail or fall back to slower paths",
                  limit, Mib(f.host_pool_bytes));
  return Check("memlock_limit", needed ? "warn" : "pass",
               needed ? detail : detail + " (not needed now: no cluster, no device tier)",
               needed ? "LimitMEMLOCK=infinity in the systemd unit, `ulimit -l unlimited` "
                        "before strata serve, or the IPC_LOCK capability in a container"
                      : "");
}

json SharedMemoryCheck(const DoctorFacts& f) {
  struct statvfs v {};
  if (::statvfs("/dev/shm", &v) != 0)
    return Check("shared_memory", f.options->cluster.membership.empty() ? "pass" : "warn",
                 "no /dev/shm: UCX's posix shared-memory transport cannot be used between "
                 "nodes on this host",
                 f.options->cluster.membership.empty()
                     ? ""
                     : "mount a tmpfs on /dev/shm (containers: --shm-size 1g or an emptyDir "
                       "with medium Memory)");
  const uint64_t free_bytes = uint64_t(v.f_bavail) * v.f_frsize;
  const uint64_t size = uint64_t(v.f_blocks) * v.f_frsize;
  constexpr uint64_t kNeeded = uint64_t{64} << 20;
  if (!f.options->cluster.membership.empty() && free_bytes < kNeeded)
    return Check("shared_memory", "warn",
                 fmt::format("/dev/shm has {} free of {}: UCX's shared-memory transport between "
                             "nodes on this host needs about 64 MiB",
                             Mib(free_bytes), Mib(size)),
                 "enlarge /dev/shm (mount -o remount,size=1G /dev/shm; containers: --shm-size "
                 "1g)");
  return Check("shared_memory", "pass",
               fmt::format("/dev/shm {} free of {}; the host pool is a memfd (not counted "
                           "there)",
                           Mib(free_bytes), Mib(size)));
}

json DiskSpaceCheck(const DoctorFacts& f) {
  if (!f.disk_capacity_bytes)
    return Check("disk_space", "skip", "no disk tier (--no-disk or no data_dir)");
  struct statvfs v {};
  if (::statvfs(f.options->data_dir.c_str(), &v) != 0)
    return Check("disk_space", "fail",
                 "cannot statvfs the data directory '" + f.options->data_dir + "'",
                 "check that data_dir exists and is readable by the daemon's user");
  const uint64_t free_bytes = uint64_t(v.f_bavail) * v.f_frsize;
  const uint64_t used = f.disk_used_bytes.value_or(0);
  const uint64_t bound = *f.disk_capacity_bytes;
  if (used + free_bytes < bound)
    return Check("disk_space", "warn",
                 fmt::format("the disk tier may grow to {} but holds {} and the file system has "
                             "only {} free: stores will fail with NoSpace before the bound",
                             Mib(bound), Mib(used), Mib(free_bytes)),
                 fmt::format("lower the bound to at most {} (--disk / disk_bytes), or free "
                             "space on the data directory's file system",
                             Mib((used + free_bytes) / 10 * 9)));
  return Check("disk_space", "pass",
               fmt::format("bound {}, used {}, {} free on the file system", Mib(bound),
                           Mib(used), Mib(free_bytes)));
}

json VersionSkewCheck(const DoctorFacts& f) {
  if (f.peers_json.empty()) return Check("version_skew", "skip", "a single node");
  const json peers = json::parse(f.peers_json);
  std::string others;
  size_t unknown = 0;
  for (const json& m : peers["members"]) {
    if (m["self"] == true) continue;
    if (!m["version"].is_string()) {
      ++unknown;
      continue;
    }
    if (m["version"] != Version())
      others += (others.empty() ? "" : ", ") + m["id"].get<std::string>() + " runs " +
                m["version"].get<std::string>();
  }
  if (!others.empty())
    return Check("version_skew", "fail",
                 "this node runs " + std::string(Version()) + "; " + others,
                 "run the same strata version on every node (`strata version --json` on each)");
  return Check("version_skew", unknown ? "warn" : "pass",
               unknown ? fmt::format("{} members publish no version (older nodes)", unknown)
                       : "every member runs " + std::string(Version()),
               unknown ? "upgrade every node to the same strata version" : "");
}

json MembershipCheck(const DoctorFacts& f) {
  const std::string& kind = f.options->cluster.membership;
  if (!f.membership) return Check("etcd_reachable", "skip", "a single node (no membership)");
  if (kind != "etcd") {
    if (f.membership->ok())
      return Check("etcd_reachable", "skip",
                   "static membership: no etcd; its directory '" +
                       f.options->cluster.static_dir + "' can be read");
    return Check("etcd_reachable", "fail", f.membership->ToString(),
                 "make the static membership directory readable by every node");
  }
  if (f.membership->ok())
    return Check("etcd_reachable", "pass",
                 "etcd at " + f.options->cluster.etcd_endpoint + " answered a range of " +
                     f.options->cluster.etcd_prefix);
  return Check("etcd_reachable", "fail", f.membership->ToString(),
               "start etcd or fix the endpoint (--etcd / STRATA_ETCD); `etcdctl --endpoints " +
                   f.options->cluster.etcd_endpoint + " endpoint health` shows what it says");
}

}  // namespace

std::string RunDoctor(const DoctorFacts& f) {
  json checks = json::array({KeySchemeCheck(f), BlockAlignmentCheck(f), SharedMemoryCheck(f),
                             MemlockCheck(f), DiskSpaceCheck(f),
                             Check("clock_skew", "skip",
                                   "needs every node's clock: `strata inspect --all doctor`"),
                             VersionSkewCheck(f), MembershipCheck(f)});
  json summary = {{"pass", 0}, {"warn", 0}, {"fail", 0}, {"skip", 0}};
  for (const json& c : checks) summary[c["status"].get<std::string>()] =
      summary[c["status"].get<std::string>()].get<int>() + 1;
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  return json{{"now_unix_ms", now}, {"version", Version()}, {"checks", checks},
              {"summary", summary}}
      .dump();
}

}  // namespace strata
