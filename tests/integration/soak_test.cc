// Soak and fault test: for a bounded time (MOE_SOAK_SECONDS, default 120), one server takes
// mixed valid and invalid traffic, cancellations, clients that disconnect mid-call, deadline
// storms and queue overflow, all at once. Then:
//   - the server is still healthy and serving;
//   - every answered request was answered correctly (checked against the engine run here);
//   - the error counts the server's metrics report match what was sent;
//   - its resident memory stayed flat (both figures are printed).
// Loopback only; every burst and every child process is bounded.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/common/sanitizer_build.h"
#include "tests/integration/async_calls.h"
#include "tests/integration/in_process_model.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/exposition_text.h"
#include "tests/testing/http_get.h"
#include "tests/testing/random.h"

namespace moe::integration {
namespace {

// Same engine, different batch composition: BLAS blocking may differ, a wrong row does not
// come near this.
constexpr double kTolerance = 1e-4;
constexpr int kQueueLimit = 8;
constexpr char kDropped[] = "dropped";  // the built-in model again, for disconnecting clients

// The server under test is built like this test (scripts/sanitize.sh builds both).
constexpr bool kSanitizerBuild = MOE_SANITIZER_BUILD;

absl::Duration SoakDuration() {
  const char* seconds = std::getenv("MOE_SOAK_SECONDS");
  return absl::Seconds(seconds != nullptr ? std::max(5, std::atoi(seconds)) : 120);
}

// VmRSS of `pid` in bytes, 0 when unreadable.
int64_t ResidentBytes(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      int64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    std::getline(status, key);
  }
  return 0;
}

// What the clients saw, by (model label as the server counts it, gRPC code).
class Tally {
 public:
  void Add(const std::string& model, grpc::StatusCode code) {
    absl::MutexLock lock(&mu_);
    ++counts_[{model, code}];
  }
  int64_t Get(const std::string& model, grpc::StatusCode code) const {
    absl::MutexLock lock(&mu_);
    auto it = counts_.find({model, code});
    return it == counts_.end() ? 0 : it->second;
  }
  std::string Describe() const {
    absl::MutexLock lock(&mu_);
    std::string text;
    for (const auto& [key, count] : counts_) {
      absl::StrAppend(&text, key.first, "/", static_cast<int>(key.second), "=", count, " ");
    }
    return text;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, grpc::StatusCode>, int64_t> counts_ ABSL_GUARDED_BY(mu_);
};

class SoakTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The answers are checked here by the engine, from several client threads in turn; threaded
    // OpenBLAS called from changing threads livelocked (exec_blas_async spinning) on a loaded
    // machine. One BLAS thread in this process; the server is a separate process and keeps its
    // own.
    openblas_set_num_threads(1);
    std::vector<std::string> args = DigitsAndSyntheticFlags();
    // The clients that die mid-call use a model of their own: the server counts their calls,
    // the test cannot, and they must not blur the counts compared below.
    args.push_back("--model");
    args.push_back(absl::StrCat(kDropped, "=", SourceDir(), "/models/builtin"));
    for (std::string flag : std::vector<std::string>{"--max-queue", std::to_string(kQueueLimit),
                                                     "--max-batch-tokens", "64"}) {
      args.push_back(std::move(flag));
    }
    auto server = StartServer(args);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto digits = InProcessModel::Builtin();
    ASSERT_TRUE(digits.ok()) << digits.status();
    digits_ = *std::move(digits);
    auto synthetic = InProcessModel::FromDirectory(kSynthetic, SyntheticModelDir());
    ASSERT_TRUE(synthetic.ok()) << synthetic.status();
    synthetic_ = *std::move(synthetic);
  }

  // Checks an OK answer against the engine run here, row by row. A row beyond the tolerance is
  // wrong unless its routing explains it: the same experts up to some MoE layer, and there a
  // different expert set whose gate weights equal the engine's within rounding (a near tie that
  // another batch composition's summation order tipped the other way; what follows that layer
  // then legitimately differs). Anything else, a row of another request included, is wrong.
  void CheckAnswer(InProcessModel& model, const std::vector<float>& rows, int64_t count,
                   const inference::ModelInferResponse& response) {
    checked_answers_.fetch_add(1);
    absl::StatusOr<std::vector<float>> got =
        OutputFloats(response, model.description().output_name);
    absl::StatusOr<std::vector<int32_t>> ids = OutputInt32s(response, "routing_expert_ids");
    absl::StatusOr<std::vector<float>> weights = OutputFloats(response, "routing_weights");
    absl::StatusOr<InProcessResult> want;
    {
      absl::MutexLock lock(&engine_mu_);  // one in-process run at a time
      want = model.Run(rows, count);
    }
    std::string wrong;
    if (!got.ok() || !ids.ok() || !weights.ok() || !want.ok()) {
      wrong = absl::StrCat("unreadable: ", got.status().ToString(), " ", ids.status().ToString(),
                           " ", weights.status().ToString(), " ", want.status().ToString());
    } else if (got->size() != want->output.size() || ids->size() != want->topk_ids.size() ||
               weights->size() != want->topk_weights.size()) {
      wrong = absl::StrCat("sizes: output ", got->size(), " vs ", want->output.size(), ", routing ",
                           ids->size(), " vs ", want->topk_ids.size());
    }
    if (wrong.empty()) {
      const engine::ModelDescription& d = model.description();
      const size_t width = got->size() / static_cast<size_t>(count);
      const size_t routing = static_cast<size_t>(d.num_moe_layers) * d.top_k;
      for (int64_t row = 0; row < count && wrong.empty(); ++row) {
        const double error = testing::RelativeL2(got->data() + row * width,
                                                 want->output.data() + row * width, width);
        if (error < kTolerance) continue;
        const RoutingVerdict verdict =
            CompareRouting(ids->data() + row * routing, weights->data() + row * routing,
                           want->topk_ids.data() + row * routing,
                           want->topk_weights.data() + row * routing, d.num_moe_layers, d.top_k);
        if (verdict.near_tie) {
          near_tie_rows_.fetch_add(1);
          continue;
        }
        wrong = absl::StrCat(d.name, " row ", row, " of ", count, ": relative L2 ", error, "; ",
                             verdict.explanation);
      }
    }
    if (!wrong.empty()) {
      wrong_answers_.fetch_add(1);
      absl::MutexLock lock(&wrong_mu_);
      if (first_wrong_.empty()) first_wrong_ = wrong;
    }
  }

  struct RoutingVerdict {
    bool near_tie = false;
    std::string explanation;
  };
  // Whether the server's routing of one row (ids, weights: [layers, top_k]) departs from the
  // engine's first at a layer where the two expert sets carry the same weights within rounding.
  static RoutingVerdict CompareRouting(const int32_t* got_ids, const float* got_weights,
                                       const int32_t* want_ids, const float* want_weights,
                                       int64_t layers, int top_k) {
    constexpr float kTieTolerance = 1e-4f;  // gate weights are probabilities in [0, 1]
    for (int64_t layer = 0; layer < layers; ++layer) {
      const size_t at = static_cast<size_t>(layer) * top_k;
      std::vector<int32_t> got_set(got_ids + at, got_ids + at + top_k);
      std::vector<int32_t> want_set(want_ids + at, want_ids + at + top_k);
      std::sort(got_set.begin(), got_set.end());
      std::sort(want_set.begin(), want_set.end());
      if (got_set == want_set) continue;
      std::vector<float> got_w(got_weights + at, got_weights + at + top_k);
      std::vector<float> want_w(want_weights + at, want_weights + at + top_k);
      std::sort(got_w.begin(), got_w.end());
      std::sort(want_w.begin(), want_w.end());
      float worst = 0.0f;
      for (int k = 0; k < top_k; ++k) worst = std::max(worst, std::fabs(got_w[k] - want_w[k]));
      return {worst <= kTieTolerance, absl::StrCat("routing departs at MoE layer ", layer,
                                                   ", gate weights differ by ", worst)};
    }
    return {false, "same routing"};
  }
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<InProcessModel> digits_;
  std::unique_ptr<InProcessModel> synthetic_;
  absl::Mutex engine_mu_;
  std::atomic<int64_t> wrong_answers_{0};
  std::atomic<int64_t> checked_answers_{0};
  std::atomic<int64_t> near_tie_rows_{0};
  absl::Mutex wrong_mu_;
  std::string first_wrong_ ABSL_GUARDED_BY(wrong_mu_);
  Tally tally_;
};

TEST_F(SoakTest, MixedTrafficFaultsAndOverloadLeaveTheServerHealthyAndCorrect) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  const absl::Duration duration = SoakDuration();
  const absl::Time start = absl::Now();
  const absl::Time end = start + duration;
  const pid_t pid = server_->process().pid();
  std::atomic<bool> stop{false};
  std::atomic<int64_t> disconnect_runs{0};

  // Valid and invalid single calls, four clients.
  auto single_calls = [&](uint64_t thread_seed) {
    std::mt19937_64 rng(thread_seed);
    auto stub = NewStub(*server_);
    while (!stop.load()) {
      const int kind = static_cast<int>(rng() % 10);
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
      inference::ModelInferResponse response;
      if (kind < 6) {  // valid
        const int64_t rows = 1 + static_cast<int64_t>(rng() % 8);
        std::vector<float> values = UniformRows(rng, rows, kDigitsWidth);
        const grpc::Status status =
            stub->ModelInfer(&context,
                             MakeInferRequest(kDigits, values, rows, kDigitsWidth,
                                              {.raw = rng() % 2 == 0, .routing = true}),
                             &response);
        tally_.Add(kDigits, status.error_code());
        if (status.ok()) CheckAnswer(*digits_, values, rows, response);
      } else if (kind == 6) {  // wrong width
        const grpc::Status status = stub->ModelInfer(
            &context, MakeInferRequest(kDigits, UniformRows(rng, 2, 63), 2, 63), &response);
        tally_.Add(kDigits, status.error_code());
      } else if (kind == 7) {  // not finite
        std::vector<float> values = UniformRows(rng, 1, kDigitsWidth);
        values[rng() % values.size()] = std::numeric_limits<float>::quiet_NaN();
        const grpc::Status status = stub->ModelInfer(
            &context, MakeInferRequest(kDigits, values, 1, kDigitsWidth), &response);
        tally_.Add(kDigits, status.error_code());
      } else if (kind == 8) {  // unknown model
        const grpc::Status status = stub->ModelInfer(
            &context, MakeInferRequest("nobody", UniformRows(rng, 1, 4), 1, 4), &response);
        tally_.Add("(unknown)", status.error_code());
      } else {  // a datatype the server does not take
        inference::ModelInferRequest request =
            MakeInferRequest(kDigits, UniformRows(rng, 1, kDigitsWidth), 1, kDigitsWidth);
        request.mutable_inputs(0)->set_datatype("INT8");
        const grpc::Status status = stub->ModelInfer(&context, request, &response);
        tally_.Add(kDigits, status.error_code());
      }
    }
  };

  // Bursts on the synthetic model: overflow (more than the queue holds), cancellations and
  // deadline storms; every OK answer is checked.
  auto bursts = [&](uint64_t thread_seed) {
    std::mt19937_64 rng(thread_seed);
    auto stub = NewStub(*server_);
    while (!stop.load()) {
      AsyncCalls calls(*stub);
      std::vector<std::vector<float>> inputs;
      std::vector<int64_t> row_counts;
      const int kind = static_cast<int>(rng() % 3);
      const int burst = 12 + static_cast<int>(rng() % 24);
      for (int i = 0; i < burst; ++i) {
        const int64_t rows = 1 + static_cast<int64_t>(rng() % 16);
        inputs.push_back(UniformRows(rng, rows, kSyntheticWidth));
        row_counts.push_back(rows);
        // Deadline storm: 0.1 to 5 ms, most expire in the queue or on the way.
        const absl::Duration timeout =
            kind == 2 ? absl::Microseconds(100 + static_cast<int>(rng() % 4900))
                      : absl::Seconds(60);
        calls.Start(
            MakeInferRequest(kSynthetic, inputs.back(), rows, kSyntheticWidth, {.routing = true}),
            timeout);
      }
      if (kind == 1) {  // cancel half of them after a moment
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
        for (int i = 0; i < burst; i += 2) calls.Cancel(static_cast<size_t>(i));
      }
      ASSERT_TRUE(calls.WaitAll(absl::Seconds(120)));
      for (size_t i = 0; i < calls.size(); ++i) {
        tally_.Add(kSynthetic, calls.status(i).error_code());
        if (calls.status(i).ok()) {
          CheckAnswer(*synthetic_, inputs[i], row_counts[i], calls.response(i));
        }
      }
    }
  };

  // Clients that die with calls in flight.
  auto disconnects = [&]() {
    std::mt19937_64 rng(seed ^ 0xD15C);
    while (!stop.load()) {
      testing::ScratchDir scratch;
      // Fork only while no in-process engine run is in flight: OpenBLAS's fork handler stops
      // its worker threads, and a BLAS call running on another thread then waits for them
      // forever (the test hung that way under ASan).
      auto child = [&] {
        absl::MutexLock no_engine_run(&engine_mu_);
        return testing::ChildProcess::Spawn(
            MOE_DISCONNECT_CLIENT,
            {server_->address(), kDropped, std::to_string(kDigitsWidth), "8", "6",
             std::to_string(500 + rng() % 5000)},
            scratch.File("child.log"));
      }();
      ASSERT_TRUE(child.ok()) << child.status();
      auto code = (*child)->WaitForExit(absl::Seconds(30));
      ASSERT_TRUE(code.ok()) << code.status();
      EXPECT_EQ(*code, 0) << (*child)->ReadLog();
      disconnect_runs.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  };

  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(single_calls, seed + i);
  threads.emplace_back(bursts, seed + 100);
  threads.emplace_back(disconnects);
  // Resident memory once the first tenth has warmed the server up, and at the end.
  std::this_thread::sleep_for(absl::ToChronoNanoseconds(duration / 10));
  const int64_t rss_warm = ResidentBytes(pid);
  int64_t rss_peak = rss_warm;
  while (absl::Now() < end) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    rss_peak = std::max(rss_peak, ResidentBytes(pid));
  }
  stop.store(true);
  for (std::thread& thread : threads) thread.join();
  const int64_t rss_end = ResidentBytes(pid);

  // Still healthy and serving.
  auto stub = NewStub(*server_);
  {
    grpc::ClientContext context;
    inference::ServerReadyResponse ready;
    ASSERT_TRUE(stub->ServerReady(&context, {}, &ready).ok());
    EXPECT_TRUE(ready.ready());
    auto health = grpc::health::v1::Health::NewStub(server_->channel());
    grpc::ClientContext health_context;
    grpc::health::v1::HealthCheckResponse serving;
    ASSERT_TRUE(health->Check(&health_context, {}, &serving).ok());
    EXPECT_EQ(serving.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    std::mt19937_64 rng(seed);
    const std::vector<float> values = UniformRows(rng, 3, kDigitsWidth);
    grpc::ClientContext infer_context;
    inference::ModelInferResponse response;
    ASSERT_TRUE(
        stub->ModelInfer(&infer_context,
                         MakeInferRequest(kDigits, values, 3, kDigitsWidth, {.routing = true}),
                         &response)
            .ok());
    tally_.Add(kDigits, grpc::StatusCode::OK);
    CheckAnswer(*digits_, values, 3, response);
  }

  // Every answer right.
  {
    absl::MutexLock lock(&wrong_mu_);
    EXPECT_EQ(wrong_answers_.load(), 0)
        << "of " << checked_answers_.load() << " answers checked; the first: " << first_wrong_;
  }
  EXPECT_GT(checked_answers_.load(), 100);

  // The server's counts against what the clients saw. Invalid, rejected and (for the model no
  // call was cancelled on) success are exact; cancellations and deadlines race the answer, so
  // a client can see CANCELLED or DEADLINE_EXCEEDED for a call the server completed.
  absl::StatusOr<std::string> text = testing::HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  const std::vector<testing::ExpositionSample> samples = testing::ParseExposition(*text);
  auto counted = [&](const std::string& model, const std::string& outcome) {
    return static_cast<int64_t>(
        testing::FindSample(samples, "moe_requests_total", {{"model", model}, {"outcome", outcome}})
            .value_or(-1));
  };
  using grpc::StatusCode;
  const int64_t digits_invalid = tally_.Get(kDigits, StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(counted(kDigits, "invalid"), digits_invalid) << tally_.Describe();
  EXPECT_EQ(counted("(unknown)", "invalid"), tally_.Get("(unknown)", StatusCode::NOT_FOUND));
  EXPECT_EQ(counted(kDigits, "success"), tally_.Get(kDigits, StatusCode::OK));
  EXPECT_EQ(counted(kDigits, "internal"), 0);
  EXPECT_EQ(counted(kSynthetic, "internal"), 0);
  // On the synthetic model a client may give up (cancel, deadline) on a call the server then
  // answers or refuses: each server count lies between what the clients saw and that plus the
  // calls they gave up on.
  const int64_t gave_up = tally_.Get(kSynthetic, StatusCode::CANCELLED) +
                          tally_.Get(kSynthetic, StatusCode::DEADLINE_EXCEEDED);
  const int64_t refused = tally_.Get(kSynthetic, StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_GE(counted(kSynthetic, "rejected"), refused) << "queue-full answers";
  EXPECT_LE(counted(kSynthetic, "rejected"), refused + gave_up);
  const int64_t answered = tally_.Get(kSynthetic, StatusCode::OK);
  EXPECT_GE(counted(kSynthetic, "success"), answered);
  EXPECT_LE(counted(kSynthetic, "success"), answered + gave_up);
  EXPECT_LE(counted(kSynthetic, "cancelled") + counted(kSynthetic, "deadline"), gave_up);
  // A call given up on before it reached the server is not counted there.
  const int64_t server_total = counted(kSynthetic, "success") + counted(kSynthetic, "rejected") +
                               counted(kSynthetic, "cancelled") + counted(kSynthetic, "deadline");
  EXPECT_GE(server_total, answered + refused);
  EXPECT_LE(server_total, answered + refused + gave_up);
  EXPECT_GT(refused, 0) << "the queue overflowed";
  EXPECT_GT(tally_.Get(kSynthetic, StatusCode::CANCELLED), 0) << "calls were cancelled";
  EXPECT_GT(tally_.Get(kSynthetic, StatusCode::DEADLINE_EXCEEDED), 0) << "deadlines passed";
  EXPECT_GT(disconnect_runs.load(), 0);
  EXPECT_EQ(counted(kDropped, "internal"), 0);
  // Nothing else was answered: no UNKNOWN, INTERNAL, UNAVAILABLE on the client side.
  for (const std::string& model : std::vector<std::string>{kDigits, kSynthetic}) {
    for (StatusCode code : {StatusCode::UNKNOWN, StatusCode::INTERNAL, StatusCode::UNAVAILABLE}) {
      EXPECT_EQ(tally_.Get(model, code), 0) << model << " code " << code;
    }
  }

  // Memory: flat once warm (allow 32 MiB of allocator noise).
  std::printf(
      "soak: %s, %lld answers checked (%lld rows differing at a routing near tie), %lld "
      "disconnecting clients; server RSS warm %.1f MiB, "
      "peak %.1f MiB, end %.1f MiB; client outcomes %s\n",
      absl::FormatDuration(duration).c_str(), static_cast<long long>(checked_answers_.load()),
      static_cast<long long>(near_tie_rows_.load()), static_cast<long long>(disconnect_runs.load()),
      rss_warm / 1048576.0, rss_peak / 1048576.0, rss_end / 1048576.0, tally_.Describe().c_str());
  EXPECT_GT(rss_warm, 0);
  if (!kSanitizerBuild) {
    EXPECT_LT(rss_end - rss_warm, int64_t{32} << 20) << "resident memory grew";
  } else {
    // Under ASan freed memory waits in a quarantine (256 MiB) before it is reused, and TSan's
    // shadow and metadata grow with the memory touched: resident memory is not flat by design.
    // Instead the server drains and exits 0: LeakSanitizer (ASan) checks for leaks at exit and
    // makes the exit code 1 when it finds one, TSan makes it 66 when it reported a race.
    ASSERT_TRUE(server_->Terminate(SIGTERM).ok());
    absl::StatusOr<int> exit_code = server_->WaitForExit(absl::Seconds(120));
    ASSERT_TRUE(exit_code.ok()) << exit_code.status();
    EXPECT_EQ(*exit_code, 0) << "a sanitizer report? " << server_->LogTail();
  }
}

}  // namespace
}  // namespace moe::integration
