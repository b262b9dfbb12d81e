#include "client/cli/bench_command.h"

#include <iostream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli/command_line.h"
#include "moe/common/status_macros.h"

namespace moe::client::cli {
namespace {

// `connections` clients (owned by `owned`), none retrying: a benchmark counts errors, it does
// not hide them behind retries.
absl::StatusOr<std::vector<Client*>> ConnectAll(const ConnectOptions& connect, int connections,
                                                std::vector<std::unique_ptr<Client>>& owned) {
  ConnectOptions bench_connect = connect;
  bench_connect.retry.max_attempts = 1;
  std::vector<Client*> clients;
  for (int i = 0; i < connections; ++i) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(bench_connect);
    if (!client.ok()) {
      // Connect makes no call: its INVALID_ARGUMENT is about the flags (an unreadable TLS file).
      return client.status().code() == absl::StatusCode::kInvalidArgument
                 ? UsageError(client.status().message())
                 : client.status();
    }
    clients.push_back(client->get());
    owned.push_back(*std::move(client));
  }
  return clients;
}

}  // namespace

absl::StatusOr<bool> RunBenchCommand(const ConnectOptions& connect, BenchCommand command,
                                     std::ostream& out) {
  BenchOptions& options = command.options;
  if (absl::Status valid = ValidateBenchOptions(options); !valid.ok()) {
    return UsageError(absl::StrCat("bench: ", valid.message()));
  }
  const bool open_loop = options.rate > 0;
  int connections = command.connections;
  if (connections == 0) connections = open_loop ? 1 : options.concurrency;
  if (connections < 1 || connections > 4096) {
    return UsageError("bench: --connections must be between 1 and 4096");
  }
  std::vector<std::unique_ptr<Client>> owned;
  MOE_ASSIGN_OR_RETURN(std::vector<Client*> clients, ConnectAll(connect, connections, owned));
  if (command.wait_ready > absl::ZeroDuration()) {
    MOE_RETURN_IF_ERROR(clients[0]->WaitForReady(command.wait_ready));
  }
  MOE_ASSIGN_OR_RETURN(const ModelInfo info, clients[0]->DescribeModel(options.model));
  if (info.input_width() <= 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", options.model, "' does not say its input width"));
  }
  options.input_name = info.input_name().empty() ? "input" : info.input_name();
  options.width = info.input_width();
  options.target = connect.target;
  if (command.progress) {
    options.progress = [](const std::string& line) {
      std::cerr << "\r" << line << "\x1b[K" << std::flush;
    };
  }
  absl::StatusOr<BenchReport> report = RunBench(clients, options);
  if (command.progress) std::cerr << "\r\x1b[K" << std::flush;
  if (!report.ok()) return UsageError(report.status().message());
  if (command.format == "json") {
    out << FormatJson(*report) << "\n";
  } else if (command.format == "csv") {
    if (command.csv_header) out << CsvHeader() << "\n";
    out << FormatCsvRow(*report) << "\n";
  } else {
    out << FormatText(*report);
  }
  return report->requests_ok > 0;
}

absl::StatusOr<bool> RunGenerateBenchCommand(const ConnectOptions& connect,
                                             GenerateBenchCommand command, std::ostream& out) {
  GenerateBenchOptions& options = command.options;
  const bool vocab_given = options.vocab_size > 0;
  if (!vocab_given) options.vocab_size = 1;  // validated below, once read
  if (absl::Status valid = ValidateGenerateBenchOptions(options); !valid.ok()) {
    return UsageError(absl::StrCat("bench --generate: ", valid.message()));
  }
  const int connections = command.connections == 0 ? options.concurrency : command.connections;
  if (connections < 1 || connections > 4096) {
    return UsageError("bench: --connections must be between 1 and 4096");
  }
  std::vector<std::unique_ptr<Client>> owned;
  MOE_ASSIGN_OR_RETURN(std::vector<Client*> clients, ConnectAll(connect, connections, owned));
  if (command.wait_ready > absl::ZeroDuration()) {
    MOE_RETURN_IF_ERROR(clients[0]->WaitForReady(command.wait_ready));
  }
  MOE_ASSIGN_OR_RETURN(const ModelInfo info, clients[0]->DescribeModel(options.model));
  if (!info.generates()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", options.model, "' does not generate (it is a ",
                     info.architecture().empty() ? "tensor" : info.architecture(),
                     " model; bench without --generate sends it tensors)"));
  }
  if (!vocab_given) {
    if (info.vocab_size() <= 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model '", options.model, "' does not say its vocabulary size: give --vocab-size"));
    }
    options.vocab_size = info.vocab_size();
  }
  const int64_t longest = options.prompt_len.max + options.max_new_tokens.max;
  if (info.max_model_len() > 0 && longest > info.max_model_len()) {
    return UsageError(absl::StrCat("bench --generate: the longest prompt (", options.prompt_len.max,
                                   ") plus the most new tokens (", options.max_new_tokens.max,
                                   ") is ", longest, " tokens, beyond model '", options.model,
                                   "''s ", info.max_model_len()));
  }
  options.target = connect.target;
  absl::StatusOr<GenerateBenchReport> report = RunGenerateBench(clients, options);
  if (!report.ok()) return UsageError(report.status().message());
  out << (command.format == "json" ? FormatGenerateJson(*report) + "\n"
                                   : FormatGenerateText(*report));
  return report->requests_completed > 0;
}

}  // namespace moe::client::cli
