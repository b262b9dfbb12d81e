// Generate with text: a Mixtral checkpoint that carries a SentencePiece tokenizer.model (the
// reference checkpoint plus a tokenizer trained here with Debian's spm_train) takes
// prompt_text and streams text; checked against Debian's spm_encode / spm_decode:
//   - a text prompt generates what its token ids (BOS + spm_encode) generate;
//   - the streamed texts concatenate to spm_decode of the generated ids;
//   - prompt_text is refused on a model without a tokenizer, and with prompt_token_ids.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/moe_service.grpc.pb.h"
#include "tests/integration/integration_util.h"

namespace moe::integration {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kTextModel[] = "mix_text";
constexpr char kIdsModel[] = "mix_ids";
constexpr int32_t kBos = 1;  // the Mixtral fixture's bos_token_id

// Standard output of a shell command, or the empty string (with a test failure) when it fails.
std::string RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "cannot run " << command;
    return output;
  }
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  if (pclose(pipe) != 0) ADD_FAILURE() << "failed: " << command << "\n" << output;
  return output;
}

std::string Quoted(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

class GenerateTextTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "moe_generate_text_" +
                           std::to_string(std::random_device{}()));
    fs::create_directories(*dir_);
    // A corpus of made-up words (syllables, accents, CJK) rich enough for a byte-fallback BPE
    // of exactly the fixture's 512 token ids.
    std::mt19937 rng(11);
    const std::vector<std::string> syllables = {
        "the", "qu",          "ick",          "bro",          "wn", "fox",      "ex",  "per",
        "ts",  "mix",         "ture",         "rou",          "te", "to",       "ken", "ser",
        "ve",  "caf\xC3\xA9", "\xE6\x97\xA5", "\xE6\x9C\xAC", "na", "\xC3\xAF", "ma",  "lo",
        "ri",  "sta",         "gen",          "mo",           "de", "ly"};
    {
      std::ofstream corpus(*dir_ + "/corpus.txt");
      for (int line = 0; line < 4000; ++line) {
        for (int w = 0; w < 10; ++w) {
          for (int s = 1 + static_cast<int>(rng() % 3); s > 0; --s) {
            corpus << syllables[rng() % syllables.size()];
          }
          corpus << ' ';
        }
        corpus << '\n';
      }
    }
    RunCommand(absl::StrCat("spm_train --input=", *dir_, "/corpus.txt --model_prefix=", *dir_,
                            "/tok --vocab_size=512 --model_type=bpe --byte_fallback=true "
                            "--character_coverage=1.0 --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 "
                            "--minloglevel=2 2>&1"));
    const std::string model = *dir_ + "/model";
    fs::create_directories(model);
    const std::string fixture = SourceDir() + "/tests/fixtures/mixtral-tiny-bf16";
    fs::copy_file(fixture + "/config.json", model + "/config.json");
    fs::create_symlink(fixture + "/model.safetensors", model + "/model.safetensors");
    fs::copy_file(*dir_ + "/tok.model", model + "/tokenizer.model");
    auto server = StartServer({"--model", absl::StrCat(kTextModel, "=", model), "--model",
                               absl::StrCat(kIdsModel, "=", fixture)});
    if (server.ok()) {
      server_ = server->release();
    } else {
      start_error_ = new std::string(server.status().message());
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    std::error_code error;
    fs::remove_all(*dir_, error);
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "moe-server did not start: "
                                << (start_error_ ? *start_error_ : "");
    stub_ = moe::v1::MoEService::NewStub(server_->channel());
  }

  std::vector<int32_t> SpmEncode(const std::string& text) {
    std::vector<int32_t> ids;
    const std::string out =
        RunCommand(absl::StrCat("printf '%s' ", Quoted(text), " | spm_encode --model=", *dir_,
                                "/tok.model --output_format=id"));
    for (absl::string_view id : absl::StrSplit(out, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
      ids.push_back(std::stoi(std::string(id)));
    }
    return ids;
  }

  std::string SpmDecode(const std::vector<int32_t>& ids) {
    std::string line;
    for (int32_t id : ids) absl::StrAppend(&line, line.empty() ? "" : " ", id);
    std::string out = RunCommand(absl::StrCat(
        "echo ", Quoted(line), " | spm_decode --model=", *dir_, "/tok.model --input_format=id"));
    if (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  struct Result {
    grpc::Status status;
    std::vector<int32_t> ids;
    std::string text;
    int messages = 0;
  };
  Result Generate(const moe::v1::GenerateRequest& request) {
    Result result;
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, request);
    moe::v1::GenerateResponse message;
    while (reader->Read(&message)) {
      ++result.messages;
      result.ids.insert(result.ids.end(), message.token_ids().begin(), message.token_ids().end());
      result.text += message.text();
    }
    result.status = reader->Finish();
    return result;
  }

  inline static std::string* dir_ = nullptr;
  inline static testing::ServerProcess* server_ = nullptr;
  inline static std::string* start_error_ = nullptr;
  std::unique_ptr<moe::v1::MoEService::Stub> stub_;
};

TEST_F(GenerateTextTest, ModelInfoSaysWhichModelHasATokenizer) {
  for (const auto& [name, has] : {std::pair{kTextModel, true}, std::pair{kIdsModel, false}}) {
    grpc::ClientContext context;
    moe::v1::GetModelInfoRequest request;
    request.set_name(name);
    moe::v1::ModelInfo info;
    ASSERT_TRUE(stub_->GetModelInfo(&context, request, &info).ok());
    EXPECT_TRUE(info.generates());
    EXPECT_EQ(info.has_tokenizer(), has) << name;
  }
}

TEST_F(GenerateTextTest, TextPromptGeneratesWhatItsTokenIdsGenerateAndStreamsTheirText) {
  for (const std::string prompt :
       {"the quick brown fox", "caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC experts",
        "serve"}) {
    SCOPED_TRACE(prompt);
    moe::v1::GenerateRequest by_text;
    by_text.set_model(kTextModel);
    by_text.set_prompt_text(prompt);
    by_text.set_max_new_tokens(24);
    by_text.set_ignore_eos(true);
    moe::v1::GenerateRequest by_ids = by_text;
    by_ids.clear_prompt_text();
    by_ids.add_prompt_token_ids(kBos);
    for (int32_t id : SpmEncode(prompt)) by_ids.add_prompt_token_ids(id);
    ASSERT_GT(by_ids.prompt_token_ids_size(), 1);

    const Result text = Generate(by_text);
    const Result ids = Generate(by_ids);
    ASSERT_TRUE(text.status.ok()) << text.status.error_message();
    ASSERT_TRUE(ids.status.ok()) << ids.status.error_message();
    EXPECT_EQ(text.ids, ids.ids);
    ASSERT_EQ(text.ids.size(), 24u);
    EXPECT_EQ(text.text, SpmDecode(text.ids));
    EXPECT_EQ(ids.text, text.text);  // ids in, text out all the same
  }
}

TEST_F(GenerateTextTest, PromptTextIsRefusedWhereItCannotBeHonoured) {
  moe::v1::GenerateRequest request;
  request.set_model(kIdsModel);
  request.set_prompt_text("the fox");
  Result result = Generate(request);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), HasSubstr("has no tokenizer"));

  request.set_model(kTextModel);
  request.add_prompt_token_ids(5);
  result = Generate(request);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), HasSubstr("not both"));

  // Ids from a model without a tokenizer carry no text.
  moe::v1::GenerateRequest ids;
  ids.set_model(kIdsModel);
  ids.add_prompt_token_ids(5);
  ids.set_max_new_tokens(4);
  result = Generate(ids);
  ASSERT_TRUE(result.status.ok());
  EXPECT_EQ(result.ids.size(), 4u);
  EXPECT_TRUE(result.text.empty());
}

}  // namespace
}  // namespace moe::integration
