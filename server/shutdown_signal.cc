#include "server/shutdown_signal.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moe::server {
namespace {

// The pipe the handler writes to; -1 until installed. Plain ints: all a handler may touch.
int g_signal_pipe_write = -1;
int g_signal_pipe_read = -1;
constexpr char kWakeWithoutSignal = 0;

void OnShutdownSignal(int signal_number) {
  const char byte = static_cast<char>(signal_number);
  const int saved_errno = errno;
  [[maybe_unused]] ssize_t written = write(g_signal_pipe_write, &byte, 1);
  errno = saved_errno;
}

}  // namespace

absl::Status ShutdownSignal::Install() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2 for signal handling: ", std::strerror(errno)));
  }
  g_signal_pipe_read = fds[0];
  g_signal_pipe_write = fds[1];
  // A handler must never block: a full pipe just drops the byte.
  fcntl(g_signal_pipe_write, F_SETFL, fcntl(g_signal_pipe_write, F_GETFL) | O_NONBLOCK);
  struct sigaction action {};
  action.sa_handler = OnShutdownSignal;
  sigemptyset(&action.sa_mask);
  // One-shot: the first signal starts the drain, a second one takes the default action and
  // ends the process at once (an operator's way out of a drain that hangs).
  action.sa_flags = SA_RESTART | SA_RESETHAND;
  for (int signal_number : {SIGTERM, SIGINT}) {
    if (sigaction(signal_number, &action, nullptr) != 0) {
      return absl::InternalError(absl::StrCat("sigaction: ", std::strerror(errno)));
    }
  }
  watcher_ = std::thread([this] {
    char byte = kWakeWithoutSignal;
    while (read(g_signal_pipe_read, &byte, 1) < 0 && errno == EINTR) {
    }
    if (byte == kWakeWithoutSignal) return;  // destructor
    signal_name_ = byte == SIGTERM ? "SIGTERM" : "SIGINT";
    received_.Notify();
  });
  return absl::OkStatus();
}

ShutdownSignal::~ShutdownSignal() {
  if (!watcher_.joinable()) return;
  if (!received_.HasBeenNotified()) {
    const char byte = kWakeWithoutSignal;
    [[maybe_unused]] ssize_t written = write(g_signal_pipe_write, &byte, 1);
  }
  watcher_.join();
}

}  // namespace moe::server
