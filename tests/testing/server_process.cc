#include "tests/testing/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"

extern char** environ;

namespace moe::testing {
namespace {

std::string ErrnoText(int error) { return std::strerror(error); }

// Closes a file descriptor on scope exit.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<int> PickFreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", ErrnoText(errno)));
  FdCloser closer(fd);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::InternalError(absl::StrCat("bind 127.0.0.1:0: ", ErrnoText(errno)));
  }
  socklen_t length = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    return absl::InternalError(absl::StrCat("getsockname: ", ErrnoText(errno)));
  }
  return static_cast<int>(ntohs(addr.sin_port));
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, int max_message_bytes) {
  return MakeChannel(address, nullptr, max_message_bytes);
}

std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& address, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    int max_message_bytes) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes);
  args.SetMaxSendMessageSize(max_message_bytes);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(
      address, credentials != nullptr ? credentials : grpc::InsecureChannelCredentials(), args);
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::string& binary, const std::vector<std::string>& args, const std::string& log_path) {
  // Everything the child needs is prepared here: between fork and exec a multithreaded process
  // may call only async-signal-safe functions (no allocation, no locks).
  std::vector<std::string> argv_strings;
  argv_strings.push_back(binary);
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : argv_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);

  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) return absl::InternalError(absl::StrCat("open /dev/null: ", ErrnoText(errno)));
  FdCloser null_closer(null_fd);
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("open ", log_path, ": ", ErrnoText(errno)));
  }
  FdCloser log_closer(log_fd);
  // The child writes its errno here when exec fails; a successful exec closes it (O_CLOEXEC).
  int exec_error_pipe[2];
  if (pipe2(exec_error_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", ErrnoText(errno)));
  }
  FdCloser read_closer(exec_error_pipe[0]);
  std::optional<FdCloser> write_closer(std::in_place, exec_error_pipe[1]);

  const pid_t parent = getpid();
  // vfork, not fork: fork runs the pthread_atfork handlers in the child, and in a test process
  // full of threads that deadlocks. (LLVM's OpenMP runtime allocates in its child handler, and
  // under ASan the allocator's lock may be held by another thread at the moment of the fork;
  // OpenBLAS's handler waits for its workers.) A vfork child runs no handler and, until exec,
  // only makes system calls, as posix_spawn's does.
  const pid_t pid = vfork();
  if (pid < 0) return absl::InternalError(absl::StrCat("vfork: ", ErrnoText(errno)));
  if (pid == 0) {
    // The child. The kernel sends it SIGKILL when the test process dies (a crash, an abort, a
    // SIGKILL from ctest's timeout), so that no server outlives its test binary. The parent
    // may have died before prctl: then it has been reparented already.
    auto fail = [&](int error) {
      const ssize_t ignored = write(exec_error_pipe[1], &error, sizeof(error));
      (void)ignored;
      _exit(127);
    };
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(errno);
    if (getppid() != parent) _exit(126);
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
        dup2(log_fd, STDERR_FILENO) < 0) {
      fail(errno);
    }
    // No blocked signals and default dispositions for the ones tests send, whatever the test
    // process (gRPC threads, gtest) set for itself; ignored signals stay ignored across exec.
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    sigemptyset(&default_action.sa_mask);
    for (int sig : {SIGTERM, SIGINT, SIGPIPE, SIGCHLD, SIGHUP, SIGQUIT}) {
      sigaction(sig, &default_action, nullptr);
    }
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, nullptr);
    execve(binary.c_str(), argv.data(), environ);
    fail(errno);
  }

  // The parent: read the child's exec error, or end of file once exec succeeded.
  write_closer.reset();
  int error = 0;
  ssize_t got;
  do {
    got = read(exec_error_pipe[0], &error, sizeof(error));
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof(error))) {
    int wait_status = 0;
    while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
    }
    const std::string what = absl::StrCat("cannot start ", binary, ": ", ErrnoText(error));
    return error == ENOENT ? absl::NotFoundError(what) : absl::InternalError(what);
  }
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, log_path));
}

ChildProcess::~ChildProcess() {
  if (Running()) {
    kill(pid_, SIGKILL);
    int wait_status = 0;
    if (waitpid(pid_, &wait_status, 0) == pid_) Reaped(wait_status);
  }
}

void ChildProcess::Reaped(int wait_status) {
  if (WIFEXITED(wait_status)) {
    exit_code_ = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    exit_code_ = -WTERMSIG(wait_status);
  } else {
    exit_code_ = -1000;  // not expected without WUNTRACED
  }
}

bool ChildProcess::Running() {
  if (exit_code_.has_value()) return false;
  int wait_status = 0;
  const pid_t result = waitpid(pid_, &wait_status, WNOHANG);
  if (result == pid_) {
    Reaped(wait_status);
    return false;
  }
  if (result < 0 && errno == ECHILD) {
    exit_code_ = -1001;  // reaped elsewhere; should not happen
    return false;
  }
  return true;
}

absl::Status ChildProcess::Signal(int signal) {
  if (!Running()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "process ", pid_, " already exited with ", *exit_code_, "; cannot send signal ", signal));
  }
  if (kill(pid_, signal) != 0) {
    return absl::InternalError(absl::StrCat("kill(", pid_, ", ", signal, "): ", ErrnoText(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ChildProcess::WaitForExit(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (Running()) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("process ", pid_, " still running after ", absl::FormatDuration(timeout)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return *exit_code_;
}

std::string ChildProcess::ReadLog() const {
  std::ifstream in(log_path_, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string ChildProcess::LogTail(size_t max_bytes) const {
  std::string log = ReadLog();
  if (log.size() <= max_bytes) return log;
  log = log.substr(log.size() - max_bytes);
  if (const size_t newline = log.find('\n'); newline != std::string::npos) {
    log = log.substr(newline + 1);
  }
  return "[...]\n" + log;
}

absl::Status WaitUntilServerReady(const std::string& address, ChildProcess& process,
                                  absl::Duration timeout) {
  return WaitUntilServerReady(address, process, timeout, ClientSecurity{});
}

absl::Status WaitUntilServerReady(const std::string& address, ChildProcess& process,
                                  absl::Duration timeout, const ClientSecurity& security) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string last_answer = "no answer yet";
  while (true) {
    if (!process.Running()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "server exited with code ", *process.exit_code(), " before it was ready; log ",
          process.log_path(), " ends with:\n", process.LogTail()));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "server not ready after ", absl::FormatDuration(timeout), " (last ServerReady: ",
          last_answer, "); log ", process.log_path(), " ends with:\n", process.LogTail()));
    }
    // A fresh channel per attempt: a channel whose first connection was refused stays failed
    // for seconds (gRPC's reconnect backoff), long after the server listens.
    auto stub = inference::GRPCInferenceService::NewStub(
        MakeChannel(address, security.credentials, kDefaultMaxMessageBytes));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    for (const auto& [key, value] : security.metadata) context.AddMetadata(key, value);
    inference::ServerReadyRequest request;
    inference::ServerReadyResponse response;
    const grpc::Status status = stub->ServerReady(&context, request, &response);
    if (status.ok() && response.ready()) return absl::OkStatus();
    last_answer = status.ok() ? "ready=false"
                              : absl::StrCat("code ", static_cast<int>(status.error_code()), " ",
                                             status.error_message());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const ServerProcessOptions& options) {
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->scratch_ = std::make_unique<ScratchDir>();
  // The port is free when picked but may be taken before the server binds it: try again then.
  constexpr int kAttempts = 3;
  absl::Status last_error;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    auto port = PickFreeLoopbackPort();
    if (!port.ok()) return port.status();
    server->port_ = *port;
    server->address_ = absl::StrCat("127.0.0.1:", *port);
    std::vector<std::string> args = {"--address", server->address_};
    // Tests run in parallel: each server gets its own metrics port unless the test chose one.
    server->metrics_port_ = 0;
    if (std::find(options.args.begin(), options.args.end(), "--metrics-port") ==
        options.args.end()) {
      auto metrics_port = PickFreeLoopbackPort();
      if (!metrics_port.ok()) return metrics_port.status();
      server->metrics_port_ = *metrics_port;
      args.push_back("--metrics-port");
      args.push_back(absl::StrCat(*metrics_port));
    }
    args.insert(args.end(), options.args.begin(), options.args.end());
    const std::string log_path = server->scratch_->File(absl::StrCat("server-", attempt, ".log"));
    auto process = ChildProcess::Spawn(options.binary, args, log_path);
    if (!process.ok()) return process.status();
    server->process_ = *std::move(process);
    last_error = WaitUntilServerReady(server->address_, *server->process_, options.ready_timeout,
                                      options.client_security);
    if (last_error.ok()) {
      server->channel_credentials_ = options.client_security.credentials;
      server->channel_ =
          MakeChannel(server->address_, server->channel_credentials_, options.max_message_bytes);
      return server;
    }
    const bool port_taken = !server->process_->Running() &&
                            server->process_->ReadLog().find("in use") != std::string::npos;
    if (!port_taken) break;
  }
  return absl::Status(last_error.code(),
                      absl::StrCat(options.binary, " ", absl::StrJoin(options.args, " "), ": ",
                                   last_error.message()));
}

ServerProcess::~ServerProcess() {
  if (process_ != nullptr && ::testing::Test::HasFailure()) {
    std::fprintf(stderr, "---- server log (%s, tail) ----\n%s\n---- end of server log ----\n",
                 process_->log_path().c_str(), process_->LogTail().c_str());
  }
  process_.reset();  // kills the server before its log directory goes
}

}  // namespace moe::testing
