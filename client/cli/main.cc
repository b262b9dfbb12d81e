// moe-client: talks to a moe-server (or any KServe v2 gRPC server) from the command line:
// health, model listing and description, inference from .npy / JSON files or random rows, token
// generation from decoder language models, and a load generator (closed or open loop, tensors
// or generation) that reports throughput and latency percentiles.
//
// Flags are defined and read here only; command_line.h decides which subcommand takes which.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "client/cli/arrival_schedule.h"
#include "client/cli/bench_command.h"
#include "client/cli/command_line.h"
#include "client/cli/generate_args.h"
#include "client/cli/generate_command.h"
#include "client/cli/infer_command.h"
#include "client/cli/info_commands.h"
#include "client/cli/input_rows.h"
#include "moe/client/client.h"
#include "moe/common/status_macros.h"

// Global flags.
ABSL_FLAG(std::string, target, "localhost:8001", "The server: HOST:PORT, or any gRPC target URI.");
ABSL_FLAG(bool, tls, false,
          "Connect with TLS, verifying the server against --tls-ca (or the system's roots).");
ABSL_FLAG(std::string, tls_ca, "", "PEM file of the root certificates to verify the server with.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM file of a client certificate to present (mutual TLS; with --tls-key).");
ABSL_FLAG(std::string, tls_key, "", "PEM file of the client certificate's private key.");
ABSL_FLAG(std::string, tls_server_name, "",
          "The name to check in the server's certificate instead of the target's host.");
ABSL_FLAG(std::string, token, "", "Sent as 'authorization: Bearer TOKEN' with every call.");
ABSL_FLAG(std::string, token_file, "",
          "A file holding the bearer token (surrounding whitespace ignored); instead of --token, "
          "which other users can see in the process list.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "Deadline of each call (retries included): 500ms, 30s, 2m, ...");

// Subcommand flags (command_line.h: which subcommand takes which).
ABSL_FLAG(std::string, format, "",
          "Output format: table or json (health, models, describe, infer; default table); text, "
          "json or csv (bench; default text).");
ABSL_FLAG(std::string, input, "",
          "The rows to send: a NumPy .npy file (float32, float64 or float16, little-endian, C "
          "order; [width] or [rows, width]) or a .json file ([[...], [...]] or one row [...]).");
ABSL_FLAG(int64_t, random_rows, 0,
          "Send this many rows of uniform [0, 1) values of the model's width instead of --input.");
ABSL_FLAG(uint64_t, seed, 0,
          "Seed of the random rows (default: a fresh one, printed so that a run can be repeated).");
ABSL_FLAG(bool, show_routing, false,
          "Also print each row's chosen experts and their weights in every MoE layer.");
ABSL_FLAG(int32_t, top, 0,
          "Print the N highest outputs of each row, named by the model's output labels, instead "
          "of every value (classification).");
ABSL_FLAG(bool, raw, true,
          "Send the values as bytes in raw_input_contents (the default; the faster encoding).");
ABSL_FLAG(bool, typed, false,
          "Send the values as typed fp32_contents instead of raw bytes (FP32 only).");
ABSL_FLAG(std::string, wire, "fp32",
          "Encoding of the values on the wire: fp32, fp16 or bf16 (the server computes in fp32).");
ABSL_FLAG(int64_t, priority, 0, "Request priority: 1 is served first, then 2, ...; 0: default.");
ABSL_FLAG(std::string, request_id, "", "The request's id (the server echoes it).");
ABSL_FLAG(absl::Duration, queue_timeout, absl::ZeroDuration(),
          "Give up if the request has not started within this time (the 'timeout' request "
          "parameter; 0: none).");
ABSL_FLAG(int32_t, concurrency, 1,
          "Closed loop: workers, each with one call in flight, sending the next when it is "
          "answered.");
ABSL_FLAG(double, rate, 0,
          "Open loop: send this many requests per second on a fixed schedule, answered or not "
          "(0: closed loop).");
ABSL_FLAG(std::string, arrival, "poisson",
          "Open loop schedule: poisson (random gaps, mean 1/rate) or constant (equal gaps).");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10),
          "How long to measure, after the warm-up (ignored with --requests).");
ABSL_FLAG(int64_t, requests, 0, "Measure this many requests instead of a duration.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1),
          "Load sent before measuring; calls started in it are not counted.");
ABSL_FLAG(int64_t, rows_per_request, 1, "Rows (samples) in each request.");
ABSL_FLAG(absl::Duration, wait_ready, absl::ZeroDuration(),
          "First wait up to this long for the server to be ready (0: do not wait).");
ABSL_FLAG(int32_t, connections, 0,
          "Connections to spread the calls over (default: one per worker in closed loop, 1 in "
          "open loop).");
ABSL_FLAG(int64_t, max_in_flight, 10000,
          "Open loop: calls due while this many are unanswered are dropped (and counted).");
ABSL_FLAG(bool, header, true, "CSV: print the header line (--noheader to append to a file).");
ABSL_FLAG(bool, json, false, "Same as --format json.");
ABSL_FLAG(std::string, model, "", "The model, instead of the MODEL argument.");
// Generation (generate, bench --generate).
ABSL_FLAG(bool, generate, false,
          "bench: generation load (moe.v1 Generate streams) instead of tensor calls.");
ABSL_FLAG(std::string, prompt_ids, "", "The prompt's token ids, comma-separated: 1,306,4658.");
ABSL_FLAG(std::string, max_new_tokens, "",
          "Most tokens to generate: N (generate; default: the server's, 64), or N or MIN:MAX "
          "drawn uniformly per request (bench --generate; default 64).");
ABSL_FLAG(std::string, max_new_tokens_spread, "uniform",
          "bench --generate: how --max-new-tokens MIN:MAX is drawn: uniform, or log-uniform "
          "(mostly short, a long tail, like chat traffic).");
ABSL_FLAG(std::string, prompt_len, "32",
          "bench --generate: prompt length in tokens (random ids), N or MIN:MAX drawn uniformly "
          "per request.");
ABSL_FLAG(int64_t, vocab_size, 0,
          "bench --generate: prompt ids are drawn from [0, N) (default: the model's vocab_size).");
ABSL_FLAG(double, temperature, 0, "Sampling temperature; 0 (default) is greedy decoding.");
ABSL_FLAG(int32_t, top_k, 0, "Sample from the K most likely tokens only (0: all).");
ABSL_FLAG(double, top_p, 0,
          "Nucleus sampling: the smallest set of tokens reaching probability P, in (0, 1] (0 or "
          "1: off).");
ABSL_FLAG(double, repetition_penalty, 0,
          "Penalise tokens already in the prompt or output (> 1 penalises; 0 or 1: off).");
ABSL_FLAG(std::string, stop_ids, "",
          "Token ids that end generation (comma-separated, at most 16; the stop token is part "
          "of the output).");
ABSL_FLAG(bool, ignore_eos, false,
          "Do not stop at the model's end-of-sequence ids (bench --generate: on unless "
          "--noignore-eos, so that output lengths are exact).");
ABSL_FLAG(bool, logprobs, false, "Also print each generated token's log-probability (ID:LOGPROB).");

namespace moe::client::cli {
namespace {

constexpr char kSummary[] =
    "moe-client: a command-line client of moe-server (or any KServe v2 gRPC server).\n"
    "\n"
    "  moe-client [global flags] SUBCOMMAND [flags] [arguments]\n"
    "\n"
    "  moe-client --target 127.0.0.1:8001 health\n"
    "  moe-client models\n"
    "  moe-client describe digits\n"
    "  moe-client infer digits --input images.npy --top 3 --show-routing\n"
    "  moe-client bench digits --concurrency 8 --duration 10s --format json\n"
    "  moe-client bench digits --rate 500 --arrival poisson --duration 30s\n"
    "  moe-client generate mix --prompt-ids 1,306,4658 --max-new-tokens 16\n"
    "  moe-client bench mix --generate --concurrency 8 --max-new-tokens 16:128 --json";

const std::vector<FlagUsage>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagUsage>{
      {"target", "HOST:PORT"}, {"tls", ""},
      {"tls_ca", "FILE"},      {"tls_cert", "FILE"},
      {"tls_key", "FILE"},     {"tls_server_name", "NAME"},
      {"token", "TOKEN"},      {"token_file", "FILE"},
      {"timeout", "DURATION"},
  };
  return *flags;
}

const std::vector<Subcommand>& Subcommands() {
  static const auto* subcommands = new std::vector<Subcommand>{
      {.name = "health",
       .arguments = "[SERVICE]",
       .summary = "Is the server live, ready, and SERVING (grpc.health.v1)?",
       .details = "Asks ServerLive, ServerReady and the grpc.health.v1 Check of SERVICE (\"\": "
                  "the whole server; or a model's name). Exit status 0 when the check answers "
                  "SERVING, 1 otherwise.",
       .min_arguments = 0,
       .max_arguments = 1,
       .flags = {{"format", "table|json"}, {"json", ""}}},
      {.name = "models",
       .summary = "The models served: name, architecture, experts, top-k, backend, ready.",
       .flags = {{"format", "table|json"}, {"json", ""}}},
      {.name = "describe",
       .arguments = "MODEL",
       .summary = "Everything the server says about one model (moe.v1 ModelInfo).",
       .min_arguments = 1,
       .max_arguments = 1,
       .flags = {{"format", "table|json"}, {"json", ""}}},
      {.name = "infer",
       .arguments = "MODEL",
       .summary = "Sends rows from a .npy or .json file (or random ones) and prints the answer.",
       .details = "  moe-client infer digits --input rows.npy --top 3\n"
                  "  moe-client infer digits --random-rows 4 --show-routing --format json\n"
                  "\n"
                  "The input's name and width come from the model's description; the server "
                  "checks the width.",
       .min_arguments = 1,
       .max_arguments = 1,
       .flags = {{"input", "FILE"},
                 {"random_rows", "N"},
                 {"seed", "N"},
                 {"format", "table|json"},
                 {"json", ""},
                 {"top", "N"},
                 {"show_routing", ""},
                 {"raw", ""},
                 {"typed", ""},
                 {"wire", "fp32|fp16|bf16"},
                 {"priority", "N"},
                 {"queue_timeout", "DURATION"},
                 {"request_id", "ID"}}},
      {.name = "generate",
       .arguments = "MODEL",
       .summary = "Generates tokens from a language model, printing them as they arrive.",
       .details =
           "  moe-client generate mix --prompt-ids 1,306,4658 --max-new-tokens 16\n"
           "  moe-client generate mix --prompt-ids 1,2,3 --temperature 0.8 --top-p 0.9 --seed 7 "
           "--logprobs\n"
           "\n"
           "Streams the generated token ids to stdout, separated by spaces and flushed as each "
           "message arrives (ID:LOGPROB with --logprobs), then a newline; then a summary line on "
           "stderr: finish_reason (length or stop), prompt_tokens, completion_tokens, ttft_ms "
           "(time to first token as this client saw it), server_ttft_ms, e2e_ms, "
           "tokens_per_second (completion tokens over e2e) and preemptions. --format json (or "
           "--json) prints one JSON object at the end instead. MODEL may be given as --model. "
           "The call's deadline is --timeout.",
       .min_arguments = 0,
       .max_arguments = 1,
       .flags = {{"model", "MODEL"},
                 {"prompt_ids", "IDS"},
                 {"max_new_tokens", "N"},
                 {"temperature", "T"},
                 {"top_k", "K"},
                 {"top_p", "P"},
                 {"repetition_penalty", "R"},
                 {"seed", "N"},
                 {"stop_ids", "IDS"},
                 {"ignore_eos", ""},
                 {"logprobs", ""},
                 {"format", "text|json"},
                 {"json", ""}}},
      {.name = "bench",
       .arguments = "MODEL",
       .summary = "Load generator: throughput and latency, closed loop or open loop.",
       .details =
           "  moe-client bench digits --concurrency 8 --duration 10s\n"
           "  moe-client bench digits --rate 500 --arrival poisson --duration 30s --format json\n"
           "\n"
           "Closed loop (--concurrency N, the default with N = 1): N workers each keep one call "
           "in flight. Open loop (--rate R): calls go out on a schedule fixed in advance "
           "(asynchronously, so slow answers do not slow it); calls the client sent more than "
           "1 ms late, and calls dropped because --max-in-flight were unanswered, are "
           "reported. Every connection is made before the clock starts; calls started during "
           "--warmup are not counted; no call is retried.\n"
           "\n"
           "Reports requests/s, rows/s, latency min/mean/p50/p90/p95/p99/max in ms "
           "(percentiles are nearest-rank: always a measured value), the means of the server's "
           "queue_us, compute_us and batch_rows response parameters, and errors by gRPC code. "
           "A progress line is shown on stderr when it is a terminal. Exit status 0 when at "
           "least one counted call succeeded.\n"
           "\n"
           "  moe-client bench mix --generate --concurrency 8 --duration 30s --prompt-len 16:256 "
           "--max-new-tokens 16:128 --json\n"
           "\n"
           "--generate: closed-loop generation load on a language model. --concurrency streams "
           "each send a Generate request (a prompt of --prompt-len random token ids below the "
           "model's vocab_size or --vocab-size; --max-new-tokens drawn uniformly from its "
           "range; ignore_eos on, so that output lengths are exact, unless --noignore-eos), "
           "read the whole stream, and repeat; the workload follows from --seed. Reports "
           "requests completed, output tokens/s (tokens received over the measured time), and "
           "client-side percentiles of the time to first token (send to the first token), "
           "inter-token latency (gaps between messages divided by their tokens), time per "
           "output token and end-to-end latency, and errors by gRPC code; --format json (or "
           "--json): one object with output_tokens_per_second, ttft_p50_ms, itl_p99_ms, "
           "e2e_p90_ms, ... Tensor flags (--rate, --rows-per-request, --wire, ...) do not apply.",
       .min_arguments = 0,
       .max_arguments = 1,
       .flags = {{"concurrency", "N"},
                 {"rate", "R"},
                 {"arrival", "poisson|constant"},
                 {"duration", "DURATION"},
                 {"requests", "N"},
                 {"warmup", "DURATION"},
                 {"rows_per_request", "N"},
                 {"connections", "N"},
                 {"max_in_flight", "N"},
                 {"wait_ready", "DURATION"},
                 {"wire", "fp32|fp16|bf16"},
                 {"raw", ""},
                 {"typed", ""},
                 {"priority", "N"},
                 {"seed", "N"},
                 {"format", "text|json|csv"},
                 {"json", ""},
                 {"header", ""},
                 {"model", "MODEL"},
                 {"generate", ""},
                 {"prompt_len", "N|MIN:MAX"},
                 {"max_new_tokens", "N|MIN:MAX"},
                 {"max_new_tokens_spread", "uniform|log-uniform"},
                 {"vocab_size", "N"},
                 {"temperature", "T"},
                 {"top_k", "K"},
                 {"top_p", "P"},
                 {"repetition_penalty", "R"},
                 {"stop_ids", "IDS"},
                 {"ignore_eos", ""},
                 {"logprobs", ""}}},
  };
  return *subcommands;
}

absl::StatusOr<ConnectOptions> ConnectOptionsFromFlags(const CommandLine& line) {
  ConnectOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  if (options.target.empty()) return UsageError("--target must not be empty");
  options.tls = absl::GetFlag(FLAGS_tls);
  options.tls_root_certs_file = absl::GetFlag(FLAGS_tls_ca);
  options.tls_client_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_client_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  const bool tls_files = !options.tls_root_certs_file.empty() ||
                         !options.tls_client_cert_file.empty() ||
                         !options.tls_client_key_file.empty() || !options.tls_server_name.empty();
  if (tls_files && !options.tls) {
    return UsageError("--tls-ca, --tls-cert, --tls-key and --tls-server-name need --tls");
  }
  if (options.tls_client_cert_file.empty() != options.tls_client_key_file.empty()) {
    return UsageError("--tls-cert and --tls-key go together (mutual TLS)");
  }
  const std::string token_file = absl::GetFlag(FLAGS_token_file);
  if (!token_file.empty() && line.flags_given.count("token") > 0) {
    return UsageError("give --token or --token-file, not both");
  }
  options.bearer_token = absl::GetFlag(FLAGS_token);
  if (!token_file.empty()) {
    absl::StatusOr<std::string> token = ReadWholeFile(token_file);
    if (!token.ok()) return UsageError(absl::StrCat("--token-file: ", token.status().message()));
    options.bearer_token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.bearer_token.empty()) {
      return UsageError(absl::StrCat("--token-file: ", token_file, " is empty"));
    }
  }
  options.timeout = absl::GetFlag(FLAGS_timeout);
  if (options.timeout <= absl::ZeroDuration()) return UsageError("--timeout must be positive");
  return options;
}

absl::StatusOr<std::string> FormatFlag(const std::vector<std::string>& allowed) {
  std::string format = absl::GetFlag(FLAGS_format);
  if (absl::GetFlag(FLAGS_json)) {
    if (!format.empty() && format != "json") {
      return UsageError(absl::StrCat("--json and --format ", format, " contradict each other"));
    }
    format = "json";
  }
  if (format.empty()) return allowed.front();
  for (const std::string& name : allowed) {
    if (format == name) return format;
  }
  return UsageError(
      absl::StrCat("--format '", format, "': expected one of ", absl::StrJoin(allowed, ", ")));
}

// --raw / --typed / --wire.
absl::Status ReadEncoding(const CommandLine& line, WireType* wire, bool* raw) {
  absl::StatusOr<WireType> parsed = ParseWireType(absl::GetFlag(FLAGS_wire));
  if (!parsed.ok()) return UsageError(parsed.status().message());
  *wire = *parsed;
  const bool typed = absl::GetFlag(FLAGS_typed);
  if (typed && line.flags_given.count("raw") > 0 && absl::GetFlag(FLAGS_raw)) {
    return UsageError("give --raw or --typed, not both");
  }
  *raw = absl::GetFlag(FLAGS_raw) && !typed;
  if (!*raw && *wire != WireType::kFp32) {
    return UsageError(
        "--typed sends fp32 only (the protocol has no typed fp16 or bf16): "
        "use --raw with --wire fp16 / bf16");
  }
  return absl::OkStatus();
}

uint64_t SeedFlag(const CommandLine& line) {
  if (line.flags_given.count("seed") > 0) return absl::GetFlag(FLAGS_seed);
  return std::random_device()() | (static_cast<uint64_t>(std::random_device()()) << 32);
}

std::optional<int64_t> PriorityFlag() {
  const int64_t priority = absl::GetFlag(FLAGS_priority);
  return priority == 0 ? std::nullopt : std::optional<int64_t>(priority);
}

// The MODEL argument, or --model; a usage error when neither or two different ones are given.
absl::StatusOr<std::string> ModelArgument(const CommandLine& line) {
  const std::string flag = absl::GetFlag(FLAGS_model);
  const std::string argument = line.arguments.empty() ? "" : line.arguments[0];
  const std::string& name = line.subcommand->name;
  if (!flag.empty() && !argument.empty() && flag != argument) {
    return UsageError(
        absl::StrCat(name, ": MODEL '", argument, "' and --model '", flag, "' differ"));
  }
  if (flag.empty() && argument.empty()) {
    return UsageError(absl::StrCat(name, ": missing MODEL (an argument or --model; ", "moe-client ",
                                   name, " --help)"));
  }
  return argument.empty() ? flag : argument;
}

bool Given(const CommandLine& line, const char* flag) { return line.flags_given.count(flag) > 0; }

// --temperature, --top-k, --top-p, --repetition-penalty, --stop-ids, --ignore-eos, --logprobs;
// a usage error for values the server would refuse whatever the model.
absl::StatusOr<GenerateOptions> SamplingFromFlags(const CommandLine& line) {
  GenerateOptions options;
  const double temperature = absl::GetFlag(FLAGS_temperature);
  if (!(temperature >= 0) || std::isinf(temperature)) {
    return UsageError("--temperature must be a number >= 0 (0: greedy)");
  }
  options.temperature = static_cast<float>(temperature);
  options.top_k = absl::GetFlag(FLAGS_top_k);
  if (options.top_k < 0) return UsageError("--top-k must not be negative (0: all tokens)");
  const double top_p = absl::GetFlag(FLAGS_top_p);
  if (!(top_p >= 0 && top_p <= 1)) return UsageError("--top-p must be in [0, 1] (0 or 1: off)");
  options.top_p = static_cast<float>(top_p);
  const double penalty = absl::GetFlag(FLAGS_repetition_penalty);
  if (!(penalty >= 0) || std::isinf(penalty)) {
    return UsageError("--repetition-penalty must be a number >= 0 (0 or 1: off)");
  }
  options.repetition_penalty = static_cast<float>(penalty);
  absl::StatusOr<std::vector<int32_t>> stop =
      ParseTokenIds(absl::GetFlag(FLAGS_stop_ids), "stop-ids");
  if (!stop.ok()) return UsageError(stop.status().message());
  if (stop->size() > 16) return UsageError("--stop-ids: at most 16 ids");
  options.stop_token_ids = *std::move(stop);
  options.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  options.logprobs = absl::GetFlag(FLAGS_logprobs);
  (void)line;
  return options;
}

absl::StatusOr<GenerateCommand> GenerateCommandFromFlags(const CommandLine& line) {
  GenerateCommand command;
  MOE_ASSIGN_OR_RETURN(command.model, ModelArgument(line));
  absl::StatusOr<std::vector<int32_t>> prompt =
      ParseTokenIds(absl::GetFlag(FLAGS_prompt_ids), "prompt-ids");
  if (!prompt.ok()) return UsageError(prompt.status().message());
  if (prompt->empty()) return UsageError("generate: --prompt-ids is missing (e.g. 1,306,4658)");
  command.prompt_token_ids = *std::move(prompt);
  MOE_ASSIGN_OR_RETURN(command.options, SamplingFromFlags(line));
  if (const std::string text = absl::GetFlag(FLAGS_max_new_tokens); !text.empty()) {
    absl::StatusOr<IntRange> max_new = ParseIntRange(text, "max-new-tokens");
    if (!max_new.ok()) return UsageError(max_new.status().message());
    if (!max_new->fixed() || max_new->max > (int64_t{1} << 30)) {
      return UsageError(absl::StrCat("generate: --max-new-tokens '", text,
                                     "': expected one number (ranges are for bench --generate)"));
    }
    command.options.max_new_tokens = static_cast<int32_t>(max_new->min);
  }
  if (Given(line, "seed")) command.options.seed = absl::GetFlag(FLAGS_seed);
  MOE_ASSIGN_OR_RETURN(command.format, FormatFlag({"text", "json"}));
  return command;
}

// Flags of bench with tensors only, and with --generate only.
constexpr const char* kTensorBenchFlags[] = {"rate",          "arrival",  "rows_per_request",
                                             "wire",          "raw",      "typed",
                                             "max_in_flight", "priority", "header"};
constexpr const char* kGenerateBenchFlags[] = {
    "prompt_len", "max_new_tokens", "vocab_size",           "temperature",
    "top_k",      "top_p",          "repetition_penalty",   "stop_ids",
    "ignore_eos", "logprobs",       "max_new_tokens_spread"};

absl::StatusOr<GenerateBenchCommand> GenerateBenchCommandFromFlags(const CommandLine& line) {
  for (const char* flag : kTensorBenchFlags) {
    if (Given(line, flag)) {
      return UsageError(absl::StrCat("bench --generate: --",
                                     absl::StrReplaceAll(flag, {{"_", "-"}}),
                                     " is for tensor models (bench without --generate)"));
    }
  }
  GenerateBenchCommand command;
  GenerateBenchOptions& options = command.options;
  MOE_ASSIGN_OR_RETURN(options.model, ModelArgument(line));
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.duration = absl::GetFlag(FLAGS_duration);
  options.requests = absl::GetFlag(FLAGS_requests);
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  if (Given(line, "vocab_size") && options.vocab_size < 1) {
    return UsageError("--vocab-size must be at least 1");
  }
  absl::StatusOr<IntRange> prompt_len =
      ParseIntRange(absl::GetFlag(FLAGS_prompt_len), "prompt-len");
  if (!prompt_len.ok()) return UsageError(prompt_len.status().message());
  options.prompt_len = *prompt_len;
  const std::string max_new_text = absl::GetFlag(FLAGS_max_new_tokens);
  absl::StatusOr<IntRange> max_new =
      ParseIntRange(max_new_text.empty() ? "64" : max_new_text, "max-new-tokens");
  if (!max_new.ok()) return UsageError(max_new.status().message());
  options.max_new_tokens = *max_new;
  absl::StatusOr<Spread> spread =
      ParseSpread(absl::GetFlag(FLAGS_max_new_tokens_spread), "max-new-tokens-spread");
  if (!spread.ok()) return UsageError(spread.status().message());
  options.max_new_tokens.spread = *spread;
  MOE_ASSIGN_OR_RETURN(options.generate, SamplingFromFlags(line));
  options.generate.ignore_eos = Given(line, "ignore_eos") ? absl::GetFlag(FLAGS_ignore_eos) : true;
  options.seed = SeedFlag(line);
  command.connections = absl::GetFlag(FLAGS_connections);
  command.wait_ready = absl::GetFlag(FLAGS_wait_ready);
  absl::StatusOr<std::string> format = FormatFlag({"text", "json", "csv"});
  if (!format.ok()) return format.status();
  if (*format == "csv")
    return UsageError("bench --generate: --format csv is not supported; use json");
  command.format = *format;
  return command;
}

absl::StatusOr<InferCommand> InferCommandFromFlags(const CommandLine& line) {
  InferCommand command;
  command.model = line.arguments[0];
  command.input_file = absl::GetFlag(FLAGS_input);
  command.random_rows = absl::GetFlag(FLAGS_random_rows);
  if (command.random_rows < 0) return UsageError("--random-rows must not be negative");
  command.seed = SeedFlag(line);
  absl::Status encoding = ReadEncoding(line, &command.wire, &command.raw);
  if (!encoding.ok()) return encoding;
  if (absl::GetFlag(FLAGS_priority) < 0) return UsageError("--priority must not be negative");
  command.priority = PriorityFlag();
  if (const absl::Duration t = absl::GetFlag(FLAGS_queue_timeout); t != absl::ZeroDuration()) {
    if (t < absl::ZeroDuration()) return UsageError("--queue-timeout must not be negative");
    command.queue_timeout = t;
  }
  command.request_id = absl::GetFlag(FLAGS_request_id);
  absl::StatusOr<std::string> format = FormatFlag({"table", "json"});
  if (!format.ok()) return format.status();
  command.display.format = *format;
  command.display.top = absl::GetFlag(FLAGS_top);
  if (command.display.top < 0) return UsageError("--top must not be negative");
  command.display.show_routing = absl::GetFlag(FLAGS_show_routing);
  return command;
}

absl::StatusOr<BenchCommand> BenchCommandFromFlags(const CommandLine& line) {
  for (const char* flag : kGenerateBenchFlags) {
    if (Given(line, flag)) {
      return UsageError(
          absl::StrCat("bench: --", absl::StrReplaceAll(flag, {{"_", "-"}}), " needs --generate"));
    }
  }
  BenchCommand command;
  BenchOptions& options = command.options;
  MOE_ASSIGN_OR_RETURN(options.model, ModelArgument(line));
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.rate = absl::GetFlag(FLAGS_rate);
  if (line.flags_given.count("rate") > 0 && line.flags_given.count("concurrency") > 0) {
    return UsageError("bench: give --concurrency (closed loop) or --rate (open loop), not both");
  }
  if (line.flags_given.count("rate") > 0 && !(options.rate > 0)) {
    return UsageError("bench: --rate must be positive");
  }
  absl::StatusOr<Arrival> arrival = ParseArrival(absl::GetFlag(FLAGS_arrival));
  if (!arrival.ok()) return UsageError(arrival.status().message());
  options.arrival = *arrival;
  options.duration = absl::GetFlag(FLAGS_duration);
  options.requests = absl::GetFlag(FLAGS_requests);
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.rows_per_request = absl::GetFlag(FLAGS_rows_per_request);
  absl::Status encoding = ReadEncoding(line, &options.wire, &options.raw);
  if (!encoding.ok()) return encoding;
  if (absl::GetFlag(FLAGS_priority) < 0) return UsageError("--priority must not be negative");
  options.priority = PriorityFlag();
  options.seed = SeedFlag(line);
  options.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  command.connections = absl::GetFlag(FLAGS_connections);
  command.wait_ready = absl::GetFlag(FLAGS_wait_ready);
  absl::StatusOr<std::string> format = FormatFlag({"text", "json", "csv"});
  if (!format.ok()) return format.status();
  command.format = *format;
  command.csv_header = absl::GetFlag(FLAGS_header);
  command.progress = isatty(STDERR_FILENO) == 1;
  return command;
}

// Prints `status` as main's caller sees it and returns the exit status.
int Fail(const absl::Status& status, const std::string& target) {
  if (IsUsageError(status)) {
    std::cerr << "moe-client: " << status.message() << "\n";
    return kExitUsage;
  }
  std::cerr << "moe-client: " << target << ": " << absl::StatusCodeToString(status.code()) << ": "
            << status.message() << "\n";
  return kExitFailure;
}

int Run(const CommandLine& line) {
  const std::string& name = line.subcommand->name;
  const std::string target = absl::GetFlag(FLAGS_target);
  absl::StatusOr<ConnectOptions> connect = ConnectOptionsFromFlags(line);
  if (!connect.ok()) return Fail(connect.status(), target);

  if (name == "bench" && absl::GetFlag(FLAGS_generate)) {
    absl::StatusOr<GenerateBenchCommand> command = GenerateBenchCommandFromFlags(line);
    if (!command.ok()) return Fail(command.status(), target);
    absl::StatusOr<bool> any_ok = RunGenerateBenchCommand(*connect, *std::move(command), std::cout);
    if (!any_ok.ok()) return Fail(any_ok.status(), target);
    if (!*any_ok) {
      std::cerr << "moe-client: bench --generate: no counted request completed\n";
      return kExitFailure;
    }
    return kExitOk;
  }
  if (name == "bench") {
    absl::StatusOr<BenchCommand> command = BenchCommandFromFlags(line);
    if (!command.ok()) return Fail(command.status(), target);
    absl::StatusOr<bool> any_ok = RunBenchCommand(*connect, *std::move(command), std::cout);
    if (!any_ok.ok()) return Fail(any_ok.status(), target);
    if (!*any_ok) {
      std::cerr << "moe-client: bench: no counted call succeeded\n";
      return kExitFailure;
    }
    return kExitOk;
  }

  std::optional<InferCommand> infer;
  std::optional<GenerateCommand> generate;
  std::string format;
  if (name == "generate") {
    absl::StatusOr<GenerateCommand> command = GenerateCommandFromFlags(line);
    if (!command.ok()) return Fail(command.status(), target);
    generate = *std::move(command);
  } else if (name == "infer") {
    absl::StatusOr<InferCommand> command = InferCommandFromFlags(line);
    if (!command.ok()) return Fail(command.status(), target);
    infer = *std::move(command);
  } else {
    absl::StatusOr<std::string> parsed = FormatFlag({"table", "json"});
    if (!parsed.ok()) return Fail(parsed.status(), target);
    format = *parsed;
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(*connect);
  if (!client.ok()) {
    // Connect makes no call: its INVALID_ARGUMENT is about the flags (an unreadable TLS file).
    return Fail(client.status().code() == absl::StatusCode::kInvalidArgument
                    ? UsageError(client.status().message())
                    : client.status(),
                target);
  }
  absl::Status status;
  if (name == "health") {
    const std::string service = line.arguments.empty() ? "" : line.arguments[0];
    bool serving = false;
    status = RunHealth(**client, target, service, format, std::cout, &serving);
    if (status.ok() && !serving) {
      std::cerr << "moe-client: " << target << ": health check of \"" << service
                << "\" is not SERVING\n";
      return kExitFailure;
    }
  } else if (name == "models") {
    status = RunModels(**client, format, std::cout);
  } else if (name == "describe") {
    status = RunDescribe(**client, line.arguments[0], format, std::cout);
  } else if (name == "infer") {
    status = RunInfer(**client, *std::move(infer), std::cout);
  } else if (name == "generate") {
    status = RunGenerate(**client, *generate, std::cout, std::cerr);
  }
  return status.ok() ? kExitOk : Fail(status, target);
}

}  // namespace
}  // namespace moe::client::cli

int main(int argc, char** argv) {
  using namespace moe::client::cli;
  absl::StatusOr<CommandLine> line = ParseCommandLine(argc, argv, GlobalFlags(), Subcommands());
  if (!line.ok()) {
    std::cerr << "moe-client: " << line.status().message() << "\n";
    return kExitUsage;
  }
  if (line->help) {
    std::cout << (line->subcommand != nullptr
                      ? SubcommandUsage(*line->subcommand, GlobalFlags())
                      : ProgramUsage(kSummary, GlobalFlags(), Subcommands()));
    return kExitOk;
  }
  if (line->subcommand == nullptr) {
    std::cerr << "moe-client: no subcommand given\n\n"
              << ProgramUsage(kSummary, GlobalFlags(), Subcommands());
    return kExitUsage;
  }
  return Run(*line);
}
