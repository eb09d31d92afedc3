#include "store/disk_tier.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/disk_extents.h"
#include "store/disk_index.h"
#include "store/disk_payload_file.h"
#include "store/disk_record.h"
#include "store/thread_annotations.h"

namespace strata::store {
namespace {

using disk::DecodeTrailer;
using disk::EncodeTrailer;
using disk::GetLe;
using disk::kAlign;
using disk::kRecordSize;
using disk::PutLe;
using disk::RoundUp;
using disk::TrailerBytes;

// Slots of a new tier's policy; it doubles as blocks arrive (DiskTier::Impl::GrowPolicy).
constexpr uint32_t kInitialPolicySlots = 4096;

uint64_t KeyHash(const BlockKey& k) { return k.low ^ (k.high * 0x9E3779B97F4A7C15ULL); }

}  // namespace

Status DiskTierBlobDbRemoved(const std::string& path) {
  return Status::NotSupported(
      "disk tier at '" + path + "' was written by the BlobDB payload back-end, which was removed "
      "(issue 17; only the O_DIRECT slab file remains); its blocks were left as they are. Move the "
      "directory aside or delete it to start an empty disk tier there");
}

class DiskTier::Impl {
 public:
  explicit Impl(const DiskTierOptions& o) : options_(o), epoch_(std::chrono::steady_clock::now()) {}

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
  uint32_t Lookup(const BlockKey& key) const REQUIRES_LOCK(mu_) {
    auto it = index_.find(key);
    return it == index_.end() ? kNoSlot : it->second;
  }

  // Space of `len` bytes in blocks.data, evicting and growing the file as needed.
  Result<uint64_t> AllocateSpace(uint64_t len) REQUIRES_LOCK(mu_);
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
  const DiskTierOptions options_;
  const std::chrono::steady_clock::time_point epoch_;
  std::unique_ptr<disk::DiskIndex> db_;      // the RocksDB index (disk_index.h)
  std::unique_ptr<disk::PayloadFile> file_;  // blocks.data (disk_payload_file.h)
  uint32_t max_blocks_ = 0;
  DiskTierOpenInfo open_info_;
  // Tags of the blocks found at Open (until TakeRecoveredTags).
  std::vector<std::pair<BlockKey, std::string>> recovered_tags_ GUARDED_BY(mu_);

  mutable std::mutex mu_;
  std::unique_ptr<EvictionPolicy> policy_;  // its own thread-safety; called under mu_ anyway
  std::unordered_map<BlockKey, uint32_t, BlockKeyHash> index_ GUARDED_BY(mu_);
  // Metadata grows with the blocks stored, up to max_blocks_: entries_ (a deque, so growing never
  // moves an entry), the index and the policy (rebuilt at twice the size when full). Slots at or
  // above entries_.size() are free and not listed in free_slots_.
  std::deque<Entry> entries_ GUARDED_BY(mu_);
  std::vector<uint32_t> free_slots_ GUARDED_BY(mu_);
  uint64_t clock_ GUARDED_BY(mu_) = 0;  // bumped by every insert and hit
  disk::ExtentAllocator space_ GUARDED_BY(mu_);
  uint64_t file_end_ GUARDED_BY(mu_) = 0;   // bytes handed out from the file's tail
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

  const std::string index_dir = options_.path + "/index";
  // A directory of the removed BlobDB back-end (issue 17): refused before anything is opened,
  // so nothing in it is touched. Its payloads lived in RocksDB blob files; a tier that never
  // flushed has none yet, and is recognised by its records below.
  if (std::filesystem::is_directory(index_dir, ec)) {
    for (const auto& f : std::filesystem::directory_iterator(index_dir, ec))
      if (f.path().extension() == ".blob") return DiskTierBlobDbRemoved(options_.path);
  }
  STRATA_ASSIGN_OR_RETURN(
      file_, disk::PayloadFile::Open(options_.path + "/blocks.data", options_.direct_io));
  const uint64_t file_bytes = file_->size();

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
  uint64_t old_format = 0;    // records of an older block format (keys without namespace tags)
  // Every record of the index (disk_index.h: a damaged index is repaired or moved aside there;
  // a repair reads the records again, so `begin` forgets the last attempt's).
  auto begin = [&](uint64_t estimate) {
    found.clear();
    bad.clear();
    blob_records = 0;
    old_format = 0;
    found.reserve(std::min<uint64_t>(estimate + estimate / 8, max_blocks_ + uint64_t{1024}));
  };
  auto on_record = [&](std::span<const std::byte> k, std::span<const std::byte> v) {
    const std::byte* vp = v.data();
    auto header = DecodeBlockHeader(v.first(std::min<size_t>(v.size(), kBlockHeaderSize)));
    bool ok = k.size() == BlockKey::kSize && header.ok();
    if (!header.ok()) {
      const uint16_t version =
          BlockHeaderVersion(v.first(std::min<size_t>(v.size(), kBlockHeaderSize)));
      if (version != 0 && version < kBlockFormatVersion) ++old_format;
    }
    if (ok) {
      auto kb = BlockKey::FromBytes(std::span<const std::byte, BlockKey::kSize>(k.data(),
                                                                               BlockKey::kSize));
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
      bad.emplace_back(reinterpret_cast<const char*>(k.data()), k.size());
      return;
    }
    f.header = *header;
    found.push_back(std::move(f));
  };
  STRATA_ASSIGN_OR_RETURN(
      db_, disk::DiskIndex::Open(index_dir, begin, on_record, &open_info_.index_recovery));
  if (blob_records > 0) {  // before any bad record is deleted: nothing of it is lost
    db_->CloseWithoutFlush();
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
      bad.push_back(disk::DiskIndex::KeyBytes(found[e.index].header.key));
      continue;
    }
    end = e.offset + e.alloc;
    keep.push_back(e.index);
  }
  extents = {};
  if (keep.size() > max_blocks_) {  // more than this configuration can track: drop the rest
    for (size_t i = max_blocks_; i < keep.size(); ++i) bad.push_back(disk::DiskIndex::KeyBytes(found[keep[i]].header.key));
    keep.resize(max_blocks_);
  }
  if (!bad.empty()) STRATA_RETURN_IF_ERROR(db_->DeleteRaw(bad));
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
  open_info_.blocks_recovered = keep.size();
  open_info_.records_dropped = bad.size() - old_format;
  open_info_.old_format_dropped = old_format;
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

Status DiskTier::Impl::EvictOne() {
  const uint32_t now = NowMs();
  const uint32_t victim = policy_->PickVictim([&](uint32_t s) { return Evictable(s, now); });
  if (victim == kNoSlot)
    return Status::NoSpace("disk tier is full and every block is pinned or being read");
  ++evictions_;
  const BlockKey key = entries_[victim].header.key;
  policy_->OnEvict(victim, KeyHash(key));  // Drop's OnRemove then finds the slot gone
  Status st = Drop(victim);
  if (options_.on_evict) options_.on_evict(key);
  return st;
}

Status DiskTier::Impl::Drop(uint32_t slot) {
  Entry& e = entries_[slot];
  // The delete reaches the WAL before the space can be reused (see the file comment).
  Status st;
  st = db_->Delete(e.header.key);
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
        STRATA_RETURN_IF_ERROR(
            file_->Grow(file_end_ + len, options_.extend_bytes, options_.capacity_bytes));
        off = file_end_;
        file_end_ += len;
        if (file_->size() > file_end_) {  // hand the rest of the fallocated step to the allocator
          space_.Free(file_end_, file_->size() - file_end_);
          file_end_ = file_->size();
        }
        return off;
      }
    }
    if (index_.empty()) return Status::NoSpace("disk tier: block larger than the capacity");
    STRATA_RETURN_IF_ERROR(EvictOne());
  }
}

bool DiskTier::Impl::CompressionWorthTrying(const BlockHeader& header) const {
  return options_.compression.kind != DiskCompression::kNone &&
         header.codec != Codec::kShuffleZstd && header.codec != Codec::kShuffleLz4;
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
    STRATA_ASSIGN_OR_RETURN(auto c, disk::CompressForDisk(options_.compression, payload));
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
    st = file_->Write(offset,
                      compressed ? std::span<const std::byte>(stored.data(), alloc) : stored);
    if (st.ok() && options_.sync) st = file_->Sync();
    value.resize(kRecordSize + TrailerBytes(po.parent != nullptr, po.tag, compressed));
    auto* vp = reinterpret_cast<std::byte*>(value.data());
    EncodeBlockHeader(header, std::span<std::byte, kBlockHeaderSize>(vp, kBlockHeaderSize));
    PutLe(vp + 64, offset, 8);
    PutLe(vp + 72, alloc, 4);
    EncodeTrailer(vp + 76, po.parent, po.tag, compression, stored_len);
  }
  if (st.ok())
    st = db_->Put(header.key,
                  std::span<const std::byte>(reinterpret_cast<const std::byte*>(value.data()),
                                             value.size()),
                  options_.sync);

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
    st = file_->ReadCompressed(offset, alloc, stored, compression, out.first(len), header,
                               &undecodable);
  } else {
    st = file_->ReadVerified(offset, alloc, out, header);
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
  STRATA_RETURN_IF_ERROR(file_->Sync());
  return db_->SyncWal();
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
