// Client settings that are enums: a value from ClientOptions (or a built-in default), which a
// STRATA_* environment variable overrides where it is set and not empty (docs/config.md). Each
// setting is one table (its variable, its ClientOptions field, its names); one function reads
// any of them, so every setting accepts, refuses and reports the same way.
//
// Errors name their source: "environment STRATA_STORE_PATH='x': expected ..." for a variable,
// "ClientOptions::store_path = 7: expected ..." for a field holding a value outside its enum
// (a cast from an integer, a C or Python caller).
//
// Thread-safety: ResolveEnumSetting reads the environment (getenv); tables are constants.
#pragma once

#include <initializer_list>
#include <span>
#include <string_view>

#include "strata/result.h"

namespace strata {

// One accepted spelling. Several names may give one value (`off` and `0`); the first name of a
// value is the one errors list.
template <typename E>
struct EnumName {
  std::string_view name;
  E value;
};

template <typename E>
struct EnumSetting {
  std::string_view env;     // the STRATA_* variable that overrides the field, e.g. STRATA_STORE_PATH
  std::string_view option;  // the field, e.g. ClientOptions::store_path; empty: the setting has
                            // none (its value comes from the variable or the default alone)
  std::span<const EnumName<E>> names;
};

namespace enum_setting_internal {
struct IntName {
  std::string_view name;
  int value;
};
// The untyped core: the variable where set, else `value` (checked against the table).
Result<int> Resolve(std::string_view env, std::string_view option,
                    std::span<const IntName> names, int value);
}  // namespace enum_setting_internal

// `setting`'s value: its variable where set and not empty (InvalidArgument naming the variable
// and the accepted names when it is none of them), else `value` (InvalidArgument naming the
// field when it is outside the table).
template <typename E>
Result<E> ResolveEnumSetting(const EnumSetting<E>& setting, E value) {
  constexpr size_t kMaxNames = 16;
  enum_setting_internal::IntName names[kMaxNames];
  size_t n = 0;
  for (const EnumName<E>& e : setting.names)
    if (n < kMaxNames) names[n++] = {e.name, static_cast<int>(e.value)};
  Result<int> r = enum_setting_internal::Resolve(setting.env, setting.option, {names, n},
                                                 static_cast<int>(value));
  if (!r.ok()) return r.status();
  return static_cast<E>(*r);
}

}  // namespace strata
