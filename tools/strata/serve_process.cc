#include "serve_process.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "strata/client.h"

namespace strata::cli {
namespace {

constexpr auto kPoll = std::chrono::milliseconds(25);

// waitpid, retried on EINTR.
pid_t WaitPid(pid_t pid, int* status, int flags) {
  pid_t r;
  do {
    r = ::waitpid(pid, status, flags);
  } while (r < 0 && errno == EINTR);
  return r;
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

}  // namespace

Result<std::unique_ptr<ServeProcess>> ServeProcess::Start(ServeOptions options) {
  // Everything the child needs is built here: between fork and exec it only makes system calls.
  std::vector<char*> argv;
  argv.push_back(options.exe.data());
  for (auto& a : options.args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const char* log = options.log_file.empty() ? nullptr : options.log_file.c_str();
  const pid_t owner = ::getpid();
  std::fflush(nullptr);  // the child must not inherit (and print again) buffered output
  const pid_t pid = ::fork();
  if (pid < 0) return Status::IOError(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    // An owner that dies without unwinding (abort, SIGKILL) takes the daemon with it.
    if (::prctl(PR_SET_PDEATHSIG, options.stop_signal) != 0 || ::getppid() != owner) _exit(125);
    if (log) {
      const int fd = ::open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) _exit(126);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    } else {
      ::dup2(2, 1);  // the daemon's output goes to stderr: stdout carries only the owner's
    }
    ::execvp(argv[0], argv.data());
    _exit(127);
  }
  return std::unique_ptr<ServeProcess>(new ServeProcess(std::move(options), pid));
}

ServeProcess::ServeProcess(ServeOptions options, pid_t pid)
    : options_(std::move(options)), owner_(::getpid()), pid_(pid) {}

ServeProcess::~ServeProcess() {
  if (::getpid() != owner_ || Reaped()) return;
  if (options_.stop_signal == SIGTERM) {
    ::kill(pid_, SIGTERM);
    if (WaitExit(kStopGrace)) return;
  }
  Kill();
}

bool ServeProcess::Reaped() {
  if (pid_ <= 0) return true;
  int status = 0;
  if (WaitPid(pid_, &status, WNOHANG) != pid_) return false;
  wait_status_ = status;
  pid_ = -1;
  return true;
}

Status ServeProcess::WaitReady() {
  const auto end = std::chrono::steady_clock::now() + options_.start_timeout;
  while (true) {
    const bool up = options_.ready == ServeReady::kSocketExists
                        ? std::filesystem::exists(options_.socket)
                        : Client::Connect(options_.socket).ok();
    if (up) return Status::OK();
    if (Reaped())
      return Status::Aborted(options_.name + " exited at start-up (" + DescribeExit(wait_status_) +
                             ")");
    if (std::chrono::steady_clock::now() >= end) break;
    std::this_thread::sleep_for(kPoll);
  }
  Kill();
  return Status::TimedOut(
      options_.name + " did not start on " + options_.socket + " within " +
      std::to_string(
          std::chrono::duration_cast<std::chrono::seconds>(options_.start_timeout).count()) +
      " s");
}

int ServeProcess::Stop(int sig) {
  if (Reaped()) return wait_status_;
  ::kill(pid_, sig);
  int status = 0;
  wait_status_ = WaitPid(pid_, &status, 0) == pid_ ? status : -1;
  pid_ = -1;
  return wait_status_;
}

std::optional<int> ServeProcess::WaitExit(std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!Reaped()) {
    if (std::chrono::steady_clock::now() >= end) return std::nullopt;
    std::this_thread::sleep_for(kPoll);
  }
  return wait_status_;
}

Result<std::unique_ptr<ServeProcess>> SpawnServe(ServeOptions options) {
  auto serve = ServeProcess::Start(std::move(options));
  if (!serve.ok()) return serve.status();
  if (Status s = (*serve)->WaitReady(); !s.ok()) return s;  // the destructor reaps what is left
  return serve;
}

}  // namespace strata::cli
