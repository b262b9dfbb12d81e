#include "server/model/safetensors.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "moe/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe::model {
namespace {

namespace fs = std::filesystem;

constexpr char kIndexFileName[] = "model.safetensors.index.json";
constexpr char kSingleFileName[] = "model.safetensors";
// An index maps tensor names to file names: even a model with a million tensors needs a small
// fraction of this. The cap keeps a hostile or mistaken path from being read whole into memory.
constexpr uint64_t kMaxIndexBytes = 100ull * 1000 * 1000;

std::string Quote(absl::string_view name) {
  constexpr size_t kMaxShown = 200;
  if (name.size() <= kMaxShown) return absl::StrCat("'", absl::CEscape(name), "'");
  return absl::StrCat("'", absl::CEscape(name.substr(0, kMaxShown)), "...' (", name.size(),
                      " bytes)");
}

absl::Status Invalid(const std::string& display, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(display, ": ", message));
}

// weight_map: tensor name -> shard file name.
using WeightMap = std::map<std::string, std::string>;

absl::StatusOr<std::string> ReadIndexFile(const std::string& path) {
  std::error_code error;
  if (!fs::is_regular_file(path, error)) {
    return Invalid(path, "not a regular file, expected the JSON index of a sharded checkpoint");
  }
  const uintmax_t size = fs::file_size(path, error);
  if (error) {
    return absl::ErrnoToStatus(error.value(), absl::StrCat(path, ": cannot read size"));
  }
  if (size > kMaxIndexBytes) {
    return Invalid(path, absl::StrCat("index is ", size, " bytes, more than the limit of ",
                                      kMaxIndexBytes, " bytes"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open checkpoint index"));
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.gcount() != static_cast<std::streamsize>(text.size())) {
    return absl::DataLossError(
        absl::StrCat(path, ": read ", in.gcount(), " of ", size, " bytes of the checkpoint index"));
  }
  return text;
}

// Parses the index and returns its weight_map. nlohmann keeps the last of two duplicate keys
// without a word, which would hide a tensor listed for two shards, so a parser callback tracks
// the keys of every open object and the first duplicate is reported.
absl::StatusOr<WeightMap> ParseWeightMap(const std::string& index_path, const std::string& text) {
  struct OpenObject {
    std::string name;  // the key this object is the value of ("" for the root)
    std::set<std::string> keys;
    std::string last_key;
  };
  std::vector<OpenObject> open_objects;
  std::optional<std::pair<std::string, std::string>> duplicate;  // (object, key)
  const nlohmann::json::parser_callback_t callback =
      [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        switch (event) {
          case nlohmann::json::parse_event_t::object_start:
            open_objects.push_back(
                {open_objects.empty() ? std::string() : open_objects.back().last_key, {}, {}});
            break;
          case nlohmann::json::parse_event_t::key:
            if (!open_objects.empty()) {
              OpenObject& object = open_objects.back();
              std::string key = parsed.get<std::string>();
              if (!object.keys.insert(key).second && !duplicate.has_value()) {
                duplicate.emplace(object.name, key);
              }
              object.last_key = std::move(key);
            }
            break;
          case nlohmann::json::parse_event_t::object_end:
            if (!open_objects.empty()) open_objects.pop_back();
            break;
          default:
            break;
        }
        return true;
      };

  // nlohmann's lexer takes a NUL byte for the end of the input and would ignore the rest.
  if (const size_t nul = text.find('\0'); nul != std::string::npos) {
    return Invalid(index_path,
                   absl::StrCat("contains a NUL byte at offset ", nul, "; expected JSON text"));
  }
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text, callback);
  } catch (const nlohmann::json::exception& error) {
    return Invalid(index_path, absl::StrCat("not valid JSON: ", error.what()));
  }
  if (duplicate.has_value()) {
    if (duplicate->first == "weight_map") {
      return Invalid(index_path, absl::StrCat("weight_map lists tensor ", Quote(duplicate->second),
                                              " more than once"));
    }
    return Invalid(
        index_path,
        absl::StrCat("key ", Quote(duplicate->second), " appears twice in ",
                     duplicate->first.empty() ? std::string("the top-level object")
                                              : absl::StrCat("object ", Quote(duplicate->first))));
  }
  if (!index.is_object()) {
    return Invalid(index_path, absl::StrCat("expected a JSON object with a weight_map, found ",
                                            index.type_name()));
  }
  const auto it = index.find("weight_map");
  if (it == index.end()) {
    return Invalid(index_path, "has no weight_map (tensor name -> shard file name)");
  }
  if (!it->is_object()) {
    return Invalid(index_path,
                   absl::StrCat("weight_map must be an object of tensor name -> shard file name, "
                                "found ",
                                it->type_name()));
  }
  if (it->empty()) return Invalid(index_path, "weight_map lists no tensors");
  WeightMap weight_map;
  for (const auto& [tensor, shard] : it->items()) {
    if (!shard.is_string()) {
      return Invalid(index_path,
                     absl::StrCat("weight_map entry for tensor ", Quote(tensor),
                                  " must be a shard file name, found ", shard.type_name()));
    }
    weight_map.emplace(tensor, shard.get<std::string>());
  }
  return weight_map;
}

// Shards must be plain file names inside the checkpoint directory: an index that could name
// "../x" or "/etc/y" would let a downloaded checkpoint read any file the server can.
absl::Status CheckShardName(const std::string& index_path, const std::string& tensor,
                            const std::string& shard) {
  const bool plain = !shard.empty() && shard != "." && shard != ".." &&
                     shard.find_first_of("/\\\0", 0, 3) == std::string::npos;
  if (plain) return absl::OkStatus();
  return Invalid(index_path, absl::StrCat("weight_map assigns tensor ", Quote(tensor), " to shard ",
                                          Quote(shard),
                                          ", which is not a plain file name in the checkpoint "
                                          "directory (no '/', '\\', '.' or '..')"));
}

struct LoadedFiles {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const TensorInfo*> tensors;
};

absl::StatusOr<LoadedFiles> LoadSingleFile(const std::string& path) {
  LoadedFiles loaded;
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  for (const TensorInfo& info : file->tensors()) loaded.tensors.emplace(info.name, &info);
  loaded.files.push_back(std::move(file));
  return loaded;
}

// The index and the shards must agree exactly: every listed tensor is in the shard the index
// names, and every tensor in a shard is listed for that shard. A tensor the index does not
// list is refused rather than loaded, since the index is what tools read to decide which file
// holds a weight, and a mismatch means the checkpoint was assembled wrongly.
absl::StatusOr<LoadedFiles> LoadSharded(const fs::path& directory, const std::string& index_path) {
  MOE_ASSIGN_OR_RETURN(const std::string text, ReadIndexFile(index_path));
  MOE_ASSIGN_OR_RETURN(const WeightMap weight_map, ParseWeightMap(index_path, text));

  std::map<std::string, std::vector<std::string>> tensors_by_shard;
  for (const auto& [tensor, shard] : weight_map) {
    MOE_RETURN_IF_ERROR(CheckShardName(index_path, tensor, shard));
    tensors_by_shard[shard].push_back(tensor);
  }

  LoadedFiles loaded;
  std::map<std::string, std::string> shard_of;  // tensor -> shard it was found in
  for (const auto& [shard, listed] : tensors_by_shard) {
    const std::string shard_path = (directory / shard).string();
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(shard_path);
    if (!opened.ok()) {
      return absl::Status(
          opened.status().code(),
          absl::StrCat(index_path, ": shard ", Quote(shard), " (holding ", listed.size(),
                       " listed tensors): ", opened.status().message()));
    }
    std::unique_ptr<SafetensorsFile> file = std::move(opened).value();
    for (const std::string& tensor : listed) {
      if (file->Find(tensor) == nullptr) {
        return Invalid(index_path,
                       absl::StrCat("weight_map assigns tensor ", Quote(tensor), " to shard ",
                                    Quote(shard), ", which does not contain it"));
      }
    }
    for (const TensorInfo& info : file->tensors()) {
      if (const auto seen = shard_of.find(info.name); seen != shard_of.end()) {
        return Invalid(index_path,
                       absl::StrCat("tensor ", Quote(info.name), " appears in two shards, ",
                                    Quote(seen->second), " and ", Quote(shard)));
      }
      const auto listed_in = weight_map.find(info.name);
      if (listed_in == weight_map.end()) {
        return Invalid(index_path,
                       absl::StrCat("shard ", Quote(shard), " holds tensor ", Quote(info.name),
                                    ", which weight_map does not list"));
      }
      if (listed_in->second != shard) {
        return Invalid(index_path,
                       absl::StrCat("tensor ", Quote(info.name), " is in shard ", Quote(shard),
                                    " but weight_map assigns it to ", Quote(listed_in->second)));
      }
      shard_of.emplace(info.name, shard);
      loaded.tensors.emplace(info.name, &info);
    }
    loaded.files.push_back(std::move(file));
  }
  return loaded;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& path) {
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (status.type() == fs::file_type::not_found) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint ", path, " does not exist; expected a directory holding ",
                     kIndexFileName, " or ", kSingleFileName, ", or a .safetensors file"));
  }
  if (error) {
    return absl::ErrnoToStatus(error.value(), absl::StrCat(path, ": cannot inspect checkpoint"));
  }

  LoadedFiles loaded;
  if (fs::is_directory(status)) {
    const fs::path directory(path);
    const fs::path index_path = directory / kIndexFileName;
    const fs::path single_path = directory / kSingleFileName;
    // Preferred when both exist: a tool that wrote shards next to an older single file
    // updated the index, not the single file.
    if (fs::exists(index_path, error)) {
      MOE_ASSIGN_OR_RETURN(loaded, LoadSharded(directory, index_path.string()));
    } else if (fs::exists(single_path, error)) {
      MOE_ASSIGN_OR_RETURN(loaded, LoadSingleFile(single_path.string()));
    } else {
      return absl::NotFoundError(absl::StrCat("checkpoint directory ", path, " holds neither ",
                                              kIndexFileName, " nor ", kSingleFileName));
    }
  } else {
    MOE_ASSIGN_OR_RETURN(loaded, LoadSingleFile(path));
  }

  auto checkpoint = absl::WrapUnique(new Checkpoint());
  checkpoint->path_ = path;
  checkpoint->files_ = std::move(loaded.files);
  checkpoint->tensors_ = std::move(loaded.tensors);
  return checkpoint;
}

absl::StatusOr<const TensorInfo*> Checkpoint::Get(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor ", Quote(name), " not found in checkpoint ",
                                            path_, " (", tensors_.size(), " tensors)"));
  }
  return it->second;
}

bool Checkpoint::Contains(const std::string& name) const { return tensors_.count(name) != 0; }

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) names.push_back(name);
  return names;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, info] : tensors_) total += info->data.size();
  return total;
}

}  // namespace moe::model
