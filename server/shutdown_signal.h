// SIGTERM / SIGINT as an event the main thread can wait for. The handler only writes a byte to
// a pipe (async-signal-safe, whichever thread the kernel picks, including threads libraries
// started before main); a watcher thread reads it and raises the event. A second signal
// terminates the process at once.
#pragma once

#include <atomic>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"

namespace moe::server {

class ShutdownSignal {
 public:
  ShutdownSignal() = default;
  ~ShutdownSignal();
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  // Installs the handlers. One ShutdownSignal per process.
  absl::Status Install();
  void Wait() { received_.WaitForNotification(); }
  bool received() const { return received_.HasBeenNotified(); }
  // "SIGTERM" or "SIGINT" once received.
  const std::string& signal_name() const { return signal_name_; }

 private:
  absl::Notification received_;
  std::string signal_name_;
  std::thread watcher_;
};

}  // namespace moe::server
