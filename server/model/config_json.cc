#include "server/model/config_json.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/model/error_text.h"

namespace moe::model {

using nlohmann::json;

std::string DescribeJsonValue(const json& value) {
  switch (value.type()) {
    case json::value_t::array:
      return absl::StrCat("an array of size ", value.size());
    case json::value_t::object:
      return absl::StrCat("an object of size ", value.size());
    case json::value_t::string:
      return absl::StrCat("the string ", Quote(value.get_ref<const json::string_t&>()));
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return value.get<bool>() ? "true" : "false";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return absl::StrCat("the number ", value.dump());
    default:
      return value.type_name();
  }
}

absl::StatusOr<json> ParseBoundedJson(const std::string& text, const std::string& source,
                                      int max_depth, std::string_view what_nests) {
  bool too_deep = false;
  const json::parser_callback_t callback =
      [&too_deep, max_depth](int depth, json::parse_event_t event, json& /*parsed*/) {
        // `depth` counts the containers already open around this event.
        const bool opens =
            event == json::parse_event_t::object_start || event == json::parse_event_t::array_start;
        if (opens && depth >= max_depth) too_deep = true;
        return !too_deep;
      };
  json root;
  try {
    root = json::parse(text, callback);
  } catch (const json::exception& error) {
    return Invalid(source, absl::StrCat("not valid JSON: ", Shorten(error.what())));
  }
  if (too_deep) {
    return Invalid(source, absl::StrCat("JSON is nested more than ", max_depth, " levels deep; ",
                                        std::string(what_nests)));
  }
  return root;
}

absl::StatusOr<std::string> ReadBoundedTextFile(const std::filesystem::path& path,
                                                uintmax_t max_bytes, std::string_view what) {
  const std::string shown = path.string();
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat("no ", std::string(what), " at '", shown, "'"));
  }
  const uintmax_t size = std::filesystem::file_size(path, error);
  if (error) {
    return absl::UnavailableError(absl::StrCat("cannot stat '", shown, "': ", error.message()));
  }
  if (size > max_bytes) {
    return Invalid(shown, absl::StrCat(size, " bytes is too large for a ", std::string(what),
                                       " (limit ", max_bytes, " bytes)"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(absl::StrCat("cannot open '", shown, "' for reading"));
  }
  // Exactly the size checked above: a file that grew since is not read past the cap.
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.gcount() != static_cast<std::streamsize>(text.size())) {
    return absl::DataLossError(absl::StrCat(shown, ": read ", in.gcount(), " of ", size, " bytes"));
  }
  return text;
}

}  // namespace moe::model
