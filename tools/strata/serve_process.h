// ServeProcess: a daemon that listens on a Unix socket, run as a child process by the one who
// needs it: `strata serve` for `strata demo`, `strata bench client` and the tests that drive a
// real daemon (tests/lib, tests/cluster), and redis-server for `strata bench client`. It forks and
// execs the daemon, waits until it is up, and stops it: explicitly (Stop, Kill), or from the
// destructor, so that however the owner leaves (an error, an exception from cli::Fail, a failed
// REQUIRE) no daemon outlives it. The daemon's output never reaches the owner's stdout: it goes to
// the owner's stderr, or to a log file.
//
// An owner that dies without unwinding (abort, SIGKILL) takes its daemon with it: the daemon gets
// options.stop_signal when the thread that started it ends (PR_SET_PDEATHSIG).
//
// Thread-safety: one owner; a ServeProcess may not be used from two threads at once. Start may be
// called from a multithreaded process (between fork and exec the child only makes system calls);
// REQUIRES: the thread that calls Start outlives the daemon.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/result.h"
#include "strata/status.h"

namespace strata::cli {

// When a started daemon counts as up.
enum class ServeReady {
  kSocketExists,    // its socket file exists (it has bound the socket)
  kClientConnects,  // Client::Connect to its socket succeeds (it answers Hello)
};

struct ServeOptions {
  // The daemon's name in error messages. Default: "strata serve".
  std::string name = "strata serve";
  // The binary to run; without a '/', looked up in PATH. Default: this process's own binary.
  std::string exe = "/proc/self/exe";
  // The arguments after the binary ("serve" first, for strata). They must make the daemon listen
  // on `socket`.
  std::vector<std::string> args;
  // The daemon's Unix socket.
  std::string socket;
  // File that receives the daemon's stdout and stderr (created or truncated). Empty: both go to
  // this process's stderr. Default: empty.
  std::string log_file;
  // When the daemon counts as up. Default: kSocketExists.
  ServeReady ready = ServeReady::kSocketExists;
  // How long WaitReady waits. Default: 10 s.
  std::chrono::milliseconds start_timeout{10000};
  // What the destructor sends a daemon still running: SIGTERM (a clean shutdown; SIGKILL if it
  // has not exited after kStopGrace) or SIGKILL. The daemon also gets it if its owner dies.
  // Default: SIGTERM.
  int stop_signal = SIGTERM;
};

class ServeProcess {
 public:
  // How long the destructor waits after SIGTERM before it sends SIGKILL.
  static constexpr std::chrono::seconds kStopGrace{10};

  // Forks and execs `exe args...`; does not wait for it to be up. Error: IOError if fork fails
  // (a binary that cannot be run shows as the child's exit code 127 in WaitReady).
  static Result<std::unique_ptr<ServeProcess>> Start(ServeOptions options);

  // Stops the daemon unless it has already exited (options.stop_signal), and reaps it. In a
  // process forked from the owner (a benchmark or test child that unwinds) it does nothing.
  ~ServeProcess();

  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // Waits until the daemon is up (options.ready), polling every 25 ms. Errors: Aborted if it
  // exited first (wait_status() says how), TimedOut if it is not up within options.start_timeout
  // (it is then SIGKILLed and reaped).
  Status WaitReady();

  // Sends `sig` (unless the daemon has already exited), waits for it to exit however long that
  // takes, and returns its wait status (as waitpid gives it).
  int Stop(int sig = SIGTERM);
  // Stop(SIGKILL).
  int Kill() { return Stop(SIGKILL); }
  // Waits up to `limit` for the daemon to exit by itself; its wait status, or nullopt if it is
  // still running.
  std::optional<int> WaitExit(std::chrono::milliseconds limit);

  bool running() const { return pid_ > 0; }
  // REQUIRES: running().
  pid_t pid() const { return pid_; }
  // REQUIRES: !running(). The daemon's wait status (as waitpid gives it).
  int wait_status() const { return wait_status_; }
  const std::string& socket() const { return options_.socket; }

 private:
  ServeProcess(ServeOptions options, pid_t pid);
  // Reaps the daemon if it has exited; true if it has (or had).
  bool Reaped();

  const ServeOptions options_;
  const pid_t owner_;  // the process that started the daemon
  pid_t pid_;          // -1 once reaped
  int wait_status_ = 0;
};

// Start + WaitReady: the daemon, up. On an error (the Status says why, with options.name in its
// message) no daemon is left running.
Result<std::unique_ptr<ServeProcess>> SpawnServe(ServeOptions options);

}  // namespace strata::cli
