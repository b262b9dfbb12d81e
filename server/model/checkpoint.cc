#include "server/model/checkpoint.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "moe/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/model/error_text.h"
#include "server/model/safetensors.h"

namespace moe::model {
namespace {

namespace fs = std::filesystem;

constexpr char kIndexFileName[] = "model.safetensors.index.json";
constexpr char kSingleFileName[] = "model.safetensors";

// weight_map: tensor name -> shard file name.
using WeightMap = std::map<std::string, std::string>;
// Tensor name -> the tensor and the file holding it.
using TensorMap = std::map<std::string, std::pair<const TensorInfo*, const SafetensorsFile*>>;

absl::StatusOr<std::string> ReadIndexFile(const std::string& path) {
  std::error_code error;
  if (!fs::is_regular_file(path, error)) {
    return Invalid(path, "not a regular file, expected the JSON index of a sharded checkpoint");
  }
  const uintmax_t size = fs::file_size(path, error);
  if (error) {
    return absl::ErrnoToStatus(error.value(), absl::StrCat(path, ": cannot read size"));
  }
  if (size > kMaxCheckpointIndexBytes) {
    return Invalid(path, absl::StrCat("index is ", size, " bytes, more than the limit of ",
                                      kMaxCheckpointIndexBytes,
                                      " bytes for a checkpoint index (real ones are well under "
                                      "that; is this the right file?)"));
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

// The JSON type names nlohmann uses, for "found ..." in errors.
constexpr absl::string_view kFoundObject = "object";
constexpr absl::string_view kFoundArray = "array";

// Streams the index and keeps only weight_map's tensor -> shard entries; everything else (the
// metadata object, keys tools add) is checked to be JSON and dropped as it is read, so memory
// follows the weight_map and not the file. A SAX handler rather than a DOM also because
// nlohmann's DOM keeps the last of two duplicate keys without a word, which would hide a tensor
// listed for two shards.
class IndexParser final : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit IndexParser(const std::string& display) : display_(display) {}

  const absl::Status& status() const { return status_; }
  // Whether the top-level object had a weight_map.
  bool has_weight_map() const { return has_weight_map_; }
  WeightMap& weight_map() { return weight_map_; }

  bool null() override { return Scalar("null"); }
  bool boolean(bool /*value*/) override { return Scalar("boolean"); }
  bool number_integer(number_integer_t /*value*/) override { return Scalar("number"); }
  bool number_unsigned(number_unsigned_t /*value*/) override { return Scalar("number"); }
  bool number_float(number_float_t /*value*/, const string_t& /*text*/) override {
    return Scalar("number");
  }
  bool binary(binary_t& /*value*/) override { return Scalar("binary"); }

  bool string(string_t& value) override {
    if (state_ == State::kWeightMapValue) {
      weight_map_.emplace(std::move(key_), std::move(value));
      state_ = State::kWeightMap;
      return true;
    }
    return Scalar("string");
  }

  bool start_object(std::size_t /*elements*/) override { return StartContainer(kFoundObject); }
  bool start_array(std::size_t /*elements*/) override { return StartContainer(kFoundArray); }

  bool key(string_t& value) override {
    if (state_ == State::kTop) {
      if (value == "weight_map") {
        if (has_weight_map_) return Fail("key 'weight_map' appears twice in the top-level object");
        has_weight_map_ = true;
        state_ = State::kWeightMapStart;
      } else {
        state_ = State::kTopValue;
      }
      return true;
    }
    if (state_ == State::kWeightMap) {
      if (weight_map_.count(value) != 0) {
        return Fail(absl::StrCat("weight_map lists tensor ", Quote(value), " more than once"));
      }
      key_ = std::move(value);
      state_ = State::kWeightMapValue;
      return true;
    }
    return true;  // a key inside a skipped value
  }

  bool end_object() override { return EndContainer(); }
  bool end_array() override { return EndContainer(); }

  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& error) override {
    return Fail(absl::StrCat("not valid JSON: ", Shorten(error.what())));
  }

 private:
  enum class State {
    kStart,           // before the top-level value
    kTop,             // in the top-level object, expecting a key
    kTopValue,        // after a top-level key other than weight_map
    kWeightMapStart,  // after the weight_map key
    kWeightMap,       // in weight_map, expecting a tensor name
    kWeightMapValue,  // after a tensor name, expecting its shard
    kSkipping,        // inside a value that is not kept
    kDone,            // after the top-level object
  };

  bool Fail(absl::string_view message) {
    status_ = Invalid(display_, message);
    return false;
  }

  bool Scalar(absl::string_view found) {
    switch (state_) {
      case State::kStart:
        return Fail(absl::StrCat("expected a JSON object with a weight_map, found ", found));
      case State::kTopValue:
        state_ = State::kTop;
        return true;
      case State::kWeightMapStart:
        return WrongWeightMap(found);
      case State::kWeightMapValue:
        return Fail(absl::StrCat("weight_map entry for tensor ", Quote(key_),
                                 " must be a shard file name, found ", found));
      default:
        return true;  // kSkipping
    }
  }

  bool WrongWeightMap(absl::string_view found) {
    return Fail(absl::StrCat(
        "weight_map must be an object of tensor name -> shard file name, found ", found));
  }

  bool StartContainer(absl::string_view found) {
    // The parser keeps no recursion, but nesting is still refused early: no index needs it, and
    // it bounds what the skipping below has to track.
    if (++depth_ > kMaxCheckpointIndexDepth) {
      return Fail(absl::StrCat("JSON is nested more than ", kMaxCheckpointIndexDepth,
                               " levels deep; an index nests two (weight_map inside the top-level "
                               "object)"));
    }
    switch (state_) {
      case State::kStart:
        if (found != kFoundObject) {
          return Fail(absl::StrCat("expected a JSON object with a weight_map, found ", found));
        }
        state_ = State::kTop;
        return true;
      case State::kTopValue:
        skip_until_depth_ = depth_ - 1;
        state_ = State::kSkipping;
        return true;
      case State::kWeightMapStart:
        if (found != kFoundObject) return WrongWeightMap(found);
        state_ = State::kWeightMap;
        return true;
      case State::kWeightMapValue:
        return Fail(absl::StrCat("weight_map entry for tensor ", Quote(key_),
                                 " must be a shard file name, found ", found));
      default:
        return true;  // kSkipping
    }
  }

  bool EndContainer() {
    --depth_;
    switch (state_) {
      case State::kSkipping:
        if (depth_ == skip_until_depth_) state_ = State::kTop;
        return true;
      case State::kWeightMap:
        if (weight_map_.empty()) return Fail("weight_map lists no tensors");
        state_ = State::kTop;
        return true;
      default:
        state_ = State::kDone;  // kTop: the top-level object is complete
        return true;
    }
  }

  const std::string& display_;
  absl::Status status_;
  State state_ = State::kStart;
  int depth_ = 0;             // arrays and objects open
  int skip_until_depth_ = 0;  // kSkipping ends when depth_ is back to this
  bool has_weight_map_ = false;
  std::string key_;  // the tensor name whose shard comes next
  WeightMap weight_map_;
};

// Parses the index and returns its weight_map.
absl::StatusOr<WeightMap> ParseWeightMap(const std::string& index_path, const std::string& text) {
  // nlohmann's lexer takes a NUL byte for the end of the input and would ignore the rest.
  if (const size_t nul = text.find('\0'); nul != std::string::npos) {
    return Invalid(index_path,
                   absl::StrCat("contains a NUL byte at offset ", nul, "; expected JSON text"));
  }
  IndexParser parser(index_path);
  bool parsed = false;
  try {
    parsed = nlohmann::json::sax_parse(text, &parser);
  } catch (const nlohmann::json::exception& error) {
    return Invalid(index_path, absl::StrCat("not valid JSON: ", Shorten(error.what())));
  }
  if (!parsed) {
    if (!parser.status().ok()) return parser.status();
    return Invalid(index_path, "not valid JSON");
  }
  if (!parser.has_weight_map()) {
    return Invalid(index_path, "has no weight_map (tensor name -> shard file name)");
  }
  return std::move(parser.weight_map());
}

// Shards must be plain file names inside the checkpoint directory: an index that could name
// "../x" or "/etc/y" would let a downloaded checkpoint read any file the server can. Names are
// also kept short and printable, as they become part of the paths that errors show.
absl::Status CheckShardName(const std::string& index_path, const std::string& tensor,
                            const std::string& shard) {
  constexpr size_t kMaxFileName = 255;  // NAME_MAX on Linux file systems
  const bool printable = std::none_of(shard.begin(), shard.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
  const bool plain = !shard.empty() && shard.size() <= kMaxFileName && printable && shard != "." &&
                     shard != ".." && shard.find_first_of("/\\") == std::string::npos;
  if (plain) return absl::OkStatus();
  return Invalid(index_path, absl::StrCat("weight_map assigns tensor ", Quote(tensor), " to shard ",
                                          Quote(shard),
                                          ", which is not a plain file name in the checkpoint "
                                          "directory (at most ",
                                          kMaxFileName,
                                          " bytes; no '/', '\\', control characters, '.' or "
                                          "'..')"));
}

struct LoadedFiles {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  TensorMap tensors;
};

absl::StatusOr<LoadedFiles> LoadSingleFile(const std::string& path) {
  LoadedFiles loaded;
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  for (const TensorInfo& info : file->tensors()) {
    loaded.tensors.emplace(info.name, std::make_pair(&info, file.get()));
  }
  loaded.files.push_back(std::move(file));
  return loaded;
}

// The shard file name `file` was opened from (its path is <directory>/<shard>).
std::string ShardName(const SafetensorsFile& file) {
  return fs::path(file.path()).filename().string();
}

// The index and the shards must agree exactly: every listed tensor is in the shard the index
// names, and every tensor in a shard is listed for that shard. A tensor the index does not
// list is refused rather than loaded, since the index is what tools read to decide which file
// holds a weight, and a mismatch means the checkpoint was assembled wrongly.
absl::StatusOr<LoadedFiles> LoadSharded(const fs::path& directory, const std::string& index_path) {
  MOE_ASSIGN_OR_RETURN(const std::string text, ReadIndexFile(index_path));
  MOE_ASSIGN_OR_RETURN(const WeightMap weight_map, ParseWeightMap(index_path, text));

  // Shard -> the tensors listed for it, pointing at weight_map's keys rather than copying them.
  std::map<absl::string_view, std::vector<const std::string*>> tensors_by_shard;
  for (const auto& [tensor, shard] : weight_map) {
    MOE_RETURN_IF_ERROR(CheckShardName(index_path, tensor, shard));
    tensors_by_shard[shard].push_back(&tensor);
  }

  LoadedFiles loaded;
  for (const auto& [shard_view, listed] : tensors_by_shard) {
    const std::string shard(shard_view);
    const std::string shard_path = (directory / shard).string();
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(shard_path);
    if (!opened.ok()) {
      return absl::Status(
          opened.status().code(),
          absl::StrCat(index_path, ": shard ", Quote(shard), " (holding ", listed.size(),
                       " listed tensors): ", opened.status().message()));
    }
    std::unique_ptr<SafetensorsFile> file = std::move(opened).value();
    for (const std::string* tensor : listed) {
      if (file->Find(*tensor) == nullptr) {
        return Invalid(index_path,
                       absl::StrCat("weight_map assigns tensor ", Quote(*tensor), " to shard ",
                                    Quote(shard), ", which does not contain it"));
      }
    }
    for (const TensorInfo& info : file->tensors()) {
      if (const auto seen = loaded.tensors.find(info.name); seen != loaded.tensors.end()) {
        return Invalid(index_path,
                       absl::StrCat("tensor ", Quote(info.name), " appears in two shards, ",
                                    Quote(ShardName(*seen->second.second)), " and ", Quote(shard)));
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
      loaded.tensors.emplace(info.name, std::make_pair(&info, file.get()));
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

std::unique_ptr<Checkpoint> Checkpoint::FromFile(std::unique_ptr<SafetensorsFile> file) {
  auto checkpoint = absl::WrapUnique(new Checkpoint());
  checkpoint->path_ = file->path();
  for (const TensorInfo& info : file->tensors()) {
    checkpoint->tensors_.emplace(info.name, std::make_pair(&info, file.get()));
  }
  checkpoint->files_.push_back(std::move(file));
  return checkpoint;
}

absl::StatusOr<const TensorInfo*> Checkpoint::Get(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor ", Quote(name), " not found in checkpoint ",
                                            path_, " (", tensors_.size(), " tensors)"));
  }
  return it->second.first;
}

const std::string& Checkpoint::FileOf(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? path_ : it->second.second->path();
}

bool Checkpoint::Contains(const std::string& name) const { return tensors_.count(name) != 0; }

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, entry] : tensors_) names.push_back(name);
  return names;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, entry] : tensors_) total += entry.first->data.size();
  return total;
}

}  // namespace moe::model
