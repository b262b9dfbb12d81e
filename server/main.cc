// moe-server: serves MoE models over gRPC (KServe v2, moe.v1, health, reflection) with
// continuous batching. Flags are parsed here and handed down as option structs.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "moe/common/status_macros.h"
#include "server/api/bearer_token_auth.h"
#include "server/api/grpc_server.h"
#include "server/api/model_registry.h"
#include "server/api/tls_files.h"
#include "server/command_line.h"
#include "server/common/logging.h"
#include "server/engine/decoder/kv_cache_sizing.h"
#include "server/engine/model_loader.h"
#include "server/engine/moe_backend.h"
#include "server/metrics/metrics_endpoint.h"
#include "server/metrics/server_metrics.h"
#include "server/openmp_wait_policy.h"
#include "server/scheduler/batch_scheduler.h"
#include "server/scheduler/generation_scheduler.h"
#include "server/shutdown_signal.h"
#include "server/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, address, "0.0.0.0:8001",
          "Where to listen for gRPC, HOST:PORT. Port 0 picks a free port (logged at start-up).");
ABSL_FLAG(std::string, model, "",
          "A model to serve, NAME=DIR (or DIR, named after its last path component): a directory "
          "with config.json and safetensors weights (MoEMLP, or a Mixtral / OLMoE / Qwen2-MoE / "
          "Qwen3-MoE checkpoint). Repeat to serve several. Without any, the built-in 'digits' "
          "model is served.");
ABSL_FLAG(std::string, backend, "auto",
          "Compute backend: auto (CUDA when a usable GPU is present, else CPU), cpu, or cuda.");
ABSL_FLAG(int, cuda_device, 0, "CUDA device ordinal used by the cuda backend.");
ABSL_FLAG(int64_t, max_batch_tokens, 256,
          "Most rows (tokens) in one batch; also the most rows one request may carry.");
ABSL_FLAG(int64_t, max_queue_delay_us, 0,
          "How long, in microseconds, queued work may be held back to fill a batch, counted from "
          "the oldest queued request. The hold ends early once as many rows are queued as the "
          "largest of the last few batches. 0 runs whatever is queued at once; for models whose "
          "batches cost about the same at any size (memory-bound experts), a delay of about a "
          "third of a batch's time fills batches under load.");
ABSL_FLAG(int64_t, max_queue, 1024,
          "Most requests waiting per model; past it new requests get RESOURCE_EXHAUSTED.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "On SIGTERM/SIGINT, how long queued and running requests may take to finish before "
          "the rest are failed and the server exits (e.g. 30s, 2m).");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20,
          "Largest gRPC request message accepted, in bytes; a larger one gets "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, metrics_port, 8002,
          "Port of the Prometheus metrics endpoint (HTTP, path /metrics), on the host of "
          "--metrics-address. 0 turns metrics off (no endpoint, nothing collected).");
ABSL_FLAG(std::string, metrics_address, "",
          "IPv4 address the metrics endpoint listens on (e.g. 127.0.0.1, or a pod-internal "
          "interface); empty: the host of --address. The endpoint is plain HTTP without "
          "authentication: bind it where only the scraper reaches it.");
ABSL_FLAG(double, expert_timing_sample_rate, 0.01,
          "Fraction of forward passes whose experts are timed one by one for "
          "moe_expert_compute_seconds_total (0 = never, 1 = every pass; 0.01 = every 100th). "
          "Timed passes run experts one after another and are slower.");
ABSL_FLAG(absl::Duration, metrics_window, absl::Seconds(60),
          "Window of the expert-load gauges (share, imbalance, idle experts, routing entropy).");
ABSL_FLAG(std::string, metrics_expert_series, "per_expert",
          "per_expert: moe_expert_* series per (layer, expert); per_layer: only per-layer "
          "series, for models whose layers x experts would make too many series.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain (leaf first) of the gRPC port: serve gRPC over TLS. Needs "
          "--tls-key.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key (not encrypted) of --tls-cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificate(s): with --tls-cert, every client must present a certificate "
          "signed by one of them (mutual TLS).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File of bearer tokens, one per line ('#' comments and blank lines ignored), read at "
          "start-up: every call must carry metadata 'authorization: Bearer <token>' with one of "
          "them (grpc.health.v1.Health excepted), else UNAUTHENTICATED.");
ABSL_FLAG(absl::Duration, grpc_keepalive_time, absl::Hours(2),
          "The server pings a connection silent for this long (e.g. 60s; inf: never).");
ABSL_FLAG(absl::Duration, grpc_keepalive_timeout, absl::Seconds(20),
          "A connection whose keepalive ping is not answered within this is closed.");
ABSL_FLAG(absl::Duration, grpc_min_ping_interval, absl::Seconds(10),
          "Client pings closer together than this, with no data sent in between, are strikes "
          "(with or without calls in flight).");
ABSL_FLAG(int, grpc_max_ping_strikes, 2,
          "More strikes (see --grpc-min-ping-interval) than this close the connection with "
          "GOAWAY \"too_many_pings\"; 0: never.");
ABSL_FLAG(absl::Duration, grpc_max_connection_age, absl::InfiniteDuration(),
          "Connections older than this are asked to reconnect (GOAWAY), e.g. 30m so that clients "
          "spread over new replicas; inf: never.");
ABSL_FLAG(absl::Duration, grpc_max_connection_age_grace, absl::Seconds(30),
          "After --grpc-max-connection-age, how long calls in flight may take before the "
          "connection is closed.");
ABSL_FLAG(int, grpc_max_concurrent_streams, 100,
          "Calls in flight per connection (HTTP/2 streams); a client's further calls wait in "
          "the client.");
ABSL_FLAG(uint64_t, kv_cache_bytes, uint64_t{1} << 30,
          "Language models: bytes of the KV-cache pool (per model), cut into blocks of "
          "--kv-block-tokens tokens. It bounds how many tokens all running sequences hold.");
ABSL_FLAG(double, kv_cache_memory_fraction, 0.0,
          "Language models: size each model's KV-cache pool as this fraction of the memory "
          "free once the model is loaded (the CUDA device's free memory; on the CPU backend "
          "the host's available memory), instead of --kv-cache-bytes. 0: use --kv-cache-bytes. "
          "At most 0.95.");
ABSL_FLAG(int64_t, kv_block_tokens, 16, "Language models: tokens per KV-cache block.");
ABSL_FLAG(int64_t, max_model_len, 0,
          "Language models: most tokens (prompt plus generated) per sequence; 0 = the model's "
          "context (max_position_embeddings, extended by a linear or YaRN rope_scaling).");
ABSL_FLAG(int64_t, max_running_sequences, 256,
          "Language models: most sequences generating at once (they share every forward pass).");
ABSL_FLAG(std::string, generation_batching, "continuous",
          "Language models: 'continuous' (iteration-level: sequences join and leave at every "
          "step). For comparison only: 'static' (a batch is admitted together and runs as one "
          "[batch, length] tensor, finished sequences padded, until its longest sequence "
          "finishes; all its streams end then) or 'static-early-exit' (the same admission, but "
          "a sequence leaves as soon as it finishes).");
ABSL_FLAG(std::string, log_level, "info",
          "Least severe log level written: debug, info, "
          "warning or error.");

namespace moe::server {
namespace {

constexpr char kSummary[] =
    "moe-server: serves Mixture-of-Experts models over gRPC with continuous batching.\n"
    "\n"
    "  moe-server                                  serve the built-in 'digits' model on :8001\n"
    "  moe-server --model mlp=/models/my-moe-mlp   serve a checkpoint directory\n"
    "\n"
    "APIs: inference.GRPCInferenceService (KServe v2 / Triton clients), moe.v1.MoEService,\n"
    "grpc.health.v1.Health (\"\" and each model name), server reflection.\n"
    "Security: --tls-cert/--tls-key (TLS), --tls-client-ca (mutual TLS), --auth-token-file\n"
    "(bearer tokens; health checks exempt). Metrics are plain HTTP: see --metrics-address.\n"
    "SIGTERM/SIGINT: stop accepting, finish queued work (--drain-timeout), exit 0.";

const std::vector<FlagUsage> kFlagUsage = {
    {"address", "HOST:PORT"},
    {"model", "NAME=DIR"},
    {"backend", "auto|cpu|cuda"},
    {"cuda_device", "N"},
    {"max_batch_tokens", "N"},
    {"max_queue_delay_us", "N"},
    {"max_queue", "N"},
    {"drain_timeout", "DURATION"},
    {"max_message_bytes", "N"},
    {"metrics_port", "PORT"},
    {"metrics_address", "HOST"},
    {"expert_timing_sample_rate", "RATE"},
    {"metrics_window", "DURATION"},
    {"metrics_expert_series", "per_expert|per_layer"},
    {"tls_cert", "FILE"},
    {"tls_key", "FILE"},
    {"tls_client_ca", "FILE"},
    {"auth_token_file", "FILE"},
    {"grpc_keepalive_time", "DURATION"},
    {"grpc_keepalive_timeout", "DURATION"},
    {"grpc_min_ping_interval", "DURATION"},
    {"grpc_max_ping_strikes", "N"},
    {"grpc_max_connection_age", "DURATION"},
    {"grpc_max_connection_age_grace", "DURATION"},
    {"grpc_max_concurrent_streams", "N"},
    {"kv_cache_bytes", "BYTES"},
    {"kv_cache_memory_fraction", "F"},
    {"kv_block_tokens", "N"},
    {"max_model_len", "N"},
    {"max_running_sequences", "N"},
    {"generation_batching", "continuous|static|static-early-exit"},
    {"log_level", "LEVEL"},
};

// The language models' scheduling flags; --max-batch-tokens and --max-queue are shared with
// the tensor scheduler.
absl::StatusOr<engine::LoadedModel> LoadBuiltin(engine::MoEBackend& backend) {
  engine::LoadedModel loaded;
  MOE_ASSIGN_OR_RETURN(loaded.servable, engine::LoadBuiltinModel(backend));
  return loaded;
}

absl::StatusOr<scheduler::GenerationOptions> GenerationOptionsFromFlags(
    const scheduler::SchedulerOptions& tensor) {
  scheduler::GenerationOptions options;
  options.max_batch_tokens = tensor.max_batch_rows;
  options.max_queue_requests = tensor.max_queue_requests;
  options.max_running_sequences = absl::GetFlag(FLAGS_max_running_sequences);
  options.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  options.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  options.kv_block_tokens = absl::GetFlag(FLAGS_kv_block_tokens);
  const std::string batching = absl::GetFlag(FLAGS_generation_batching);
  if (!scheduler::ParseGenerationBatching(batching, &options.batching)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--generation-batching must be 'continuous', 'static' or "
                     "'static-early-exit', got '",
                     batching, "'"));
  }
  if (options.max_running_sequences < 1) {
    return absl::InvalidArgumentError("--max-running-sequences must be at least 1");
  }
  if (options.max_model_len < 0) {
    return absl::InvalidArgumentError("--max-model-len must not be negative (0: the model's)");
  }
  if (options.kv_block_tokens < 1 || options.kv_block_tokens > 1024) {
    return absl::InvalidArgumentError("--kv-block-tokens must be between 1 and 1024");
  }
  if (options.kv_cache_bytes == 0) {
    return absl::InvalidArgumentError("--kv-cache-bytes must be more than 0");
  }
  const double fraction = absl::GetFlag(FLAGS_kv_cache_memory_fraction);
  if (!(fraction >= 0.0 && fraction <= engine::kMaxKvCacheMemoryFraction)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache-memory-fraction must be between 0 and ", engine::kMaxKvCacheMemoryFraction,
        " (0: use --kv-cache-bytes), got ", fraction));
  }
  return options;
}

struct ModelSpec {
  std::string name;
  std::string dir;  // empty for the built-in model
};

absl::StatusOr<ModelSpec> ParseModelSpec(const std::string& text) {
  ModelSpec spec;
  const size_t equals = text.find('=');
  if (equals == std::string::npos) {
    spec.dir = text;
    std::string trimmed = text;
    while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
    spec.name =
        trimmed.substr(trimmed.rfind('/') == std::string::npos ? 0 : trimmed.rfind('/') + 1);
  } else {
    spec.name = text.substr(0, equals);
    spec.dir = text.substr(equals + 1);
  }
  if (spec.dir.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model '", text, "': no directory given (expected NAME=DIR)"));
  }
  if (spec.name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--model '", text, "': empty model name"));
  }
  for (char c : spec.name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return absl::InvalidArgumentError(absl::StrCat(
          "--model '", text, "': model names may hold letters, digits, '-', '_' and '.'"));
    }
  }
  return spec;
}

absl::StatusOr<common::LogLevel> ParseLogLevel(const std::string& text) {
  if (text == "debug") return common::LogLevel::kDebug;
  if (text == "info") return common::LogLevel::kInfo;
  if (text == "warning") return common::LogLevel::kWarning;
  if (text == "error") return common::LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("--log-level '", text, "': expected debug, info, warning or error"));
}

absl::StatusOr<metrics::ExpertSeries> ParseExpertSeries(const std::string& text) {
  if (text == "per_expert") return metrics::ExpertSeries::kPerExpert;
  if (text == "per_layer") return metrics::ExpertSeries::kPerLayer;
  return absl::InvalidArgumentError(
      absl::StrCat("--metrics-expert-series '", text, "': expected per_expert or per_layer"));
}

std::vector<std::string> ModelNames(const std::vector<ModelSpec>& specs) {
  std::vector<std::string> names;
  for (const ModelSpec& spec : specs) names.push_back(spec.name);
  return names;
}

// The host part of HOST:PORT ("0.0.0.0", "[::1]").
std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

// Metrics, when --metrics-port is not 0: the registry and its HTTP endpoint.
struct MetricsSetup {
  std::unique_ptr<metrics::ServerMetrics> metrics;
  std::unique_ptr<metrics::MetricsEndpoint> endpoint;
};

absl::StatusOr<MetricsSetup> StartMetrics(const std::vector<std::string>& model_names,
                                          const scheduler::SchedulerOptions& scheduler_options) {
  MetricsSetup setup;
  const int port = absl::GetFlag(FLAGS_metrics_port);
  if (port == 0) return setup;
  absl::StatusOr<metrics::ExpertSeries> series =
      ParseExpertSeries(absl::GetFlag(FLAGS_metrics_expert_series));
  if (!series.ok()) return series.status();
  const double rate = absl::GetFlag(FLAGS_expert_timing_sample_rate);
  if (!(rate >= 0.0 && rate <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--expert-timing-sample-rate ", rate, " is not between 0 and 1"));
  }
  metrics::ModelMetricsOptions options{
      .max_batch_rows = scheduler_options.max_batch_rows,
      .max_queue_requests = scheduler_options.max_queue_requests,
      .expert_timing_sample_rate = rate,
      .experts = {.series = *series, .window = absl::GetFlag(FLAGS_metrics_window)},
  };
  absl::StatusOr<std::unique_ptr<metrics::ServerMetrics>> metrics =
      metrics::ServerMetrics::Create(model_names, options);
  if (!metrics.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics options: ", metrics.status().message()));
  }
  std::string host = absl::GetFlag(FLAGS_metrics_address);
  if (host.empty()) host = HostOf(absl::GetFlag(FLAGS_address));
  absl::StatusOr<std::unique_ptr<metrics::MetricsEndpoint>> endpoint =
      metrics::MetricsEndpoint::Start(host, port, **metrics);
  if (!endpoint.ok()) return endpoint.status();
  setup.metrics = std::move(*metrics);
  setup.endpoint = std::move(*endpoint);
  return setup;
}

metrics::LoadedModelInfo LoadedInfo(const engine::ModelDescription& d, absl::Duration load_time) {
  return {.architecture = d.architecture,
          .backend = d.backend,
          .device = d.device,
          .dtype = std::string(kernels::DTypeName(d.weight_dtype)),
          .num_moe_layers = d.num_moe_layers,
          .num_experts = d.num_experts,
          .top_k = d.top_k,
          .weight_bytes = d.weight_bytes,
          .load_time = load_time};
}

// What --tls-* and --auth-token-file ask for, read and checked before anything listens.
struct Security {
  std::optional<api::TlsPem> tls;
  std::vector<std::string> auth_tokens;
};

api::TlsFiles TlsFilesFromFlags() {
  return {.cert_file = absl::GetFlag(FLAGS_tls_cert),
          .key_file = absl::GetFlag(FLAGS_tls_key),
          .client_ca_file = absl::GetFlag(FLAGS_tls_client_ca)};
}

// Security flags that do not go together: usage errors (exit 2).
absl::Status CheckSecurityFlags(const api::TlsFiles& files) {
  if (files.cert_file.empty() != files.key_file.empty()) {
    return absl::InvalidArgumentError(files.cert_file.empty()
                                          ? "--tls-key needs --tls-cert (the certificate it is for)"
                                          : "--tls-cert needs --tls-key (its private key)");
  }
  if (!files.client_ca_file.empty() && files.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca needs --tls-cert and --tls-key (client certificates are verified "
        "over TLS)");
  }
  return absl::OkStatus();
}

// Reads and checks the files; one that cannot be read or does not hold what it should stops
// the server (exit 1), like a model that cannot be loaded.
absl::StatusOr<Security> LoadSecurity(const api::TlsFiles& files) {
  Security security;
  if (!files.cert_file.empty()) {
    absl::StatusOr<api::TlsPem> pem = api::LoadTlsFiles(files);
    if (!pem.ok()) return pem.status();
    security.tls = *std::move(pem);
  }
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file); !path.empty()) {
    absl::StatusOr<std::vector<std::string>> tokens = api::ReadTokenFile(path);
    if (!tokens.ok()) return tokens.status();
    security.auth_tokens = *std::move(tokens);
  }
  return security;
}

int Fail(const absl::Status& status, int exit_code) {
  std::fprintf(stderr, "moe-server: %s\n", std::string(status.message()).c_str());
  return exit_code;
}

int Run(int argc, char** argv) {
  EnsurePassiveOpenMPWaitPolicy(argv);
  std::vector<std::string> args(argv, argv + argc);
  NormalizeFlagNames(&args);
  if (WantsHelp(args)) {
    std::printf("%s", UsageText(kSummary, kFlagUsage).c_str());
    return 0;
  }
  const std::vector<std::string> model_texts = ExtractRepeatedFlag(&args, "model");
  std::vector<char*> absl_argv;
  for (std::string& arg : args) absl_argv.push_back(arg.data());
  const std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(absl_argv.size()), absl_argv.data());
  if (positional.size() > 1) {
    return Fail(absl::InvalidArgumentError(
                    absl::StrCat("unexpected argument '", positional[1], "' (see --help)")),
                2);
  }

  absl::StatusOr<common::LogLevel> log_level = ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!log_level.ok()) return Fail(log_level.status(), 2);
  common::SetMinLogLevel(*log_level);

  std::vector<ModelSpec> specs;
  for (const std::string& text : model_texts) {
    absl::StatusOr<ModelSpec> spec = ParseModelSpec(text);
    if (!spec.ok()) return Fail(spec.status(), 2);
    specs.push_back(*spec);
  }
  if (specs.empty()) specs.push_back({engine::kBuiltinModelName, ""});

  absl::StatusOr<engine::BackendChoice> backend_choice =
      engine::ParseBackendChoice(absl::GetFlag(FLAGS_backend));
  if (!backend_choice.ok()) return Fail(backend_choice.status(), 2);

  const scheduler::SchedulerOptions scheduler_options{
      .max_batch_rows = absl::GetFlag(FLAGS_max_batch_tokens),
      .max_queue_delay = absl::Microseconds(absl::GetFlag(FLAGS_max_queue_delay_us)),
      .max_queue_requests = absl::GetFlag(FLAGS_max_queue),
  };
  if (scheduler_options.max_batch_rows < 1 || scheduler_options.max_queue_requests < 1 ||
      scheduler_options.max_queue_delay < absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError("--max-batch-tokens and --max-queue must be at least "
                                           "1, --max-queue-delay-us at least 0"),
                2);
  }
  const absl::Duration drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  if (drain_timeout < absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError("--drain-timeout must not be negative"), 2);
  }
  absl::StatusOr<scheduler::GenerationOptions> generation_options =
      GenerationOptionsFromFlags(scheduler_options);
  if (!generation_options.ok()) return Fail(generation_options.status(), 2);

  const api::GrpcConnectionOptions connection_options{
      .keepalive_time = absl::GetFlag(FLAGS_grpc_keepalive_time),
      .keepalive_timeout = absl::GetFlag(FLAGS_grpc_keepalive_timeout),
      .min_ping_interval = absl::GetFlag(FLAGS_grpc_min_ping_interval),
      .max_ping_strikes = absl::GetFlag(FLAGS_grpc_max_ping_strikes),
      .max_connection_age = absl::GetFlag(FLAGS_grpc_max_connection_age),
      .max_connection_age_grace = absl::GetFlag(FLAGS_grpc_max_connection_age_grace),
      .max_concurrent_streams = absl::GetFlag(FLAGS_grpc_max_concurrent_streams),
  };
  if (absl::Status valid = api::ValidateConnectionOptions(connection_options); !valid.ok()) {
    return Fail(valid, 2);
  }
  const api::TlsFiles tls_files = TlsFilesFromFlags();
  if (absl::Status checked = CheckSecurityFlags(tls_files); !checked.ok()) return Fail(checked, 2);
  absl::StatusOr<Security> security = LoadSecurity(tls_files);
  if (!security.ok()) return Fail(security.status(), 1);

  absl::StatusOr<MetricsSetup> metrics_setup = StartMetrics(ModelNames(specs), scheduler_options);
  if (!metrics_setup.ok()) {
    return Fail(metrics_setup.status(), absl::IsInvalidArgument(metrics_setup.status()) ? 2 : 1);
  }
  metrics::ServerMetrics* const server_metrics = metrics_setup->metrics.get();
  if (metrics_setup->endpoint == nullptr) {
    common::LogInfo("metrics_disabled", {{"metrics", "off"}, {"because", "--metrics-port 0"}});
  } else {
    // Not "address=": scripts read the gRPC address from the first such field.
    common::LogInfo(
        "metrics_listening",
        {{"url", absl::StrCat("http://", metrics_setup->endpoint->address(), "/metrics")}});
  }

  ShutdownSignal shutdown;
  if (absl::Status installed = shutdown.Install(); !installed.ok()) return Fail(installed, 1);

  api::ModelRegistry registry;
  for (const ModelSpec& spec : specs) {
    if (absl::Status declared = registry.Declare(spec.name); !declared.ok()) {
      return Fail(declared, 2);
    }
  }

  // Listen first: liveness answers at once, readiness stays false until every model loads.
  absl::StatusOr<std::unique_ptr<api::GrpcServer>> server =
      api::GrpcServer::Start({.address = absl::GetFlag(FLAGS_address),
                              .max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes),
                              .server_version = MOE_VERSION,
                              .metrics = server_metrics,
                              .tls = security->tls,
                              .auth_tokens = security->auth_tokens,
                              .connection = connection_options},
                             &registry);
  if (!server.ok()) return Fail(server.status(), 1);
  const char* tls_mode = !security->tls.has_value()         ? "off"
                         : security->tls->client_ca.empty() ? "on"
                                                            : "mutual";
  common::LogInfo("listening", {{"address", (*server)->address()},
                                {"ready", "false"},
                                {"tls", tls_mode},
                                {"auth", security->auth_tokens.empty() ? "off" : "bearer"},
                                {"auth_tokens", absl::StrCat(security->auth_tokens.size())}});

  absl::StatusOr<std::unique_ptr<engine::MoEBackend>> backend = engine::CreateBackend(
      {.choice = *backend_choice, .cuda_device = absl::GetFlag(FLAGS_cuda_device)});
  if (!backend.ok()) return Fail(backend.status(), 1);
  if (server_metrics != nullptr) {
    server_metrics->SetDeviceMemoryReader(
        [backend = backend->get()]() -> absl::StatusOr<metrics::DeviceMemory> {
          absl::StatusOr<engine::DeviceMemoryUsage> usage = backend->DeviceMemory();
          if (!usage.ok()) return usage.status();
          return metrics::DeviceMemory{
              .backend = std::string(engine::BackendKindName(backend->kind())),
              .device = backend->device_description(),
              .used_bytes = usage->used_bytes,
              .total_bytes = usage->total_bytes};
        });
  }
  // The reader points at the backend, which goes before the metrics endpoint does.
  const absl::Cleanup forget_backend = [server_metrics] {
    if (server_metrics != nullptr) server_metrics->SetDeviceMemoryReader(nullptr);
  };

  for (const ModelSpec& spec : specs) {
    if (shutdown.received()) break;
    const absl::Time load_start = absl::Now();
    absl::StatusOr<engine::LoadedModel> model =
        spec.dir.empty() ? LoadBuiltin(**backend)
                         : engine::LoadModel(spec.name, spec.dir, **backend);
    if (!model.ok()) {
      return Fail(absl::Status(model.status().code(),
                               absl::StrCat("cannot load model '", spec.name, "' from ",
                                            spec.dir.empty() ? "the built-in data" : spec.dir, ": ",
                                            model.status().message())),
                  1);
    }
    const engine::ModelDescription description = model->servable->description();
    metrics::ModelMetrics* model_metrics = nullptr;
    if (server_metrics != nullptr) {
      model_metrics = server_metrics->ForModel(spec.name);
      absl::Status described =
          model_metrics->SetLoaded(LoadedInfo(description, absl::Now() - load_start));
      if (!described.ok()) return Fail(described, 1);
    }
    absl::StatusOr<std::unique_ptr<scheduler::BatchScheduler>> scheduler =
        scheduler::BatchScheduler::Create(std::move(model->servable), scheduler_options,
                                          model_metrics);
    if (!scheduler.ok()) return Fail(scheduler.status(), 1);
    std::unique_ptr<scheduler::GenerationScheduler> generator;
    std::unique_ptr<tokenizer::Tokenizer> text_tokenizer;
    if (model->decoder != nullptr) {
      absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> loaded_tokenizer =
          tokenizer::LoadTokenizerIfPresent(spec.dir, model->decoder->spec().vocab_size);
      if (!loaded_tokenizer.ok()) {
        return Fail(absl::Status(loaded_tokenizer.status().code(),
                                 absl::StrCat("cannot load model '", spec.name,
                                              "': ", loaded_tokenizer.status().message())),
                    1);
      }
      text_tokenizer = std::move(*loaded_tokenizer);
      if (model_metrics != nullptr) model_metrics->EnableGeneration();
      scheduler::GenerationOptions options = *generation_options;
      options.model_name = spec.name;
      // Sized now, with this model's weights in memory (and any earlier model's pool).
      if (const double fraction = absl::GetFlag(FLAGS_kv_cache_memory_fraction); fraction > 0) {
        absl::StatusOr<uint64_t> bytes = engine::KvCacheBytesForFraction(fraction, **backend);
        if (!bytes.ok()) {
          return Fail(
              absl::Status(bytes.status().code(),
                           absl::StrCat("model '", spec.name, "': --kv-cache-memory-fraction: ",
                                        bytes.status().message())),
              1);
        }
        options.kv_cache_bytes = *bytes;
      }
      absl::StatusOr<std::unique_ptr<scheduler::GenerationScheduler>> created =
          scheduler::GenerationScheduler::Create(std::move(model->decoder), options, model_metrics);
      if (!created.ok()) {
        return Fail(
            absl::Status(created.status().code(),
                         absl::StrCat("model '", spec.name, "': ", created.status().message())),
            1);
      }
      generator = std::move(*created);
      common::LogInfo(
          "generation",
          {{"model", spec.name},
           {"batching", std::string(scheduler::GenerationBatchingName(options.batching))},
           {"max_model_len", absl::StrCat(generator->max_model_len())},
           {"kv_cache_bytes", absl::StrCat(options.kv_cache_bytes)},
           {"kv_cache_blocks", absl::StrCat(generator->kv_total_blocks())},
           {"kv_block_tokens", absl::StrCat(options.kv_block_tokens)},
           {"tokenizer", text_tokenizer != nullptr ? text_tokenizer->source()
                                                   : std::string("none (token ids)")}});
    }
    if (absl::Status loaded = registry.SetLoaded(spec.name, std::move(*scheduler),
                                                 std::move(generator), std::move(text_tokenizer));
        !loaded.ok()) {
      return Fail(loaded, 1);
    }
    common::LogInfo(
        "model ready",
        {{"model", spec.name},
         {"architecture", description.architecture},
         {"source", spec.dir.empty() ? std::string("built-in") : spec.dir},
         {"backend", description.backend},
         {"device", description.device},
         {"tensor_inference", description.tensor_servable ? "yes" : "no"},
         {"generation", registry.GeneratorOf(spec.name).scheduler != nullptr ? "yes" : "no"}});
  }

  if (!shutdown.received()) {
    (*server)->UpdateHealth();
    common::LogInfo(
        "serving",
        {{"address", (*server)->address()},
         {"models", absl::StrJoin(registry.Names(), ",")},
         {"max_batch_tokens", absl::StrCat(scheduler_options.max_batch_rows)},
         {"max_queue", absl::StrCat(scheduler_options.max_queue_requests)},
         {"max_queue_delay_us",
          absl::StrCat(absl::ToInt64Microseconds(scheduler_options.max_queue_delay))},
         {"omp_wait_policy",
          std::getenv("OMP_WAIT_POLICY") != nullptr ? std::getenv("OMP_WAIT_POLICY") : "default"}});
    shutdown.Wait();
  }

  // Drain: refuse new work, finish what was accepted, then stop listening.
  common::LogInfo("draining", {{"signal", shutdown.signal_name()},
                               {"drain_timeout", absl::FormatDuration(drain_timeout)}});
  registry.BeginDrain();
  (*server)->UpdateHealth();
  const absl::Time drain_start = absl::Now();
  const bool clean = registry.FinishDrain(drain_timeout);
  // Every accepted request has been answered; its response only has to be written. gRPC
  // also waits out idle client connections until the deadline, so keep it short.
  (*server)->Shutdown(absl::Now() + absl::Milliseconds(500));
  common::LogInfo("stopped", {{"drained_in", absl::FormatDuration(absl::Now() - drain_start)},
                              {"all_requests_answered", clean ? "true" : "false"}});
  return 0;
}

}  // namespace
}  // namespace moe::server

int main(int argc, char** argv) { return moe::server::Run(argc, argv); }
