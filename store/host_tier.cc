#include "store/host_tier.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace strata::store {
namespace {

constexpr uint64_t k2MiB = uint64_t{2} << 20;

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void HostCopy(std::byte* dst, const std::byte* src, size_t n) { std::memcpy(dst, src, n); }

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

Result<std::unique_ptr<HostTier>> HostTier::Open(const HostTierOptions& options) {
  uint32_t num_slabs = 0, max_blocks = 0;
  STRATA_RETURN_IF_ERROR(
      ValidateOptions(options.pool, options.capacity_bytes, &num_slabs, &max_blocks));
  STRATA_ASSIGN_OR_RETURN(auto policy, MakeEvictionPolicy(max_blocks, options.pool.policy));

  const uint64_t size = uint64_t{num_slabs} * options.pool.slab_bytes;
  // Block headers live in daemon-private memory, never in the memfd that clients map.
  const uint64_t header_bytes = RoundUp(uint64_t{max_blocks} * kBlockHeaderSize, 4096);
  void* headers = mmap(nullptr, header_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (headers == MAP_FAILED) return Status::IOError(Errno("mmap header area"));
  struct HeaderGuard {
    void* p;
    uint64_t n;
    ~HeaderGuard() {
      if (p != nullptr) munmap(p, n);
    }
  } header_guard{headers, header_bytes};

  int fd = -1;
  bool hugetlb = false;
  if (options.hugetlb) {
    fd = memfd_create(options.name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
    if (fd >= 0 && ftruncate(fd, static_cast<off_t>(size)) != 0) {
      close(fd);
      fd = -1;
    }
    hugetlb = fd >= 0;
  }
  if (fd < 0) {
    fd = memfd_create(options.name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return Status::IOError(Errno("memfd_create"));
    if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
      Status st = errno == ENOSPC || errno == ENOMEM ? Status::NoSpace(Errno("ftruncate memfd"))
                                                     : Status::IOError(Errno("ftruncate memfd"));
      close(fd);
      return st;
    }
  }
  // Reserve size + 2 MiB of address space, then map the memfd at a 2 MiB boundary inside it.
  const uint64_t reservation_size = size + k2MiB;
  void* reservation = mmap(nullptr, reservation_size, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reservation == MAP_FAILED) {
    close(fd);
    return Status::IOError(Errno("mmap reservation"));
  }
  auto* aligned = reinterpret_cast<std::byte*>(
      RoundUp(reinterpret_cast<uintptr_t>(reservation), k2MiB));
  const bool at_open = options.populate == HostTierOptions::Populate::kAtOpen;
  const int flags = MAP_SHARED | MAP_FIXED | (at_open ? MAP_POPULATE : 0);
  void* base = mmap(aligned, size, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (base == MAP_FAILED) {
    Status st = Status::IOError(Errno("mmap memfd"));
    munmap(reservation, reservation_size);
    close(fd);
    if (hugetlb) {  // hugetlbfs accepts the size but has too few reserved pages: use 4 KiB pages
      HostTierOptions fallback = options;
      fallback.hugetlb = false;
      return Open(fallback);
    }
    return st;
  }
  if (!hugetlb) (void)madvise(base, size, MADV_HUGEPAGE);  // best effort (THP for shmem)

  // From here on nobody can map the memfd writable (F_SEAL_FUTURE_WRITE: the mapping above stays
  // the only writable one) or resize it, and the descriptor handed to clients is a read-only
  // reopen of it, which mode 0400 keeps from being reopened read-write through /proc.
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) !=
      0) {
    Status st = Status::IOError(Errno("sealing the pool memfd"));
    munmap(reservation, reservation_size);
    close(fd);
    return st;
  }
  (void)fchmod(fd, 0400);
  const std::string self_fd = "/proc/self/fd/" + std::to_string(fd);
  const int read_only_fd = open(self_fd.c_str(), O_RDONLY | O_CLOEXEC);
  if (read_only_fd < 0) {
    Status st = Status::IOError(Errno(("reopening the pool read-only through " + self_fd).c_str()));
    munmap(reservation, reservation_size);
    close(fd);
    return st;
  }

  PoolMemory mem;
  mem.payload_base = static_cast<std::byte*>(base);
  mem.header_base = static_cast<std::byte*>(headers);
  mem.copy_in = &HostCopy;
  mem.copy_out = &HostCopy;
  mem.host_visible = true;
  std::unique_ptr<HostTier> tier(new HostTier(options, num_slabs, max_blocks, mem,
                                              std::move(policy), fd, read_only_fd,
                                              static_cast<std::byte*>(base), size, hugetlb,
                                              reservation, reservation_size, headers,
                                              header_bytes));
  header_guard.p = nullptr;  // the tier owns the header area now
  if (at_open) tier->populated_bytes_.store(size, std::memory_order_relaxed);
  if (options.populate == HostTierOptions::Populate::kBackground) {
    HostTier* t = tier.get();
    t->populating_.store(true, std::memory_order_relaxed);
    t->populator_ = std::thread([t] {
      t->PopulateAll();
      t->populating_.store(false, std::memory_order_relaxed);
    });
  }
  return tier;
}

void HostTier::PopulateAll() {
  // Slabs, low addresses first (the allocator hands out low slabs first).
  // MADV_POPULATE_WRITE only faults pages in; it never changes their contents, so it may run
  // while the tier serves puts and gets on the same pages.
  constexpr uint64_t kChunk = uint64_t{64} << 20;
  for (uint64_t off = 0; off < size_; off += kChunk) {
    if (stop_populating_.load(std::memory_order_relaxed)) return;
    const uint64_t len = std::min(kChunk, size_ - off);
    if (madvise(base_ + off, len, MADV_POPULATE_WRITE) != 0) return;  // EINVAL, ENOMEM, ...
    populated_bytes_.store(off + len, std::memory_order_relaxed);
  }
}

bool HostTier::WaitPopulated() {
  if (populator_.joinable()) populator_.join();
  return populated_bytes() == size_;
}

HostTier::HostTier(const HostTierOptions& options, uint32_t num_slabs, uint32_t max_blocks,
                   PoolMemory memory, std::unique_ptr<EvictionPolicy> policy, int fd,
                   int read_only_fd, std::byte* base, uint64_t size, bool hugetlb,
                   void* reservation, uint64_t reservation_size, void* headers,
                   uint64_t header_bytes)
    : BlockPool(TierKind::kHost, options.pool, num_slabs, max_blocks, memory, std::move(policy)),
      fd_(fd),
      read_only_fd_(read_only_fd),
      base_(base),
      size_(size),
      hugetlb_(hugetlb),
      reservation_(reservation),
      reservation_size_(reservation_size),
      headers_(headers),
      header_bytes_(header_bytes) {}

HostTier::~HostTier() {
  stop_populating_.store(true, std::memory_order_relaxed);
  if (populator_.joinable()) populator_.join();
  munmap(reservation_, reservation_size_);  // covers the fixed mapping inside it
  munmap(headers_, header_bytes_);
  close(read_only_fd_);
  close(fd_);
}

}  // namespace strata::store
