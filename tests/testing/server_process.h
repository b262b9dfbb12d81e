// Runs a server binary as a child process on a loopback port, for integration tests of the real
// binaries: spawn with its output in a log file, wait until it says it is ready over gRPC,
// signal it, wait for its exit code. Errors carry the tail of the server's log.
#pragma once

#include <sys/types.h>

#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "tests/testing/scratch_dir.h"

namespace moe::testing {

// gRPC's default receive limit is 4 MiB; tests talk to servers with the server's default
// (--max-message-bytes 64 MiB).
inline constexpr int kDefaultMaxMessageBytes = 64 << 20;

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, closed).
// Another process may take it before the server binds it; ServerProcess::Start retries then.
absl::StatusOr<int> PickFreeLoopbackPort();

// An insecure channel to `address` ("127.0.0.1:8001") whose send and receive limits are
// `max_message_bytes` (-1: unlimited). Each call makes its own connection (no subchannel shared
// with other channels), so tests that kill servers stay independent. A channel whose connection
// was refused stays failed for a while (gRPC's reconnect backoff): make channels once the server
// is ready.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           int max_message_bytes = kDefaultMaxMessageBytes);
// The same with `credentials` (TLS); null: insecure.
std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& address, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    int max_message_bytes = kDefaultMaxMessageBytes);

// How to reach a server that asks for more than a plaintext call: channel credentials (TLS, and
// call credentials composed with them) and metadata added to every readiness call (e.g.
// {"authorization", "Bearer ..."} over plaintext, where gRPC sends no call credentials).
struct ClientSecurity {
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // null: insecure
  std::vector<std::pair<std::string, std::string>> metadata;
};

// A child process (fork and exec), stdin from /dev/null, stdout and stderr appended to one log
// file. The destructor kills it (SIGKILL) if it still runs and reaps it; the kernel kills it
// (PR_SET_PDEATHSIG) if the test process dies first. Linux sends that signal when the *thread*
// that spawned the child exits: spawn from a thread that outlives the child (the main thread).
class ChildProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::string& binary,
                                                             const std::vector<std::string>& args,
                                                             const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

  // False once the process has exited (it is reaped then; exit_code() says how).
  bool Running();
  absl::Status Signal(int signal);
  // The exit code, or -N when signal N ended the process (as Python's subprocess does).
  // DEADLINE_EXCEEDED when it still runs after `timeout`; it is left running then.
  absl::StatusOr<int> WaitForExit(absl::Duration timeout);
  std::optional<int> exit_code() const { return exit_code_; }

  std::string ReadLog() const;
  // The last `max_bytes` of the log, starting at a line boundary where there is one.
  std::string LogTail(size_t max_bytes = 6000) const;

 private:
  ChildProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  void Reaped(int wait_status);

  pid_t pid_;
  std::string log_path_;
  std::optional<int> exit_code_;
};

struct ServerProcessOptions {
  std::string binary;
  // Flags besides --address, which Start adds (127.0.0.1 and a free port), and --metrics-port,
  // which it adds (another free port) unless these name it.
  std::vector<std::string> args;
  // How long to wait for ServerReady to say true.
  absl::Duration ready_timeout = absl::Seconds(60);
  // Limits of channel(); see MakeChannel.
  int max_message_bytes = kDefaultMaxMessageBytes;
  // Credentials of channel() and NewChannel(), and of the readiness probe, which also sends the
  // metadata (channel() does not: tests add it to their own calls).
  ClientSecurity client_security;
};

// A server process listening on 127.0.0.1. Start returns once its KServe ServerReady call
// answers true; the error says why not (exited early with its code, or timed out) and ends with
// the tail of its log. When the current test has failed, the destructor prints the log tail.
class ServerProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const ServerProcessOptions& options);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // The metrics port Start chose (0 when the test passed --metrics-port itself).
  int metrics_port() const { return metrics_port_; }
  // One channel shared by the calls of a test (limits from the options).
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  std::shared_ptr<grpc::Channel> NewChannel(int max_message_bytes = kDefaultMaxMessageBytes) const {
    return MakeChannel(address_, channel_credentials_, max_message_bytes);
  }

  absl::Status Terminate(int signal = SIGTERM) { return process_->Signal(signal); }
  absl::StatusOr<int> WaitForExit(absl::Duration timeout) { return process_->WaitForExit(timeout); }
  bool Running() { return process_->Running(); }
  std::string ReadLog() const { return process_->ReadLog(); }
  std::string LogTail(size_t max_bytes = 6000) const { return process_->LogTail(max_bytes); }
  ChildProcess& process() { return *process_; }

 private:
  ServerProcess() = default;

  std::unique_ptr<ScratchDir> scratch_;
  std::unique_ptr<ChildProcess> process_;
  std::string address_;
  int port_ = 0;
  int metrics_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials_;
};

// Polls ServerReady at `address` until it answers true, `process` exits, or `timeout` passes.
absl::Status WaitUntilServerReady(const std::string& address, ChildProcess& process,
                                  absl::Duration timeout);
// The same through `security`.
absl::Status WaitUntilServerReady(const std::string& address, ChildProcess& process,
                                  absl::Duration timeout, const ClientSecurity& security);

}  // namespace moe::testing
