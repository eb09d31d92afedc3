#include "transport/peer_pool_mapping.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>

namespace strata::transport {
namespace {

uint64_t NamespaceInode(const char* path) {
  struct stat st {};
  return ::stat(path, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

std::string Errno(int e) { return std::strerror(e); }

// Through syscall(2): glibc 2.36's <sys/pidfd.h> declares its wrappers without C linkage.
int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int PidfdGetfd(int pidfd, int fd) {
  return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0));
}

}  // namespace

const wire::SameHost& LocalSameHost() {
  static const wire::SameHost self = [] {
    wire::SameHost s;
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::getline(in, s.boot_id);
    s.net_ns = NamespaceInode("/proc/self/ns/net");
    s.pid_ns = NamespaceInode("/proc/self/ns/pid");
    s.uid = static_cast<uint32_t>(::geteuid());
    s.pid = static_cast<uint32_t>(::getpid());
    return s;
  }();
  return self;
}

std::string SameHostMismatch(const wire::SameHost& theirs) {
  const wire::SameHost& mine = LocalSameHost();
  if (mine.boot_id.empty() || theirs.boot_id != mine.boot_id) return "another host (boot id)";
  if (mine.net_ns == 0 || theirs.net_ns != mine.net_ns) return "another network namespace";
  if (mine.pid_ns == 0 || theirs.pid_ns != mine.pid_ns) return "another pid namespace";
  if (theirs.uid != mine.uid) return "another uid";
  if (theirs.pid == 0 || theirs.pid == mine.pid) return "no usable pid";
  return "";
}

Result<std::shared_ptr<PeerPoolMapping>> PeerPoolMapping::Open(uint32_t pid) {
  const int pidfd = PidfdOpen(static_cast<pid_t>(pid));
  if (pidfd < 0) {
    const int e = errno;
    if (e == ENOSYS) return Status::NotSupported("pidfd_open: not in this kernel");
    return Status::Unavailable("pidfd_open(" + std::to_string(pid) + "): " + Errno(e));
  }
  // A descriptor number no process has open: EBADF means the kernel would hand us the holder's
  // descriptors (the ptrace check comes first), EPERM that it would not.
  const int probe = PidfdGetfd(pidfd, INT_MAX - 1);
  const int e = errno;
  if (probe >= 0) {
    ::close(probe);
  } else if (e != EBADF) {
    ::close(pidfd);
    if (e == ENOSYS) return Status::NotSupported("pidfd_getfd: not in this kernel (Linux < 5.6)");
    if (e == EPERM || e == EACCES)
      return Status::PermissionDenied("pidfd_getfd refused (" + Errno(e) +
                                      "): no ptrace access to the holder (Yama ptrace_scope?)");
    return Status::Unavailable("pidfd_getfd: " + Errno(e));
  }
  return std::shared_ptr<PeerPoolMapping>(new PeerPoolMapping(pidfd));
}

PeerPoolMapping::~PeerPoolMapping() { ::close(pidfd_); }

PeerPoolMapping::Slab::~Slab() {
  populate.Stop();
  if (base != nullptr) ::munmap(const_cast<std::byte*>(base), bytes);
}

Result<std::shared_ptr<const PeerPoolMapping::Slab>> PeerPoolMapping::MapSlab(
    const wire::MappedBlock& block) {
  const int fd = PidfdGetfd(pidfd_, block.fd);
  if (fd < 0)
    return Status::Unavailable("pidfd_getfd of the holder's slab " + std::to_string(block.slab) +
                               ": " + Errno(errno));
  struct stat st {};
  Status bad;
  if (::fstat(fd, &st) != 0)
    bad = Status::IOError("fstat of a holder's slab: " + Errno(errno));
  else if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < block.offset + block.length)
    bad = Status::Corruption("the holder's descriptor " + std::to_string(block.fd) +
                             " is not slab " + std::to_string(block.slab) + " (" +
                             std::to_string(st.st_size) + " bytes)");
  if (!bad.ok()) {
    ::close(fd);
    return bad;
  }
  const size_t bytes = static_cast<size_t>(st.st_size);
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  const int e = errno;
  ::close(fd);  // the mapping keeps the memfd alive
  if (p == MAP_FAILED) return Status::IOError("mmap of a holder's slab: " + Errno(e));
  auto slab = std::make_shared<Slab>();
  slab->base = static_cast<const std::byte*>(p);
  slab->bytes = bytes;
  slab->generation = block.generation;
  slabs_mapped_.fetch_add(1, std::memory_order_relaxed);
  // Fill the mapping's page table in the background, 2 MiB at a time, so that later copies do not
  // fault (core/page_populate.h); ~Slab stops it before unmapping.
  slab->populate = BackgroundPopulate(slab->base, bytes, size_t{2} << 20);
  std::shared_ptr<const Slab> out = std::move(slab);
  return out;
}

Result<PeerPoolMapping::Located> PeerPoolMapping::Locate(const wire::MappedBlock& block) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slabs_.find(block.slab);
  std::shared_ptr<const Slab> slab;
  if (it != slabs_.end() && it->second->generation == block.generation &&
      block.offset + block.length <= it->second->bytes) {
    slab = it->second;
  } else {
    auto mapped = MapSlab(block);
    if (!mapped.ok()) {
      if (++failures_ >= kMaxFailures) off_.store(true, std::memory_order_relaxed);
      return mapped.status();
    }
    slab = std::move(mapped).value();
    slabs_[block.slab] = slab;
  }
  failures_ = 0;
  return Located{slab, slab->base + block.offset};
}

}  // namespace strata::transport
