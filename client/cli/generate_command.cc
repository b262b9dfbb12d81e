#include "client/cli/generate_command.h"

#include "client/cli/generate_output.h"

namespace moe::client::cli {

absl::Status RunGenerate(Client& client, const GenerateCommand& command, std::ostream& out,
                         std::ostream& err) {
  const bool text = command.format != "json";
  bool first = true;
  absl::StatusOr<GenerateResult> result = client.Generate(
      command.model, command.prompt_token_ids, command.options, [&](const GenerateChunk& chunk) {
        if (text && !chunk.token_ids.empty()) {
          out << FormatChunk(chunk, first) << std::flush;
          first = false;
        }
        return true;
      });
  if (text && !first) out << "\n" << std::flush;
  if (!result.ok()) return result.status();
  if (text) {
    err << "moe-client: generate: " << FormatSummary(*result) << "\n";
  } else {
    out << FormatGenerateJson(command.model, *result, command.options.logprobs) << "\n";
  }
  return absl::OkStatus();
}

}  // namespace moe::client::cli
