// KernelStatus: the outcome of a kernels/ call. kernels/ is a leaf of the layering (DESIGN.md): it
// depends on nothing else of Strata, so it carries its own small status type instead of
// strata::Status. lib/ maps KernelCode to strata::StatusCode at the boundary (same meanings).
//
// Success costs one byte and an empty string. No call in kernels/ throws on a data path.
//
// Thread-safety: a value type.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace strata::kernels {

enum class KernelCode : uint8_t {
  kOk = 0,
  kInvalidArgument = 1,  // wrong sizes, bad block ids, a shape the layout cannot hold
  kCorruption = 2,       // an encoded payload failed a format check or did not decode
  kNotSupported = 3,     // a valid request this build or codec cannot do (e.g. fp8 input to INT4)
  kOutOfRange = 4,       // data the codec cannot represent (NaN/Inf, |x| beyond its scale type)
  kDeviceError = 5,      // a CUDA runtime call failed; the message carries cudaGetErrorString
  kNoSpace = 6,          // an output buffer is too small
};

std::string_view KernelCodeName(KernelCode code);

class [[nodiscard]] KernelStatus {
 public:
  KernelStatus() = default;  // OK
  KernelStatus(KernelCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static KernelStatus Ok() { return {}; }
  static KernelStatus InvalidArgument(std::string m) {
    return {KernelCode::kInvalidArgument, std::move(m)};
  }
  static KernelStatus Corruption(std::string m) { return {KernelCode::kCorruption, std::move(m)}; }
  static KernelStatus NotSupported(std::string m) {
    return {KernelCode::kNotSupported, std::move(m)};
  }
  static KernelStatus OutOfRange(std::string m) { return {KernelCode::kOutOfRange, std::move(m)}; }
  static KernelStatus DeviceError(std::string m) {
    return {KernelCode::kDeviceError, std::move(m)};
  }
  static KernelStatus NoSpace(std::string m) { return {KernelCode::kNoSpace, std::move(m)}; }

  bool ok() const { return code_ == KernelCode::kOk; }
  KernelCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

 private:
  KernelCode code_ = KernelCode::kOk;
  std::string message_;
};

#define STRATA_KERNELS_RETURN_IF_ERROR(expr)           \
  do {                                                 \
    ::strata::kernels::KernelStatus _ks = (expr);      \
    if (!_ks.ok()) return _ks;                         \
  } while (0)

}  // namespace strata::kernels
