// `strata bench transfer`: the node's own pull path between real `strata serve` processes, beside
// `ucx_perftest` (Debian's ucx-utils) run in the same benchmark with the same UCX_TLS and size.
//
// Each case starts holder nodes and one puller node (`strata serve`, static membership through a
// shared directory, the same binary), stores a prefix of N blocks through the client API on
// every holder, waits until the puller's directory names them, then measures on the puller's
// client what an engine gets:
//  - bandwidth: Lookup + Load of the whole prefix (the puller looks it up locally and in the
//    directory, picks holders, pulls, verifies every checksum, commits to its host tier, and
//    the client copies the blocks out), timed from the Lookup call to the end of the Load;
//    Clear on the puller between reps; median of reps; payload bytes per second;
//  - latency: Lookup + Load of one block the puller has never held nor looked up (a first pull:
//    each timed iteration takes another of `iters` one-block chains stored on the holders beside
//    the prefix, so the Lookup asks the directory and the holder reads the block from DRAM),
//    p50 and p99; and, for continuity with earlier figures, the re-pull of one block (Clear,
//    then Lookup + Load of the prefix's first block again: its holder remembered, its bytes hot
//    on the holder), `repull_p50_us`.
// With several holders the puller stripes the prefix across them (holder choice by blocks in
// flight). The netns case runs the puller in a network namespace joined to the holders by a veth
// pair (the shape of two hosts, tcp), ucx_perftest across the same pair; it is skipped with a
// message where namespaces cannot be created (not root, no `ip`).
//
// Baselines, measured in the same run, same UCX_TLS, size and interface:
//  - ucx_perftest -t ucp_am_bw with -e (endpoints with peer error handling) and without it; the
//    better of the two is the baseline (both are printed);
//  - ucx_perftest -t ucp_am_lat, typical latency doubled: a round trip of `size` each way (a
//    pull moves a small request and one block), the better of -e and without;
//  - prefix_load (2 MiB blocks: 256 of them are a 4K-token Llama-3.1-8B prompt, bf16, 16-token
//    blocks): the time the same bytes take at the baseline's bandwidth;
//  - ucx_perftest beyond cache (extra fields, not the `baseline`): ucp_am_bw with one message
//    of max(block, 64 MiB, 4 x L3 up to 512 MiB) bytes, the better of -e and without. ucx_perftest sends one
//    buffer again and again, so at 2 MiB its source and destination (4 MiB) stay in a 32 MiB
//    L3 and it measures a cache-to-cache copy; a pull moves a prefix of distinct blocks (512
//    MiB) from DRAM to DRAM. The beyond-cache run is the same tool, transport and protocol
//    (one rendezvous per message) on a working set that does not fit in cache: the physical
//    rate a same-host pull can reach (docs/cluster.md, "What ucx_perftest measures").
//  - ucx_perftest pinned (blocks under 1 MiB; extra fields): ucp_am_bw with server and client
//    pinned to CPUs 0 and 1 (`-c`), 4x the iterations, --pinned-runs (5) runs with -e and as
//    many without; the better of the two medians. Unpinned, the 64 KiB run moved 2.2-7.6 GB/s
//    from one run to the next here.
//  - the cma bound (same-host cases; extra fields): one thread's process_vm_readv of the prefix's
//    bytes, distinct blocks from DRAM to DRAM, message by message (CmaBoundGbps). The pinned
//    64 KiB ucx_perftest copies one cache-resident buffer and may exceed it (docs/cluster.md,
//    "Why 64 KiB on one host reached 0.2 of ucx_perftest").
//  - the mapped-copy bound (cases outside the netns; extra fields): one thread's
//    CopyWithChecksum of the prefix's bytes, block by block, out of a read-only mapping of one
//    memfd into another (MappedCopyBoundGbps): what a same-host pull from the holder's pool
//    mapping (pull_mapped, the default there) is read against.
// ucx_perftest runs before and after the nodes are measured; the better run of each is kept.
// The nodes are measured once their host pools are populated (no background faulting).
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../strata/command_registry.h"
#include "../strata/serve_process.h"
#include "bench_report.h"
#include "strata/block_format.h"
#include "strata/client.h"
#include "strata/key_chain.h"
#include "strata/namespace.h"

namespace strata::bench {
namespace {

// The largest data cache one CPU sees, from sysfs (what the kernel read from the CPU's cache
// topology). Not sysconf(_SC_LEVEL3_CACHE_SIZE): glibc derives that from CPUID leaves that a VM
// may fill in for the whole package (320 MiB on the 2-vCPU EPYC VMs here, whose sysfs says 32
// MiB), which made the beyond-cache message 1.25 GiB and the netns case run for minutes.
size_t LastLevelCacheBytes() {
  size_t best = 0;
  for (int index = 0; index < 8; ++index) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    std::string text;
    if (!(in >> text) || text.empty()) continue;
    size_t scale = 1;
    if (text.back() == 'K') scale = size_t{1} << 10;
    if (text.back() == 'M') scale = size_t{1} << 20;
    best = std::max(best, static_cast<size_t>(std::strtoull(text.c_str(), nullptr, 10)) * scale);
  }
  if (best > 0) return best;
  const long l3 = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
  return l3 > 0 ? static_cast<size_t>(l3) : 0;
}

using Clock = std::chrono::steady_clock;

// The same-host physical bound of a pull (extra field `cma_bound_gbps`, shm cases): one
// thread's process_vm_readv (what UCX's cma transport does for a rendezvous get) of `bytes` of
// distinct source into distinct destination, `piece` bytes per call, as the puller's progress
// thread gets a prefix message by message; median of 3. From this process's own memory (the
// kernel takes the same path, page by page, for another process's). ucx_perftest sends one
// buffer again and again, so at 64 KiB its bytes never leave the cache; a prefix's blocks do.
double CmaBoundGbps(size_t bytes, size_t piece) {
  piece = std::min(piece, bytes);
  bytes -= bytes % piece;
  auto map = [&] {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
  };
  std::byte* src = map();
  std::byte* dst = map();
  double gbps = 0;
  if (src != nullptr && dst != nullptr) {
    std::memset(src, 1, bytes);  // faulted in, and the caches hold the end of dst at most
    std::memset(dst, 2, bytes);
    std::vector<double> runs;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = Clock::now();
      bool ok = true;
      for (size_t off = 0; off < bytes && ok; off += piece) {
        iovec local{dst + off, piece}, remote{src + off, piece};
        ok = ::process_vm_readv(::getpid(), &local, 1, &remote, 1, 0) ==
             static_cast<ssize_t>(piece);
      }
      if (!ok) break;
      runs.push_back(static_cast<double>(bytes) /
                     std::chrono::duration<double>(Clock::now() - t0).count() / 1e9);
    }
    if (!runs.empty()) {
      std::sort(runs.begin(), runs.end());
      gbps = runs[runs.size() / 2];
    }
  }
  if (src != nullptr) ::munmap(src, bytes);
  if (dst != nullptr) ::munmap(dst, bytes);
  return gbps;
}

// The mapped path's physical bound (extra field `mapped_copy_bound_gbps`, same-host cases): one
// thread's CopyWithChecksum (the one-pass copy and XXH3-64 a mapped pull does) of `bytes` of
// distinct blocks, `piece` bytes each, out of a read-only MAP_SHARED mapping of a memfd into
// another memfd's mapping (the puller's pool), both populated first; median of 3 passes. No
// IPC, no lookup, no commit: what a same-host pull from the holder's pool mapping could move.
// The holder's memfd is mapped in this process rather than taken from another with
// pidfd_getfd: the copy reads the same shared pages through a page table of its own either way.
double MappedCopyBoundGbps(size_t bytes, size_t piece) {
  piece = std::min(piece, bytes);
  bytes -= bytes % piece;
  auto memfd = [&](const char* name) {
    const int fd = ::memfd_create(name, MFD_CLOEXEC);
    if (fd >= 0 && ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  };
  const int src_fd = memfd("strata-bench-holder-pool");
  const int dst_fd = memfd("strata-bench-puller-pool");
  double gbps = 0;
  std::byte* fill = nullptr;
  const std::byte* src = nullptr;
  std::byte* dst = nullptr;
  auto map = [&](int fd, int prot) -> std::byte* {
    void* p = ::mmap(nullptr, bytes, prot, MAP_SHARED | MAP_POPULATE, fd, 0);
    return p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
  };
  if (src_fd >= 0 && dst_fd >= 0) {
    fill = map(src_fd, PROT_READ | PROT_WRITE);  // the holder's own, writable view
    src = fill != nullptr ? map(src_fd, PROT_READ) : nullptr;  // the puller's read-only one
    dst = map(dst_fd, PROT_READ | PROT_WRITE);
  }
  if (fill != nullptr && src != nullptr && dst != nullptr) {
    std::mt19937_64 rng(7);
    for (size_t k = 0; k + 8 <= bytes; k += 8) {
      const uint64_t v = rng();
      std::memcpy(fill + k, &v, 8);
    }
    std::vector<double> runs;
    uint64_t sink = 0;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = Clock::now();
      for (size_t off = 0; off < bytes; off += piece)
        sink ^= CopyWithChecksum(dst + off, src + off, piece);
      runs.push_back(static_cast<double>(bytes) /
                     std::chrono::duration<double>(Clock::now() - t0).count() / 1e9);
    }
    if (sink == 1) std::fprintf(stderr, " ");  // keeps the sums live
    std::sort(runs.begin(), runs.end());
    gbps = runs[runs.size() / 2];
  }
  if (fill != nullptr) ::munmap(fill, bytes);
  if (src != nullptr) ::munmap(const_cast<std::byte*>(src), bytes);
  if (dst != nullptr) ::munmap(dst, bytes);
  if (src_fd >= 0) ::close(src_fd);
  if (dst_fd >= 0) ::close(dst_fd);
  return gbps;
}

constexpr char kSecret[] = "strata-bench-transfer-secret-0123456789";

struct Options {
  bool json = false;
  // "shm" lets UCX pick its same-host transports (posix/sysv AM, cma) where the endpoint allows.
  std::vector<std::string> tls = {"tcp", "shm,tcp"};
  std::vector<std::string> sizes = {"64KiB", "2MiB", "32MiB"};
  std::vector<int> holders = {1, 2};
  int reps = 5;
  int lat_iters = 0;  // 0: chosen per size
  bool netns = true;
  bool netns_only = false;       // only the netns case (and fail when it cannot be set up)
  size_t perftest_mib = 2048;    // bytes each ucp_am_bw run moves
  int pinned_runs = 5;           // pinned ucp_am_bw runs per mode, blocks under 1 MiB (0: none)
  size_t prefix_mib = 0;         // bytes of each case's prefix; 0: 64 MiB below 1 MiB, else 512
  bool data_peer_errors = false;  // the nodes' --ucx-peer-errors (pulls with UCX peer errors)
};

Result<size_t> ParseSize(const std::string& s) {
  size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &pos);
  } catch (...) {
    return Status::InvalidArgument("size '" + s + "' is not a number");
  }
  const std::string unit = s.substr(pos);
  if (unit.empty() || unit == "B") return v;
  if (unit == "KiB" || unit == "K") return v << 10;
  if (unit == "MiB" || unit == "M") return v << 20;
  if (unit == "GiB" || unit == "G") return v << 30;
  return Status::InvalidArgument("size '" + s + "': unknown unit (B, KiB, MiB, GiB)");
}

std::string SelfExe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("strata") : p.string();
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// ---- network namespace: the puller's side of a veth pair ----

// A namespace and a veth pair: `outer_dev` (outer_ip) here, `inner_dev` (inner_ip) in `name`.
// Removed by the destructor.
class NetnsPair {
 public:
  static Result<std::unique_ptr<NetnsPair>> Create() {
    RemoveStale();
    auto p = std::unique_ptr<NetnsPair>(new NetnsPair());
    const std::string id = std::to_string(::getpid());  // "stbt<pid>a" fits IFNAMSIZ (15)
    p->name = "strata-bt-" + id;
    p->outer_dev = "stbt" + id + "a";
    p->inner_dev = "stbt" + id + "b";
    const std::string net = "10.231." + std::to_string(::getpid() % 250 + 1) + ".";
    p->outer_ip = net + "1";
    p->inner_ip = net + "2";
    const std::string in = "ip netns exec " + p->name + " ";
    const std::vector<std::string> steps = {
        "ip netns add " + p->name,
        "ip link add " + p->outer_dev + " type veth peer name " + p->inner_dev,
        "ip link set " + p->inner_dev + " netns " + p->name,
        "ip addr add " + p->outer_ip + "/24 dev " + p->outer_dev,
        "ip link set " + p->outer_dev + " up",
        in + "ip addr add " + p->inner_ip + "/24 dev " + p->inner_dev,
        in + "ip link set " + p->inner_dev + " up",
        in + "ip link set lo up"};
    for (const std::string& s : steps) {
      if (std::system((s + " >/dev/null 2>&1").c_str()) != 0)
        return Status::Unavailable("cannot create a network namespace: '" + s + "' failed");
      p->created_ = true;
    }
    return p;
  }
  ~NetnsPair() {
    if (!created_) return;
    (void)std::system(("ip link del " + outer_dev + " >/dev/null 2>&1").c_str());
    (void)std::system(("ip netns del " + name + " >/dev/null 2>&1").c_str());
  }

  std::string name, outer_dev, inner_dev, outer_ip, inner_ip;

 private:
  NetnsPair() = default;

  // A bench killed by a signal (a ctest timeout, ^C) leaves its namespace behind, and the next
  // one may land on the same subnet: remove those whose process is gone (deleting a namespace
  // deletes its veth pair too).
  static void RemoveStale() {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
      const std::string ns = entry.path().filename().string();
      if (ns.rfind("strata-bt-", 0) != 0) continue;
      const long pid = std::strtol(ns.c_str() + 10, nullptr, 10);
      if (pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH))
        (void)std::system(("ip netns del " + ns + " >/dev/null 2>&1").c_str());
    }
  }
  bool created_ = false;
};

// ---- ucx_perftest ----

struct Child {
  pid_t pid = -1;
  int out = -1;  // its stdout
};

Child Spawn(const std::vector<std::string>& args,
            const std::vector<std::pair<std::string, std::string>>& env) {
  int from_child[2];
  if (::pipe2(from_child, O_CLOEXEC) != 0)
    cli::Fail("pipe: " + std::string(std::strerror(errno)));
  Child c;
  c.pid = ::fork();
  if (c.pid == 0) {
    const int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(from_child[1], 1);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::_Exit(127);
  }
  ::close(from_child[1]);
  c.out = from_child[0];
  return c;
}

// Reads until EOF or `limit`.
std::string ReadAll(int fd, std::chrono::seconds limit) {
  std::string out;
  const auto end = Clock::now() + limit;
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  char buf[4096];
  while (Clock::now() < end) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n > 0) {
      out.append(buf, n);
    } else if (n == 0) {
      break;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  return out;
}

void Reap(Child& c, int sig) {
  if (c.out >= 0) ::close(c.out);
  c.out = -1;
  if (c.pid <= 0) return;
  if (sig != 0) ::kill(c.pid, sig);
  for (int i = 0; i < 200; ++i) {
    if (::waitpid(c.pid, nullptr, WNOHANG) == c.pid) {
      c.pid = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(c.pid, SIGKILL);
  ::waitpid(c.pid, nullptr, 0);
  c.pid = -1;
}

// Where the two ucx_perftest processes run: both here (loopback), or the server in a namespace.
struct PerftestPlace {
  const NetnsPair* netns = nullptr;
};

// Runs `ucx_perftest -t test -s size -n iters` as server and client; returns the "Final:" fields.
// `pinned`: the server on CPU 0, the client on CPU 1 (`-c`).
std::vector<double> RunPerftest(const std::string& test, size_t size, int iters,
                                const std::string& tls, bool peer_errors,
                                const PerftestPlace& place, std::string* error,
                                bool pinned = false) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::string port = std::to_string(FreePort());
    std::vector<std::string> common = {
        "-t", test, "-s", std::to_string(size), "-n", std::to_string(iters), "-p", port};
    if (peer_errors) common.push_back("-e");  // endpoints with error handling
    std::vector<std::string> server, client;
    std::vector<std::pair<std::string, std::string>> server_env = {{"UCX_TLS", tls}};
    std::vector<std::pair<std::string, std::string>> client_env = {{"UCX_TLS", tls}};
    if (place.netns != nullptr) {
      server = {"ip", "netns", "exec", place.netns->name, "ucx_perftest"};
      client = {"ucx_perftest", place.netns->inner_ip};
      server_env.emplace_back("UCX_NET_DEVICES", place.netns->inner_dev);
      client_env.emplace_back("UCX_NET_DEVICES", place.netns->outer_dev);
    } else {
      server = {"ucx_perftest"};
      client = {"ucx_perftest", "127.0.0.1"};
      server_env.emplace_back("UCX_NET_DEVICES", "lo");
      client_env.emplace_back("UCX_NET_DEVICES", "lo");
    }
    server.insert(server.end(), common.begin(), common.end());
    client.insert(client.end(), common.begin(), common.end());
    if (pinned) {
      server.insert(server.end(), {"-c", "0"});
      client.insert(client.end(), {"-c", "1"});
    }
    Child s = Spawn(server, server_env);
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + 300 * attempt));
    Child c = Spawn(client, client_env);
    const std::string out = ReadAll(c.out, std::chrono::seconds(120));
    Reap(c, 0);
    Reap(s, SIGTERM);
    const auto pos = out.rfind("Final:");
    if (pos == std::string::npos) {
      *error = "ucx_perftest " + test + " printed no Final line";
      continue;
    }
    std::istringstream line(out.substr(pos + 6, out.find('\n', pos) - pos - 6));
    std::vector<double> fields;
    double v;
    while (line >> v) fields.push_back(v);
    return fields;
  }
  return {};
}

struct PerftestResult {
  double gbps_e = 0;     // ucp_am_bw -e, overall bandwidth
  double gbps_no_e = 0;  // ucp_am_bw without -e
  double lat_e_us = 0;   // ucp_am_lat -e, typical one-way latency
  double lat_no_e_us = 0;
  // ucp_am_bw on one message larger than the last-level cache, the better of -e and without.
  double gbps_beyond_cache = 0;
  size_t beyond_cache_bytes = 0;
  // ucp_am_bw pinned to CPUs 0 and 1, median of --pinned-runs runs, the better of -e and without (blocks
  // under 1 MiB; 0 otherwise), and every run's figure (GB/s) with -e and without.
  double gbps_pinned_median = 0;
  std::vector<double> pinned_e_runs, pinned_no_e_runs;
  std::string error;
  double best_gbps() const { return std::max(gbps_e, gbps_no_e); }
  double best_rtt_us() const {
    const double a = lat_e_us > 0 ? lat_e_us : 1e18, b = lat_no_e_us > 0 ? lat_no_e_us : 1e18;
    return 2 * std::min(a, b);
  }
  bool ok() const { return best_gbps() > 0 && best_rtt_us() < 1e17; }
  void KeepBetter(const PerftestResult& o) {
    gbps_e = std::max(gbps_e, o.gbps_e);
    gbps_no_e = std::max(gbps_no_e, o.gbps_no_e);
    gbps_beyond_cache = std::max(gbps_beyond_cache, o.gbps_beyond_cache);
    if (o.gbps_pinned_median > gbps_pinned_median) {
      gbps_pinned_median = o.gbps_pinned_median;
      pinned_e_runs = o.pinned_e_runs;
      pinned_no_e_runs = o.pinned_no_e_runs;
    }
    beyond_cache_bytes = std::max(beyond_cache_bytes, o.beyond_cache_bytes);
    auto better = [](double a, double b) { return a <= 0 ? b : (b <= 0 ? a : std::min(a, b)); };
    lat_e_us = better(lat_e_us, o.lat_e_us);
    lat_no_e_us = better(lat_no_e_us, o.lat_no_e_us);
  }
};

PerftestResult Perftest(size_t size, const std::string& tls, const PerftestPlace& place,
                        size_t bw_bytes, int pinned_runs) {
  PerftestResult r;
  const int bw_iters = static_cast<int>(std::clamp<size_t>(bw_bytes / size, 20, 20000));
  const int lat_iters =
      static_cast<int>(std::clamp<size_t>(bw_bytes / 8 / size, 10, 2000));
  // bw Final: iterations, overhead p50, avg, overall (us), MB/s avg, overall, msg/s avg, overall.
  // lat Final: iterations, latency p50, avg, overall (us). ucx_perftest's MB is 2^20 bytes.
  for (bool e : {true, false}) {
    auto bw = RunPerftest("ucp_am_bw", size, bw_iters, tls, e, place, &r.error);
    if (bw.size() >= 6) (e ? r.gbps_e : r.gbps_no_e) = bw[5] * 1048576.0 / 1e9;
    auto lat = RunPerftest("ucp_am_lat", size, lat_iters, tls, e, place, &r.error);
    if (lat.size() >= 2) (e ? r.lat_e_us : r.lat_no_e_us) = lat[1];
  }
  // One message as large as the block, 64 MiB and four last-level caches, whichever is largest:
  // its buffers cannot stay in cache between sends.
  const size_t l3 = LastLevelCacheBytes();
  const size_t big = std::max({size, size_t{64} << 20, std::min(4 * l3, size_t{512} << 20)});
  const int big_iters = static_cast<int>(std::clamp<size_t>(bw_bytes / big, 2, 1000));
  r.beyond_cache_bytes = big;
  for (bool e : {true, false}) {
    auto bw = RunPerftest("ucp_am_bw", big, big_iters, tls, e, place, &r.error);
    if (bw.size() >= 6)
      r.gbps_beyond_cache = std::max(r.gbps_beyond_cache, bw[5] * 1048576.0 / 1e9);
  }
  // Small blocks: a baseline that holds still (pinned, more iterations, median of 5).
  if (size < (size_t{1} << 20) && pinned_runs > 0 && ::sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
    const int pinned_iters = static_cast<int>(std::clamp<size_t>(4 * bw_bytes / size, 20, 80000));
    for (bool e : {true, false}) {
      std::vector<double>& runs = e ? r.pinned_e_runs : r.pinned_no_e_runs;
      for (int i = 0; i < pinned_runs; ++i) {
        auto bw = RunPerftest("ucp_am_bw", size, pinned_iters, tls, e, place, &r.error, true);
        if (bw.size() >= 6) runs.push_back(bw[5] * 1048576.0 / 1e9);
      }
      if (runs.empty()) continue;
      std::vector<double> sorted = runs;
      std::sort(sorted.begin(), sorted.end());
      r.gbps_pinned_median = std::max(r.gbps_pinned_median, sorted[sorted.size() / 2]);
    }
  }
  return r;
}

// ---- strata serve nodes ----

struct Cluster {
  std::string dir;
  std::vector<std::unique_ptr<cli::ServeProcess>> holders;
  std::unique_ptr<cli::ServeProcess> puller;
  std::vector<std::unique_ptr<Client>> holder_clients;
  std::unique_ptr<Client> puller_client;

  ~Cluster() {
    puller_client.reset();
    holder_clients.clear();
    puller.reset();
    holders.clear();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
};

Result<uint64_t> ClusterMembers(Client& c) {
  STRATA_ASSIGN_OR_RETURN(std::string s, c.Stats());
  auto j = nlohmann::json::parse(s, nullptr, false);
  if (!j.is_object() || !j.contains("cluster")) return Status::NotFound("no cluster stats");
  return j["cluster"].value("members", uint64_t{0});
}

Result<std::unique_ptr<Cluster>> StartCluster(const Options& opt, const std::string& tls,
                                              int n_holders, size_t pool_bytes, size_t block_bytes,
                                              const NetnsPair* netns) {
  static int counter = 0;
  auto c = std::make_unique<Cluster>();
  c->dir = "/tmp/strata-bench-transfer-" + std::to_string(::getpid()) + "-" +
           std::to_string(counter++);
  std::filesystem::remove_all(c->dir);
  std::filesystem::create_directories(c->dir);
  const std::string secret = c->dir + "/secret";
  {
    std::ofstream(secret) << kSecret << "\n";
    std::filesystem::permissions(secret, std::filesystem::perms::owner_read |
                                             std::filesystem::perms::owner_write);
  }
  std::vector<std::string> ids;
  for (int i = 0; i < n_holders; ++i) ids.push_back("holder-" + std::to_string(i));
  ids.push_back("puller");
  std::string peers;
  for (const auto& id : ids) peers += (peers.empty() ? "" : ",") + id;
  const std::string exe = SelfExe();
  const std::string pool = std::to_string(pool_bytes >> 20) + "MiB";
  auto start = [&](const std::string& id, bool in_netns) {
    cli::ServeOptions o;
    o.name = "strata serve " + id;
    o.socket = c->dir + "/" + id + ".sock";
    o.log_file = c->dir + "/" + id + ".log";
    o.ready = cli::ServeReady::kClientConnects;
    o.start_timeout = std::chrono::seconds(30);
    std::vector<std::string> args = {"serve", "--socket", o.socket, "--no-disk", "--host-pool",
                                     pool, "--node-id", id, "--membership", "static",
                                     "--static-dir", c->dir + "/members", "--static-peers",
                                     peers, "--cluster-secret-file", secret, "--ucx-tls", tls,
                                     "--request-timeout-ms", "10000"};
    // A host slab holds one block at most (16 MiB by default): larger blocks get slabs of the
    // next power of two at least twice their size (64 MiB for 32 MiB blocks).
    if (block_bytes > (size_t{16} << 20)) {
      size_t slab = size_t{32} << 20;
      while (slab < 2 * block_bytes) slab <<= 1;
      args.push_back("--host-slab");
      args.push_back(std::to_string(slab >> 20) + "MiB");
    }
    if (opt.data_peer_errors) {
      args.push_back("--ucx-peer-errors");
      args.push_back("true");
    }
    if (netns != nullptr) {
      args.push_back("--listen-addr");
      args.push_back(in_netns ? netns->inner_ip : netns->outer_ip);
    }
    if (netns != nullptr && in_netns) {
      o.exe = "ip";
      std::vector<std::string> wrapped = {"netns", "exec", netns->name, exe};
      wrapped.insert(wrapped.end(), args.begin(), args.end());
      args = std::move(wrapped);
    }
    o.args = std::move(args);
    return cli::SpawnServe(std::move(o));
  };
  for (int i = 0; i < n_holders; ++i) {
    STRATA_ASSIGN_OR_RETURN(auto h, start(ids[i], false));
    c->holders.push_back(std::move(h));
  }
  STRATA_ASSIGN_OR_RETURN(c->puller, start("puller", true));
  for (auto& h : c->holders) {
    STRATA_ASSIGN_OR_RETURN(auto client, Client::Connect(h->socket()));
    c->holder_clients.push_back(std::move(client));
  }
  STRATA_ASSIGN_OR_RETURN(c->puller_client, Client::Connect(c->puller->socket()));
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (true) {
    auto m = ClusterMembers(*c->puller_client);
    if (m.ok() && *m == ids.size()) break;
    if (Clock::now() > deadline)
      return Status::TimedOut("the puller did not see every holder within 20 s (logs in " +
                              c->dir + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Every node's host pool faulted in: its background population (a thread per node faulting
  // the pool in, 64 MiB at a time) otherwise competes with the measured pulls for the CPUs
  // (perf of a 2 MiB tcp run, 2026-12-03: the puller's ran through the warm-up load and the
  // first timed ones).
  std::vector<Client*> nodes;
  for (auto& hc : c->holder_clients) nodes.push_back(hc.get());
  nodes.push_back(c->puller_client.get());
  const auto populated_by = Clock::now() + std::chrono::seconds(120);
  for (Client* n : nodes) {
    while (true) {
      auto st = n->Stats();
      if (st.ok()) {
        auto j = nlohmann::json::parse(*st, nullptr, false);
        if (j.is_object() && !j.value("pool_populating", false)) break;
      }
      if (Clock::now() > populated_by)
        return Status::TimedOut("a node's host pool was not populated within 120 s (logs in " +
                                c->dir + ")");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return c;
}

// A namespace whose blocks are `bytes` long: Llama-3.1-8B's KV shape (8 KV heads x 128, bf16)
// with as many layers as fit (2 MiB = 32 layers x 16 tokens: the real model), more tokens per
// block above 2 MiB.
Result<Namespace> BenchNamespace(size_t bytes) {
  NamespaceSpec s;
  s.model_id = "bench/transfer-" + std::to_string(bytes);
  s.num_kv_heads = 8;
  s.head_dim = 128;
  const size_t per_layer_token = 2 * 8 * 128 * 2;  // K and V, bf16
  if (bytes % (per_layer_token * 16) != 0)
    return Status::InvalidArgument("block size must be a multiple of 64 KiB");
  const size_t layers_x_blocks = bytes / (per_layer_token * 16);
  s.num_layers = static_cast<uint32_t>(std::min<size_t>(layers_x_blocks, 32));
  s.block_size = static_cast<uint32_t>(16 * (layers_x_blocks / s.num_layers));
  if (size_t{s.num_layers} * s.block_size * per_layer_token != bytes)
    return Status::InvalidArgument("block size does not map onto a KV shape");
  return Namespace::Create(s);
}

struct PullFigures {
  double gbps = 0;
  double median_s = 0;  // lookup -> loaded, whole prefix
  double p50_us = 0, p99_us = 0;  // first pulls (a block never held nor looked up)
  double repull_p50_us = 0;         // the same block pulled again after Clear
  size_t blocks = 0;
  uint64_t pulled_from_holders = 0;  // holders that served blocks in the last rep
  // The puller's Fetch profile over the timed reps (cluster stats "fetch_profile"), ms per
  // load: where the time of a whole-prefix load went on the puller node.
  nlohmann::json profile_ms_per_load;
  // The transport's own account over the timed reps (cluster stats "transfer_profile"): the
  // puller's requests (per load, blocks per request, most in flight) and the holders' serving
  // (pinning and request handling per load, the mean send from queued to complete, most sends
  // in flight).
  nlohmann::json transfer_profile;
  // The same Fetch profile over the one-block loads of the latency run, µs per load (mean), and
  // `rest_us`: the mean one-block load minus those stages (IPC, pinning, the client's copy).
  nlohmann::json one_block_profile_us;
};

// A node's cumulative cluster stats section `name` ("fetch_profile", "transfer_profile").
nlohmann::json ClusterSection(Client& c, const char* name = "fetch_profile") {
  auto s = c.Stats();
  if (!s.ok()) return {};
  auto j = nlohmann::json::parse(*s, nullptr, false);
  if (!j.is_object() || !j.contains("cluster") || !j["cluster"].contains(name)) return {};
  return j["cluster"][name];
}
nlohmann::json FetchProfile(Client& c) { return ClusterSection(c); }

// One-block loads the latency run times.
int LatencyIters(const Options& opt, size_t size) {
  return opt.lat_iters > 0
             ? opt.lat_iters
             : static_cast<int>(std::clamp<size_t>((size_t{256} << 20) / size, 15, 200));
}

Result<PullFigures> MeasurePulls(const Options& opt, Cluster& c, size_t size, size_t blocks) {
  STRATA_ASSIGN_OR_RETURN(Namespace ns, BenchNamespace(size));
  std::mt19937_64 rng(size * 31 + blocks);
  std::vector<uint32_t> tokens(blocks * ns.block_size());
  for (auto& t : tokens) t = static_cast<uint32_t>(rng() % 128000);
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
  // The latency run's blocks: one-block chains of their own, never loaded before their turn.
  const int iters = LatencyIters(opt, size);
  std::vector<BlockKey> first_keys;
  for (int i = 0; i < iters; ++i) {
    std::vector<uint32_t> t(ns.block_size());
    for (auto& v : t) v = static_cast<uint32_t>(rng() % 128000);
    first_keys.push_back(ComputeBlockKeys(ns, t).at(0));
  }
  // One payload for every block (keys differ; the bytes need not): random, so nothing
  // compresses or dedups on the way.
  std::vector<std::byte> payload(size);
  for (size_t k = 0; k + 8 <= size; k += 8) {
    const uint64_t v = rng();
    std::memcpy(payload.data() + k, &v, 8);
  }
  std::vector<ConstBuffer> in(blocks, ConstBuffer{payload.data(), payload.size()});
  for (auto& hc : c.holder_clients) {
    STRATA_ASSIGN_OR_RETURN(size_t stored, hc->Store(ns, keys, in).Wait());
    if (stored != blocks)
      return Status::ResourceExhausted("a holder stored " + std::to_string(stored) + " of " +
                                       std::to_string(blocks) + " blocks");
    for (const BlockKey& k : first_keys) {
      STRATA_ASSIGN_OR_RETURN(size_t one, hc->Store(ns, std::span<const BlockKey>(&k, 1),
                                                    std::span<const ConstBuffer>(in.data(), 1))
                                              .Wait());
      if (one != 1) return Status::ResourceExhausted("a holder did not store a latency block");
    }
  }
  Client& p = *c.puller_client;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (true) {
    // Every block named: remote, or pulled already by an earlier Lookup (pull_on_lookup).
    auto look = p.Lookup(keys);
    if (look.ok() && look->matched_blocks == blocks &&
        std::all_of(look->tiers.begin(), look->tiers.end(),
                    [](Tier t) { return t == Tier::kRemote || t == Tier::kHost; }))
      break;
    if (Clock::now() > deadline)
      return Status::TimedOut("the puller's directory did not name every block within 20 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // The latency blocks are announced with the prefix (the same flush or the next); not looked
  // up here, so that the timed Lookup is the puller's first of each. Announces go every 50 ms.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::vector<std::byte> out_bytes(blocks * size);
  std::vector<MutableBuffer> out;
  for (size_t i = 0; i < blocks; ++i) out.push_back({out_bytes.data() + i * size, size});

  double lookup_s = 0;  // the client's Lookup calls, summed
  auto load = [&](size_t n) -> Result<double> {
    STRATA_RETURN_IF_ERROR(p.Clear(ns.id()).status());
    const auto t0 = Clock::now();
    STRATA_ASSIGN_OR_RETURN(auto look, p.Lookup(std::span<const BlockKey>(keys.data(), n)));
    lookup_s += std::chrono::duration<double>(Clock::now() - t0).count();
    if (look.matched_blocks != n) return Status::NotFound("lookup lost blocks");
    STRATA_ASSIGN_OR_RETURN(
        size_t loaded, p.Load(ns, std::span<const BlockKey>(keys.data(), n),
                              std::span<const MutableBuffer>(out.data(), n))
                           .Wait());
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (loaded != n)
      return Status::Unavailable("loaded " + std::to_string(loaded) + " of " +
                                 std::to_string(n) + " blocks");
    return secs;
  };

  PullFigures f;
  f.blocks = blocks;
  STRATA_RETURN_IF_ERROR(load(blocks).status());  // warm-up (connects, faults the pool in)
  if (std::memcmp(out_bytes.data() + (blocks - 1) * size, payload.data(), size) != 0)
    return Status::Corruption("the last loaded block differs from what was stored");
  std::vector<double> times;
  const nlohmann::json before = FetchProfile(p);
  const nlohmann::json tp_before = ClusterSection(p, "transfer_profile");
  std::vector<nlohmann::json> held_before;
  for (auto& hc : c.holder_clients) held_before.push_back(ClusterSection(*hc, "transfer_profile"));
  lookup_s = 0;
  for (int r = 0; r < opt.reps; ++r) {
    STRATA_ASSIGN_OR_RETURN(double s, load(blocks));
    times.push_back(s);
  }
  const nlohmann::json after = FetchProfile(p);
  const nlohmann::json tp_after = ClusterSection(p, "transfer_profile");
  if (tp_before.is_object() && tp_after.is_object()) {
    auto d = [&](const char* k) {
      return tp_after.value(k, 0.0) - tp_before.value(k, 0.0);
    };
    const double requests = d("pull_requests");
    f.transfer_profile["puller_requests_per_load"] = requests / opt.reps;
    f.transfer_profile["puller_blocks_per_request"] = requests > 0 ? d("pull_blocks") / requests : 0;
    f.transfer_profile["puller_max_pulls_in_flight"] = tp_after.value("max_pulls_in_flight", 0);
    f.transfer_profile["puller_multi_messages_per_load"] = d("landed_multi") / opt.reps;
    f.transfer_profile["puller_contiguous_messages_per_load"] = d("landed_contiguous") / opt.reps;
    // Same-host pulls from the holder's pool mapping: blocks copied out of it per load, the copy
    // (and hash) time, and the sessions that fell back to bytes on the wire (since start).
    f.transfer_profile["puller_mapped_blocks_per_load"] = d("mapped_blocks") / opt.reps;
    f.transfer_profile["puller_mapped_copy_ms_per_load"] = d("mapped_copy_s") / opt.reps * 1e3;
    f.transfer_profile["puller_mapped_sessions"] = tp_after.value("mapped_sessions", 0);
    f.transfer_profile["puller_mapped_fallbacks"] = tp_after.value("mapped_fallbacks", 0);
  }
  for (size_t h = 0; h < c.holder_clients.size(); ++h) {
    const nlohmann::json a = ClusterSection(*c.holder_clients[h], "transfer_profile");
    const nlohmann::json& b = held_before[h];
    if (!a.is_object() || !b.is_object()) continue;
    auto d = [&](const char* k) { return a.value(k, 0.0) - b.value(k, 0.0); };
    const double sent = d("served_blocks");
    const double messages = d("served_messages");
    f.transfer_profile["holder" + std::to_string(h)] = {
        {"requests_per_load", d("served_requests") / opt.reps},
        {"blocks_per_load", sent / opt.reps},
        {"messages_per_load", messages / opt.reps},
        {"contiguous_messages_per_load", d("served_contiguous") / opt.reps},
        {"pin_ms_per_load", d("serve_pin_s") / opt.reps * 1e3},
        {"request_ms_per_load", d("serve_request_s") / opt.reps * 1e3},
        {"mean_send_ms", messages > 0 ? d("send_s") / messages * 1e3 : 0},
        {"max_sends_in_flight", a.value("max_sends_in_flight", 0)}};
  }
  if (before.is_object() && after.is_object()) {
    for (const char* k : {"lookup_s", "prepare_s", "pull_s", "first_data_s", "verify_s",
                          "commit_s"}) {
      const double d = after.value(k, 0.0) - before.value(k, 0.0);
      std::string name(k);
      name.replace(name.size() - 2, 2, "_ms");
      f.profile_ms_per_load[name] = d / opt.reps * 1e3;
    }
    f.profile_ms_per_load["client_lookup_ms"] = lookup_s / opt.reps * 1e3;
  }
  std::sort(times.begin(), times.end());
  f.median_s = times[times.size() / 2];
  f.gbps = static_cast<double>(blocks * size) / f.median_s / 1e9;

  // A first pull of first_keys[i], into out[i % blocks]: Lookup + Load, timed.
  auto first_pull = [&](int i) -> Result<double> {
    const std::span<const BlockKey> key(&first_keys[i], 1);
    const std::span<const MutableBuffer> dest(&out[i % blocks], 1);
    const auto t0 = Clock::now();
    STRATA_ASSIGN_OR_RETURN(auto look, p.Lookup(key));
    lookup_s += std::chrono::duration<double>(Clock::now() - t0).count();
    if (look.matched_blocks != 1) return Status::NotFound("lookup of a latency block found none");
    STRATA_ASSIGN_OR_RETURN(size_t loaded, p.Load(ns, key, dest).Wait());
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (loaded != 1) return Status::Unavailable("a latency block did not load");
    return secs;
  };
  std::vector<double> lat;
  STRATA_RETURN_IF_ERROR(p.Clear(ns.id()).status());
  const nlohmann::json lat_before = FetchProfile(p);
  lookup_s = 0;
  double reload_s = 0;  // the same block loaded again, now local: the client's side of a Load
  for (int i = 0; i < iters; ++i) {
    STRATA_ASSIGN_OR_RETURN(double s, first_pull(i));
    lat.push_back(s * 1e6);
    const auto t0 = Clock::now();
    STRATA_ASSIGN_OR_RETURN(size_t again,
                            p.Load(ns, std::span<const BlockKey>(&first_keys[i], 1),
                                   std::span<const MutableBuffer>(&out[i % blocks], 1))
                                .Wait());
    if (again != 1) return Status::Unavailable("a pulled block did not load again locally");
    reload_s += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  if (std::memcmp(out[(iters - 1) % blocks].data, payload.data(), size) != 0)
    return Status::Corruption("the last latency block differs from what was stored");
  const nlohmann::json lat_after = FetchProfile(p);
  if (lat_before.is_object() && lat_after.is_object()) {
    double mean_us = 0;
    for (double v : lat) mean_us += v / lat.size();
    double staged_us = lookup_s / iters * 1e6;
    f.one_block_profile_us["client_lookup_us"] = lookup_s / iters * 1e6;
    // pull_s contains first_data_s and verify_s: only the stages that follow each other count.
    // remote_lookup_s: the daemon's directory part of the client's Lookup; fetch_s: the whole
    // Fetch inside the Load; local_reload_us: a Load of the block once it is local (the
    // client's copy and checksum, through the load index or one IPC round trip).
    f.one_block_profile_us["local_reload_us"] = reload_s / iters * 1e6;
    for (const char* k : {"lookup_s", "prepare_s", "pull_s", "first_data_s", "verify_s",
                          "commit_s", "fetch_s", "remote_lookup_s"}) {
      const double us = (lat_after.value(k, 0.0) - lat_before.value(k, 0.0)) / iters * 1e6;
      std::string name(k);
      name.replace(name.size() - 2, 2, "_us");
      f.one_block_profile_us[name] = us;
      if (name == "lookup_us" || name == "prepare_us" || name == "pull_us" || name == "commit_us")
        staged_us += us;
    }
    f.one_block_profile_us["mean_load_us"] = mean_us;
    f.one_block_profile_us["rest_us"] = mean_us - staged_us;
  }
  std::sort(lat.begin(), lat.end());
  f.p50_us = lat[lat.size() / 2];
  f.p99_us = lat[std::min(lat.size() - 1, static_cast<size_t>(lat.size() * 0.99))];
  // The re-pull (what the latency rows measured up to session 10): keys[0] again and again.
  std::vector<double> re;
  for (int i = 0; i < iters; ++i) {
    STRATA_ASSIGN_OR_RETURN(double s, load(1));
    re.push_back(s * 1e6);
  }
  std::sort(re.begin(), re.end());
  f.repull_p50_us = re[re.size() / 2];
  for (auto& hc : c.holder_clients) {
    auto s = hc->Stats();
    if (!s.ok()) continue;
    auto j = nlohmann::json::parse(*s, nullptr, false);
    if (j.is_object() && j.contains("cluster") && j["cluster"].value("served_blocks", 0) > 0)
      ++f.pulled_from_holders;
  }
  return f;
}

// Exit code of --netns-only when namespaces cannot be created (ctest: skipped).
constexpr int kExitSkipped = 77;

void Run(const Options& opt) {
  BenchReport report("transfer", opt.json);
  std::unique_ptr<NetnsPair> netns;
  if (opt.netns || opt.netns_only) {
    auto n = NetnsPair::Create();
    if (n.ok()) {
      netns = std::move(n).value();
    } else {
      std::cerr << "strata: bench transfer: netns cases skipped: " << n.status().ToString()
                << "\n";
      if (opt.netns_only) std::exit(kExitSkipped);
    }
  }
  struct Place {
    std::string tls;
    const NetnsPair* netns;
    std::string tag;
  };
  std::vector<Place> places;
  if (!opt.netns_only)
    for (const std::string& tls : opt.tls) places.push_back({tls, nullptr, "tls=" + tls});
  if (netns) places.push_back({"tcp", netns.get(), "tls=tcp/netns"});

  for (const Place& place : places) {
    for (const std::string& size_name : opt.sizes) {
      auto size = ParseSize(size_name);
      if (!size.ok()) cli::Fail(size.status().ToString());
      // 64 MiB of 64 KiB blocks, else 512 MiB: at 2 MiB, the KV of a 4K-token Llama-3.1-8B
      // prompt (bf16, 16-token blocks).
      const size_t prefix_bytes =
          opt.prefix_mib > 0 ? opt.prefix_mib << 20
                             : (*size < (size_t{1} << 20) ? size_t{64} << 20 : size_t{512} << 20);
      const size_t blocks = std::max<size_t>(4, prefix_bytes / *size);
      // Room for the prefix and the latency run's blocks, and a quarter more.
      const size_t stored = (blocks + LatencyIters(opt, *size)) * *size;
      const size_t pool = std::max<size_t>(stored + stored / 4, 64 << 20);
      const std::string load_before = LoadAverage();
      PerftestPlace pp{place.netns};
      const size_t perftest_bytes = opt.perftest_mib << 20;
      PerftestResult base = Perftest(*size, place.tls, pp, perftest_bytes, opt.pinned_runs);
      // Messages of the pull: small blocks travel in 4 MiB messages (pull_coalesce_bytes'
      // default), the others one per message.
      const double cma_bound =
          place.tls.find("shm") != std::string::npos || place.tls.find("cma") != std::string::npos
              ? CmaBoundGbps(blocks * *size, *size < (size_t{256} << 10) ? size_t{4} << 20 : *size)
              : 0;
      // Same host: the mapped path's own bound (a mapped pull copies block by block).
      const double mapped_bound =
          place.netns == nullptr ? MappedCopyBoundGbps(blocks * *size, *size) : 0;
      for (int holders : opt.holders) {
        const std::string tag = size_name + "/" + place.tag + "/holders=" +
                                std::to_string(holders);
        auto cluster = StartCluster(opt, place.tls, holders, pool, *size, place.netns);
        if (!cluster.ok()) {
          std::cerr << "strata: pull/" << tag << ": " << cluster.status().ToString() << "\n";
          continue;
        }
        auto f = MeasurePulls(opt, **cluster, *size, blocks);
        cluster->reset();
        if (!f.ok()) {
          std::cerr << "strata: pull/" << tag << ": " << f.status().ToString() << "\n";
          continue;
        }
        if (holders == opt.holders.back()) {
          // The machine is shared: measure the baseline again after ours and keep its better
          // run, so that load that came and went does not flatter the ratio.
          base.KeepBetter(Perftest(*size, place.tls, pp, perftest_bytes, opt.pinned_runs));
        }
        if (!base.ok()) {
          std::cerr << "strata: ucx_perftest failed for " << tag << ": " << base.error << "\n";
          continue;
        }
        const nlohmann::json common = {{"tls", place.tls},
                                       {"netns", place.netns != nullptr},
                                       {"block_bytes", *size},
                                       {"holders", holders},
                                       {"load_average", load_before + " / " + LoadAverage()}};
        nlohmann::json extra = common;
        extra.update({{"blocks_per_load", f->blocks},
                      {"holders_that_served", f->pulled_from_holders},
                      {"path", "strata serve -> strata serve: Lookup + Load on the puller"},
                      {"data_peer_errors", opt.data_peer_errors},
                      {"target_ratio", *size >= (size_t{2} << 20) ? 0.85 : 0.7},
                      {"baseline_flags", "ucp_am_bw, the better of -e and without"},
                      {"ucx_perftest_e_gbps", base.gbps_e},
                      {"ucx_perftest_no_e_gbps", base.gbps_no_e},
                      {"ucx_perftest_beyond_cache_gbps", base.gbps_beyond_cache},
                      {"ucx_perftest_beyond_cache_msg_bytes", base.beyond_cache_bytes},
                      {"ratio_beyond_cache",
                       base.gbps_beyond_cache > 0 ? f->gbps / base.gbps_beyond_cache : 0},
                      {"ucx_perftest_pinned_median_gbps", base.gbps_pinned_median},
                      {"ucx_perftest_pinned_e_runs_gbps", base.pinned_e_runs},
                      {"ucx_perftest_pinned_no_e_runs_gbps", base.pinned_no_e_runs},
                      {"ratio_pinned",
                       base.gbps_pinned_median > 0 ? f->gbps / base.gbps_pinned_median : 0},
                      {"cma_bound_gbps", cma_bound},
                      {"ratio_cma_bound", cma_bound > 0 ? f->gbps / cma_bound : 0},
                      {"mapped_copy_bound_gbps", mapped_bound},
                      {"ratio_mapped_copy_bound", mapped_bound > 0 ? f->gbps / mapped_bound : 0},
                      {"load_ms", f->median_s * 1e3},
                      {"puller_fetch_profile_ms", f->profile_ms_per_load},
                      {"transfer_profile", f->transfer_profile}});
        report.Add({"pull/" + tag, "GB/s", f->gbps, "ucx_perftest", base.best_gbps(), true,
                    extra});
        nlohmann::json lat_extra = common;
        lat_extra.update({{"baseline_test", "ucp_am_lat typical x2, better of -e and without"},
                          {"ucx_perftest_lat_e_us", base.lat_e_us},
                          {"ucx_perftest_lat_no_e_us", base.lat_no_e_us},
                          {"target_ratio", 1 / 1.5},
                          {"what", "first pull: Lookup + Load of a block never held nor looked up"},
                          {"repull_p50_us", f->repull_p50_us},
                          {"one_block_profile_us", f->one_block_profile_us}});
        report.Add({"pull_latency_p50/" + tag, "us", f->p50_us, "ucx_perftest",
                    base.best_rtt_us(), false, lat_extra});
        report.Add({"pull_latency_p99/" + tag, "us", f->p99_us, "ucx_perftest",
                    base.best_rtt_us(), false, lat_extra});
        if (*size == (size_t{2} << 20) && f->blocks == 256) {
          nlohmann::json pe = common;
          pe.update({{"prompt", "Llama-3.1-8B, 4096 tokens, bf16, 16-token blocks: 512 MiB"},
                     {"baseline_test", "the same bytes at ucx_perftest's bandwidth"}});
          report.Add({"prefix_load/llama-3.1-8b-4k/" + place.tag + "/holders=" +
                          std::to_string(holders),
                      "ms", f->median_s * 1e3, "ucx_perftest",
                      static_cast<double>(f->blocks * *size) / (base.best_gbps() * 1e9) * 1e3,
                      false, pe});
        }
      }
    }
  }
}

[[maybe_unused]] const bool kRegistered = cli::RegisterCommand("bench", [](CLI::App& parent) {
  auto opt = std::make_shared<Options>();
  auto* cmd = parent.add_subcommand(
      "transfer",
      "Pulls between two strata serve nodes (client Lookup + Load) vs ucx_perftest, same UCX_TLS");
  AddJsonFlag(*cmd, opt->json);
  // One quoted value such as 'tcp shm,tcp' would reach UCX_TLS whole and silently measure tcp.
  cmd->add_option("--tls", opt->tls, "UCX_TLS values to measure, one case each (space-separated)")
      ->check(CLI::Validator(
          [](std::string& tls) -> std::string {
            if (tls.empty() || tls.find_first_of(" \t") != std::string::npos)
              return "'" + tls + "' is not one UCX_TLS value: pass each case as its own argument";
            return {};
          },
          "UCX_TLS"))
      ->capture_default_str();
  cmd->add_option("--sizes", opt->sizes, "Block sizes (B, KiB, MiB; multiples of 64 KiB)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--holders", opt->holders, "Holder node counts (the prefix is striped)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--reps", opt->reps, "Timed bandwidth repetitions (median)")
      ->capture_default_str();
  cmd->add_option("--lat-iters", opt->lat_iters, "One-block loads for latency (0: by size)");
  cmd->add_flag("!--no-netns", opt->netns,
                "Skip the case across a veth pair between network namespaces");
  cmd->add_flag("--netns-only", opt->netns_only,
                "Only the netns case; exit 77 when namespaces cannot be created");
  cmd->add_option("--pinned-runs", opt->pinned_runs,
                  "Pinned ucx_perftest runs per mode for blocks under 1 MiB (median; 0: none)");
  cmd->add_option("--perftest-mib", opt->perftest_mib, "MiB each ucx_perftest bandwidth run moves")
      ->capture_default_str();
  cmd->add_option("--prefix-mib", opt->prefix_mib,
                  "MiB of blocks per case (0: 64 MiB for blocks under 1 MiB, else 512 MiB)")
      ->capture_default_str();
  cmd->add_flag("--ucx-peer-errors", opt->data_peer_errors,
                "Nodes pull over endpoints with UCX peer error handling (their old default)");
  cmd->callback([opt] {
    ::signal(SIGPIPE, SIG_IGN);
    Run(*opt);
  });
});

}  // namespace
}  // namespace strata::bench
