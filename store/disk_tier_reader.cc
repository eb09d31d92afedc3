// The disk tier's records as disk_tier.cc writes them (its file comment draws the layout).
#include "store/disk_tier_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "store/disk_index.h"
#include "store/disk_record.h"
#include "store/disk_tier.h"

namespace strata::store {
namespace {

using disk::DecodeTrailer;
using disk::GetLe;
using disk::kAlign;
using disk::kRecordSize;

BlockKey KeyAt(const std::byte* p) {
  return BlockKey::FromBytes(std::span<const std::byte, BlockKey::kSize>(p, BlockKey::kSize));
}

}  // namespace

DiskTierReader::~DiskTierReader() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<DiskTierReader>> DiskTierReader::Open(const std::string& dir) {
  const std::string index_dir = dir + "/index";
  std::error_code ec;
  if (!std::filesystem::is_directory(index_dir, ec))
    return Status::NotFound("'" + dir + "' holds no disk tier (no index/ directory)");
  for (const auto& f : std::filesystem::directory_iterator(index_dir, ec))
    if (f.path().extension() == ".blob") return DiskTierBlobDbRemoved(dir);
  std::unique_ptr<DiskTierReader> r(new DiskTierReader());
  r->dir_ = dir;
  const std::string data = dir + "/blocks.data";
  r->fd_ = ::open(data.c_str(), O_RDONLY | O_CLOEXEC);
  if (r->fd_ >= 0) {
    struct stat st {};
    if (::fstat(r->fd_, &st) == 0) r->data_file_bytes_ = static_cast<uint64_t>(st.st_size);
  }
  bool blob_db = false;
  // The index's one home (disk_index.h) reads it, read-only.
  Status scanned = disk::DiskIndex::ScanReadOnly(
      index_dir, [&](std::span<const std::byte> k, std::span<const std::byte> v) {
        if (blob_db) return;
        const std::byte* vp = v.data();
        auto header = DecodeBlockHeader(v.first(std::min<size_t>(v.size(), kBlockHeaderSize)));
        bool ok = k.size() == BlockKey::kSize && header.ok() && KeyAt(k.data()) == header->key;
        DiskRecord rec;
        if (ok) {
          rec.header = *header;
          // A record that is not a slab record but has the shape of the removed BlobDB
          // back-end's (the payload after the header and a flags byte, with parent): such a
          // directory is refused, as DiskTier::Open refuses it.
          const bool blob_parent = v.size() > kBlockHeaderSize && std::to_integer<int>(vp[64]) == 1;
          const size_t blob_prefix = kBlockHeaderSize + 1 + (blob_parent ? BlockKey::kSize : 0);
          // The same decoder as DiskTier (disk_record.h), and the same checks as its Open.
          bool has_parent = false;
          BlockKey parent;
          std::string tag;
          uint32_t stored = 0;
          ok = v.size() >= kRecordSize &&
               76 + DecodeTrailer(vp + 76, v.size() - 76, &has_parent, &parent, &tag,
                                  &rec.compression, &stored) == v.size();
          if (ok) {
            if (has_parent) rec.parent = parent;
            rec.stored_bytes = rec.compression == DiskCompression::kNone ? header->payload_length
                                                                         : stored;
            rec.offset = GetLe(vp + 64, 8);
            rec.reserved_bytes = GetLe(vp + 72, 4);
            ok = rec.stored_bytes > 0 && rec.offset % kAlign == 0 &&
                 rec.reserved_bytes >= rec.stored_bytes &&
                 rec.offset + rec.reserved_bytes <= r->data_file_bytes_;
          } else if (v.size() > kBlockHeaderSize &&
                     v.size() == blob_prefix + header->payload_length) {
            blob_db = true;
            return;
          }
        }
        if (!ok) {
          ++r->bad_records_;
          return;
        }
        r->records_.push_back(rec);
      });
  if (!scanned.ok()) return scanned;
  if (blob_db) return DiskTierBlobDbRemoved(dir);
  std::sort(r->records_.begin(), r->records_.end(),
            [](const DiskRecord& a, const DiskRecord& b) {
              return a.header.key < b.header.key;
            });
  return r;
}

const DiskRecord* DiskTierReader::Find(const BlockKey& key) const {
  auto it = std::lower_bound(
      records_.begin(), records_.end(), key,
      [](const DiskRecord& r, const BlockKey& k) { return r.header.key < k; });
  if (it == records_.end() || !(it->header.key == key)) return nullptr;
  return &*it;
}

Result<bool> DiskTierReader::Verify(const DiskRecord& record) const {
  std::vector<std::byte> payload(record.header.payload_length);
  {
    if (fd_ < 0) return Status::IOError("cannot open " + dir_ + "/blocks.data");
    const bool compressed = record.compression != DiskCompression::kNone;
    std::vector<std::byte> stored(compressed ? record.stored_bytes : 0);
    std::span<std::byte> dst = compressed ? std::span<std::byte>(stored) : payload;
    size_t done = 0;
    while (done < dst.size()) {
      const ssize_t n = ::pread(fd_, dst.data() + done, dst.size() - done,
                                static_cast<off_t>(record.offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::IOError(std::string("pread blocks.data: ") + std::strerror(errno));
      if (n == 0) return false;  // cut short: the payload is not all there
      done += static_cast<size_t>(n);
    }
    if (compressed && !DecompressPayload(record.compression, stored, payload).ok()) return false;
  }
  return PayloadChecksum(payload) == record.header.payload_checksum;
}

}  // namespace strata::store
