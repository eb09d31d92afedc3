// Clocks and output pacing for long-running commands (`strata demo`): the time since this process
// started, as the kernel recorded it, and a progress line that rewrites itself on a terminal and
// prints whole, flushed lines when stdout is a pipe or a file.
//
// Thread-safety: ProgressLine is used by one thread; SecondsSinceProcessStart is thread-safe.
#pragma once

#include <chrono>
#include <string>

namespace strata::cli {

// Seconds since the kernel started this process (/proc/self/stat starttime against
// CLOCK_BOOTTIME; clock-tick resolution, 10 ms on most kernels). Falls back to the time since the
// first call if /proc cannot be read.
double SecondsSinceProcessStart();

class ProgressLine {
 public:
  // How long a piped run goes without a line at most (while Update is called).
  static constexpr std::chrono::seconds kPipedInterval{3};
  // `lines_when_piped`: how many plain lines a whole run prints at least when stdout is not a
  // terminal: one at each 1/lines_when_piped of total, and one whenever kPipedInterval has passed
  // since the last. Default: 10.
  explicit ProgressLine(size_t total, size_t lines_when_piped = 10);
  // Reports `done` of `total` steps. On a terminal it rewrites the line (at most every 200 ms, and
  // at the last step); otherwise it prints `text` as a whole, flushed line (see the constructor).
  // Cheap to call every step; `text` is only built when printed.
  template <typename MakeText>
  void Update(size_t done, MakeText&& make_text) {
    if (!Due(done)) return;
    Print(make_text());
  }
  // Ends a rewritten terminal line (a newline); nothing when piped.
  void Finish();

 private:
  bool Due(size_t done);
  void Print(const std::string& text);

  const size_t total_;
  const size_t step_;
  const bool tty_;
  size_t next_ = 0;  // next `done` that prints a piped line
  std::chrono::steady_clock::time_point last_;  // when the last line was printed
  size_t last_width_ = 0;
  bool open_ = false;  // a rewritten line is on screen without its newline
};

}  // namespace strata::cli
