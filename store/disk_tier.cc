#include "store/disk_tier.h"

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>

#include "store/thread_annotations.h"

namespace strata::store {
namespace {

constexpr uint64_t kAlign = 4096;
// Slots of a new tier's policy; it doubles as blocks arrive (DiskTier::Impl::GrowPolicy).
constexpr uint32_t kInitialPolicySlots = 4096;
constexpr size_t kRecordSize = 77;  // without the optional parent key, tag and compression

// The flags byte of a record (offset 76), and what follows it. (Records of the removed BlobDB
// back-end had it at offset 64: DiskTier::Open recognises them to refuse such a directory.)
constexpr uint8_t kHasParent = 1;   // a 16-byte parent key follows
constexpr uint8_t kHasTag = 2;      // then a tag: u16 LE length t, then t bytes (PutOptions::tag)
constexpr uint8_t kCompressed = 4;  // then u8 compression, u32 LE stored length

// Bytes after the flags byte for a block with (or without) a parent, a tag of `tag` bytes and
// compression.
size_t TrailerBytes(bool has_parent, std::string_view tag, bool compressed = false) {
  return (has_parent ? BlockKey::kSize : 0) + (tag.empty() ? 0 : 2 + tag.size()) +
         (compressed ? 5 : 0);
}
// Writes the flags byte at p[0] and the parent, tag and compression after it.
void EncodeTrailer(std::byte* p, const BlockKey* parent, std::string_view tag,
                   DiskCompression compression = DiskCompression::kNone, uint32_t stored = 0) {
  const bool compressed = compression != DiskCompression::kNone;
  p[0] = std::byte{static_cast<uint8_t>((parent ? kHasParent : 0) | (tag.empty() ? 0 : kHasTag) |
                                        (compressed ? kCompressed : 0))};
  size_t at = 1;
  if (parent) {
    parent->ToBytes(std::span<std::byte, BlockKey::kSize>(p + at, BlockKey::kSize));
    at += BlockKey::kSize;
  }
  if (!tag.empty()) {
    p[at] = std::byte{static_cast<uint8_t>(tag.size())};
    p[at + 1] = std::byte{static_cast<uint8_t>(tag.size() >> 8)};
    std::memcpy(p + at + 2, tag.data(), tag.size());
    at += 2 + tag.size();
  }
  if (compressed) {
    p[at] = std::byte{static_cast<uint8_t>(compression)};
    for (int i = 0; i < 4; ++i) p[at + 1 + i] = std::byte{static_cast<uint8_t>(stored >> (8 * i))};
  }
}
// Reads the flags byte at p[0] and what follows, within `avail` bytes from p. Returns the bytes
// taken (flags included), 0 when they do not fit or the flags are unknown. `compression` and
// `stored` are set for a compressed record (else kNone and 0); nullptr refuses compressed
// records (as BlobDB records never were).
size_t DecodeTrailer(const std::byte* p, size_t avail, bool* has_parent, BlockKey* parent,
                     std::string* tag, DiskCompression* compression = nullptr,
                     uint32_t* stored = nullptr) {
  if (avail < 1) return 0;
  const uint8_t flags = std::to_integer<uint8_t>(p[0]);
  if (flags & ~(kHasParent | kHasTag | kCompressed)) return 0;
  if ((flags & kCompressed) && compression == nullptr) return 0;
  size_t at = 1;
  *has_parent = flags & kHasParent;
  if (*has_parent) {
    if (avail < at + BlockKey::kSize) return 0;
    *parent = BlockKey::FromBytes(std::span<const std::byte, BlockKey::kSize>(p + at, 16));
    at += BlockKey::kSize;
  }
  tag->clear();
  if (flags & kHasTag) {
    if (avail < at + 2) return 0;
    const size_t t = std::to_integer<size_t>(p[at]) | (std::to_integer<size_t>(p[at + 1]) << 8);
    if (t == 0 || avail < at + 2 + t) return 0;
    tag->assign(reinterpret_cast<const char*>(p + at + 2), t);
    at += 2 + t;
  }
  if (compression != nullptr) {
    *compression = DiskCompression::kNone;
    *stored = 0;
  }
  if (flags & kCompressed) {
    if (avail < at + 5) return 0;
    const uint8_t kind = std::to_integer<uint8_t>(p[at]);
    if (!IsKnownDiskCompression(kind)) return 0;
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i) n |= std::to_integer<uint32_t>(p[at + 1 + i]) << (8 * i);
    if (n == 0) return 0;
    *compression = static_cast<DiskCompression>(kind);
    *stored = n;
    at += 5;
  }
  return at;
}

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
uint64_t KeyHash(const BlockKey& k) { return k.low ^ (k.high * 0x9E3779B97F4A7C15ULL); }

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

Status DiskTierBlobDbRemoved(const std::string& path) {
  return Status::NotSupported(
      "disk tier at '" + path + "' was written by the BlobDB payload back-end, which was removed "
      "(issue 17; only the O_DIRECT slab file remains); its blocks were left as they are. Move the "
      "directory aside or delete it to start an empty disk tier there");
}

namespace {

Status FromRocks(const rocksdb::Status& s, const char* what) {
  if (s.ok()) return Status::OK();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kNoSpace) return Status::NoSpace(msg);
  if (s.IsCorruption()) return Status::Corruption(msg);
  if (s.IsNotFound()) return Status::NotFound(msg);
  return Status::IOError(msg);
}

void PutLe(std::byte* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
uint64_t GetLe(const std::byte* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t(std::to_integer<uint8_t>(p[i])) << (8 * i);
  return v;
}

// 4 KiB-aligned scratch memory for O_DIRECT, one per thread, grown on demand (disk path only).
// One Linux AIO context per reading thread (io_setup is a syscall and a kernel allocation; a
// context per Get would cost more than it saves). Linux AIO, not io_uring: it needs no library,
// and with O_DIRECT on ext4/xfs it is truly asynchronous.
class ThreadAio {
 public:
  static constexpr unsigned kDepth = 4;
  static ThreadAio& Get() {
    thread_local ThreadAio aio;
    return aio;
  }
  bool ok() const { return ok_; }
  aio_context_t ctx() const { return ctx_; }

 private:
  ThreadAio() { ok_ = syscall(SYS_io_setup, kDepth, &ctx_) == 0; }
  ~ThreadAio() {
    if (ok_) syscall(SYS_io_destroy, ctx_);
  }
  aio_context_t ctx_ = 0;
  bool ok_ = false;
};

// Per-thread scratch buffers: kBounce for O_DIRECT bounces of unaligned caller buffers, kStored
// for compressed payloads on their way to or from the disk (both may be live in one call).
enum Scratch { kBounce = 0, kStored = 1 };
std::byte* AlignedScratch(size_t bytes, Scratch which = kBounce) {
  struct Buf {
    std::byte* p = nullptr;
    size_t n = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf bufs[2];
  Buf& buf = bufs[which];
  if (buf.n < bytes) {
    std::free(buf.p);
    buf.p = static_cast<std::byte*>(std::aligned_alloc(kAlign, RoundUp(bytes, kAlign)));
    buf.n = buf.p ? RoundUp(bytes, kAlign) : 0;
  }
  return buf.p;
}

bool Aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAlign == 0; }

// Free space of the slab file: best fit by length, coalescing neighbours.
class ExtentAllocator {
 public:
  // Returns the offset of `len` free bytes, or UINT64_MAX.
  uint64_t Allocate(uint64_t len) {
    auto it = by_len_.lower_bound({len, 0});
    if (it == by_len_.end()) return UINT64_MAX;
    const auto [flen, off] = *it;
    by_len_.erase(it);
    by_off_.erase(off);
    if (flen > len) Insert(off + len, flen - len);
    free_bytes_ -= len;
    return off;
  }
  void Free(uint64_t off, uint64_t len) {
    free_bytes_ += len;
    auto next = by_off_.lower_bound(off);
    if (next != by_off_.end() && next->first == off + len) {
      len += next->second;
      by_len_.erase({next->second, next->first});
      next = by_off_.erase(next);
    }
    if (next != by_off_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == off) {
        off = prev->first;
        len += prev->second;
        by_len_.erase({prev->second, prev->first});
        by_off_.erase(prev);
      }
    }
    Insert(off, len);
  }
  uint64_t free_bytes() const { return free_bytes_; }
  size_t extents() const { return by_off_.size(); }

 private:
  void Insert(uint64_t off, uint64_t len) {
    by_off_[off] = len;
    by_len_.insert({len, off});
  }
  std::map<uint64_t, uint64_t> by_off_;
  std::set<std::pair<uint64_t, uint64_t>> by_len_;
  uint64_t free_bytes_ = 0;
};

}  // namespace

class DiskTier::Impl {
 public:
  explicit Impl(const DiskTierOptions& o) : options_(o), epoch_(std::chrono::steady_clock::now()) {}
  ~Impl() {
    if (db_) {
      // Flush the memtable so that the next Open reads sorted tables instead of replaying the
      // WAL (a clean close reopens fast; after a crash the WAL is replayed, bounded by
      // write_buffer_size).
      (void)db_->Flush(rocksdb::FlushOptions());
      (void)db_->FlushWAL(true);
      (void)db_->Close();
    }
    if (fd_ >= 0) close(fd_);
  }

  Status Open();
  Status Put(const BlockHeader& header, std::span<const std::byte> payload, const PutOptions& po);
  Result<BlockHeader> Get(const BlockKey& key, std::span<std::byte> out);
  Result<BlockLocation> Find(const BlockKey& key) const;
  Status Pin(const BlockKey& key, std::chrono::milliseconds ttl);
  Status Unpin(const BlockKey& key);
  Status Erase(const BlockKey& key);
  TierStats Stats() const;
  Status Sync();
  bool HasChildren(const BlockKey& key) const;
  const DiskTierOpenInfo& open_info() const { return open_info_; }
  std::vector<std::pair<BlockKey, std::string>> TakeRecoveredTags() {
    std::lock_guard lock(mu_);
    return std::move(recovered_tags_);
  }
  std::vector<BlockKey> Keys(const std::optional<NamespaceId>& ns) const;
  Result<NamespaceId> NamespaceOf(const BlockKey& key) const;

 private:
  enum State : uint8_t { kFree = 0, kWriting = 1, kLive = 2 };
  struct Entry {
    BlockHeader header;
    uint64_t offset = 0;
    uint32_t alloc = 0;  // bytes reserved in blocks.data
    uint32_t readers = 0;
    uint32_t pins = 0;
    uint32_t pin_deadline_ms = 0;
    // Slot of the parent block when inserted (kNoSlot: none), and the tier's clock at the last
    // insert or hit: what a rebuilt policy is refilled from (GrowPolicy), in this order.
    uint32_t parent = kNoSlot;
    uint32_t stored = 0;  // payload bytes in blocks.data (compressed length, or the raw length)
    uint64_t used_at = 0;
    State state = kFree;
    DiskCompression compression = DiskCompression::kNone;
  };

  uint32_t NowMs() const {
    return static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now() - epoch_)
                                     .count());
  }
  bool Pinned(const Entry& e, uint32_t now) const {
    return e.pins > 0 && static_cast<int32_t>(e.pin_deadline_ms - now) > 0;
  }
  bool Evictable(uint32_t slot, uint32_t now) const REQUIRES_LOCK(mu_) {
    const Entry& e = entries_[slot];
    return e.state == kLive && e.readers == 0 && !Pinned(e, now);
  }
  std::string DbKey(const BlockKey& key) const {
    auto b = key.ToBytes();
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  uint32_t Lookup(const BlockKey& key) const REQUIRES_LOCK(mu_) {
    auto it = index_.find(key);
    return it == index_.end() ? kNoSlot : it->second;
  }

  // Space of `len` bytes in blocks.data, evicting and growing the file as needed.
  Result<uint64_t> AllocateSpace(uint64_t len) REQUIRES_LOCK(mu_);
  Status GrowFile(uint64_t new_end) REQUIRES_LOCK(mu_);
  Status EvictOne() REQUIRES_LOCK(mu_);
  // Removes slot from index, RocksDB and allocator. REQUIRES: state kLive or kWriting.
  Status Drop(uint32_t slot) REQUIRES_LOCK(mu_);
  Result<uint32_t> NewSlot() REQUIRES_LOCK(mu_);
  // Replaces the policy with one of `capacity` slots holding the live blocks (oldest use first,
  // parents before their children). The frequencies the old policy remembered are lost; the
  // recency order is kept.
  Status GrowPolicy(uint32_t capacity) REQUIRES_LOCK(mu_);
  // Inserts `order`'s slots into the policy, each after its parent (parent_of(slot), kNoSlot:
  // none); a parent cycle (only bad records make one) is cut.
  template <typename ParentOf>
  void FillPolicy(const std::vector<uint32_t>& order, ParentOf parent_of) REQUIRES_LOCK(mu_);
  void ReleaseSlot(uint32_t slot) REQUIRES_LOCK(mu_);

  // True when Put should try to compress this block: compression is on and the block's codec is
  // not already an entropy coder (shuffle_zstd, shuffle_lz4: another pass would not shrink it).
  bool CompressionWorthTrying(const BlockHeader& header) const;
  // Compresses `payload` into this thread's kStored scratch, zero-padded to 4 KiB; the span
  // covers the compressed bytes (the padding follows them). Empty when the compressed form would
  // not take fewer 4 KiB pages than the raw payload (it is then stored raw).
  Result<std::span<const std::byte>> Compress(std::span<const std::byte> payload);
  // Reads a compressed payload (`stored` bytes in `alloc` on disk), decompresses it into `out`
  // (the raw length) and verifies the raw bytes against `header`'s checksum. Sets *undecodable
  // when the stored bytes do not decompress (Corruption is returned too).
  Status ReadCompressedPayload(uint64_t offset, uint32_t alloc, uint32_t stored,
                               DiskCompression compression, std::span<std::byte> out,
                               const BlockHeader& header, bool* undecodable);
  Status WritePayload(uint64_t offset, std::span<const std::byte> payload);
  Status ReadPayload(uint64_t offset, uint32_t alloc, std::span<std::byte> out, size_t len);
  // Reads the payload of `header` and verifies its checksum. With O_DIRECT the read is split into
  // pieces kept in flight by Linux AIO and each piece is hashed as it lands, so the checksum
  // overlaps the I/O instead of following it; otherwise (or without AIO) ReadPayload, then
  // VerifyPayload.
  Status ReadVerifiedPayload(uint64_t offset, uint32_t alloc, std::span<std::byte> out,
                             const BlockHeader& header);
  // The AIO part of ReadVerifiedPayload. Unavailable when AIO cannot be used (the caller falls
  // back); never returns while a read it submitted is still in flight.
  Status ReadVerifiedAio(uint64_t offset, std::byte* dst, uint32_t alloc,
                         const BlockHeader& header);

  const DiskTierOptions options_;
  const std::chrono::steady_clock::time_point epoch_;
  std::unique_ptr<rocksdb::DB> db_;
  int fd_ = -1;
  uint32_t max_blocks_ = 0;
  DiskTierOpenInfo open_info_;
  // Tags of the blocks found at Open (until TakeRecoveredTags).
  std::vector<std::pair<BlockKey, std::string>> recovered_tags_ GUARDED_BY(mu_);

  mutable std::mutex mu_;
  // Serialises this tier's writes to the RocksDB index (Put outside mu_, Delete under it; lock
  // order mu_ -> index_write_mu_). RocksDB is thread-safe, but its write-group hand-off between
  // concurrent writers synchronises through atomics that ThreadSanitizer cannot see in Debian's
  // uninstrumented librocksdb; one writer at a time keeps the stress test's reports to real races.
  std::mutex index_write_mu_;
  std::unique_ptr<EvictionPolicy> policy_;  // its own thread-safety; called under mu_ anyway
  std::unordered_map<BlockKey, uint32_t, BlockKeyHash> index_ GUARDED_BY(mu_);
  // Metadata grows with the blocks stored, up to max_blocks_: entries_ (a deque, so growing never
  // moves an entry), the index and the policy (rebuilt at twice the size when full). Slots at or
  // above entries_.size() are free and not listed in free_slots_.
  std::deque<Entry> entries_ GUARDED_BY(mu_);
  std::vector<uint32_t> free_slots_ GUARDED_BY(mu_);
  uint64_t clock_ GUARDED_BY(mu_) = 0;  // bumped by every insert and hit
  ExtentAllocator space_ GUARDED_BY(mu_);
  uint64_t file_end_ GUARDED_BY(mu_) = 0;   // bytes handed out from the file's tail
  uint64_t file_size_ GUARDED_BY(mu_) = 0;  // bytes fallocated
  uint64_t used_bytes_ GUARDED_BY(mu_) = 0;  // payload bytes reserved by live blocks
  uint64_t hits_ GUARDED_BY(mu_) = 0, misses_ GUARDED_BY(mu_) = 0, puts_ GUARDED_BY(mu_) = 0;
  uint64_t evictions_ GUARDED_BY(mu_) = 0, corrupt_ GUARDED_BY(mu_) = 0;
  uint64_t raw_bytes_ GUARDED_BY(mu_) = 0;          // raw payload bytes of live blocks
  uint64_t compressed_blocks_ GUARDED_BY(mu_) = 0;  // live blocks stored compressed
  uint64_t stored_raw_ GUARDED_BY(mu_) = 0, decompress_errors_ GUARDED_BY(mu_) = 0;
};

Status DiskTier::Impl::Open() {
  const auto start = std::chrono::steady_clock::now();
  if (options_.path.empty()) return Status::InvalidArgument("disk tier path is empty");
  if (options_.capacity_bytes < kAlign)
    return Status::InvalidArgument("disk tier capacity must be at least 4 KiB");
  if (options_.extend_bytes == 0 || options_.extend_bytes % kAlign)
    return Status::InvalidArgument("extend_bytes must be a positive multiple of 4 KiB");
  uint64_t blocks = options_.max_blocks ? options_.max_blocks
                                        : std::max<uint64_t>(1, options_.capacity_bytes / 65536);
  if (blocks >= (uint64_t{1} << 31)) return Status::InvalidArgument("max_blocks too large");
  max_blocks_ = static_cast<uint32_t>(blocks);
  std::error_code ec;
  std::filesystem::create_directories(options_.path, ec);
  if (ec) return Status::IOError("cannot create " + options_.path + ": " + ec.message());

  rocksdb::Options opts;
  opts.create_if_missing = true;
  opts.compression = rocksdb::kNoCompression;
  opts.max_background_jobs = 2;
  opts.write_buffer_size = 16 << 20;
  const std::string index_dir = options_.path + "/index";
  // A directory of the removed BlobDB back-end (issue 17): refused before anything is opened,
  // so nothing in it is touched. Its payloads lived in RocksDB blob files; a tier that never
  // flushed has none yet, and is recognised by its records below.
  if (std::filesystem::is_directory(index_dir, ec)) {
    for (const auto& f : std::filesystem::directory_iterator(index_dir, ec))
      if (f.path().extension() == ".blob") return DiskTierBlobDbRemoved(options_.path);
  }
  uint64_t file_bytes = 0;
  {
    const std::string data = options_.path + "/blocks.data";
    int flags = O_RDWR | O_CREAT | O_CLOEXEC | (options_.direct_io ? O_DIRECT : 0);
    fd_ = ::open(data.c_str(), flags, 0644);
    if (fd_ < 0) return Status::IOError(Errno("open " + data));
    struct stat st {};
    if (fstat(fd_, &st) != 0) return Status::IOError(Errno("fstat " + data));
    file_bytes = static_cast<uint64_t>(st.st_size) / kAlign * kAlign;
  }

  std::lock_guard lock(mu_);

  // Rebuild the index: every record is checked (header checksum, extent inside the file, no
  // overlap); bad records are deleted, never trusted.
  struct Found {
    BlockHeader header;
    uint64_t offset, alloc;
    bool has_parent;
    BlockKey parent;
    std::string tag;
    uint32_t stored;
    DiskCompression compression;  };
  std::vector<Found> found;
  std::vector<std::string> bad;
  uint64_t blob_records = 0;  // records of the removed BlobDB back-end
  // Opens RocksDB at index_dir and reads every record into found/bad; on failure db_ is closed.
  auto load_index = [&]() -> Status {
    found.clear();
    bad.clear();
    blob_records = 0;
    rocksdb::DB* raw = nullptr;
    Status st = FromRocks(rocksdb::DB::Open(opts, index_dir, &raw), "open RocksDB index");
    if (!st.ok()) return st;
    db_.reset(raw);
    uint64_t estimate = 0;
    if (db_->GetIntProperty("rocksdb.estimate-num-keys", &estimate))
      found.reserve(std::min<uint64_t>(estimate + estimate / 8, max_blocks_ + uint64_t{1024}));
    rocksdb::ReadOptions scan;
    scan.fill_cache = false;
    scan.readahead_size = 4 << 20;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(scan));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const rocksdb::Slice k = it->key();
      const rocksdb::Slice v = it->value();
      const auto* vp = reinterpret_cast<const std::byte*>(v.data());
      auto header = DecodeBlockHeader(
          std::span<const std::byte>(vp, std::min<size_t>(v.size(), kBlockHeaderSize)));
      bool ok = k.size() == BlockKey::kSize && header.ok();
      if (ok) {
        auto kb = BlockKey::FromBytes(std::span<const std::byte, BlockKey::kSize>(
            reinterpret_cast<const std::byte*>(k.data()), BlockKey::kSize));
        ok = kb == header->key;
      }
      Found f{};
      const bool header_ok = ok;
      bool slab_shape = false;  // the trailer decodes and ends the record
      if (ok) {
        ok = slab_shape = v.size() >= kRecordSize &&
             76 + DecodeTrailer(vp + 76, v.size() - 76, &f.has_parent, &f.parent, &f.tag,
                                &f.compression, &f.stored) == v.size();
        if (ok) {
          f.offset = GetLe(vp + 64, 8);
          f.alloc = GetLe(vp + 72, 4);
          if (f.compression == DiskCompression::kNone) f.stored = header->payload_length;
          ok = f.offset % kAlign == 0 && f.alloc == RoundUp(f.stored, kAlign) &&
               f.offset + f.alloc <= file_bytes;
        }
      }
      if (header_ok && !slab_shape && v.size() > kBlockHeaderSize) {
        // The removed BlobDB back-end's record: header, flags at 64, parent/tag, the payload.
        const size_t trailer = DecodeTrailer(vp + kBlockHeaderSize, v.size() - kBlockHeaderSize,
                                             &f.has_parent, &f.parent, &f.tag);
        if (trailer != 0 && v.size() == kBlockHeaderSize + trailer + header->payload_length)
          ++blob_records;
      }
      if (!ok) {
        bad.emplace_back(k.data(), k.size());
        continue;
      }
      f.header = *header;
      found.push_back(std::move(f));
    }
    st = FromRocks(it->status(), "scan RocksDB index");
    it.reset();
    if (!st.ok()) {
      (void)db_->Close();
      db_.reset();
    }
    return st;
  };
  // A damaged index (a truncated MANIFEST, a flipped byte in a table) never stops the tier from
  // opening: RocksDB's repair first (it keeps what it can read; every record is then checked as
  // above and every payload is verified when read), else the index is moved aside and the tier
  // starts empty. Errors that are not damage (permissions, I/O) still fail the open.
  Status st = load_index();
  if (!st.ok() && (st.IsCorruption() || st.IsNotFound())) {
    const std::string damage = st.ToString();
    Status repaired = FromRocks(rocksdb::RepairDB(index_dir, opts), "repair RocksDB index");
    if (repaired.ok()) st = load_index();
    if (repaired.ok() && st.ok()) {
      open_info_.index_recovery = "index at '" + index_dir + "' was damaged (" + damage +
                                  "); repaired by RocksDB, every record re-checked";
    } else {
      char stamp[32];
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      ::gmtime_r(&now, &tm);
      std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
      const std::string aside = index_dir + ".damaged-" + stamp;
      std::error_code ec;
      std::filesystem::rename(index_dir, aside, ec);
      if (ec)
        return Status::IOError("disk tier: index at '" + index_dir + "' is damaged (" + damage +
                               ") and cannot be moved aside: " + ec.message());
      STRATA_RETURN_IF_ERROR(load_index().WithContext("a new index after moving the damaged one"));
      open_info_.index_recovery = "index at '" + index_dir + "' was damaged (" + damage +
                                  ") and could not be repaired (" +
                                  (repaired.ok() ? st.ToString() : repaired.ToString()) +
                                  "); moved to '" + aside + "', starting empty";
    }
  } else if (!st.ok()) {
    return st;
  }
  if (blob_records > 0) {  // before any bad record is deleted: nothing of it is lost
    (void)db_->Close();
    db_.reset();
    return DiskTierBlobDbRemoved(options_.path);
  }

  // Overlap check on a compact copy (16 bytes per record) sorted by offset.
  struct Extent {
    uint64_t offset;
    uint32_t alloc;
    uint32_t index;  // into found
  };
  std::vector<Extent> extents;
  extents.reserve(found.size());
  for (uint32_t i = 0; i < found.size(); ++i)
    extents.push_back({found[i].offset, static_cast<uint32_t>(found[i].alloc), i});
  std::sort(extents.begin(), extents.end(),
            [](const Extent& a, const Extent& b) { return a.offset < b.offset; });
  std::vector<uint32_t> keep;  // indices into found, in file order
  keep.reserve(found.size());
  uint64_t end = 0;
  for (const Extent& e : extents) {
    if (e.offset < end) {  // overlaps an earlier extent: cannot both be right
      bad.push_back(DbKey(found[e.index].header.key));
      continue;
    }
    end = e.offset + e.alloc;
    keep.push_back(e.index);
  }
  extents = {};
  if (keep.size() > max_blocks_) {  // more than this configuration can track: drop the rest
    for (size_t i = max_blocks_; i < keep.size(); ++i) bad.push_back(DbKey(found[keep[i]].header.key));
    keep.resize(max_blocks_);
  }
  if (!bad.empty()) {
    rocksdb::WriteBatch batch;
    for (const auto& k : bad) batch.Delete(k);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    STRATA_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &batch), "delete bad index records"));
  }
  // Slots 0..n-1 in file order; the rest stay free.
  const uint32_t n = static_cast<uint32_t>(keep.size());
  free_slots_.clear();
  entries_.resize(n);
  index_.reserve(n);
  STRATA_ASSIGN_OR_RETURN(
      policy_, MakeEvictionPolicy(std::min<uint32_t>(max_blocks_, std::max<uint32_t>(
                                                                      kInitialPolicySlots, n * 2)),
                                  options_.policy));
  uint64_t prev_end = 0;
  for (uint32_t slot = 0; slot < n; ++slot) {
    const Found& f = found[keep[slot]];
    Entry& e = entries_[slot];
    e.header = f.header;
    e.offset = f.offset;
    e.alloc = static_cast<uint32_t>(f.alloc);
    e.stored = f.stored;
    e.compression = f.compression;
    e.used_at = ++clock_;
    e.state = kLive;
    index_.emplace(f.header.key, slot);
    used_bytes_ += f.alloc;
    raw_bytes_ += f.header.payload_length;
    if (f.compression != DiskCompression::kNone) ++compressed_blocks_;
    if (f.offset > prev_end) space_.Free(prev_end, f.offset - prev_end);
    prev_end = f.offset + f.alloc;
  }
  // Parents enter the policy before their children (so children are counted), whatever order
  // the records came in.
  for (uint32_t slot = 0; slot < n; ++slot) {
    const Found& f = found[keep[slot]];
    if (f.has_parent) entries_[slot].parent = Lookup(f.parent);
    if (!f.tag.empty()) recovered_tags_.emplace_back(f.header.key, f.tag);
  }
  found = {};
  std::vector<uint32_t> order(n);
  for (uint32_t slot = 0; slot < n; ++slot) order[slot] = slot;
  FillPolicy(order, [&](uint32_t slot) { return entries_[slot].parent; });
  if (file_bytes > prev_end) space_.Free(prev_end, file_bytes - prev_end);
  file_end_ = file_bytes;
  file_size_ = file_bytes;
  open_info_.blocks_recovered = keep.size();
  open_info_.records_dropped = bad.size();
  open_info_.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return Status::OK();
}

template <typename ParentOf>
void DiskTier::Impl::FillPolicy(const std::vector<uint32_t>& order, ParentOf parent_of) {
  std::vector<uint8_t> state(entries_.size(), 0);  // 0 new, 1 waiting for its parent, 2 inserted
  std::vector<uint32_t> stack;
  for (uint32_t root : order) {
    stack.push_back(root);
    while (!stack.empty()) {
      const uint32_t slot = stack.back();
      if (state[slot] == 2) {
        stack.pop_back();
        continue;
      }
      uint32_t parent = parent_of(slot);
      if (parent != kNoSlot && (parent >= entries_.size() || entries_[parent].state != kLive))
        parent = kNoSlot;
      if (parent != kNoSlot && state[parent] == 0) {
        state[slot] = 1;
        stack.push_back(parent);
        continue;
      }
      if (parent != kNoSlot && state[parent] == 1) parent = kNoSlot;
      state[slot] = 2;
      stack.pop_back();
      policy_->OnInsert(slot, parent, KeyHash(entries_[slot].header.key));
    }
  }
}

Status DiskTier::Impl::GrowPolicy(uint32_t capacity) {
  STRATA_ASSIGN_OR_RETURN(policy_, MakeEvictionPolicy(capacity, options_.policy));
  std::vector<uint32_t> order;
  order.reserve(index_.size());
  for (uint32_t slot = 0; slot < entries_.size(); ++slot)
    if (entries_[slot].state == kLive) order.push_back(slot);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return entries_[a].used_at < entries_[b].used_at;
  });
  FillPolicy(order, [&](uint32_t slot) { return entries_[slot].parent; });
  return Status::OK();
}

Result<uint32_t> DiskTier::Impl::NewSlot() {
  if (free_slots_.empty() && entries_.size() < max_blocks_) {
    // Grow before evicting: the tier holds fewer blocks than it may.
    const uint32_t slot = static_cast<uint32_t>(entries_.size());
    if (slot >= policy_->capacity())
      STRATA_RETURN_IF_ERROR(GrowPolicy(static_cast<uint32_t>(
          std::min<uint64_t>(max_blocks_, uint64_t{policy_->capacity()} * 2))));
    entries_.emplace_back();
    return slot;
  }
  while (free_slots_.empty()) STRATA_RETURN_IF_ERROR(EvictOne());
  const uint32_t s = free_slots_.back();
  free_slots_.pop_back();
  return s;
}

void DiskTier::Impl::ReleaseSlot(uint32_t slot) {
  entries_[slot] = Entry{};
  free_slots_.push_back(slot);
}

Status DiskTier::Impl::GrowFile(uint64_t new_end) {
  if (new_end <= file_size_) return Status::OK();
  const uint64_t target = std::min(RoundUp(new_end, options_.extend_bytes),
                                   RoundUp(options_.capacity_bytes, kAlign));
  uint64_t want = std::max(target, new_end);
  int rc = posix_fallocate(fd_, static_cast<off_t>(file_size_),
                           static_cast<off_t>(want - file_size_));
  if ((rc == ENOSPC || rc == EDQUOT) && want > new_end) {  // a whole step does not fit: try less
    want = new_end;
    rc = posix_fallocate(fd_, static_cast<off_t>(file_size_),
                         static_cast<off_t>(want - file_size_));
  }
  if (rc != 0) {
    errno = rc;
    if (rc == ENOSPC || rc == EDQUOT)
      return Status::NoSpace(Errno("disk tier: growing " + options_.path + "/blocks.data"));
    return Status::IOError(Errno("disk tier: fallocate blocks.data"));
  }
  file_size_ = want;
  return Status::OK();
}

Status DiskTier::Impl::EvictOne() {
  const uint32_t now = NowMs();
  const uint32_t victim = policy_->PickVictim([&](uint32_t s) { return Evictable(s, now); });
  if (victim == kNoSlot)
    return Status::NoSpace("disk tier is full and every block is pinned or being read");
  ++evictions_;
  const BlockKey key = entries_[victim].header.key;
  Status st = Drop(victim);
  if (options_.on_evict) options_.on_evict(key);
  return st;
}

Status DiskTier::Impl::Drop(uint32_t slot) {
  Entry& e = entries_[slot];
  // The delete reaches the WAL before the space can be reused (see the file comment).
  Status st;
  {
    std::lock_guard write_lock(index_write_mu_);
    st = FromRocks(db_->Delete(rocksdb::WriteOptions(), DbKey(e.header.key)), "delete");
  }
  index_.erase(e.header.key);
  policy_->OnRemove(slot);
  used_bytes_ -= e.alloc;
  raw_bytes_ -= e.header.payload_length;
  if (e.compression != DiskCompression::kNone) --compressed_blocks_;
  space_.Free(e.offset, e.alloc);
  ReleaseSlot(slot);
  return st;
}

Result<uint64_t> DiskTier::Impl::AllocateSpace(uint64_t len) {
  for (;;) {
    if (used_bytes_ + len <= options_.capacity_bytes) {
      uint64_t off = space_.Allocate(len);
      if (off != UINT64_MAX) return off;
      if (file_end_ + len <= RoundUp(options_.capacity_bytes, kAlign)) {
        STRATA_RETURN_IF_ERROR(GrowFile(file_end_ + len));
        off = file_end_;
        file_end_ += len;
        if (file_size_ > file_end_) {  // hand the rest of the fallocated step to the allocator
          space_.Free(file_end_, file_size_ - file_end_);
          file_end_ = file_size_;
        }
        return off;
      }
    }
    if (index_.empty()) return Status::NoSpace("disk tier: block larger than the capacity");
    STRATA_RETURN_IF_ERROR(EvictOne());
  }
}

Status DiskTier::Impl::WritePayload(uint64_t offset, std::span<const std::byte> payload) {
  const size_t alloc = RoundUp(payload.size(), kAlign);
  const std::byte* src = payload.data();
  if (options_.direct_io && (!Aligned(src) || alloc != payload.size())) {
    std::byte* buf = AlignedScratch(alloc);
    if (buf == nullptr) return Status::ResourceExhausted("disk tier: no memory for a bounce buffer");
    std::memcpy(buf, src, payload.size());
    std::memset(buf + payload.size(), 0, alloc - payload.size());
    src = buf;
  }
  size_t done = 0;
  const size_t n = options_.direct_io ? alloc : payload.size();
  while (done < n) {
    const ssize_t w = pwrite(fd_, src + done, n - done, static_cast<off_t>(offset + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOSPC || errno == EDQUOT) return Status::NoSpace(Errno("disk tier: pwrite"));
      return Status::IOError(Errno("disk tier: pwrite"));
    }
    done += static_cast<size_t>(w);
  }
  return Status::OK();
}

Status DiskTier::Impl::ReadPayload(uint64_t offset, uint32_t alloc, std::span<std::byte> out,
                                   size_t len) {
  std::byte* dst = out.data();
  const bool bounce = options_.direct_io && (!Aligned(dst) || out.size() < alloc);
  if (bounce) {
    dst = AlignedScratch(alloc);
    if (dst == nullptr) return Status::ResourceExhausted("disk tier: no memory for a bounce buffer");
  }
  const size_t n = options_.direct_io ? alloc : len;
  size_t done = 0;
  while (done < n) {
    const ssize_t r = pread(fd_, dst + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Errno("disk tier: pread"));
    }
    if (r == 0) return Status::Corruption("disk tier: payload extends past the end of blocks.data");
    done += static_cast<size_t>(r);
    // O_DIRECT reads of an aligned extent come short only at the end of the file; the rest
    // cannot be asked for at an unaligned offset (EINVAL), and is not there anyway.
    if (options_.direct_io && done < n && (offset + done) % kAlign != 0)
      return Status::Corruption("disk tier: payload extends past the end of blocks.data");
  }
  if (bounce) std::memcpy(out.data(), dst, len);
  return Status::OK();
}

bool DiskTier::Impl::CompressionWorthTrying(const BlockHeader& header) const {
  return options_.compression.kind != DiskCompression::kNone &&
         header.codec != Codec::kShuffleZstd && header.codec != Codec::kShuffleLz4;
}

Result<std::span<const std::byte>> DiskTier::Impl::Compress(std::span<const std::byte> payload) {
  const uint64_t raw_alloc = RoundUp(payload.size(), kAlign);
  // Worth keeping only when it saves at least one page on disk.
  if (raw_alloc <= kAlign) return std::span<const std::byte>();
  std::byte* buf = AlignedScratch(raw_alloc, kStored);
  if (buf == nullptr)
    return Status::ResourceExhausted("disk tier: no memory for a compression buffer");
  const size_t n = CompressPayload(options_.compression, payload,
                                   std::span<std::byte>(buf, raw_alloc - kAlign));
  if (n == 0) return std::span<const std::byte>();
  std::memset(buf + n, 0, RoundUp(n, kAlign) - n);
  return std::span<const std::byte>(buf, n);
}

Status DiskTier::Impl::ReadCompressedPayload(uint64_t offset, uint32_t alloc, uint32_t stored,
                                             DiskCompression compression,
                                             std::span<std::byte> out, const BlockHeader& header,
                                             bool* undecodable) {
  std::byte* buf = AlignedScratch(alloc, kStored);
  if (buf == nullptr)
    return Status::ResourceExhausted("disk tier: no memory for a decompression buffer");
  STRATA_RETURN_IF_ERROR(ReadPayload(offset, alloc, std::span<std::byte>(buf, alloc), stored));
  Status st = DecompressPayload(compression, std::span<const std::byte>(buf, stored), out);
  if (!st.ok()) {
    *undecodable = st.IsCorruption();
    return Status::Corruption("block " + header.key.ToHex() + ": " +
                              std::string(DiskCompressionName(compression)) + " record of " +
                              std::to_string(stored) + " bytes: " + std::string(st.message()));
  }
  return VerifyPayload(header, out);
}

Status DiskTier::Impl::ReadVerifiedPayload(uint64_t offset, uint32_t alloc,
                                           std::span<std::byte> out, const BlockHeader& header) {
  const size_t len = header.payload_length;
  if (options_.direct_io && ThreadAio::Get().ok()) {
    const bool bounce = !Aligned(out.data()) || out.size() < alloc;
    std::byte* dst = bounce ? AlignedScratch(alloc) : out.data();
    if (dst == nullptr) return Status::ResourceExhausted("disk tier: no memory for a bounce buffer");
    Status st = ReadVerifiedAio(offset, dst, alloc, header);
    if (st.code() != StatusCode::kUnavailable) {
      if (st.ok() && bounce) std::memcpy(out.data(), dst, len);
      return st;
    }
  }
  STRATA_RETURN_IF_ERROR(ReadPayload(offset, alloc, out, len));
  return VerifyPayload(header, out.first(len));
}

Status DiskTier::Impl::ReadVerifiedAio(uint64_t offset, std::byte* dst, uint32_t alloc,
                                       const BlockHeader& header) {
  // 512 KiB pieces, up to 4 in flight: a 2 MiB block is one submission of four reads, and the
  // first piece is hashed while the other three are still being read.
  constexpr uint64_t kPiece = 512 * 1024;
  const aio_context_t ctx = ThreadAio::Get().ctx();
  const uint64_t len = header.payload_length;
  const uint32_t pieces = static_cast<uint32_t>((alloc + kPiece - 1) / kPiece);
  struct iocb cbs[ThreadAio::kDepth];
  int64_t result[ThreadAio::kDepth];
  uint32_t submitted = 0, hashed = 0, in_flight = 0;
  Status st;
  PayloadChecksumStream sum;
  auto submit = [&]() {
    // A control block is reused only once its piece was hashed (pieces are hashed in order).
    while (st.ok() && submitted < pieces && submitted - hashed < ThreadAio::kDepth) {
      const uint32_t c = submitted % ThreadAio::kDepth;
      const uint64_t at = uint64_t{submitted} * kPiece;
      std::memset(&cbs[c], 0, sizeof cbs[c]);
      cbs[c].aio_lio_opcode = IOCB_CMD_PREAD;
      cbs[c].aio_fildes = static_cast<uint32_t>(fd_);
      cbs[c].aio_buf = reinterpret_cast<uint64_t>(dst + at);
      cbs[c].aio_nbytes = std::min<uint64_t>(kPiece, alloc - at);
      cbs[c].aio_offset = static_cast<int64_t>(offset + at);
      cbs[c].aio_data = c;
      result[c] = INT64_MIN;  // not landed
      struct iocb* p = &cbs[c];
      const long r = syscall(SYS_io_submit, ctx, 1, &p);
      if (r != 1) {
        if (r < 0 && errno == EINTR) continue;
        // Nothing submitted yet: let the caller fall back to pread. Otherwise a real error.
        st = submitted == 0 ? Status::Unavailable(Errno("disk tier: io_submit"))
                            : Status::IOError(Errno("disk tier: io_submit"));
        return;
      }
      ++submitted;
      ++in_flight;
    }
  };
  submit();
  // Hash pieces in order as they land; keep the queue full. Every submitted read is reaped before
  // returning, error or not: the kernel writes into dst until it completes.
  while (in_flight > 0) {
    struct io_event ev[ThreadAio::kDepth];
    const long n = syscall(SYS_io_getevents, ctx, 1, static_cast<long>(in_flight), ev, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Only bad arguments (a bug) make io_getevents fail. The reads may still land in dst, so
      // keep reaping rather than return while the kernel can write into the caller's buffer.
      if (st.ok()) st = Status::IOError(Errno("disk tier: io_getevents"));
      continue;
    }
    for (long i = 0; i < n; ++i) {
      const uint32_t c = static_cast<uint32_t>(ev[i].data);
      result[c] = ev[i].res;
      --in_flight;
    }
    // Hash every piece that has landed, in order.
    while (st.ok() && hashed < submitted) {
      const uint32_t c = hashed % ThreadAio::kDepth;
      if (result[c] == INT64_MIN) break;
      const uint64_t at = uint64_t{hashed} * kPiece;  // pieces are hashed in order
      const uint64_t want = std::min<uint64_t>(kPiece, alloc - at);
      if (result[c] < 0) {
        errno = static_cast<int>(-result[c]);
        st = Status::IOError(Errno("disk tier: read"));
        break;
      }
      if (static_cast<uint64_t>(result[c]) < want) {
        // Short read: the rest synchronously (past the end of the file is corruption).
        size_t done = static_cast<size_t>(result[c]);
        while (st.ok() && done < want) {
          const ssize_t r = pread(fd_, dst + at + done, want - done,
                                  static_cast<off_t>(offset + at + done));
          if (r < 0 && errno == EINTR) continue;
          if (r < 0)
            st = Status::IOError(Errno("disk tier: pread"));
          else if (r == 0)
            st = Status::Corruption("disk tier: payload extends past the end of blocks.data");
          else
            done += static_cast<size_t>(r);
        }
        if (!st.ok()) break;
      }
      if (at < len) sum.Update(std::span<const std::byte>(dst + at, std::min(want, len - at)));
      result[c] = INT64_MIN;
      ++hashed;
    }
    submit();
  }
  STRATA_RETURN_IF_ERROR(st);
  if (sum.Digest() != header.payload_checksum)
    return Status::Corruption("block " + header.key.ToHex() + ": payload checksum mismatch");
  return Status::OK();
}

Status DiskTier::Impl::Put(const BlockHeader& header, std::span<const std::byte> payload,
                           const PutOptions& po) {
  if (payload.size() != header.payload_length)
    return Status::InvalidArgument("payload size does not match the header's payload_length");
  if (payload.empty() || payload.size() > UINT32_MAX - kAlign)
    return Status::InvalidArgument("disk tier payloads must be 1 byte .. 4 GiB");
  if (po.tag.size() > kMaxBlockTagBytes)
    return Status::InvalidArgument("a block tag is at most " +
                                   std::to_string(kMaxBlockTagBytes) + " bytes");
  if (options_.verify_on_put) STRATA_RETURN_IF_ERROR(VerifyPayload(header, payload));
  // Compression, outside the lock: `stored` is what goes to blocks.data (a 4 KiB-aligned buffer
  // padded with zeros when compressed, so the O_DIRECT write needs no bounce copy).
  std::span<const std::byte> stored = payload;
  uint32_t stored_len = static_cast<uint32_t>(payload.size());
  DiskCompression compression = DiskCompression::kNone;
  if (CompressionWorthTrying(header)) {
    {
      std::lock_guard lock(mu_);
      if (Lookup(header.key) != kNoSlot) return Status::OK();  // same key, same bytes
    }
    STRATA_ASSIGN_OR_RETURN(auto c, Compress(payload));
    if (!c.empty()) {
      stored = c;
      stored_len = static_cast<uint32_t>(c.size());
      compression = options_.compression.kind;
    }
  }
  const bool kept_raw =
      options_.compression.kind != DiskCompression::kNone && compression == DiskCompression::kNone;
  const uint64_t alloc = RoundUp(stored_len, kAlign);
  uint32_t slot;
  uint64_t offset = 0;
  uint32_t parent_slot = kNoSlot;
  {
    std::lock_guard lock(mu_);
    if (Lookup(header.key) != kNoSlot) return Status::OK();  // same key, same bytes
    STRATA_ASSIGN_OR_RETURN(slot, NewSlot());
    auto off = AllocateSpace(alloc);
    if (!off.ok()) {
      ReleaseSlot(slot);
      return off.status();
    }
    offset = *off;
    Entry& e = entries_[slot];
    e.header = header;
    e.offset = offset;
    e.alloc = static_cast<uint32_t>(alloc);
    e.stored = stored_len;
    e.compression = compression;
    e.state = kWriting;  // reserved: concurrent puts of the key return, readers miss
    index_.emplace(header.key, slot);
    used_bytes_ += alloc;
    raw_bytes_ += header.payload_length;
    if (compression != DiskCompression::kNone) ++compressed_blocks_;
    if (po.parent != nullptr) parent_slot = Lookup(*po.parent);
  }

  // Payload first, then the record that names it.
  Status st;
  std::string value;
  {
    const bool compressed = compression != DiskCompression::kNone;
    // A compressed payload is written with its zero padding (it is in a 4 KiB-aligned buffer).
    st = WritePayload(offset, compressed ? std::span<const std::byte>(stored.data(), alloc) : stored);
    if (st.ok() && options_.sync && fdatasync(fd_) != 0) st = Status::IOError(Errno("fdatasync"));
    value.resize(kRecordSize + TrailerBytes(po.parent != nullptr, po.tag, compressed));
    auto* vp = reinterpret_cast<std::byte*>(value.data());
    EncodeBlockHeader(header, std::span<std::byte, kBlockHeaderSize>(vp, kBlockHeaderSize));
    PutLe(vp + 64, offset, 8);
    PutLe(vp + 72, alloc, 4);
    EncodeTrailer(vp + 76, po.parent, po.tag, compression, stored_len);
  }
  if (st.ok()) {
    rocksdb::WriteOptions wo;
    wo.sync = options_.sync;
    std::lock_guard write_lock(index_write_mu_);
    st = FromRocks(db_->Put(wo, DbKey(header.key), value), "write index record");
  }

  std::lock_guard lock(mu_);
  Entry& e = entries_[slot];
  if (!st.ok()) {
    index_.erase(header.key);
    used_bytes_ -= e.alloc;
    raw_bytes_ -= e.header.payload_length;
    if (e.compression != DiskCompression::kNone) --compressed_blocks_;
    space_.Free(e.offset, e.alloc);
    ReleaseSlot(slot);
    return st;
  }
  if (kept_raw) ++stored_raw_;
  e.state = kLive;
  if (parent_slot != kNoSlot && entries_[parent_slot].state != kLive) parent_slot = kNoSlot;
  e.parent = parent_slot;
  e.used_at = ++clock_;
  policy_->OnInsert(slot, parent_slot, KeyHash(header.key));
  ++puts_;
  return Status::OK();
}

Result<BlockHeader> DiskTier::Impl::Get(const BlockKey& key, std::span<std::byte> out) {
  uint32_t slot;
  BlockHeader header;
  uint64_t offset;
  uint32_t alloc, stored;
  DiskCompression compression;
  {
    std::lock_guard lock(mu_);
    slot = Lookup(key);
    if (slot == kNoSlot || entries_[slot].state != kLive) {
      ++misses_;
      return Status::NotFound("block not in disk tier");
    }
    Entry& e = entries_[slot];
    if (out.size() < e.header.payload_length)
      return Status::InvalidArgument("output buffer smaller than the payload (" +
                                     std::to_string(e.header.payload_length) + " bytes)");
    ++e.readers;
    header = e.header;
    offset = e.offset;
    alloc = e.alloc;
    stored = e.stored;
    compression = e.compression;
  }
  const size_t len = header.payload_length;
  Status st;
  bool undecodable = false;
  if (compression != DiskCompression::kNone) {
    st = ReadCompressedPayload(offset, alloc, stored, compression, out.first(len), header,
                               &undecodable);
  } else {
    st = ReadVerifiedPayload(offset, alloc, out, header);
  }
  std::lock_guard lock(mu_);
  Entry& e = entries_[slot];
  --e.readers;
  if (!st.ok()) {
    if (st.IsCorruption() || st.IsNotFound()) {
      // Never data: drop the block (once; a concurrent reader may have dropped it already).
      if (e.state == kLive && e.header.key == key && e.readers == 0) {
        ++corrupt_;
        if (undecodable) ++decompress_errors_;
        (void)Drop(slot);
      }
      ++misses_;
      return Status::Corruption("disk tier: block " + key.ToHex() + " failed verification and was dropped: " + std::string(st.message()));
    }
    return st;
  }
  policy_->OnAccess(slot);
  e.used_at = ++clock_;
  ++hits_;
  return header;
}

Result<BlockLocation> DiskTier::Impl::Find(const BlockKey& key) const {
  std::lock_guard lock(mu_);
  const uint32_t s = Lookup(key);
  if (s == kNoSlot || entries_[s].state != kLive) return Status::NotFound("block not in disk tier");
  return BlockLocation{TierKind::kDisk, entries_[s].offset, entries_[s].header.payload_length};
}

Status DiskTier::Impl::Pin(const BlockKey& key, std::chrono::milliseconds ttl) {
  if (ttl.count() <= 0) return Status::InvalidArgument("pin ttl must be positive");
  ttl = std::min(ttl, options_.max_pin_ttl);
  std::lock_guard lock(mu_);
  const uint32_t s = Lookup(key);
  if (s == kNoSlot || entries_[s].state != kLive) return Status::NotFound("cannot pin: block not in disk tier");
  Entry& e = entries_[s];
  const uint32_t now = NowMs();
  const uint32_t deadline = now + static_cast<uint32_t>(ttl.count());
  if (!Pinned(e, now)) e.pins = 0;
  if (e.pins == 0 || static_cast<int32_t>(deadline - e.pin_deadline_ms) > 0) e.pin_deadline_ms = deadline;
  ++e.pins;
  return Status::OK();
}

Status DiskTier::Impl::Unpin(const BlockKey& key) {
  std::lock_guard lock(mu_);
  const uint32_t s = Lookup(key);
  if (s == kNoSlot || entries_[s].state != kLive) return Status::NotFound("cannot unpin: block not in disk tier");
  if (entries_[s].pins == 0) return Status::InvalidArgument("block is not pinned");
  --entries_[s].pins;
  return Status::OK();
}

Status DiskTier::Impl::Erase(const BlockKey& key) {
  std::lock_guard lock(mu_);
  const uint32_t s = Lookup(key);
  if (s == kNoSlot || entries_[s].state != kLive) return Status::NotFound("cannot erase: block not in disk tier");
  if (!Evictable(s, NowMs())) return Status::Unavailable("block is pinned or being read");
  return Drop(s);
}

Status DiskTier::Impl::Sync() {
  if (fdatasync(fd_) != 0) return Status::IOError(Errno("disk tier: fdatasync"));
  return FromRocks(db_->FlushWAL(/*sync=*/true), "sync WAL");
}

bool DiskTier::Impl::HasChildren(const BlockKey& key) const {
  std::lock_guard lock(mu_);
  const uint32_t s = Lookup(key);
  return s != kNoSlot && policy_->HasChildren(s);
}

std::vector<BlockKey> DiskTier::Impl::Keys(const std::optional<NamespaceId>& ns) const {
  std::lock_guard lock(mu_);
  std::vector<BlockKey> out;
  for (const auto& [key, slot] : index_) {
    const Entry& e = entries_[slot];
    if (e.state == kLive && (!ns || e.header.ns == *ns)) out.push_back(key);
  }
  return out;
}

Result<NamespaceId> DiskTier::Impl::NamespaceOf(const BlockKey& key) const {
  std::lock_guard lock(mu_);
  const uint32_t s = Lookup(key);
  if (s == kNoSlot || entries_[s].state != kLive) return Status::NotFound("block not in disk tier");
  return entries_[s].header.ns;
}

TierStats DiskTier::Impl::Stats() const {
  std::lock_guard lock(mu_);
  TierStats st;
  st.blocks = index_.size();
  st.payload_bytes = used_bytes_;
  st.capacity_bytes = options_.capacity_bytes;
  st.hits = hits_;
  st.misses = misses_;
  st.puts = puts_;
  st.evictions = evictions_;
  st.corrupt_dropped = corrupt_;
  st.max_blocks = max_blocks_;
  st.raw_payload_bytes = raw_bytes_;
  st.compressed_blocks = compressed_blocks_;
  st.stored_raw = stored_raw_;
  st.decompress_errors = decompress_errors_;
  // What is allocated now: entries and free-slot list, the policy's slots, the index's buckets and
  // nodes. It grows with the blocks stored (up to max_blocks), not with the configured bound.
  st.metadata_bytes = uint64_t{entries_.size()} * sizeof(Entry) +
                      uint64_t{free_slots_.capacity()} * sizeof(uint32_t) +
                      uint64_t{policy_->capacity()} * policy_->BytesPerSlot() +
                      index_.bucket_count() * sizeof(void*) + index_.size() * 32;
  return st;
}

// ---- DiskTier ----

DiskTier::DiskTier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DiskTier::~DiskTier() = default;

Result<std::unique_ptr<DiskTier>> DiskTier::Open(const DiskTierOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  STRATA_RETURN_IF_ERROR(impl->Open());
  return std::unique_ptr<DiskTier>(new DiskTier(std::move(impl)));
}

Status DiskTier::Put(const BlockHeader& header, std::span<const std::byte> payload,
                     const PutOptions& options) {
  return impl_->Put(header, payload, options);
}
Result<BlockHeader> DiskTier::Get(const BlockKey& key, std::span<std::byte> out) {
  return impl_->Get(key, out);
}
Result<BlockLocation> DiskTier::Find(const BlockKey& key) const { return impl_->Find(key); }
Status DiskTier::Pin(const BlockKey& key, std::chrono::milliseconds ttl) { return impl_->Pin(key, ttl); }
Status DiskTier::Unpin(const BlockKey& key) { return impl_->Unpin(key); }
Status DiskTier::Erase(const BlockKey& key) { return impl_->Erase(key); }
TierStats DiskTier::Stats() const { return impl_->Stats(); }
Status DiskTier::Sync() { return impl_->Sync(); }
bool DiskTier::HasChildren(const BlockKey& key) const { return impl_->HasChildren(key); }
std::vector<BlockKey> DiskTier::Keys(const std::optional<NamespaceId>& ns) const {
  return impl_->Keys(ns);
}
Result<NamespaceId> DiskTier::NamespaceOf(const BlockKey& key) const {
  return impl_->NamespaceOf(key);
}
const DiskTierOpenInfo& DiskTier::open_info() const { return impl_->open_info(); }
std::vector<std::pair<BlockKey, std::string>> DiskTier::TakeRecoveredTags() {
  return impl_->TakeRecoveredTags();
}

}  // namespace strata::store
