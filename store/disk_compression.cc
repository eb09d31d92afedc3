#include "store/disk_compression.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <memory>

#include <lz4.h>
#include <zstd.h>

namespace strata::store {
namespace {

struct CctxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DctxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// One zstd context of each kind per thread (the demotion writer, the prefetch threads, request
// threads): made once, reused for every block, so no allocation per block.
ZSTD_CCtx* ThreadCctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CctxFree> c(ZSTD_createCCtx());
  return c.get();
}
ZSTD_DCtx* ThreadDctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DctxFree> d(ZSTD_createDCtx());
  return d.get();
}

}  // namespace

Result<DiskCompressionOptions> ParseDiskCompression(std::string_view text) {
  DiskCompressionOptions o;
  if (text == "none" || text.empty()) return o;
  if (text == "lz4") {
    o.kind = DiskCompression::kLz4;
    return o;
  }
  if (text == "zstd") {
    o.kind = DiskCompression::kZstd;
    return o;
  }
  if (text.rfind("zstd:", 0) == 0) {
    const std::string_view level = text.substr(5);
    int v = 0;
    const auto [end, ec] = std::from_chars(level.data(), level.data() + level.size(), v);
    if (ec != std::errc() || end != level.data() + level.size() || level.empty() ||
        v < ZSTD_minCLevel() || v > ZSTD_maxCLevel())
      return Status::InvalidArgument("'" + std::string(text) + "': the zstd level must be an integer from " +
                                     std::to_string(ZSTD_minCLevel()) + " to " +
                                     std::to_string(ZSTD_maxCLevel()));
    o.kind = DiskCompression::kZstd;
    o.zstd_level = v;
    return o;
  }
  return Status::InvalidArgument("'" + std::string(text) +
                                 "' (expected none, lz4, zstd or zstd:LEVEL)");
}

std::string_view DiskCompressionName(DiskCompression kind) {
  switch (kind) {
    case DiskCompression::kNone: return "none";
    case DiskCompression::kLz4: return "lz4";
    case DiskCompression::kZstd: return "zstd";
  }
  return "unknown";
}

std::string DiskCompressionName(const DiskCompressionOptions& options) {
  if (options.kind == DiskCompression::kZstd)
    return "zstd:" + std::to_string(options.zstd_level);
  return std::string(DiskCompressionName(options.kind));
}

bool IsKnownDiskCompression(uint8_t value) {
  return value == static_cast<uint8_t>(DiskCompression::kLz4) ||
         value == static_cast<uint8_t>(DiskCompression::kZstd);
}

size_t CompressPayload(const DiskCompressionOptions& options, std::span<const std::byte> src,
                       std::span<std::byte> dst) {
  if (dst.empty()) return 0;
  switch (options.kind) {
    case DiskCompression::kLz4: {
      if (src.size() > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) return 0;
      const int n = LZ4_compress_default(reinterpret_cast<const char*>(src.data()),
                                         reinterpret_cast<char*>(dst.data()),
                                         static_cast<int>(src.size()),
                                         static_cast<int>(std::min<size_t>(dst.size(), INT_MAX)));
      return n > 0 ? static_cast<size_t>(n) : 0;  // 0: did not fit
    }
    case DiskCompression::kZstd: {
      ZSTD_CCtx* c = ThreadCctx();
      if (c == nullptr) return 0;
      const size_t n = ZSTD_compressCCtx(c, dst.data(), dst.size(), src.data(), src.size(),
                                         options.zstd_level);
      return ZSTD_isError(n) ? 0 : n;  // dstSize_tooSmall: did not fit
    }
    case DiskCompression::kNone:
      break;
  }
  return 0;
}

Status DecompressPayload(DiskCompression kind, std::span<const std::byte> src,
                         std::span<std::byte> dst) {
  switch (kind) {
    case DiskCompression::kLz4: {
      if (src.size() > INT_MAX || dst.size() > INT_MAX)
        return Status::Corruption("lz4 record larger than lz4 allows");
      const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(src.data()),
                                        reinterpret_cast<char*>(dst.data()),
                                        static_cast<int>(src.size()), static_cast<int>(dst.size()));
      if (n < 0) return Status::Corruption("lz4 stream is damaged or truncated");
      if (static_cast<size_t>(n) != dst.size())
        return Status::Corruption("lz4 stream decompressed to " + std::to_string(n) +
                                  " bytes, the header says " + std::to_string(dst.size()));
      return Status::OK();
    }
    case DiskCompression::kZstd: {
      ZSTD_DCtx* d = ThreadDctx();
      if (d == nullptr) return Status::ResourceExhausted("no memory for a zstd context");
      const size_t n = ZSTD_decompressDCtx(d, dst.data(), dst.size(), src.data(), src.size());
      if (ZSTD_isError(n))
        return Status::Corruption(std::string("zstd stream is damaged or truncated: ") +
                                  ZSTD_getErrorName(n));
      if (n != dst.size())
        return Status::Corruption("zstd stream decompressed to " + std::to_string(n) +
                                  " bytes, the header says " + std::to_string(dst.size()));
      return Status::OK();
    }
    case DiskCompression::kNone:
      break;
  }
  return Status::Corruption("unknown disk compression " +
                            std::to_string(static_cast<unsigned>(kind)));
}

}  // namespace strata::store
