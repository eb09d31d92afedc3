#include "store/load_index.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <string>

namespace strata::store {
namespace {

using Layout = LoadIndexLayout;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Makes a sealed memfd of `bytes`, maps it writable into this process and returns a read-only
// reopen of it (as the pool's slabs, host_tier.cc).
Result<int> MakeSegment(uint64_t bytes, const std::string& name, std::byte** base) {
  const int fd = memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return Status::IOError(Errno("memfd_create (load index)"));
  struct FdGuard {
    int fd;
    ~FdGuard() { close(fd); }
  } guard{fd};
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0)
    return Status::IOError(Errno("ftruncate load index memfd"));
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Status::IOError(Errno("mmap load index memfd"));
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) !=
      0) {
    munmap(p, bytes);
    return Status::IOError(Errno("sealing the load index memfd"));
  }
  (void)fchmod(fd, 0400);
  const std::string self_fd = "/proc/self/fd/" + std::to_string(fd);
  const int ro = open(self_fd.c_str(), O_RDONLY | O_CLOEXEC);
  if (ro < 0) {
    munmap(p, bytes);
    return Status::IOError(Errno("reopening the load index read-only through " + self_fd));
  }
  *base = static_cast<std::byte*>(p);
  return ro;
}

}  // namespace

Result<LoadIndexView> LoadIndexView::Attach(const std::byte* base, uint64_t bytes) {
  if (base == nullptr || bytes < Layout::kLineBytes)
    return Status::InvalidArgument("load index segment too small");
  Layout::SegmentHeader h;
  std::memcpy(&h, base, sizeof(h));
  if (h.magic != Layout::kMagic || h.version != Layout::kVersion || h.probe != Layout::kProbe ||
      h.entries == 0 || !std::has_single_bit(h.entries) || h.entries > (uint64_t{1} << 40) ||
      Layout::SegmentBytes(h.entries) > bytes)
    return Status::InvalidArgument("not a load index segment of version " +
                                   std::to_string(Layout::kVersion));
  LoadIndexView v;
  v.table_ = reinterpret_cast<const Layout::Entry*>(base + Layout::kLineBytes);
  v.entries_ = h.entries;
  v.tenant_ = static_cast<uint16_t>(h.tenant);
  return v;
}

bool LoadIndexView::Find(const BlockKey& key, const NamespaceId& ns, LoadIndexHit* hit) const {
  if (table_ == nullptr) return false;
  const uint64_t first = key.low & (entries_ - 1);
  for (uint64_t i = first; i < first + Layout::kProbe; ++i) {
    const Layout::Entry& e = table_[i];
    const uint64_t s1 = e.w[0].load(std::memory_order_acquire);
    if (s1 & 1) continue;
    if (e.w[2].load(std::memory_order_relaxed) != key.low ||
        e.w[1].load(std::memory_order_relaxed) != key.high)
      continue;
    const uint64_t place = e.w[6].load(std::memory_order_relaxed);
    const uint64_t gen_codec = e.w[7].load(std::memory_order_relaxed);
    const uint64_t checksum = e.w[5].load(std::memory_order_relaxed);
    const NamespaceId got{e.w[3].load(std::memory_order_relaxed),
                          e.w[4].load(std::memory_order_relaxed)};
    std::atomic_thread_fence(std::memory_order_acquire);
    if (e.w[0].load(std::memory_order_relaxed) != s1) return false;  // changed under us: a miss
    if ((place >> 32) == 0 || got != ns) return false;  // emptied, or another namespace's block
    hit->offset = (place & 0xFFFFFFFFu) * 4096;
    hit->length = place >> 32;
    hit->checksum = checksum;
    hit->codec = static_cast<Codec>((gen_codec >> 32) & 0xFFFF);
    hit->slab_generation = static_cast<uint32_t>(gen_codec);
    hit->seq = &e.w[0];
    hit->seq_value = s1;
    return true;
  }
  return false;
}

LoadIndex::LoadIndex(uint16_t tenants, uint64_t entries, uint32_t max_blocks)
    : tenants_(tenants),
      entries_(entries),
      fds_(new int[tenants]),
      tables_(new Layout::Entry*[tenants]),
      bases_(new std::byte*[tenants]),
      slot_entry_(new std::atomic<uint64_t>[max_blocks]),
      max_blocks_(max_blocks) {
  for (uint16_t t = 0; t < tenants; ++t) {
    fds_[t] = -1;
    tables_[t] = nullptr;
    bases_[t] = nullptr;
  }
  for (uint32_t i = 0; i < max_blocks; ++i) slot_entry_[i].store(0, std::memory_order_relaxed);
}

LoadIndex::~LoadIndex() {
  for (uint16_t t = 0; t < tenants_; ++t) {
    if (bases_[t] != nullptr) munmap(bases_[t], bytes_per_segment());
    if (fds_[t] >= 0) close(fds_[t]);
  }
}

Result<std::unique_ptr<LoadIndex>> LoadIndex::Create(uint16_t tenants, uint32_t max_blocks,
                                                     const std::string& name) {
  const uint64_t entries = std::max<uint64_t>(1024, std::bit_ceil(uint64_t{max_blocks} * 2));
  std::unique_ptr<LoadIndex> index(new LoadIndex(tenants, entries, max_blocks));
  const uint64_t bytes = Layout::SegmentBytes(entries);
  for (uint16_t t = 0; t < tenants; ++t) {
    std::byte* base = nullptr;
    STRATA_ASSIGN_OR_RETURN(int fd, MakeSegment(bytes, name, &base));
    index->fds_[t] = fd;
    index->bases_[t] = base;
    Layout::SegmentHeader h{};
    h.magic = Layout::kMagic;
    h.version = Layout::kVersion;
    h.probe = Layout::kProbe;
    h.entries = entries;
    h.tenant = t;
    std::memcpy(base, &h, sizeof(h));
    index->tables_[t] = reinterpret_cast<Layout::Entry*>(base + Layout::kLineBytes);
  }
  return index;
}

bool LoadIndex::Publish(uint32_t slot, uint16_t tenant, const BlockHeader& header, uint64_t offset,
                        uint32_t slab_generation) {
  if (slot >= max_blocks_ || tenant >= tenants_ || header.payload_length == 0 ||
      header.payload_length > UINT32_MAX || offset / 4096 > UINT32_MAX)
    return false;
  Layout::Entry* table = tables_[tenant];
  const uint64_t first = header.key.low & (entries_ - 1);
  for (uint64_t i = first; i < first + Layout::kProbe; ++i) {
    Layout::Entry& e = table[i];
    uint64_t s = e.w[0].load(std::memory_order_relaxed);
    if ((s & 1) || (e.w[6].load(std::memory_order_relaxed) >> 32) != 0) continue;
    if (!e.w[0].compare_exchange_strong(s, s + 1, std::memory_order_acq_rel)) continue;
    // Claimed (odd): no other publisher takes it, readers skip it. The fence orders the odd seq
    // before the word stores below for a reader (its acquire fence, then its second seq load):
    // a reader that saw any new word sees seq changed. The CAS's own release half orders only
    // what precedes it (on x86 the locked CAS is a full barrier anyway; on ARM it is not).
    std::atomic_thread_fence(std::memory_order_release);
    if ((e.w[6].load(std::memory_order_relaxed) >> 32) != 0) {  // filled between load and CAS
      e.w[0].store(s + 2, std::memory_order_release);
      continue;
    }
    e.w[1].store(header.key.high, std::memory_order_relaxed);
    e.w[2].store(header.key.low, std::memory_order_relaxed);
    e.w[3].store(header.ns.high, std::memory_order_relaxed);
    e.w[4].store(header.ns.low, std::memory_order_relaxed);
    e.w[5].store(header.payload_checksum, std::memory_order_relaxed);
    e.w[7].store(uint64_t{slab_generation} | (uint64_t{static_cast<uint16_t>(header.codec)} << 32),
                 std::memory_order_relaxed);
    e.w[6].store((offset / 4096) | (header.payload_length << 32), std::memory_order_relaxed);
    e.w[0].store(s + 2, std::memory_order_release);
    slot_entry_[slot].store((uint64_t{tenant} << 32) | (i + 1), std::memory_order_relaxed);
    published_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  full_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void LoadIndex::Unpublish(uint32_t slot) {
  if (slot >= max_blocks_) return;
  const uint64_t v = slot_entry_[slot].exchange(0, std::memory_order_relaxed);
  if (v == 0) return;
  Layout::Entry& e = tables_[v >> 32][(v & 0xFFFFFFFFu) - 1];
  // The entry may be mid-claim by a publisher of another key that lost its re-check (odd for a
  // moment): wait for even, then make it odd ourselves.
  uint64_t s = e.w[0].load(std::memory_order_relaxed);
  for (;;) {
    if (s & 1) {
      s = e.w[0].load(std::memory_order_relaxed);
      continue;
    }
    if (e.w[0].compare_exchange_weak(s, s + 1, std::memory_order_relaxed)) break;
  }
  std::atomic_thread_fence(std::memory_order_release);
  e.w[6].store(0, std::memory_order_relaxed);
  e.w[0].store(s + 2, std::memory_order_release);
  published_.fetch_sub(1, std::memory_order_relaxed);
}

Result<LoadIndex::Segment> LoadIndex::DupSegment(uint16_t tenant) const {
  if (tenant >= tenants_)
    return Status::InvalidArgument("tenant " + std::to_string(tenant) + " of " +
                                   std::to_string(tenants_));
  const int fd = fcntl(fds_[tenant], F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return Status::IOError(Errno("dup of a load index descriptor"));
  return Segment{fd, bytes_per_segment()};
}

}  // namespace strata::store
