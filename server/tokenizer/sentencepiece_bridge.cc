// The module's side of sentencepiece_bridge.h: includes SentencePiece and nothing of abseil or
// protobuf.
#include "server/tokenizer/sentencepiece_bridge.h"

#include <sentencepiece_processor.h>

#include <string>
#include <vector>

namespace {

void Report(moe_spm_sink sink, void* context, const std::string& text) {
  sink(context, text.data(), text.size());
}

}  // namespace

extern "C" {

void* moe_spm_load(const char* path, moe_spm_sink error, void* error_context) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const auto status = processor->Load(path);
  if (!status.ok()) {
    Report(error, error_context, status.ToString());
    delete processor;
    return nullptr;
  }
  return processor;
}

void moe_spm_free(void* model) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(model);
}

int32_t moe_spm_piece_count(const void* model) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(model)->GetPieceSize();
}

bool moe_spm_encode(const void* model, const char* text, size_t size, moe_spm_sink out,
                    void* out_context, moe_spm_sink error, void* error_context) {
  std::vector<int> ids;
  const auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(model)->Encode(
      std::string(text, size), &ids);
  if (!status.ok()) {
    Report(error, error_context, status.ToString());
    return false;
  }
  const std::vector<int32_t> narrow(ids.begin(), ids.end());
  out(out_context, reinterpret_cast<const char*>(narrow.data()), narrow.size() * sizeof(int32_t));
  return true;
}

bool moe_spm_decode(const void* model, const int32_t* ids, size_t count, moe_spm_sink out,
                    void* out_context, moe_spm_sink error, void* error_context) {
  std::string text;
  const auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(model)->Decode(
      std::vector<int>(ids, ids + count), &text);
  if (!status.ok()) {
    Report(error, error_context, status.ToString());
    return false;
  }
  Report(out, out_context, text);
  return true;
}

}  // extern "C"
