#include "daemon/log.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <unordered_map>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace strata::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kWarn)};
std::atomic<bool> g_json{false};

spdlog::logger& Logger() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = std::make_shared<spdlog::logger>(
        "strata", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    l->set_level(spdlog::level::trace);  // filtered here, by g_level
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
    l->flush_on(spdlog::level::trace);
    return l;
  }();
  return *logger;
}

const char* Name(Level level) {
  static constexpr const char* kNames[] = {"trace", "debug", "info", "warn", "error", "off"};
  return kNames[static_cast<int>(level)];
}

// A text value: bare when it is one word, else quoted.
std::string Text(const std::string& v) {
  if (!v.empty() && v.find_first_of(" \"=\t\n") == std::string::npos) return v;
  return nlohmann::json(v).dump();
}

void Emit(Level level, std::string_view event, std::initializer_list<Field> fields,
          uint64_t suppressed) {
  if (g_json.load(std::memory_order_relaxed)) {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    nlohmann::json j = {
        {"ts_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now).count()},
        {"level", Name(level)},
        {"event", event}};
    for (const Field& f : fields) j[std::string(f.first)] = f.second;
    if (suppressed) j["suppressed"] = suppressed;
    Logger().log(spdlog::level::off, "{}", j.dump());  // `off` bypasses the level filter
    return;
  }
  std::string line(event);
  for (const Field& f : fields) {
    line += ' ';
    line += f.first;
    line += '=';
    line += Text(f.second);
  }
  if (suppressed) line += " suppressed=" + std::to_string(suppressed);
  Logger().log(static_cast<spdlog::level::level_enum>(static_cast<int>(level)), "{}", line);
}

}  // namespace

Status Configure(std::string_view level, std::string_view format) {
  int l = -1;
  for (int i = 0; i <= static_cast<int>(Level::kOff); ++i)
    if (level == Name(static_cast<Level>(i))) l = i;
  if (l < 0)
    return Status::InvalidArgument("log level '" + std::string(level) +
                                   "' is not trace, debug, info, warn, error or off");
  if (format != "text" && format != "json")
    return Status::InvalidArgument("log format '" + std::string(format) +
                                   "' is not text or json");
  g_level = l;
  g_json = format == "json";
  if (format == "json") Logger().set_pattern("%v");
  else Logger().set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  return Status::OK();
}

bool Enabled(Level level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed) &&
         level != Level::kOff;
}

void Write(Level level, std::string_view event, std::initializer_list<Field> fields) {
  if (Enabled(level)) Emit(level, event, fields, 0);
}

void WarnLimited(std::string_view key, std::string_view event,
                 std::initializer_list<Field> fields) {
  if (!Enabled(Level::kWarn)) return;
  struct Slot {
    std::chrono::steady_clock::time_point last{};
    uint64_t suppressed = 0;
  };
  static std::mutex mu;
  static std::unordered_map<std::string, Slot> slots;  // GUARDED_BY(mu); bounded by the keys
  const auto now = std::chrono::steady_clock::now();
  uint64_t suppressed = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    Slot& s = slots[std::string(key)];
    if (s.last != std::chrono::steady_clock::time_point{} &&
        now - s.last < std::chrono::seconds(1)) {
      ++s.suppressed;
      return;
    }
    s.last = now;
    suppressed = s.suppressed;
    s.suppressed = 0;
  }
  Emit(Level::kWarn, event, fields, suppressed);
}

}  // namespace strata::log
