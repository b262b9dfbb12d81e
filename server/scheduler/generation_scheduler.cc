#include "server/scheduler/generation_scheduler.h"

#include <algorithm>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/logging.h"
#include "server/scheduler/step_planner.h"

namespace moe::scheduler {

struct GenerationScheduler::Sequence {
  Sequence(SequenceId id_in, std::unique_ptr<GenerationRequest> request_in, engine::KvCache* cache)
      : id(id_in),
        request(std::move(request_in)),
        kv(cache),
        sampler(request->sampling),
        tokens(request->prompt) {}

  const SequenceId id;
  const std::unique_ptr<GenerationRequest> request;
  engine::KvSequence kv;
  engine::TokenSampler sampler;
  std::vector<int32_t> tokens;  // prompt + generated; those past kv.length() are pending
  int64_t generated = 0;
  int64_t preemptions = 0;
  // Static batching: why it finished, while it waits (a padding row) for its batch to end.
  FinishReason done = FinishReason::kNone;
  absl::Time first_token_time = absl::InfinitePast();
  absl::Time last_token_time = absl::InfinitePast();
};

bool ParseGenerationBatching(std::string_view text, GenerationBatching* batching) {
  for (GenerationBatching candidate : {GenerationBatching::kContinuous, GenerationBatching::kStatic,
                                       GenerationBatching::kStaticEarlyExit}) {
    if (text == GenerationBatchingName(candidate)) {
      *batching = candidate;
      return true;
    }
  }
  return false;
}

std::string_view GenerationBatchingName(GenerationBatching batching) {
  switch (batching) {
    case GenerationBatching::kContinuous:
      return "continuous";
    case GenerationBatching::kStatic:
      return "static";
    case GenerationBatching::kStaticEarlyExit:
      return "static-early-exit";
  }
  return "unknown";
}

namespace {

absl::Status ValidateOptions(const GenerationOptions& options) {
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch tokens must be at least 1, got ", options.max_batch_tokens));
  }
  if (options.max_running_sequences < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max running sequences must be at least 1, got ",
                                                   options.max_running_sequences));
  }
  if (options.max_queue_requests < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max queue must be at least 1, got ", options.max_queue_requests));
  }
  if (options.max_model_len < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max model length must not be negative, got ", options.max_model_len));
  }
  if (options.kv_block_tokens < 1 || options.kv_block_tokens > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV block size must be 1 to 1024 tokens, got ", options.kv_block_tokens));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GenerationScheduler>> GenerationScheduler::Create(
    std::unique_ptr<engine::DecoderModel> model, const GenerationOptions& options,
    metrics::ModelMetrics* metrics) {
  if (model == nullptr) return absl::InvalidArgumentError("generation scheduler needs a model");
  if (absl::Status status = ValidateOptions(options); !status.ok()) return status;
  const int64_t context = model->spec().max_position_embeddings;
  const int64_t max_model_len =
      options.max_model_len == 0 ? context : std::min(options.max_model_len, context);
  engine::KvCacheShape shape = model->kv_shape();
  shape.block_tokens = options.kv_block_tokens;
  absl::StatusOr<std::unique_ptr<engine::KvCache>> cache =
      engine::KvCache::Create(shape, options.kv_cache_bytes, model->kv_storage());
  if (!cache.ok()) return cache.status();
  if (absl::Status status = model->PrepareKvCache(**cache); !status.ok()) return status;
  return std::unique_ptr<GenerationScheduler>(new GenerationScheduler(
      std::move(model), std::move(*cache), options, max_model_len, metrics));
}

GenerationScheduler::GenerationScheduler(std::unique_ptr<engine::DecoderModel> model,
                                         std::unique_ptr<engine::KvCache> cache,
                                         const GenerationOptions& options, int64_t max_model_len,
                                         metrics::ModelMetrics* metrics)
    : model_(std::move(model)),
      cache_(std::move(cache)),
      options_(options),
      max_model_len_(max_model_len),
      kv_total_blocks_(cache_->total_blocks()),
      metrics_(metrics) {
  const engine::DecoderSpec& spec = model_->spec();
  const auto expert_cells = static_cast<size_t>(spec.num_moe_layers * spec.num_experts);
  expert_tokens_.assign(expert_cells, 0);
  expert_seconds_.assign(expert_cells, 0.0);
  layer_seconds_.assign(static_cast<size_t>(spec.num_moe_layers), 0.0);
  entropy_sum_.assign(static_cast<size_t>(spec.num_moe_layers), 0.0);
  {
    absl::MutexLock lock(&mu_);
    kv_free_blocks_ = cache_->free_blocks();
    PublishGauges();
  }
  thread_ = std::thread([this] { Loop(); });
}

GenerationScheduler::~GenerationScheduler() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    aborting_ = true;
  }
  thread_.join();
}

absl::StatusOr<SequenceId> GenerationScheduler::Submit(std::unique_ptr<GenerationRequest> request) {
  const int64_t prompt = static_cast<int64_t>(request->prompt.size());
  if (prompt < 1 || request->max_new_tokens < 1) {
    return absl::InvalidArgumentError("a sequence needs a prompt and at least one new token");
  }
  // Compared before adding: an in-process caller's max_new_tokens may be anything up to INT64_MAX.
  if (request->max_new_tokens > max_model_len_ - prompt) {
    const double total = static_cast<double>(prompt) + static_cast<double>(request->max_new_tokens);
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", prompt, " tokens) plus max_new_tokens (", request->max_new_tokens,
                     ") is ", total, " tokens, beyond this model's maximum of ", max_model_len_));
  }
  const int64_t total = prompt + request->max_new_tokens;
  const int64_t blocks = BlocksFor(total, cache_->block_tokens());
  if (blocks > kv_total_blocks_) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt plus max_new_tokens (", total, " tokens) needs ", blocks,
                     " KV-cache blocks but the whole cache holds ", kv_total_blocks_,
                     " (raise --kv-cache-bytes or ask for fewer tokens)"));
  }
  absl::MutexLock lock(&mu_);
  if (draining_ || stopping_) {
    return absl::UnavailableError("the server is shutting down and accepts no new requests");
  }
  if (static_cast<int64_t>(waiting_.size()) >= options_.max_queue_requests) {
    ++stats_.rejected_full;
    return absl::ResourceExhaustedError(absl::StrCat("generation queue full (",
                                                     options_.max_queue_requests,
                                                     " sequences waiting); retry later"));
  }
  const SequenceId id = next_id_++;
  waiting_.push_back(std::make_unique<Sequence>(id, std::move(request), cache_.get()));
  PublishGauges();
  return id;
}

void GenerationScheduler::Cancel(SequenceId id) {
  std::unique_ptr<Sequence> cancelled;
  {
    absl::MutexLock lock(&mu_);
    auto waiting =
        std::find_if(waiting_.begin(), waiting_.end(), [id](const auto& s) { return s->id == id; });
    if (waiting != waiting_.end()) {
      cancelled = std::move(*waiting);
      waiting_.erase(waiting);
      ++stats_.cancelled;
      ++finishing_;
      PublishGauges();
    } else if (std::any_of(running_.begin(), running_.end(),
                           [id](const auto& s) { return s->id == id; })) {
      cancel_running_.insert(id);
    }
  }
  if (cancelled != nullptr) {
    Finish(std::move(cancelled), absl::CancelledError("generation cancelled by the client"),
           FinishReason::kNone);
    absl::MutexLock lock(&mu_);
    --finishing_;
  }
}

void GenerationScheduler::BeginDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool GenerationScheduler::FinishDrain(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return waiting_.empty() && running_.empty() && !step_running_ && finishing_ == 0;
  };
  if (mu_.AwaitWithTimeout(absl::Condition(&idle), timeout)) return true;
  aborting_ = true;
  mu_.Await(absl::Condition(&idle));
  return false;
}

GenerationStats GenerationScheduler::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

int64_t GenerationScheduler::waiting_sequences() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(waiting_.size());
}

int64_t GenerationScheduler::running_sequences() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(running_.size());
}

int64_t GenerationScheduler::kv_free_blocks() const {
  absl::MutexLock lock(&mu_);
  return kv_free_blocks_;
}

bool GenerationScheduler::WorkReady() const {
  return !waiting_.empty() || !running_.empty() || stopping_ || aborting_;
}

void GenerationScheduler::PublishGauges() {
  if (metrics_ == nullptr) return;
  metrics_->SetQueued(static_cast<int64_t>(waiting_.size()));
  metrics_->SetRunning(static_cast<int64_t>(running_.size()));
  metrics_->SetKvCacheBlocks(kv_total_blocks_ - kv_free_blocks_, kv_total_blocks_);
}

void GenerationScheduler::Loop() {
  std::vector<Sequence*> step;
  std::vector<int64_t> step_tokens;
  std::vector<Ending> ended;
  while (true) {
    const bool go_on = PlanNextStep(&step, &step_tokens, &ended);
    for (Ending& ending : ended) Finish(std::move(ending.sequence), ending.status, ending.reason);
    if (!ended.empty()) {
      absl::MutexLock lock(&mu_);
      finishing_ -= static_cast<int64_t>(ended.size());
    }
    ended.clear();
    if (!go_on) break;
    if (!step.empty()) RunStep(step, step_tokens);
  }
  AbortAll();
}

bool GenerationScheduler::PlanNextStep(std::vector<Sequence*>* step,
                                       std::vector<int64_t>* step_tokens,
                                       std::vector<Ending>* ended) {
  step->clear();
  step_tokens->clear();
  absl::MutexLock lock(&mu_);
  step_running_ = false;
  mu_.Await(absl::Condition(this, &GenerationScheduler::WorkReady));
  if (aborting_) return false;
  if (stopping_ && waiting_.empty() && running_.empty()) return false;

  // Cancelled running sequences leave before planning, their blocks freed for it.
  if (!cancel_running_.empty()) {
    for (auto it = running_.begin(); it != running_.end();) {
      if (cancel_running_.contains((*it)->id)) {
        (*it)->kv.Release();
        ended->push_back({std::move(*it),
                          absl::CancelledError("generation cancelled by the client"),
                          FinishReason::kNone});
        it = running_.erase(it);
        ++stats_.cancelled;
      } else {
        ++it;
      }
    }
    cancel_running_.clear();
    // A static batch left with padding rows only (its unfinished sequences were all cancelled)
    // ends now, not after one more step of padding.
    if (options_.batching == GenerationBatching::kStatic && !running_.empty() &&
        std::all_of(running_.begin(), running_.end(),
                    [](const auto& sequence) { return sequence->done != FinishReason::kNone; })) {
      for (auto& sequence : running_) {
        sequence->kv.Release();
        const FinishReason reason = sequence->done;
        ended->push_back({std::move(sequence), absl::OkStatus(), reason});
        ++stats_.completed;
      }
      running_.clear();
    }
  }

  StepPlanInput input;
  input.free_blocks = cache_->free_blocks();
  input.block_tokens = cache_->block_tokens();
  input.max_batch_tokens = options_.max_batch_tokens;
  input.max_running = options_.max_running_sequences;
  input.admit = options_.batching == GenerationBatching::kContinuous || running_.empty();
  for (const auto& sequence : running_) {
    input.running.push_back({sequence->kv.length(), static_cast<int64_t>(sequence->tokens.size()),
                             sequence->kv.num_blocks()});
  }
  // Only the head of the queue can join in one step.
  const size_t candidates =
      std::min(waiting_.size(), static_cast<size_t>(options_.max_running_sequences));
  for (size_t i = 0; i < candidates; ++i) {
    input.waiting.push_back({0, static_cast<int64_t>(waiting_[i]->tokens.size()), 0});
  }
  const StepPlan plan = PlanStep(input);

  std::vector<Sequence*> running_at(running_.size());
  for (size_t i = 0; i < running_.size(); ++i) running_at[i] = running_[i].get();
  std::vector<Sequence*> waiting_at(candidates);
  for (size_t i = 0; i < candidates; ++i) waiting_at[i] = waiting_[i].get();
  for (const PlannedChunk& chunk : plan.chunks) {
    step->push_back(chunk.waiting ? waiting_at[chunk.index] : running_at[chunk.index]);
    step_tokens->push_back(chunk.tokens);
  }

  // Admissions: the head of the queue, in order, joins the running set.
  std::vector<std::unique_ptr<Sequence>> admitted;
  for (size_t index : plan.admitted) admitted.push_back(std::move(waiting_[index]));
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), nullptr), waiting_.end());
  // Preemptions (newest first): blocks freed, back to the front of the queue, oldest first.
  for (size_t index : plan.preempted) {
    std::unique_ptr<Sequence> victim = std::move(running_[index]);
    victim->kv.Release();
    if (victim->done != FinishReason::kNone) {
      // A padding row of a static batch: its sequence has finished, nothing to recompute.
      const FinishReason reason = victim->done;
      ++stats_.completed;
      ended->push_back({std::move(victim), absl::OkStatus(), reason});
      continue;
    }
    ++victim->preemptions;
    ++stats_.preemptions;
    if (metrics_ != nullptr) metrics_->RecordPreemption();
    waiting_.push_front(std::move(victim));
  }
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
  const absl::Time now = absl::Now();
  for (auto& sequence : admitted) {
    // The queue wait the autoscaler reads: accepted to first admission (a preempted sequence's
    // second wait is counted in its preemptions, not here).
    if (metrics_ != nullptr && sequence->preemptions == 0) {
      metrics_->RecordQueueWait(now - sequence->request->arrival);
    }
    running_.push_back(std::move(sequence));
  }

  if (plan.chunks.empty() && !running_.empty()) {
    // Cannot happen with the planner's rules (a running sequence always has a token pending
    // and the budget is at least one token); fail loudly rather than spin.
    common::LogError(
        "generation scheduler made no progress",
        {{"running", absl::StrCat(running_.size())}, {"waiting", absl::StrCat(waiting_.size())}});
    for (auto& sequence : running_) {
      ended->push_back({std::move(sequence),
                        absl::InternalError("the generation scheduler made no progress"),
                        FinishReason::kNone});
    }
    stats_.failed += static_cast<int64_t>(running_.size());
    running_.clear();
  }
  finishing_ += static_cast<int64_t>(ended->size());
  step_running_ = !step->empty();
  kv_free_blocks_ = cache_->free_blocks();
  PublishGauges();
  return true;
}

void GenerationScheduler::RunStep(const std::vector<Sequence*>& step,
                                  const std::vector<int64_t>& step_tokens) {
  const engine::DecoderSpec& spec = model_->spec();
  const int64_t vocab = spec.vocab_size;
  std::vector<engine::DecoderChunk> chunks;
  std::vector<Sequence*> stepped;
  chunks.reserve(step.size());
  int64_t tokens = 0;
  for (size_t i = 0; i < step.size(); ++i) {
    Sequence* sequence = step[i];
    const int64_t start = sequence->kv.length();
    if (!sequence->kv.Reserve(start + step_tokens[i])) {
      // The planner counted the blocks; a failure here is a bug, contained to this sequence.
      FailRunning(sequence, absl::InternalError("KV-cache reservation failed"));
      continue;
    }
    engine::DecoderChunk chunk;
    chunk.sequence = &sequence->kv;
    chunk.tokens = std::span<const int32_t>(sequence->tokens.data() + start,
                                            static_cast<size_t>(step_tokens[i]));
    chunks.push_back(chunk);
    stepped.push_back(sequence);
    tokens += step_tokens[i];
  }
  if (chunks.empty()) return;

  engine::DecoderStepOutputs outputs;
  bool timed = false;
  absl::Status status;
  const absl::Time start = absl::Now();
  try {
    logits_.resize(chunks.size() * static_cast<size_t>(vocab));
    outputs.logits = logits_.data();
    if (metrics_ != nullptr && !expert_tokens_.empty()) {
      outputs.expert_token_counts = expert_tokens_.data();
      outputs.layer_seconds = layer_seconds_.data();
      outputs.gate_entropy_sum = entropy_sum_.data();
      timed = metrics_->SampleExpertTiming();
      if (timed) outputs.expert_seconds = expert_seconds_.data();
    }
    status = model_->Step(chunks, outputs);
  } catch (const std::bad_alloc&) {
    status = absl::ResourceExhaustedError(
        absl::StrCat("out of memory for a forward pass of ", tokens, " tokens"));
  }
  const absl::Time end = absl::Now();

  if (metrics_ != nullptr) {
    metrics::BatchObservation observation;
    observation.rows = tokens;
    observation.requests = static_cast<int64_t>(chunks.size());
    observation.seconds = absl::ToDoubleSeconds(end - start);
    observation.failed = !status.ok();
    if (status.ok() && outputs.expert_token_counts != nullptr) {
      observation.expert_tokens = expert_tokens_;
      observation.layer_seconds = layer_seconds_;
      observation.entropy_sum = entropy_sum_;
      if (timed) observation.expert_seconds = expert_seconds_;
    }
    metrics_->RecordBatch(observation);
  }
  {
    absl::MutexLock lock(&mu_);
    ++stats_.steps;
    stats_.step_tokens += tokens;
    stats_.max_step_sequences =
        std::max(stats_.max_step_sequences, static_cast<int64_t>(chunks.size()));
  }

  if (!status.ok()) {
    common::LogError("generation step failed", {{"model", options_.model_name},
                                                {"tokens", absl::StrCat(tokens)},
                                                {"sequences", absl::StrCat(chunks.size())},
                                                {"error", status.ToString()}});
    const absl::Status failure = absl::InternalError(
        absl::StrCat("engine failure on a forward pass of ", tokens, " tokens (", chunks.size(),
                     " sequences) of model '", options_.model_name, "': ", status.message()));
    for (Sequence* sequence : stepped) FailRunning(sequence, failure);
    EndBatchIfDone();
    return;
  }

  int64_t padding = 0;
  for (size_t i = 0; i < stepped.size(); ++i) {
    Sequence* sequence = stepped[i];
    if (sequence->done != FinishReason::kNone) {  // a padding row: its output is discarded
      ++padding;
      if (!PadNext(*sequence)) FinishRunning(sequence, absl::OkStatus(), sequence->done);
      continue;
    }
    // A prompt chunk that left tokens pending samples nothing yet.
    if (sequence->kv.length() < static_cast<int64_t>(sequence->tokens.size())) continue;
    const float* row = logits_.data() + i * static_cast<size_t>(vocab);
    const FinishReason reason = SampleNext(*sequence, row);
    if (reason == FinishReason::kNone) continue;
    if (options_.batching == GenerationBatching::kStatic) {
      // A padding row from now on. The token just sampled is still pending: it is the row's
      // input in the next step, one token per step as in any decode.
      sequence->done = reason;
      continue;
    }
    FinishRunning(sequence, absl::OkStatus(), reason);
  }
  if (padding > 0) {
    absl::MutexLock lock(&mu_);
    stats_.padding_tokens += padding;
  }
  EndBatchIfDone();
}

bool GenerationScheduler::PadNext(Sequence& sequence) {
  if (static_cast<int64_t>(sequence.tokens.size()) >= max_model_len_) return false;
  // Any token costs the same pass; repeating the last one keeps it inside the vocabulary.
  sequence.tokens.push_back(sequence.tokens.back());
  return true;
}

void GenerationScheduler::EndBatchIfDone() {
  if (options_.batching != GenerationBatching::kStatic) return;
  std::vector<Sequence*> batch;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& sequence : running_) {
      if (sequence->done == FinishReason::kNone) return;
      batch.push_back(sequence.get());
    }
  }
  for (Sequence* sequence : batch) FinishRunning(sequence, absl::OkStatus(), sequence->done);
}

FinishReason GenerationScheduler::SampleNext(Sequence& sequence, const float* logits) {
  const GenerationRequest& request = *sequence.request;
  const int64_t vocab = model_->spec().vocab_size;
  float logprob = 0.0f;
  const int32_t token =
      sequence.sampler.Sample(std::span<const float>(logits, static_cast<size_t>(vocab)),
                              sequence.tokens, request.logprobs ? &logprob : nullptr);
  sequence.tokens.push_back(token);
  ++sequence.generated;
  const absl::Time now = absl::Now();
  if (sequence.generated == 1) {
    sequence.first_token_time = now;
    if (metrics_ != nullptr) metrics_->RecordFirstToken(now - request.arrival);
  } else if (metrics_ != nullptr) {
    metrics_->RecordInterToken(now - sequence.last_token_time);
  }
  sequence.last_token_time = now;
  if (metrics_ != nullptr) metrics_->RecordGeneratedTokens(1);
  {
    absl::MutexLock lock(&mu_);
    ++stats_.generated_tokens;
  }
  const float logprobs[1] = {logprob};
  request.sink->OnTokens(
      std::span<const int32_t>(&token, 1),
      request.logprobs ? std::span<const float>(logprobs, 1) : std::span<const float>());
  if (std::find(request.stop_token_ids.begin(), request.stop_token_ids.end(), token) !=
      request.stop_token_ids.end()) {
    return FinishReason::kStop;
  }
  if (sequence.generated >= request.max_new_tokens ||
      static_cast<int64_t>(sequence.tokens.size()) >= max_model_len_) {
    return FinishReason::kLength;
  }
  return FinishReason::kNone;
}

void GenerationScheduler::FinishRunning(Sequence* sequence, const absl::Status& status,
                                        FinishReason reason) {
  std::unique_ptr<Sequence> owned;
  {
    absl::MutexLock lock(&mu_);
    auto it = std::find_if(running_.begin(), running_.end(),
                           [sequence](const auto& s) { return s.get() == sequence; });
    if (it == running_.end()) return;
    owned = std::move(*it);
    running_.erase(it);
    cancel_running_.erase(sequence->id);
    if (status.ok()) {
      ++stats_.completed;
    } else {
      ++stats_.failed;
    }
  }
  Finish(std::move(owned), status, reason);
}

void GenerationScheduler::FailRunning(Sequence* sequence, const absl::Status& failure) {
  // A padding row's sequence has already finished well; the failure is not its own.
  if (sequence->done != FinishReason::kNone) {
    FinishRunning(sequence, absl::OkStatus(), sequence->done);
  } else {
    FinishRunning(sequence, failure, FinishReason::kNone);
  }
}

void GenerationScheduler::Finish(std::unique_ptr<Sequence> sequence, const absl::Status& status,
                                 FinishReason reason) {
  // Waiting sequences hold no blocks, and they are the ones finished off the scheduler thread
  // (Cancel): the pool is only touched when there is something to give back. The blocks are
  // counted free before the sink hears of the end.
  if (sequence->kv.num_blocks() > 0) {
    sequence->kv.Release();
    absl::MutexLock lock(&mu_);
    kv_free_blocks_ = cache_->free_blocks();
    PublishGauges();
  }
  GenerationSummary summary;
  summary.finish_reason = status.ok() ? reason : FinishReason::kNone;
  summary.prompt_tokens = static_cast<int64_t>(sequence->request->prompt.size());
  summary.completion_tokens = sequence->generated;
  if (sequence->generated > 0) {
    summary.time_to_first_token = sequence->first_token_time - sequence->request->arrival;
  }
  summary.preemptions = sequence->preemptions;
  sequence->request->sink->OnFinished(status, summary);
}

void GenerationScheduler::AbortAll() {
  std::vector<std::unique_ptr<Sequence>> left;
  {
    absl::MutexLock lock(&mu_);
    for (auto& sequence : waiting_) left.push_back(std::move(sequence));
    for (auto& sequence : running_) left.push_back(std::move(sequence));
    for (const auto& sequence : left) {
      ++(sequence->done != FinishReason::kNone ? stats_.completed : stats_.aborted);
    }
    waiting_.clear();
    running_.clear();
    cancel_running_.clear();
    finishing_ += static_cast<int64_t>(left.size());
  }
  const absl::Status unavailable = absl::UnavailableError(
      "the server shut down before this generation finished; retry on another replica");
  for (auto& sequence : left) {
    // A padding row's sequence had finished: it ends as it would have, not as aborted.
    const FinishReason done = sequence->done;
    if (done != FinishReason::kNone) {
      Finish(std::move(sequence), absl::OkStatus(), done);
    } else {
      Finish(std::move(sequence), unavailable, FinishReason::kNone);
    }
  }
  absl::MutexLock lock(&mu_);
  finishing_ -= static_cast<int64_t>(left.size());
  kv_free_blocks_ = cache_->free_blocks();
  step_running_ = false;
  PublishGauges();
}

}  // namespace moe::scheduler
