// The bench report's renderings: JSON with the fields the benchmark scripts read (and more),
// CSV whose header and row have the same columns, text with every figure.
#include "client/cli/bench_report.h"

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe::client::cli {
namespace {

using ::testing::HasSubstr;

BenchReport Example() {
  BenchReport r;
  r.target = "127.0.0.1:8001";
  r.model = "digits";
  r.mode = "closed";
  r.concurrency = 8;
  r.connections = 8;
  r.rows_per_request = 4;
  r.width = 64;
  r.wire = "fp32";
  r.raw = true;
  r.seed = 7;
  r.warmup_s = 0.5;
  r.seconds = 2.0;
  r.requests_ok = 1000;
  r.requests_failed = 3;
  r.errors = {{"UNAVAILABLE", 2}, {"DEADLINE_EXCEEDED", 1}};
  r.error_messages = {{"UNAVAILABLE", "ModelInfer: server draining"},
                      {"DEADLINE_EXCEEDED", "ModelInfer: deadline exceeded"}};
  r.latency_ms = {.count = 1000,
                  .min = 0.5,
                  .mean = 1.5,
                  .stddev = 0.25,
                  .p50 = 1.25,
                  .p90 = 2.0,
                  .p95 = 2.5,
                  .p99 = 3.0,
                  .max = 9.0};
  r.with_server_timing = 1000;
  r.mean_queue_us = 120;
  r.mean_compute_us = 300;
  r.mean_batch_rows = 12.5;
  r.max_in_flight = 8;
  return r;
}

TEST(ClientCliBenchReport, RatesComeFromCountsAndSeconds) {
  const BenchReport r = Example();
  EXPECT_DOUBLE_EQ(r.requests_per_s(), 500.0);
  EXPECT_DOUBLE_EQ(r.rows_per_s(), 2000.0);
  EXPECT_EQ(BenchReport().requests_per_s(), 0);  // no window: no division by zero
}

TEST(ClientCliBenchReport, JsonHasTheFieldsTheBenchmarkScriptsRead) {
  const nlohmann::json j = nlohmann::json::parse(FormatJson(Example()));
  // bench/serve_bench.sh and bench/metrics_overhead.sh (formerly moe-loadgen's fields).
  EXPECT_EQ(j["concurrency"], 8);
  EXPECT_DOUBLE_EQ(j["requests_per_s"].get<double>(), 500.0);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["p50"].get<double>(), 1.25);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["p90"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["p99"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["max"].get<double>(), 9.0);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["mean"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(j["mean_queue_us"].get<double>(), 120);
  EXPECT_DOUBLE_EQ(j["mean_compute_us"].get<double>(), 300);
  EXPECT_DOUBLE_EQ(j["mean_batch_rows"].get<double>(), 12.5);
  EXPECT_EQ(j["errors"], (nlohmann::json{{"DEADLINE_EXCEEDED", 1}, {"UNAVAILABLE", 2}}));
  EXPECT_EQ(j["error_messages"]["UNAVAILABLE"], "ModelInfer: server draining");
  // And the rest of what moe-loadgen wrote.
  EXPECT_EQ(j["target"], "127.0.0.1:8001");
  EXPECT_EQ(j["model"], "digits");
  EXPECT_EQ(j["rows_per_request"], 4);
  EXPECT_DOUBLE_EQ(j["seconds"].get<double>(), 2.0);
  EXPECT_EQ(j["requests_ok"], 1000);
  EXPECT_EQ(j["requests_failed"], 3);
  EXPECT_DOUBLE_EQ(j["rows_per_s"].get<double>(), 2000.0);
  // New: how percentiles are taken, and the other figures.
  EXPECT_EQ(j["percentiles"], "nearest-rank");
  EXPECT_DOUBLE_EQ(j["latency_ms"]["min"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["p95"].get<double>(), 2.5);
  EXPECT_EQ(j["mode"], "closed");
  for (const char* key : {"sent_late", "dropped", "max_send_lag_ms", "max_in_flight", "seed",
                          "wire", "raw", "connections", "warmup_s", "rate", "arrival"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
}

TEST(ClientCliBenchReport, EmptyErrorsAreAnEmptyObject) {
  BenchReport r = Example();
  r.errors.clear();
  const nlohmann::json j = nlohmann::json::parse(FormatJson(r));
  EXPECT_TRUE(j["errors"].is_object());
  EXPECT_TRUE(j["errors"].empty());
}

TEST(ClientCliBenchReport, CsvRowHasTheHeadersColumns) {
  const std::vector<std::string> header = absl::StrSplit(CsvHeader(), ',');
  const std::vector<std::string> row = absl::StrSplit(FormatCsvRow(Example()), ',');
  ASSERT_EQ(row.size(), header.size()) << CsvHeader() << "\n" << FormatCsvRow(Example());
  auto column = [&](const std::string& name) {
    for (size_t i = 0; i < header.size(); ++i) {
      if (header[i] == name) return row[i];
    }
    ADD_FAILURE() << "no column " << name;
    return std::string();
  };
  EXPECT_EQ(column("mode"), "closed");
  EXPECT_EQ(column("concurrency"), "8");
  EXPECT_EQ(column("requests_ok"), "1000");
  EXPECT_EQ(column("requests_per_s"), "500");
  EXPECT_EQ(column("rows_per_s"), "2000");
  EXPECT_EQ(column("latency_p50_ms"), "1.25");
  EXPECT_EQ(column("latency_p99_ms"), "3");
  EXPECT_EQ(column("latency_max_ms"), "9");
  EXPECT_EQ(column("mean_batch_rows"), "12.5");
  EXPECT_EQ(column("raw"), "raw");
  EXPECT_EQ(column("errors"), "DEADLINE_EXCEEDED:1;UNAVAILABLE:2");
  EXPECT_EQ(FormatCsvRow(Example()).find('\n'), std::string::npos);
}

TEST(ClientCliBenchReport, CsvQuotesFieldsWithCommas) {
  BenchReport r = Example();
  r.target = "ipv4:127.0.0.1:1,127.0.0.1:2";
  r.model = "say \"hi\"";
  const std::string row = FormatCsvRow(r);
  EXPECT_THAT(row, HasSubstr(",\"ipv4:127.0.0.1:1,127.0.0.1:2\","));
  EXPECT_THAT(row, HasSubstr(",\"say \"\"hi\"\"\","));
}

TEST(ClientCliBenchReport, TextShowsEveryFigure) {
  const std::string text = FormatText(Example());
  for (const char* part :
       {"closed loop, 8 workers over 8 connections", "digits", "127.0.0.1:8001",
        "1000 ok, 3 failed in 2.00 s: 500.0 requests/s, 2000.0 rows/s", "p50 1.250", "p99 3.000",
        "max 9.000", "nearest-rank", "queue 120 us", "compute 300 us", "batch rows 12.50",
        "UNAVAILABLE 2", "DEADLINE_EXCEEDED 1"}) {
    EXPECT_THAT(text, HasSubstr(part));
  }
}

TEST(ClientCliBenchReport, OpenLoopTextShowsTheSchedule) {
  BenchReport r = Example();
  r.mode = "open";
  r.concurrency = 0;
  r.rate = 250;
  r.arrival = "poisson";
  r.connections = 1;
  r.sent_late = 4;
  r.max_send_lag_ms = 2.5;
  r.dropped = 1;
  const std::string text = FormatText(r);
  EXPECT_THAT(text, HasSubstr("open loop, poisson arrivals at 250 requests/s over 1 connection"));
  EXPECT_THAT(text, HasSubstr("4 sent late (> 1 ms; worst 2.50 ms), 1 dropped"));
}

}  // namespace
}  // namespace moe::client::cli
