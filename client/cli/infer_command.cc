#include "client/cli/infer_command.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli/command_line.h"
#include "client/cli/input_rows.h"
#include "moe/common/status_macros.h"

namespace moe::client::cli {

absl::Status RunInfer(Client& client, InferCommand command, std::ostream& out) {
  if (command.input_file.empty() == (command.random_rows <= 0)) {
    return UsageError(
        "infer: give exactly one of --input FILE (.npy or .json) and --random-rows N");
  }
  // The file first: its errors are the user's to fix whatever the server says.
  InputRows rows;
  if (!command.input_file.empty()) {
    absl::StatusOr<InputRows> read = ReadInputFile(command.input_file);
    if (!read.ok()) return UsageError(read.status().message());
    rows = *std::move(read);
  }
  MOE_ASSIGN_OR_RETURN(const ModelInfo info, client.DescribeModel(command.model));
  if (command.input_file.empty()) {
    if (info.input_width() <= 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model '", command.model, "' does not say its input width: use --input FILE"));
    }
    rows = RandomRows(command.random_rows, info.input_width(), command.seed);
    command.display.seed = command.seed;
  }

  const std::vector<InferInput> inputs = {
      InferInput{.name = info.input_name().empty() ? "input" : info.input_name(),
                 .shape = {rows.rows, rows.width},
                 .values = std::move(rows.values),
                 .wire_type = command.wire,
                 .raw = command.raw}};
  InferOptions options;
  options.want_routing = command.display.show_routing;
  options.priority = command.priority;
  options.queue_timeout = command.queue_timeout;
  options.request_id = command.request_id;
  MOE_ASSIGN_OR_RETURN(const InferResult result, client.Infer(command.model, inputs, options));

  command.display.output_name = info.output_name();
  command.display.labels.assign(info.output_labels().begin(), info.output_labels().end());
  MOE_ASSIGN_OR_RETURN(const std::string text, FormatInferResult(result, command.display));
  out << text;
  return absl::OkStatus();
}

}  // namespace moe::client::cli
