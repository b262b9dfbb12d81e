// Text to token ids and back for decoder checkpoints that carry a SentencePiece model
// (`tokenizer.model`, as Mixtral's do), through Debian's libsentencepiece. Checkpoints whose
// tokenizer is only a Hugging Face `tokenizer.json` (Qwen, OLMoE) have none here: their
// clients send token ids. Its own library, so the engine and the GPU check do not need
// SentencePiece.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::tokenizer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of `text` (no BOS added).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const = 0;
  // The text of `ids`, as the tokenizer decodes the whole sequence (leading-space and byte
  // pieces resolved); ids it has no piece for have no text.
  virtual absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  // Where it was read from, for logs.
  virtual const std::string& source() const = 0;
};

// `<dir>/tokenizer.model` when the directory has one: null when it has none, an error naming
// the file when it is there but not a SentencePiece model, or when its vocabulary is larger
// than the model's (`model_vocab_size`).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerIfPresent(const std::string& dir,
                                                                  int64_t model_vocab_size);

// Turns a stream of generated ids into a stream of text: each call returns the text the new ids
// add. Decoding the whole sequence each time and emitting the difference keeps SentencePiece's
// rules (a piece's leading space depends on its position) right; a character whose UTF-8 bytes
// are split across tokens is held back until its last byte arrives (Finish returns whatever is
// left).
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer* tokenizer) : tokenizer_(tokenizer) {}
  absl::StatusOr<std::string> Add(std::span<const int32_t> ids);
  absl::StatusOr<std::string> Finish();

 private:
  absl::StatusOr<std::string> NewText(bool final);

  const Tokenizer* tokenizer_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of the decoded text already returned
};

}  // namespace moe::tokenizer
