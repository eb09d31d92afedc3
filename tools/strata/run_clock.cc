#include "run_clock.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace strata::cli {

double SecondsSinceProcessStart() {
  static const auto first_call = std::chrono::steady_clock::now();
  std::ifstream in("/proc/self/stat");
  std::string stat;
  std::getline(in, stat);
  // Fields after the command name (which may hold spaces), starting with field 3 (state); the
  // start time is field 22, in clock ticks since boot.
  const size_t paren = stat.rfind(')');
  const long hz = ::sysconf(_SC_CLK_TCK);
  timespec now{};
  if (paren != std::string::npos && hz > 0 && ::clock_gettime(CLOCK_BOOTTIME, &now) == 0) {
    std::istringstream fields(stat.substr(paren + 1));
    std::string field;
    unsigned long long start_ticks = 0;
    bool found = false;
    for (int i = 3; fields >> field; ++i) {
      if (i == 22) {
        start_ticks = std::stoull(field);
        found = true;
        break;
      }
    }
    if (found) {
      const double boot_now = now.tv_sec + now.tv_nsec * 1e-9;
      return std::max(0.0, boot_now - static_cast<double>(start_ticks) / hz);
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - first_call).count();
}

ProgressLine::ProgressLine(size_t total, size_t lines_when_piped)
    : total_(total),
      step_(std::max<size_t>(1, total / std::max<size_t>(1, lines_when_piped))),
      tty_(::isatty(STDOUT_FILENO) == 1),
      last_(std::chrono::steady_clock::now()) {
  next_ = step_;
}

bool ProgressLine::Due(size_t done) {
  const auto now = std::chrono::steady_clock::now();
  if (!tty_) {
    if (done < next_ && done != total_ && now - last_ < kPipedInterval) return false;
    while (next_ <= done) next_ += step_;
    if (done == total_) next_ = SIZE_MAX;
    last_ = now;
    return true;
  }
  if (done != total_ && now - last_ < std::chrono::milliseconds(200)) return false;
  last_ = now;
  return true;
}

void ProgressLine::Print(const std::string& text) {
  if (tty_) {
    std::string line = "\r" + text;
    if (text.size() < last_width_) line.append(last_width_ - text.size(), ' ');
    last_width_ = text.size();
    std::fputs(line.c_str(), stdout);
    open_ = true;
  } else {
    std::fputs((text + "\n").c_str(), stdout);
  }
  std::fflush(stdout);
}

void ProgressLine::Finish() {
  if (open_) std::fputs("\n", stdout);
  open_ = false;
  std::fflush(stdout);
}

}  // namespace strata::cli
