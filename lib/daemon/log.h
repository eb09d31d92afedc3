// The daemon's structured log (docs/operations.md, "Logs"): one line per event on stderr, as
// text (`2026-12-01T10:15:00.123 warn request_failed request=load code=NoSpace ...`) or as one
// JSON object per line (`--log-format json`), at a level chosen with `--log-level` (default
// warn: quiet unless something fails). Written through spdlog.
//
// Warnings that a misbehaving client could repeat at request rate go through WarnLimited, which
// writes at most one line per key per second and reports how many it suppressed in the next.
//
// Thread-safety: all functions are thread-safe; Configure once at start-up, before other threads.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "strata/status.h"

namespace strata::log {

enum class Level { kTrace = 0, kDebug = 1, kInfo = 2, kWarn = 3, kError = 4, kOff = 5 };

// level: trace, debug, info, warn, error or off; format: text or json. InvalidArgument names the
// value that does not parse.
Status Configure(std::string_view level, std::string_view format);

bool Enabled(Level level);

using Field = std::pair<std::string_view, std::string>;
// One event: a name (snake_case) and its facts.
void Write(Level level, std::string_view event, std::initializer_list<Field> fields);

// Write(kWarn, ...) at most once per second per `key`; a line after suppressed ones carries
// suppressed=N.
void WarnLimited(std::string_view key, std::string_view event, std::initializer_list<Field> fields);

}  // namespace strata::log
