#include "store/host_tier.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>

namespace strata::store {
namespace {

constexpr uint64_t k2MiB = uint64_t{2} << 20;

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void HostCopy(std::byte* dst, const std::byte* src, size_t n) { std::memcpy(dst, src, n); }

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }


// Maps a fresh memfd of `bytes` writable at `at` (MAP_FIXED, replacing what is there), seals it
// and returns a read-only reopen of it; the writable descriptor is closed (the mapping keeps the
// memory). With `hugetlb`, MFD_HUGETLB pages or an error.
Result<int> MapSlabMemory(std::byte* at, uint64_t bytes, bool hugetlb, bool populate,
                          const std::string& name) {
  const unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING | (hugetlb ? MFD_HUGETLB : 0u);
  const int fd = memfd_create(name.c_str(), flags);
  if (fd < 0)
    return errno == EMFILE || errno == ENFILE
               ? Status::ResourceExhausted(Errno("memfd_create (one descriptor per slab)"))
               : Status::IOError(Errno("memfd_create"));
  struct FdGuard {
    int fd;
    ~FdGuard() { close(fd); }
  } guard{fd};
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0)
    return errno == ENOSPC || errno == ENOMEM ? Status::NoSpace(Errno("ftruncate memfd"))
                                              : Status::IOError(Errno("ftruncate memfd"));
  // Huge pages: hugetlbfs pages, or transparent ones where shmem THP is `always`, `within_size`
  // or `advise` (with `advise`, for memory that a MADV_HUGEPAGE mapping faults in; `never`, the
  // default of many distributions: 4 KiB pages). Advised before any page is faulted in, so that
  // even the populating faults allocate huge ones; a client's read-only mapping at the slab's
  // 2 MiB-aligned place then maps each one with a single page-table entry (docs/operations.md,
  // "Huge pages for the host pool").
  const int mflags = MAP_SHARED | MAP_FIXED | (populate && hugetlb ? MAP_POPULATE : 0);
  if (mmap(at, bytes, PROT_READ | PROT_WRITE, mflags, fd, 0) == MAP_FAILED)
    return Status::IOError(Errno("mmap memfd"));
  if (!hugetlb) {
    (void)madvise(at, bytes, MADV_HUGEPAGE);  // best effort (refused where THP is off)
    if (populate && madvise(at, bytes, MADV_POPULATE_WRITE) != 0) {
      for (uint64_t off = 0; off < bytes; off += 4096) at[off] = std::byte{0};  // Linux < 5.14
    }
  }
  // From here on nobody can map the memfd writable (F_SEAL_FUTURE_WRITE: the mapping above stays
  // the only writable one) or resize it, and the descriptor kept is a read-only reopen of it,
  // which mode 0400 keeps from being reopened read-write through /proc.
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0)
    return Status::IOError(Errno("sealing a pool memfd"));
  (void)fchmod(fd, 0400);
  const std::string self_fd = "/proc/self/fd/" + std::to_string(fd);
  const int read_only_fd = open(self_fd.c_str(), O_RDONLY | O_CLOEXEC);
  if (read_only_fd < 0)
    return Status::IOError(Errno(("reopening a pool memfd read-only through " + self_fd).c_str()));
  return read_only_fd;
}

// The selected word of a sysfs choice file ("always [advise] never" -> "advise"); "" when unread.
std::string SelectedSetting(const char* path) {
  char buf[256] = {};
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  const ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return "";
  const std::string s(buf, static_cast<size_t>(n));
  const size_t open_bracket = s.find('['), close_bracket = s.find(']');
  if (open_bracket == std::string::npos || close_bracket < open_bracket) return "";
  return s.substr(open_bracket + 1, close_bracket - open_bracket - 1);
}

// Whether memfd (shmem) memory of a MADV_HUGEPAGE mapping may get 2 MiB transparent pages: the
// 2 MiB size's own setting (Linux 6.11+), which `inherit` defers to the global one.
bool ShmemThpFor2MiB() {
  std::string mode =
      SelectedSetting("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled");
  if (mode.empty() || mode == "inherit")
    mode = SelectedSetting("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  return mode == "always" || mode == "within_size" || mode == "advise" || mode == "force";
}

// One descriptor per slab stays open: raise the soft limit towards the hard one if needed.
Status EnsureDescriptors(uint64_t slabs) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return Status::OK();
  const uint64_t wanted = slabs + 1024;  // what the daemon needs besides the slabs, generously
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < wanted) {
    lim.rlim_cur =
        lim.rlim_max == RLIM_INFINITY ? wanted : std::min<uint64_t>(wanted, lim.rlim_max);
    (void)setrlimit(RLIMIT_NOFILE, &lim);
    (void)getrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < slabs + 64)
    return Status::ResourceExhausted(
        "the host pool needs one descriptor per slab (" + std::to_string(slabs) +
        ") but the open-files limit is " + std::to_string(lim.rlim_cur) +
        ": raise it (ulimit -n, LimitNOFILE=) or use larger slabs");
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<HostTier>> HostTier::Open(const HostTierOptions& options) {
  uint32_t num_slabs = 0, max_blocks = 0;
  STRATA_RETURN_IF_ERROR(
      ValidateOptions(options.pool, options.capacity_bytes, &num_slabs, &max_blocks));
  STRATA_ASSIGN_OR_RETURN(auto policy, MakeEvictionPolicy(max_blocks, options.pool.policy));
  STRATA_RETURN_IF_ERROR(EnsureDescriptors(num_slabs));

  const uint64_t slab_bytes = options.pool.slab_bytes;
  const uint64_t size = uint64_t{num_slabs} * slab_bytes;
  // Block headers live in daemon-private memory, never in the memfds that clients map.
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

  // Reserve size + 2 MiB of address space, then map the slabs' memfds at a 2 MiB boundary
  // inside it, one after the other.
  const uint64_t reservation_size = size + k2MiB;
  void* reservation = mmap(nullptr, reservation_size, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reservation == MAP_FAILED) return Status::IOError(Errno("mmap reservation"));
  auto* base = reinterpret_cast<std::byte*>(
      RoundUp(reinterpret_cast<uintptr_t>(reservation), k2MiB));
  const bool at_open = options.populate == HostTierOptions::Populate::kAtOpen;
  std::unique_ptr<Slab[]> slabs(new Slab[num_slabs]);
  auto release = [&] {
    for (uint32_t i = 0; i < num_slabs; ++i)
      if (slabs[i].fd.load() >= 0) close(slabs[i].fd.load());
    munmap(reservation, reservation_size);
  };
  for (uint32_t i = 0; i < num_slabs; ++i) {
    auto fd = MapSlabMemory(base + uint64_t{i} * slab_bytes, slab_bytes, options.hugetlb,
                            at_open, options.name);
    if (!fd.ok()) {
      release();
      if (options.hugetlb) {  // too few reserved hugetlbfs pages: use 4 KiB pages
        HostTierOptions fallback = options;
        fallback.hugetlb = false;
        return Open(fallback);
      }
      return fd.status();
    }
    slabs[i].fd.store(*fd, std::memory_order_relaxed);
  }

  PoolMemory mem;
  mem.payload_base = base;
  mem.header_base = static_cast<std::byte*>(headers);
  mem.copy_in = &HostCopy;
  mem.copy_out = &HostCopy;
  mem.host_visible = true;
  std::unique_ptr<HostTier> tier(new HostTier(options, num_slabs, max_blocks, mem,
                                              std::move(policy), std::move(slabs), base, size,
                                              options.hugetlb, reservation, reservation_size,
                                              headers, header_bytes));
  header_guard.p = nullptr;  // the tier owns the header area now
  tier->page_kind_ = options.hugetlb ? "hugetlb" : ShmemThpFor2MiB() ? "transparent" : "4KiB";
  STRATA_ASSIGN_OR_RETURN(tier->load_index_,
                          LoadIndex::Create(options.pool.tenants, max_blocks,
                                            options.name + "-load-index"));
  HostTier* t = tier.get();
  t->allocator().SetLendHook([t](uint32_t slab, uint16_t tenant) {
    return t->RenewSlab(slab, tenant);
  });
  if (at_open) tier->populated_bytes_.store(size, std::memory_order_relaxed);
  if (options.populate == HostTierOptions::Populate::kBackground) {
    t->populating_.store(true, std::memory_order_relaxed);
    t->populator_ = std::thread([t] {
      t->PopulateAll();
      t->populating_.store(false, std::memory_order_relaxed);
    });
  }
  return tier;
}

void HostTier::OnPublished(uint32_t slot, const BlockHeader& header, uint64_t offset, int lane) {
  const uint32_t slab = static_cast<uint32_t>(offset / slab_bytes());
  (void)load_index_->Publish(slot, allocator().TenantOfLane(lane), header, offset,
                             SlabGeneration(slab));
}

void HostTier::OnUnpublished(uint32_t slot) { load_index_->Unpublish(slot); }

bool HostTier::RenewSlab(uint32_t slab, uint16_t tenant) {
  std::byte* at = base_ + uint64_t{slab} * slab_bytes();
  std::lock_guard lock(renew_mu_);
  auto fd = MapSlabMemory(at, slab_bytes(), hugetlb_, false, name_);
  if (!fd.ok()) {
    // The old memfd is still mapped (MAP_FIXED replaces only on success): the slab stays free
    // with the old tenant's bytes, and the put that wanted it fails with NoSpace.
    std::cerr << "strata: host tier: slab " << slab << " could not get fresh memory for tenant "
              << tenant << ": " << fd.status().ToString() << std::endl;
    return false;
  }
  const int old = slabs_[slab].fd.exchange(*fd, std::memory_order_acq_rel);
  slabs_[slab].generation.fetch_add(1, std::memory_order_acq_rel);
  close(old);
  slabs_renewed_.fetch_add(1, std::memory_order_relaxed);
  for (const auto& [id, listener] : renewed_listeners_) listener(slab, at, slab_bytes());
  return true;
}

uint64_t HostTier::AddSlabRenewedListener(SlabRenewedListener listener) {
  std::lock_guard lock(renew_mu_);
  const uint64_t id = next_listener_++;
  renewed_listeners_.emplace_back(id, std::move(listener));
  return id;
}

void HostTier::RemoveSlabRenewedListener(uint64_t id) {
  std::lock_guard lock(renew_mu_);
  std::erase_if(renewed_listeners_, [id](const auto& l) { return l.first == id; });
}

Result<HostTier::SlabDescriptor> HostTier::DupSlab(uint32_t slab) const {
  if (slab >= num_slabs())
    return Status::InvalidArgument("slab " + std::to_string(slab) + " of " +
                                   std::to_string(num_slabs()));
  std::lock_guard lock(renew_mu_);
  SlabDescriptor d;
  d.fd = fcntl(slabs_[slab].fd.load(std::memory_order_acquire), F_DUPFD_CLOEXEC, 0);
  if (d.fd < 0) return Status::IOError(Errno("dup of a slab descriptor"));
  d.generation = slabs_[slab].generation.load(std::memory_order_acquire);
  d.tenant = SlabTenant(slab);
  return d;
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
                   PoolMemory memory, std::unique_ptr<EvictionPolicy> policy,
                   std::unique_ptr<Slab[]> slabs, std::byte* base, uint64_t size, bool hugetlb,
                   void* reservation, uint64_t reservation_size, void* headers,
                   uint64_t header_bytes)
    : BlockPool(TierKind::kHost, options.pool, num_slabs, max_blocks, memory, std::move(policy)),
      name_(options.name),
      slabs_(std::move(slabs)),
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
  munmap(reservation_, reservation_size_);  // covers the slabs' fixed mappings inside it
  munmap(headers_, header_bytes_);
  for (uint32_t i = 0; i < num_slabs(); ++i) close(slabs_[i].fd.load());
}

}  // namespace strata::store
