#include "server/tokenizer/tokenizer.h"

#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/sanitizer_build.h"
#include "server/tokenizer/sentencepiece_bridge.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

namespace moe::tokenizer {
namespace {

namespace fs = std::filesystem;

constexpr char kModuleName[] = "libmoe_sentencepiece.so";

// The module's functions (sentencepiece_bridge.h).
struct Bridge {
  decltype(&moe_spm_load) load = nullptr;
  decltype(&moe_spm_free) free = nullptr;
  decltype(&moe_spm_piece_count) piece_count = nullptr;
  decltype(&moe_spm_encode) encode = nullptr;
  decltype(&moe_spm_decode) decode = nullptr;
};

void AppendTo(void* context, const char* data, size_t size) {
  static_cast<std::string*>(context)->append(data, size);
}

// The module, loaded once: $MOE_SENTENCEPIECE_MODULE, else beside the executable (the build
// tree and the install both put it there).
absl::StatusOr<const Bridge*> LoadBridge() {
#if MOE_SANITIZER_BUILD
  // The sanitizers' dlopen refuses RTLD_DEEPBIND (and without it the module's protobuf clashes
  // with gRPC's): sanitizer builds serve token ids only.
  return absl::FailedPreconditionError(
      "text (tokenizer.model) is not available in sanitizer builds: the SentencePiece module "
      "needs dlopen(RTLD_DEEPBIND), which the sanitizer runtimes refuse");
#endif
  static const absl::StatusOr<Bridge>* const loaded = [] {
    std::string path;
    if (const char* env = std::getenv("MOE_SENTENCEPIECE_MODULE"); env != nullptr && *env) {
      path = env;
    } else {
      std::error_code error;
      path = (fs::read_symlink("/proc/self/exe", error).parent_path() / kModuleName).string();
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      const char* why = dlerror();
      return new absl::StatusOr<Bridge>(absl::FailedPreconditionError(absl::StrCat(
          "cannot load the SentencePiece module ", path, ": ",
          why != nullptr ? why : "unknown error", " (set MOE_SENTENCEPIECE_MODULE to its path)")));
    }
    Bridge bridge;
    bridge.load = reinterpret_cast<decltype(bridge.load)>(dlsym(handle, "moe_spm_load"));
    bridge.free = reinterpret_cast<decltype(bridge.free)>(dlsym(handle, "moe_spm_free"));
    bridge.piece_count =
        reinterpret_cast<decltype(bridge.piece_count)>(dlsym(handle, "moe_spm_piece_count"));
    bridge.encode = reinterpret_cast<decltype(bridge.encode)>(dlsym(handle, "moe_spm_encode"));
    bridge.decode = reinterpret_cast<decltype(bridge.decode)>(dlsym(handle, "moe_spm_decode"));
    if (!bridge.load || !bridge.free || !bridge.piece_count || !bridge.encode || !bridge.decode) {
      return new absl::StatusOr<Bridge>(absl::FailedPreconditionError(
          absl::StrCat(path, " lacks the moe_spm_* functions: not this build's module")));
    }
    return new absl::StatusOr<Bridge>(bridge);
  }();
  if (!loaded->ok()) return loaded->status();
  return &**loaded;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::string source, const Bridge* bridge, void* model)
      : source_(std::move(source)), bridge_(bridge), model_(model) {}
  ~SentencePieceTokenizer() override { bridge_->free(model_); }

  absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const override {
    std::string bytes, error;
    if (!bridge_->encode(model_, text.data(), text.size(), &AppendTo, &bytes, &AppendTo, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("cannot tokenize: ", error));
    }
    std::vector<int32_t> ids(bytes.size() / sizeof(int32_t));
    std::memcpy(ids.data(), bytes.data(), ids.size() * sizeof(int32_t));
    return ids;
  }

  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const override {
    // Ids past the SentencePiece model's pieces (tokens a checkpoint adds beyond it, padding of
    // the embedding table) have no text.
    std::vector<int32_t> known;
    known.reserve(ids.size());
    const int32_t pieces = bridge_->piece_count(model_);
    for (int32_t id : ids) {
      if (id >= 0 && id < pieces) known.push_back(id);
    }
    std::string text, error;
    if (!bridge_->decode(model_, known.data(), known.size(), &AppendTo, &text, &AppendTo, &error)) {
      return absl::InternalError(absl::StrCat("cannot detokenize: ", error));
    }
    return text;
  }

  int64_t vocab_size() const override { return bridge_->piece_count(model_); }
  const std::string& source() const override { return source_; }

 private:
  const std::string source_;
  const Bridge* const bridge_;
  void* const model_;
};

// U+FFFD, what SentencePiece's byte fallback decodes an incomplete UTF-8 sequence to.
constexpr char kReplacement[] = "\xEF\xBF\xBD";

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerIfPresent(const std::string& dir,
                                                                  int64_t model_vocab_size) {
  const fs::path path = fs::path(dir) / "tokenizer.model";
  std::error_code missing;
  if (!fs::exists(path, missing)) return std::unique_ptr<Tokenizer>();
  absl::StatusOr<const Bridge*> bridge = LoadBridge();
  if (!bridge.ok()) return bridge.status();
  std::string error;
  void* model = (*bridge)->load(path.c_str(), &AppendTo, &error);
  if (model == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " is not a SentencePiece model: ", error));
  }
  auto tokenizer = std::make_unique<SentencePieceTokenizer>(path.string(), *bridge, model);
  if (tokenizer->vocab_size() > model_vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        path.string(), " has ", tokenizer->vocab_size(), " pieces, more than the model's ",
        model_vocab_size, " token ids: it belongs to another model"));
  }
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

absl::StatusOr<std::string> IncrementalDetokenizer::Add(std::span<const int32_t> ids) {
  ids_.insert(ids_.end(), ids.begin(), ids.end());
  return NewText(/*final=*/false);
}

absl::StatusOr<std::string> IncrementalDetokenizer::Finish() { return NewText(/*final=*/true); }

absl::StatusOr<std::string> IncrementalDetokenizer::NewText(bool final) {
  absl::StatusOr<std::string> text = tokenizer_->Decode(ids_);
  if (!text.ok()) return text.status();
  size_t end = text->size();
  if (!final && text->ends_with(kReplacement)) end -= sizeof(kReplacement) - 1;
  // Decoding a longer sequence only ever extends the text of a shorter one, except that a held
  // back character may now decode differently: resume from what was emitted.
  if (end <= emitted_) return std::string();
  std::string added = text->substr(emitted_, end - emitted_);
  emitted_ = end;
  return added;
}

}  // namespace moe::tokenizer
