// moe-client run as a user runs it, against a live moe-server serving the built-in digits
// model: every subcommand succeeds; rows from an .npy file or JSON written here come back with
// the held-out digits' right classes; --show-routing shows 2 layers x 2 experts per row; bench
// in closed and open loop measures without errors; and failures exit with the status and
// message a script or a person needs (server down: 1, UNAVAILABLE and the target; unknown
// model: 1, NOT_FOUND; bad input file: 2, naming it; wrong width: 1, the server's
// INVALID_ARGUMENT; unknown subcommand or flag: 2). `generate` prints exactly the reference
// checkpoint's greedy tokens; `bench --generate` measures generation load with counts that add
// up; their bad flags exit 2 before any connection.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/moe_service.pb.h"
#include "nlohmann/json.hpp"
#include "server/model/safetensors.h"
#include "tests/integration/greedy_reference.h"
#include "tests/integration/integration_util.h"
#include "tests/integration/security_test_util.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_certificates.h"

namespace moe::integration {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// $MOE_CLIENT_BINARY when set, else the build's client/cli/moe-client.
std::string ClientBinary() {
  const char* value = std::getenv("MOE_CLIENT_BINARY");
  return value != nullptr && *value != '\0' ? value : MOE_CLIENT_BINARY_PATH;
}

struct Ran {
  int code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
  std::string Describe() const {
    return absl::StrCat("exit status ", code, "\n---- stdout ----\n", out, "---- stderr ----\n",
                        err);
  }
};

// Runs moe-client with `args` to its end, stdout and stderr apart (through sh, which sends
// stderr to its own file: ChildProcess logs both streams to one).
Ran RunClient(const std::vector<std::string>& args) {
  testing::ScratchDir scratch;
  const std::string err_path = scratch.File("stderr");
  std::vector<std::string> sh_args = {"-c", "err=$1; shift; exec \"$@\" 2>\"$err\"", "sh", err_path,
                                      ClientBinary()};
  sh_args.insert(sh_args.end(), args.begin(), args.end());
  Ran ran;
  auto process = testing::ChildProcess::Spawn("/bin/sh", sh_args, scratch.File("stdout"));
  if (!process.ok()) {
    ran.err = std::string(process.status().message());
    return ran;
  }
  auto code = (*process)->WaitForExit(absl::Seconds(120));
  if (!code.ok()) {
    ran.err = std::string(code.status().message());
    return ran;
  }
  ran.code = *code;
  ran.out = (*process)->ReadLog();
  std::ifstream err(err_path);
  ran.err.assign(std::istreambuf_iterator<char>(err), std::istreambuf_iterator<char>());
  return ran;
}

// A .npy file of `rows` x `width` float32 values as NumPy writes it (format 1.0); one
// dimension when `one_dimensional`.
void WriteNpy(const std::string& path, const std::vector<float>& values, int64_t rows,
              int64_t width, bool one_dimensional = false) {
  std::string header = absl::StrCat(
      "{'descr': '<f4', 'fortran_order': False, 'shape': ",
      one_dimensional ? absl::StrCat("(", width, ",)") : absl::StrCat("(", rows, ", ", width, ")"),
      ", }");
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string file = "\x93NUMPY\x01";
  file += '\0';
  file += static_cast<char>(header.size() & 0xff);
  file += static_cast<char>(header.size() >> 8);
  file += header;
  file.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  std::ofstream(path, std::ios::binary) << file;
}

// models/builtin/heldout.safetensors: features [N, 64] F32 and labels [N] I64.
struct HeldOut {
  int64_t samples = 0;
  std::vector<float> features;
  std::vector<int64_t> labels;
};

absl::StatusOr<HeldOut> ReadHeldOut() {
  auto file = model::SafetensorsFile::Open(SourceDir() + "/models/builtin/heldout.safetensors");
  if (!file.ok()) return file.status();
  const model::TensorInfo* features = (*file)->Find("features");
  const model::TensorInfo* labels = (*file)->Find("labels");
  if (features == nullptr || labels == nullptr || features->dtype != kernels::DType::kF32 ||
      labels->dtype != kernels::DType::kI64 || features->shape.size() != 2 ||
      features->shape[1] != kDigitsWidth || labels->num_elements != features->shape[0]) {
    return absl::InvalidArgumentError("heldout.safetensors does not hold what the test expects");
  }
  HeldOut held_out;
  held_out.samples = features->shape[0];
  held_out.features.resize(features->num_elements);
  held_out.labels.resize(labels->num_elements);
  std::memcpy(held_out.features.data(), features->data.data(), features->data.size());
  std::memcpy(held_out.labels.data(), labels->data.data(), labels->data.size());
  return held_out;
}

// The top class of each row in `infer --top 1 --format json` output.
std::vector<int64_t> TopClasses(const std::string& json_text) {
  const nlohmann::json answer = nlohmann::json::parse(json_text);
  std::vector<int64_t> classes;
  for (const nlohmann::json& row : answer.at("rows")) {
    classes.push_back(row.at("top").at(0).at("index").get<int64_t>());
  }
  return classes;
}

class ClientCliTest : public SharedServerTest<ClientCliTest> {
 public:
  static std::vector<std::string> ServerArgs() { return {}; }

 protected:
  // moe-client --target <the server> `args`...
  Ran Client(std::vector<std::string> args) {
    args.insert(args.begin(), {"--target", server().address()});
    return RunClient(args);
  }
};

TEST(ClientCli, HelpListsSubcommandsAndFlags) {
  const Ran help = RunClient({"--help"});
  EXPECT_EQ(help.code, 0) << help.Describe();
  for (const char* part : {"health", "models", "describe MODEL", "infer MODEL", "bench MODEL",
                           "--target", "--tls-ca", "--token-file", "--timeout"}) {
    EXPECT_THAT(help.out, HasSubstr(part));
  }
  const Ran bench = RunClient({"bench", "--help"});
  EXPECT_EQ(bench.code, 0) << bench.Describe();
  for (const char* flag : {"--concurrency", "--rate", "--arrival", "--duration", "--requests",
                           "--warmup", "--rows-per-request", "--wait-ready", "--format",
                           "--connections", "--max-in-flight", "nearest-rank"}) {
    EXPECT_THAT(bench.out, HasSubstr(flag));
  }
  const Ran infer = RunClient({"help", "infer"});
  EXPECT_EQ(infer.code, 0) << infer.Describe();
  for (const char* flag : {"--input", "--random-rows", "--show-routing", "--top", "--wire",
                           "--typed", "--priority", "--request-id"}) {
    EXPECT_THAT(infer.out, HasSubstr(flag));
  }
}

TEST(ClientCli, UnknownSubcommandOrFlagExitsTwo) {
  Ran ran = RunClient({"frobnicate"});
  EXPECT_EQ(ran.code, 2) << ran.Describe();
  EXPECT_THAT(ran.err, HasSubstr("unknown subcommand 'frobnicate'"));
  ran = RunClient({"models", "--concurrency", "2"});
  EXPECT_EQ(ran.code, 2) << ran.Describe();
  EXPECT_THAT(ran.err, HasSubstr("--concurrency"));
  ran = RunClient({"--no-such-flag", "models"});
  EXPECT_EQ(ran.code, 2) << ran.Describe();
  EXPECT_THAT(ran.err, HasSubstr("--no-such-flag"));
  ran = RunClient({});
  EXPECT_EQ(ran.code, 2) << ran.Describe();
  EXPECT_THAT(ran.err, HasSubstr("no subcommand"));
}

TEST(ClientCli, BenchRejectsBadOptionsBeforeConnecting) {
  // Port 1: nothing listens; a usage error must come first.
  for (const std::vector<std::string>& flags : {std::vector<std::string>{"--concurrency", "0"},
                                                {"--rate", "-5"},
                                                {"--rows-per-request", "0"},
                                                {"--arrival", "bursty", "--rate", "10"},
                                                {"--format", "xml"},
                                                {"--typed", "--wire", "bf16"}}) {
    std::vector<std::string> args = {"--target", "127.0.0.1:1", "bench", "digits"};
    args.insert(args.end(), flags.begin(), flags.end());
    const Ran ran = RunClient(args);
    EXPECT_EQ(ran.code, 2) << absl::StrJoin(flags, " ") << ": " << ran.Describe();
  }
}

TEST(ClientCli, ServerDownIsUnavailableNamingTheTarget) {
  const auto port = testing::PickFreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string target = absl::StrCat("127.0.0.1:", *port);
  for (const std::vector<std::string>& command : {std::vector<std::string>{"models"},
                                                  {"health"},
                                                  {"describe", "digits"},
                                                  {"infer", "digits", "--random-rows", "1"},
                                                  {"bench", "digits", "--requests", "1"}}) {
    std::vector<std::string> args = {"--target", target, "--timeout", "3s"};
    args.insert(args.end(), command.begin(), command.end());
    const Ran ran = RunClient(args);
    EXPECT_EQ(ran.code, 1) << command[0] << ": " << ran.Describe();
    EXPECT_THAT(ran.err, AllOf(HasSubstr("UNAVAILABLE"), HasSubstr(target))) << command[0];
  }
}

TEST(ClientCli, UnreadableTlsOrTokenFileExitsTwoNamingIt) {
  Ran ran =
      RunClient({"--target", "127.0.0.1:1", "--tls", "--tls-ca", "/no/such/ca.pem", "models"});
  EXPECT_EQ(ran.code, 2) << ran.Describe();
  EXPECT_THAT(ran.err, HasSubstr("/no/such/ca.pem"));
  ran = RunClient({"--target", "127.0.0.1:1", "--token-file", "/no/such/token", "models"});
  EXPECT_EQ(ran.code, 2) << ran.Describe();
  EXPECT_THAT(ran.err, HasSubstr("/no/such/token"));
  ran = RunClient({"--target", "127.0.0.1:1", "--tls-ca", "ca.pem", "models"});
  EXPECT_EQ(ran.code, 2) << ran.Describe();
  EXPECT_THAT(ran.err, HasSubstr("need --tls"));
}

// A locked-down server (mutual TLS and bearer tokens): --tls, --tls-ca, --tls-cert, --tls-key
// and --token-file get every subcommand through; a missing token is the server's
// UNAUTHENTICATED, a missing client certificate a refused handshake.
TEST(ClientCli, MutualTlsAndBearerToken) {
  testing::ScratchDir scratch;
  auto certs = testing::MakeTestCertificates(scratch);
  ASSERT_TRUE(certs.ok()) << certs.status();
  constexpr char kToken[] = "cli-test-token-0123456789";
  const std::string server_tokens = scratch.File("server-tokens");
  testing::WriteTextFile(server_tokens, absl::StrCat("# the CLI's token\n", kToken, "\n"));
  const std::string client_token = scratch.File("client-token");
  testing::WriteTextFile(client_token, absl::StrCat(kToken, "\n"));
  auto server = StartServerWithSecurity(
      {"--tls-cert", certs->server_cert, "--tls-key", certs->server_key, "--tls-client-ca",
       certs->ca_cert, "--auth-token-file", server_tokens},
      {.credentials = TlsCredentials(certs->ca_cert, certs->client_cert, certs->client_key),
       .metadata = BearerToken(kToken)});
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<std::string> tls = {"--target", (*server)->address(), "--timeout", "10s", "--tls"};
  tls.insert(tls.end(), {"--tls-ca", certs->ca_cert});
  tls.insert(tls.end(), {"--tls-cert", certs->client_cert, "--tls-key", certs->client_key});
  auto with = [&](std::vector<std::string> flags, const std::vector<std::string>& command) {
    flags.insert(flags.end(), command.begin(), command.end());
    return RunClient(flags);
  };
  std::vector<std::string> authorised = tls;
  authorised.insert(authorised.end(), {"--token-file", client_token});
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"health"},
        {"models"},
        {"describe", "digits"},
        {"infer", "digits", "--random-rows", "2", "--top", "1"},
        {"bench", "digits", "--requests", "20", "--warmup", "0s"},
        {"bench", "digits", "--rate", "100", "--requests", "10", "--warmup", "0s"}}) {
    const Ran ran = with(authorised, command);
    EXPECT_EQ(ran.code, 0) << absl::StrJoin(command, " ") << ": " << ran.Describe();
  }
  // The token on the command line, and the certificate's name checked as "localhost".
  std::vector<std::string> by_name = tls;
  by_name.insert(by_name.end(), {"--token", kToken, "--tls-server-name", "localhost"});
  Ran ran = with(by_name, {"models"});
  EXPECT_EQ(ran.code, 0) << ran.Describe();

  ran = with(tls, {"models"});
  EXPECT_EQ(ran.code, 1) << ran.Describe();
  EXPECT_THAT(ran.err, HasSubstr("UNAUTHENTICATED"));
  ran = with({"--target", (*server)->address(), "--tls", "--tls-ca", certs->ca_cert, "--timeout",
              "3s", "--token-file", client_token},
             {"models"});
  EXPECT_EQ(ran.code, 1) << "no client certificate: " << ran.Describe();
  EXPECT_THAT(ran.err, HasSubstr((*server)->address()));
}

TEST_F(ClientCliTest, HealthSaysServing) {
  Ran ran = Client({"health"});
  EXPECT_EQ(ran.code, 0) << ran.Describe();
  EXPECT_THAT(ran.out, AllOf(HasSubstr("SERVING"), HasSubstr("live"), HasSubstr("ready")));
  ran = Client({"health", "digits", "--format", "json"});
  EXPECT_EQ(ran.code, 0) << ran.Describe();
  const nlohmann::json health = nlohmann::json::parse(ran.out);
  EXPECT_EQ(health["health"], "SERVING");
  EXPECT_EQ(health["live"], true);
  EXPECT_EQ(health["ready"], true);
  EXPECT_EQ(health["service"], "digits");
}

TEST_F(ClientCliTest, ModelsListsTheDigitsModel) {
  Ran ran = Client({"models"});
  EXPECT_EQ(ran.code, 0) << ran.Describe();
  const std::vector<std::string> lines = absl::StrSplit(ran.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << ran.out;
  for (const char* column : {"NAME", "ARCHITECTURE", "EXPERTS", "TOP-K", "BACKEND", "READY"}) {
    EXPECT_THAT(lines[0], HasSubstr(column));
  }
  const std::vector<std::string> cells = absl::StrSplit(lines[1], ' ', absl::SkipEmpty());
  EXPECT_THAT(cells, ::testing::ElementsAre("digits", "MoEMLP", "8", "2", "cpu", "true"));
  ran = Client({"models", "--format", "json"});
  EXPECT_EQ(ran.code, 0) << ran.Describe();
  const nlohmann::json models = nlohmann::json::parse(ran.out);
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0]["name"], "digits");
}

TEST_F(ClientCliTest, DescribePrintsEveryModelInfoField) {
  Ran ran = Client({"describe", "digits"});
  EXPECT_EQ(ran.code, 0) << ran.Describe();
  const google::protobuf::Descriptor& descriptor = *moe::v1::ModelInfo::descriptor();
  for (int i = 0; i < descriptor.field_count(); ++i) {
    EXPECT_THAT(ran.out, HasSubstr(descriptor.field(i)->name()));
  }
  EXPECT_THAT(ran.out, HasSubstr("output_labels        0, 1, 2, 3, 4, 5, 6, 7, 8, 9"));
  ran = Client({"describe", "digits", "--format", "json"});
  EXPECT_EQ(ran.code, 0) << ran.Describe();
  const nlohmann::json info = nlohmann::json::parse(ran.out);
  EXPECT_EQ(info["input_name"], "input");
  EXPECT_EQ(info["input_width"], "64");  // proto3 JSON writes int64 as a string
  EXPECT_EQ(info["top_k"], 2);
  EXPECT_EQ(info["output_labels"].size(), 10u);
}

TEST_F(ClientCliTest, InferFromNpyGivesTheHeldOutDigitsTheirClasses) {
  auto held_out = ReadHeldOut();
  ASSERT_TRUE(held_out.ok()) << held_out.status();
  const int64_t rows = std::min<int64_t>(200, held_out->samples);
  testing::ScratchDir scratch;
  const std::string path = scratch.File("digits.npy");
  WriteNpy(path,
           std::vector<float>(held_out->features.begin(),
                              held_out->features.begin() + rows * kDigitsWidth),
           rows, kDigitsWidth);
  const Ran ran = Client({"infer", "digits", "--input", path, "--top", "1", "--format", "json"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  const std::vector<int64_t> classes = TopClasses(ran.out);
  ASSERT_EQ(static_cast<int64_t>(classes.size()), rows);
  int64_t correct = 0;
  for (int64_t i = 0; i < rows; ++i) correct += classes[i] == held_out->labels[i];
  // training_report.json: held-out accuracy 0.9833.
  EXPECT_GE(correct, rows * 95 / 100) << correct << " of " << rows;

  // One image as a one-dimensional array, shown as a table with the model's labels.
  const std::string one = scratch.File("one.npy");
  WriteNpy(
      one,
      std::vector<float>(held_out->features.begin(), held_out->features.begin() + kDigitsWidth), 1,
      kDigitsWidth, /*one_dimensional=*/true);
  const Ran table = Client({"infer", "digits", "--input", one, "--top", "3"});
  ASSERT_EQ(table.code, 0) << table.Describe();
  EXPECT_THAT(table.out, HasSubstr("digits: logits [1, 10], top 3 per row"));
  EXPECT_THAT(table.out, HasSubstr(absl::StrCat("row 0: ", classes[0], " (")));
}

TEST_F(ClientCliTest, InferFromJsonGivesTheHeldOutDigitsTheirClasses) {
  auto held_out = ReadHeldOut();
  ASSERT_TRUE(held_out.ok()) << held_out.status();
  const int64_t rows = std::min<int64_t>(100, held_out->samples);
  nlohmann::json json_rows = nlohmann::json::array();
  for (int64_t r = 0; r < rows; ++r) {
    json_rows.push_back(std::vector<float>(held_out->features.begin() + r * kDigitsWidth,
                                           held_out->features.begin() + (r + 1) * kDigitsWidth));
  }
  testing::ScratchDir scratch;
  const std::string path = scratch.File("digits.json");
  std::ofstream(path) << json_rows.dump();
  // Each encoding: the values reach the server as what it computes on.
  for (const std::vector<std::string>& encoding :
       {std::vector<std::string>{}, {"--typed"}, {"--wire", "fp16"}, {"--wire", "bf16"}}) {
    std::vector<std::string> args = {"infer", "digits", "--input",  path,
                                     "--top", "1",      "--format", "json"};
    args.insert(args.end(), encoding.begin(), encoding.end());
    const Ran ran = Client(args);
    ASSERT_EQ(ran.code, 0) << absl::StrJoin(encoding, " ") << ": " << ran.Describe();
    const std::vector<int64_t> classes = TopClasses(ran.out);
    ASSERT_EQ(static_cast<int64_t>(classes.size()), rows);
    int64_t correct = 0;
    for (int64_t i = 0; i < rows; ++i) correct += classes[i] == held_out->labels[i];
    EXPECT_GE(correct, rows * 95 / 100)
        << absl::StrJoin(encoding, " ") << ": " << correct << " of " << rows;
  }
}

TEST_F(ClientCliTest, ShowRoutingPrintsTwoLayersOfTwoExpertsPerRow) {
  const Ran ran = Client({"infer", "digits", "--random-rows", "3", "--seed", "11", "--show-routing",
                          "--format", "json", "--request-id", "routing-1"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  const nlohmann::json answer = nlohmann::json::parse(ran.out);
  EXPECT_EQ(answer["id"], "routing-1");
  EXPECT_EQ(answer["seed"], 11);
  ASSERT_EQ(answer["rows"].size(), 3u);
  for (const nlohmann::json& row : answer["rows"]) {
    ASSERT_EQ(row["routing"].size(), static_cast<size_t>(kDigitsMoELayers)) << row.dump();
    for (const nlohmann::json& layer : row["routing"]) {
      ASSERT_EQ(layer["experts"].size(), static_cast<size_t>(kDigitsTopK)) << row.dump();
      ASSERT_EQ(layer["weights"].size(), static_cast<size_t>(kDigitsTopK)) << row.dump();
      double sum = 0;
      for (int k = 0; k < kDigitsTopK; ++k) {
        EXPECT_GE(layer["experts"][k].get<int>(), 0);
        EXPECT_LT(layer["experts"][k].get<int>(), kDigitsExperts);
        sum += layer["weights"][k].get<double>();
      }
      EXPECT_NEAR(sum, 1.0, 1e-5) << "normalised top-k weights: " << row.dump();
      EXPECT_NE(layer["experts"][0], layer["experts"][1]);
    }
  }
  // The table: per row, one line per layer naming two experts; the same seed, the same rows.
  const Ran table =
      Client({"infer", "digits", "--random-rows", "3", "--seed", "11", "--show-routing"});
  ASSERT_EQ(table.code, 0) << table.Describe();
  int layer_lines = 0;
  for (absl::string_view line : absl::StrSplit(table.out, '\n')) {
    if (line.find(" layer ") == absl::string_view::npos) continue;
    ++layer_lines;
    EXPECT_EQ(std::count(line.begin(), line.end(), '('), kDigitsTopK) << line;
    EXPECT_THAT(std::string(line), HasSubstr("expert "));
  }
  EXPECT_EQ(layer_lines, 3 * kDigitsMoELayers) << table.out;
  const auto expected = answer["rows"][2]["routing"][1];
  EXPECT_THAT(table.out,
              HasSubstr(absl::StrCat("layer 1: expert ", expected["experts"][0].get<int>(), " (")));
}

TEST_F(ClientCliTest, BenchClosedLoopMeasuresWithoutErrors) {
  const Ran ran = Client({"bench", "digits", "--concurrency", "4", "--duration", "1s", "--warmup",
                          "0.2s", "--rows-per-request", "2", "--format", "json"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  const nlohmann::json report = nlohmann::json::parse(ran.out);
  EXPECT_EQ(report["mode"], "closed");
  EXPECT_EQ(report["concurrency"], 4);
  EXPECT_EQ(report["connections"], 4);
  EXPECT_GT(report["requests_per_s"].get<double>(), 0);
  EXPECT_DOUBLE_EQ(report["rows_per_s"].get<double>(), 2 * report["requests_per_s"].get<double>());
  EXPECT_EQ(report["requests_failed"], 0);
  EXPECT_TRUE(report["errors"].empty()) << report["errors"].dump();
  EXPECT_GT(report["latency_ms"]["p50"].get<double>(), 0);
  EXPECT_LE(report["latency_ms"]["p50"].get<double>(), report["latency_ms"]["p99"].get<double>());
  EXPECT_GE(report["mean_batch_rows"].get<double>(), 2);  // at least this request's rows
  EXPECT_GT(report["mean_compute_us"].get<double>(), 0);
  EXPECT_NEAR(report["seconds"].get<double>(), 1.0, 0.5);
}

TEST_F(ClientCliTest, BenchOpenLoopMeasuresWithoutErrors) {
  const Ran ran = Client({"bench", "digits", "--rate", "200", "--duration", "1s", "--warmup",
                          "0.2s", "--format", "json"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  const nlohmann::json report = nlohmann::json::parse(ran.out);
  EXPECT_EQ(report["mode"], "open");
  EXPECT_EQ(report["arrival"], "poisson");
  EXPECT_GT(report["requests_per_s"].get<double>(), 0);
  EXPECT_EQ(report["requests_failed"], 0);
  EXPECT_TRUE(report["errors"].empty()) << report["errors"].dump();
  EXPECT_EQ(report["dropped"], 0);
  // 200 requests expected in the second; a Poisson count's standard deviation is 14.
  EXPECT_GT(report["requests_ok"].get<int64_t>(), 120);
  EXPECT_LT(report["requests_ok"].get<int64_t>(), 280);
}

TEST_F(ClientCliTest, BenchWritesCsvAndText) {
  Ran ran = Client({"bench", "digits", "--requests", "20", "--warmup", "0s", "--rate", "500",
                    "--arrival", "constant", "--format", "csv"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  const std::vector<std::string> lines = absl::StrSplit(ran.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << ran.out;
  const std::vector<std::string> header = absl::StrSplit(lines[0], ',');
  const std::vector<std::string> row = absl::StrSplit(lines[1], ',');
  ASSERT_EQ(header.size(), row.size());
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == "requests_ok") {
      EXPECT_EQ(row[i], "20");
    } else if (header[i] == "mode") {
      EXPECT_EQ(row[i], "open");
    }
  }
  ran = Client(
      {"bench", "digits", "--requests", "20", "--warmup", "0s", "--format", "csv", "--noheader"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  EXPECT_THAT(ran.out, Not(HasSubstr("requests_per_s")));
  ran = Client({"bench", "digits", "--requests", "20", "--warmup", "0s"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  EXPECT_THAT(ran.out, AllOf(HasSubstr("20 ok, 0 failed"), HasSubstr("nearest-rank")));
  EXPECT_THAT(ran.err, Not(HasSubstr("\r"))) << "no progress line when stderr is not a terminal";
}

TEST_F(ClientCliTest, BenchWaitsForTheServer) {
  const Ran ran = Client({"bench", "digits", "--wait-ready", "30s", "--requests", "5", "--warmup",
                          "0s", "--format", "json"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  EXPECT_EQ(nlohmann::json::parse(ran.out)["requests_ok"], 5);
}

TEST_F(ClientCliTest, UnknownModelIsNotFound) {
  for (const std::vector<std::string>& command : {std::vector<std::string>{"describe", "nosuch"},
                                                  {"infer", "nosuch", "--random-rows", "1"},
                                                  {"bench", "nosuch", "--requests", "1"}}) {
    const Ran ran = Client(command);
    EXPECT_EQ(ran.code, 1) << command[0] << ": " << ran.Describe();
    EXPECT_THAT(ran.err, AllOf(HasSubstr("NOT_FOUND"), HasSubstr("nosuch"))) << command[0];
  }
}

TEST_F(ClientCliTest, BadInputFileExitsTwoNamingIt) {
  testing::ScratchDir scratch;
  const std::string bad_magic = scratch.File("bad.npy");
  std::ofstream(bad_magic) << "not numpy at all";
  const std::string big_endian = scratch.File("be.npy");
  {
    std::string header = "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 64), }";
    header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
    header += '\n';
    std::string file = "\x93NUMPY\x01";
    file += '\0';
    file += static_cast<char>(header.size());
    file += '\0';
    std::ofstream(big_endian, std::ios::binary) << file << header << std::string(256, '\0');
  }
  const std::string ragged = scratch.File("ragged.json");
  std::ofstream(ragged) << "[[1, 2], [3]]";
  const std::string text = scratch.File("rows.txt");
  std::ofstream(text) << "1 2 3";
  for (const std::string& path :
       {bad_magic, big_endian, ragged, text, scratch.File("missing.npy")}) {
    const Ran ran = Client({"infer", "digits", "--input", path});
    EXPECT_EQ(ran.code, 2) << path << ": " << ran.Describe();
    EXPECT_THAT(ran.err, HasSubstr(path));
  }
}

TEST_F(ClientCliTest, WrongWidthIsTheServersInvalidArgument) {
  testing::ScratchDir scratch;
  const std::string path = scratch.File("narrow.json");
  std::ofstream(path) << "[[0.1, 0.2, 0.3]]";
  const Ran ran = Client({"infer", "digits", "--input", path});
  EXPECT_EQ(ran.code, 1) << ran.Describe();
  EXPECT_THAT(ran.err, AllOf(HasSubstr("INVALID_ARGUMENT"), HasSubstr("[1, 3]"), HasSubstr("64")));
}

// --- generate and bench --generate: the Mixtral reference checkpoint (and digits beside it) ---

// The fixture folder of the tiny Mixtral, or the first one.
std::string MixtralFixture() {
  const std::vector<std::string> dirs = testing::FixtureFolders();
  for (const std::string& dir : dirs) {
    if (dir.find("mixtral") != std::string::npos) return dir;
  }
  return dirs.empty() ? "" : dirs.front();
}

std::string Joined(const std::vector<int32_t>& ids, const char* separator) {
  return absl::StrJoin(ids, separator);
}

class ClientCliGenerateTest : public SharedServerTest<ClientCliGenerateTest> {
 public:
  static std::vector<std::string> ServerArgs() {
    std::vector<std::string> args = DigitsModelFlag();
    const std::string dir = MixtralFixture();
    if (!dir.empty()) {
      args.push_back("--model");
      args.push_back(absl::StrCat(std::filesystem::path(dir).filename().string(), "=", dir));
    }
    return args;
  }

 protected:
  void SetUp() override {
    SharedServerTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_FALSE(MixtralFixture().empty()) << "no fixture in " << testing::FixturesRoot();
    auto ref = LoadGreedyReference(MixtralFixture());
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = *std::move(ref);
  }
  Ran Client(std::vector<std::string> args) {
    args.insert(args.begin(), {"--target", server().address()});
    return RunClient(args);
  }

  GreedyReference ref_;
};

TEST_F(ClientCliGenerateTest, GeneratePrintsExactlyTheGreedyTokens) {
  for (const auto& [seq, sequence] : ref_.sequences) {
    SCOPED_TRACE(seq);
    const std::string prompt = Joined(sequence.prompt, ",");
    const Ran ran = Client({"generate", ref_.model, "--prompt-ids", prompt, "--max-new-tokens",
                            absl::StrCat(kGreedyReferenceTokens), "--ignore-eos"});
    ASSERT_EQ(ran.code, 0) << ran.Describe();
    EXPECT_EQ(ran.out, Joined(sequence.greedy, " ") + "\n");
    EXPECT_THAT(ran.err, AllOf(HasSubstr("finish_reason=length"),
                               HasSubstr(absl::StrCat("prompt_tokens=", sequence.prompt.size())),
                               HasSubstr("completion_tokens=8"), HasSubstr("ttft_ms="),
                               HasSubstr("tokens_per_second=")));

    // --model instead of the argument, one JSON object with log-probabilities.
    const Ran json = Client({"generate", "--model", ref_.model, "--prompt-ids", prompt,
                             "--max-new-tokens", "8", "--ignore-eos", "--logprobs", "--json"});
    ASSERT_EQ(json.code, 0) << json.Describe();
    const nlohmann::json answer = nlohmann::json::parse(json.out);
    EXPECT_EQ(answer["token_ids"].get<std::vector<int32_t>>(), sequence.greedy);
    EXPECT_EQ(answer["logprobs"].size(), sequence.greedy.size());
    EXPECT_EQ(answer["finish_reason"], "length");
    EXPECT_EQ(answer["completion_tokens"], 8);
    EXPECT_GT(answer["ttft_ms"].get<double>(), 0);
  }
}

TEST_F(ClientCliGenerateTest, GenerateStopIdsAndLogprobsInTheStream) {
  const GreedySequence& sequence = ref_.sequences.begin()->second;
  const Ran ran = Client({"generate", ref_.model, "--prompt-ids", Joined(sequence.prompt, ","),
                          "--max-new-tokens", "8", "--ignore-eos", "--stop-ids",
                          absl::StrCat(sequence.greedy[1]), "--logprobs"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  const std::vector<std::string> tokens =
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(ran.out), ' ', absl::SkipEmpty());
  ASSERT_EQ(tokens.size(), 2u) << ran.out;
  EXPECT_THAT(tokens[0], ::testing::StartsWith(absl::StrCat(sequence.greedy[0], ":-")));
  EXPECT_THAT(tokens[1], ::testing::StartsWith(absl::StrCat(sequence.greedy[1], ":")));
  EXPECT_THAT(ran.err, HasSubstr("finish_reason=stop"));
}

TEST_F(ClientCliGenerateTest, GenerateServerErrorsExitOneWithTheCode) {
  struct Case {
    std::vector<std::string> args;
    const char* code;
  };
  for (const Case& c :
       {Case{{"generate", "nosuch", "--prompt-ids", "1,2"}, "NOT_FOUND"},
        Case{{"generate", ref_.model, "--prompt-ids", "1,99999"}, "INVALID_ARGUMENT"},
        Case{{"generate", kDigits, "--prompt-ids", "1,2"}, "FAILED_PRECONDITION"},
        Case{{"bench", kDigits, "--generate", "--requests", "1"}, "FAILED_PRECONDITION"}}) {
    const Ran ran = Client(c.args);
    EXPECT_EQ(ran.code, 1) << absl::StrJoin(c.args, " ") << ": " << ran.Describe();
    EXPECT_THAT(ran.err, AllOf(HasSubstr(c.code), HasSubstr(server().address())))
        << absl::StrJoin(c.args, " ");
  }
}

TEST_F(ClientCliGenerateTest, BenchGenerateJsonCountsAddUp) {
  const Ran ran = Client({"bench", ref_.model, "--generate", "--concurrency", "4", "--duration",
                          "2s", "--warmup", "0.2s", "--prompt-len", "4:32", "--max-new-tokens",
                          "16", "--seed", "5", "--json"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  const nlohmann::json report = nlohmann::json::parse(ran.out);
  EXPECT_EQ(report["mode"], "generate");
  EXPECT_EQ(report["concurrency"], 4);
  EXPECT_EQ(report["vocab_size"], 512) << "read from GetModelInfo";
  EXPECT_EQ(report["seed"], 5);
  EXPECT_EQ(report["requests_failed"], 0);
  EXPECT_TRUE(report["errors"].empty()) << report["errors"].dump();
  const int64_t completed = report["requests_completed"].get<int64_t>();
  EXPECT_GT(completed, 0);
  EXPECT_EQ(report["output_tokens"].get<int64_t>(), completed * 16)
      << "ignore_eos: every request generates exactly --max-new-tokens";
  EXPECT_EQ(report["finish_reasons"]["length"], completed);
  EXPECT_GE(report["prompt_tokens"].get<int64_t>(), completed * 4);
  EXPECT_LE(report["prompt_tokens"].get<int64_t>(), completed * 32);
  EXPECT_GT(report["output_tokens_per_second"].get<double>(), 0);
  EXPECT_NEAR(report["output_tokens_per_second"].get<double>(),
              report["output_tokens"].get<double>() / report["seconds"].get<double>(), 1e-6);
  EXPECT_NEAR(report["seconds"].get<double>(), 2.0, 1.0);
  EXPECT_EQ(report["ttft_count"], completed);
  EXPECT_GT(report["itl_count"].get<int64_t>(), 0);
  EXPECT_LE(report["itl_count"].get<int64_t>(), completed * 15);
  for (const char* name : {"ttft", "itl", "e2e"}) {
    const double p50 = report[absl::StrCat(name, "_p50_ms")].get<double>();
    const double p90 = report[absl::StrCat(name, "_p90_ms")].get<double>();
    const double p99 = report[absl::StrCat(name, "_p99_ms")].get<double>();
    EXPECT_GE(p50, 0) << name;
    EXPECT_LE(p50, p90) << name;
    EXPECT_LE(p90, p99) << name;
  }
  EXPECT_LE(report["ttft_p50_ms"].get<double>(), report["e2e_p50_ms"].get<double>());
}

TEST_F(ClientCliGenerateTest, BenchGenerateMixedLengthsForAFixedNumberOfRequests) {
  const Ran ran = Client({"bench", ref_.model, "--generate", "--concurrency", "3", "--requests",
                          "30", "--warmup", "0s", "--prompt-len", "1:16", "--max-new-tokens",
                          "4:12", "--vocab-size", "100", "--format", "json"});
  ASSERT_EQ(ran.code, 0) << ran.Describe();
  const nlohmann::json report = nlohmann::json::parse(ran.out);
  EXPECT_EQ(report["requests_completed"], 30);
  EXPECT_EQ(report["vocab_size"], 100);
  EXPECT_GE(report["output_tokens"].get<int64_t>(), 30 * 4);
  EXPECT_LE(report["output_tokens"].get<int64_t>(), 30 * 12);
  EXPECT_EQ(report["max_new_tokens_min"], 4);
  EXPECT_EQ(report["max_new_tokens_max"], 12);
  const Ran text = Client({"bench", ref_.model, "--generate", "--requests", "5", "--warmup", "0s",
                           "--max-new-tokens", "4"});
  ASSERT_EQ(text.code, 0) << text.Describe();
  EXPECT_THAT(text.out, AllOf(HasSubstr("5 completed, 0 failed"), HasSubstr("20 output ("),
                              HasSubstr("tokens/s"), HasSubstr("ttft"), HasSubstr("itl")));
}

TEST(ClientCli, GenerateAndBenchGenerateRejectBadFlagsBeforeConnecting) {
  // Port 1: nothing listens; a usage error must come first.
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"generate", "m"},
        {"generate", "--prompt-ids", "1"},
        {"generate", "m", "--model", "n", "--prompt-ids", "1"},
        {"generate", "m", "--prompt-ids", "1,x"},
        {"generate", "m", "--prompt-ids", "1", "--max-new-tokens", "4:8"},
        {"generate", "m", "--prompt-ids", "1", "--max-new-tokens", "0"},
        {"generate", "m", "--prompt-ids", "1", "--temperature", "-1"},
        {"generate", "m", "--prompt-ids", "1", "--top-p", "1.5"},
        {"generate", "m", "--prompt-ids", "1", "--top-k", "-1"},
        {"generate", "m", "--prompt-ids", "1", "--stop-ids", "1,-2"},
        {"generate", "m", "--prompt-ids", "1", "--format", "csv"},
        {"generate", "m", "--prompt-ids", "1", "--json", "--format", "text"},
        {"generate", "m", "--prompt-ids", "1", "--concurrency", "2"},
        {"bench", "m", "--generate", "--rate", "5"},
        {"bench", "m", "--generate", "--rows-per-request", "2"},
        {"bench", "m", "--generate", "--prompt-len", "0"},
        {"bench", "m", "--generate", "--max-new-tokens", "9:3"},
        {"bench", "m", "--generate", "--format", "csv"},
        {"bench", "m", "--generate", "--concurrency", "0"},
        {"bench", "m", "--prompt-len", "8"},
        {"bench", "m", "--max-new-tokens", "8"},
        {"bench", "--generate"}}) {
    std::vector<std::string> args = {"--target", "127.0.0.1:1", "--timeout", "2s"};
    args.insert(args.end(), command.begin(), command.end());
    const Ran ran = RunClient(args);
    EXPECT_EQ(ran.code, 2) << absl::StrJoin(command, " ") << ": " << ran.Describe();
    EXPECT_THAT(ran.err, Not(HasSubstr("UNAVAILABLE"))) << absl::StrJoin(command, " ");
  }
  const Ran help = RunClient({"generate", "--help"});
  EXPECT_EQ(help.code, 0) << help.Describe();
  for (const char* flag :
       {"--prompt-ids", "--max-new-tokens", "--temperature", "--top-k", "--top-p",
        "--repetition-penalty", "--seed", "--stop-ids", "--ignore-eos", "--logprobs", "--json"}) {
    EXPECT_THAT(help.out, HasSubstr(flag));
  }
  const Ran bench = RunClient({"bench", "--help"});
  for (const char* flag :
       {"--generate", "--prompt-len", "--vocab-size", "output_tokens_per_second"}) {
    EXPECT_THAT(bench.out, HasSubstr(flag));
  }
}

TEST(ClientCli, GenerateWithTheServerDownIsUnavailableNamingTheTarget) {
  const auto port = testing::PickFreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string target = absl::StrCat("127.0.0.1:", *port);
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"generate", "m", "--prompt-ids", "1,2"},
        {"bench", "m", "--generate", "--requests", "1"}}) {
    std::vector<std::string> args = {"--target", target, "--timeout", "3s"};
    args.insert(args.end(), command.begin(), command.end());
    const Ran ran = RunClient(args);
    EXPECT_EQ(ran.code, 1) << command[0] << ": " << ran.Describe();
    EXPECT_THAT(ran.err, AllOf(HasSubstr("UNAVAILABLE"), HasSubstr(target))) << command[0];
  }
}

}  // namespace
}  // namespace moe::integration
