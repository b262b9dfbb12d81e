// Damaged checkpoints at start-up: moe-server refuses each with exit status 1 and a message that
// names the model and what is wrong, and never dies of a signal. Each case starts from a copy
// of the built-in model's own checkpoint and breaks one thing.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/server_process.h"

namespace moe::integration {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

struct Fault {
  std::string name;
  // Damages the checkpoint in `dir` (config.json and model.safetensors, intact before).
  std::function<void(const std::string& dir)> apply;
  std::string expected;  // part of the message
};

std::string Weights(const std::string& dir) { return dir + "/model.safetensors"; }
std::string Config(const std::string& dir) { return dir + "/config.json"; }

std::vector<Fault> Faults() {
  return {
      {"TruncatedWeights",
       [](const std::string& dir) {
         const std::string bytes = ReadFile(Weights(dir));
         WriteFile(Weights(dir), bytes.substr(0, bytes.size() / 2));
       },
       "model.safetensors"},
      {"WeightsCutInsideTheHeader",
       [](const std::string& dir) {
         WriteFile(Weights(dir), ReadFile(Weights(dir)).substr(0, 40));
       },
       "model.safetensors"},
      {"HeaderLengthBeyondTheFile",
       [](const std::string& dir) {
         std::string bytes = ReadFile(Weights(dir));
         for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(0x7f);
         WriteFile(Weights(dir), bytes);
       },
       "model.safetensors"},
      {"CorruptedHeaderJson",
       [](const std::string& dir) {
         std::string bytes = ReadFile(Weights(dir));
         bytes[8] = '[';  // the header must be a JSON object
         bytes[12] = '\x01';
         WriteFile(Weights(dir), bytes);
       },
       "model.safetensors"},
      {"TensorShapeDisagreesWithConfig",
       [](const std::string& dir) {
         std::string config = ReadFile(Config(dir));
         config =
             absl::StrReplaceAll(config, {{"\"expert_ffn_dim\": 64", "\"expert_ffn_dim\": 96"}});
         WriteFile(Config(dir), config);
       },
       "shape"},
      {"ConfigIsNotJson",
       [](const std::string& dir) { WriteFile(Config(dir), "{\"architecture\": \"MoEMLP\", "); },
       "config.json"},
      {"ConfigNamesAnUnknownArchitecture",
       [](const std::string& dir) {
         std::string config = ReadFile(Config(dir));
         config = absl::StrReplaceAll(config, {{"\"MoEMLP\"", "\"NoSuchForCausalLM\""}});
         WriteFile(Config(dir), config);
       },
       "NoSuchForCausalLM"},
      {"WeightsMissing", [](const std::string& dir) { std::filesystem::remove(Weights(dir)); },
       "safetensors"},
      {"WeightsAreEmpty", [](const std::string& dir) { WriteFile(Weights(dir), ""); },
       "model.safetensors"},
  };
}

class LoadingFaultsTest : public ::testing::TestWithParam<Fault> {};

TEST_P(LoadingFaultsTest, RefusedWithAClearMessageNeverACrash) {
  testing::ScratchDir scratch;
  const std::string dir = scratch.File("broken-model");
  std::filesystem::create_directories(dir);
  for (const char* file : {"config.json", "model.safetensors"}) {
    std::filesystem::copy_file(absl::StrCat(SourceDir(), "/models/builtin/", file),
                               absl::StrCat(dir, "/", file));
  }
  // The intact copy must load, so that the failure below is the fault's doing.
  if (GetParam().name == "TruncatedWeights") {
    auto intact = StartServer({"--model", absl::StrCat("broken=", dir)});
    ASSERT_TRUE(intact.ok()) << intact.status();
  }
  GetParam().apply(dir);

  const auto port = testing::PickFreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  auto process = testing::ChildProcess::Spawn(
      ServerBinary(),
      {"--address", absl::StrCat("127.0.0.1:", *port), "--metrics-port", "0", "--backend", "cpu",
       "--model", absl::StrCat("broken=", dir)},
      scratch.File("server.log"));
  ASSERT_TRUE(process.ok()) << process.status();
  auto code = (*process)->WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  const std::string log = (*process)->ReadLog();
  EXPECT_EQ(*code, 1) << "a negative code is a signal; log:\n" << log;
  EXPECT_THAT(log, HasSubstr("cannot load model 'broken'"));
  EXPECT_THAT(log, HasSubstr(GetParam().expected));
}

INSTANTIATE_TEST_SUITE_P(Faults, LoadingFaultsTest, ::testing::ValuesIn(Faults()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace moe::integration
