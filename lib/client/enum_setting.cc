#include "client/enum_setting.h"

#include <cstdlib>
#include <string>

namespace strata::enum_setting_internal {
namespace {

// "a, b or c": each value's first name, in table order.
std::string Expected(std::span<const IntName> names) {
  std::string out;
  size_t listed = 0, count = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    bool first = true;
    for (size_t j = 0; j < i && first; ++j) first = names[j].value != names[i].value;
    count += first;
  }
  for (size_t i = 0; i < names.size(); ++i) {
    bool first = true;
    for (size_t j = 0; j < i && first; ++j) first = names[j].value != names[i].value;
    if (!first) continue;
    if (listed > 0) out += listed + 1 == count ? " or " : ", ";
    out += names[i].name;
    ++listed;
  }
  return out;
}

}  // namespace

Result<int> Resolve(std::string_view env, std::string_view option, std::span<const IntName> names,
                    int value) {
  const char* set = env.empty() ? nullptr : std::getenv(std::string(env).c_str());
  if (set != nullptr && *set != '\0') {
    const std::string_view v(set);
    for (const IntName& n : names)
      if (n.name == v) return n.value;
    return Status::InvalidArgument("environment " + std::string(env) + "='" + std::string(v) +
                                   "': expected " + Expected(names));
  }
  for (const IntName& n : names)
    if (n.value == value) return value;
  const std::string source =
      option.empty() ? "the default of " + std::string(env) : std::string(option);
  return Status::InvalidArgument(source + " = " + std::to_string(value) + ": expected " +
                                 Expected(names));
}

}  // namespace strata::enum_setting_internal
