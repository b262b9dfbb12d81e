// `moe-client generate MODEL --prompt-ids 1,2,3`: one Generate stream, its token ids printed
// as they arrive (flushed per message) and a summary line on stderr, or one JSON object at the
// end (--format json).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "moe/client/client.h"

namespace moe::client::cli {

struct GenerateCommand {
  std::string model;
  std::vector<int32_t> prompt_token_ids;
  GenerateOptions options;
  std::string format = "text";  // "text" or "json"
};

// Streams to `out` (text: the ids, then a newline; json: the object), the summary to `err`
// (text). Errors: the call's status (tokens already printed stay, ended by a newline).
absl::Status RunGenerate(Client& client, const GenerateCommand& command, std::ostream& out,
                         std::ostream& err);

}  // namespace moe::client::cli
