// EtcdProcess: a real etcd server for a test, on free loopback ports chosen at run time, with a
// temporary data directory. The destructor SIGKILLs it and removes the directory, so a failing
// test leaves nothing behind.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "transport/membership/etcd_client.h"

namespace strata::transport::testing {

inline int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class EtcdProcess {
 public:
  EtcdProcess() {
    const int client_port = FreeLoopbackPort();
    const int peer_port = FreeLoopbackPort();
    char tmpl[] = "/tmp/strata-etcd-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    endpoint_ = "http://127.0.0.1:" + std::to_string(client_port);
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port);
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string log = dir_ + "/etcd.log";
      FILE* f = std::freopen(log.c_str(), "w", stdout);
      (void)f;
      ::dup2(::fileno(stdout), 2);
      ::execlp("etcd", "etcd", "--name", "strata-test", "--data-dir", (dir_ + "/data").c_str(),
               "--listen-client-urls", endpoint_.c_str(), "--advertise-client-urls",
               endpoint_.c_str(), "--listen-peer-urls", peer.c_str(),
               "--initial-advertise-peer-urls", peer.c_str(), "--initial-cluster",
               ("strata-test=" + peer).c_str(), nullptr);
      std::_Exit(127);
    }
    // Ready when a range answers.
    EtcdClient c(endpoint_, std::chrono::milliseconds(500));
    for (int i = 0; i < 200; ++i) {
      int64_t rev = 0;
      if (c.RangePrefix("/", &rev).ok()) {
        ready_ = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~EtcdProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool ready() const { return ready_; }
  const std::string& endpoint() const { return endpoint_; }

 private:
  pid_t pid_ = -1;
  std::string dir_;
  std::string endpoint_;
  bool ready_ = false;
};

}  // namespace strata::transport::testing
