#include "server/api/generate_call.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/api/generate_request_parser.h"
#include "server/api/grpc_status.h"
#include "server/common/happens_before.h"
#include "server/scheduler/generation_scheduler.h"

namespace moe::api {
namespace {

using moe::v1::GenerateResponse;
using scheduler::FinishReason;
using scheduler::GenerationScheduler;
using scheduler::GenerationSummary;

moe::v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return moe::v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return moe::v1::FINISH_REASON_STOP;
    case FinishReason::kNone:
      break;
  }
  return moe::v1::FINISH_REASON_UNSPECIFIED;
}

class GenerateCall final : public grpc::ServerWriteReactor<GenerateResponse>,
                           public scheduler::GenerationSink {
 public:
  GenerateCall(ModelRegistry* registry, metrics::ServerMetrics* metrics, const std::string& model)
      : registry_(registry), metrics_(metrics != nullptr ? metrics->ForModel(model) : nullptr) {}

  void Start(const moe::v1::GenerateRequest& request) {
    absl::StatusOr<Generator> found = registry_->FindGenerator(request.model());
    if (!found.ok()) return Refuse(found.status());
    GenerationScheduler* const target = found->scheduler;
    if (found->tokenizer != nullptr) {
      detokenizer_.emplace(found->tokenizer);
    }
    GenerationLimits limits;
    limits.model_name = request.model();
    limits.tokenizer = found->tokenizer;
    limits.bos_token_id = target->model().spec().bos_token_id;
    limits.vocab_size = target->model().spec().vocab_size;
    limits.max_model_len = target->max_model_len();
    for (int64_t eos : target->model().spec().eos_token_ids) {
      limits.eos_token_ids.push_back(static_cast<int32_t>(eos));
    }
    absl::StatusOr<std::unique_ptr<scheduler::GenerationRequest>> parsed =
        ParseGenerateRequest(request, limits);
    if (!parsed.ok()) return Refuse(parsed.status());
    (*parsed)->arrival = arrival_;
    (*parsed)->sink = this;

    // From here the sequence may finish (and this call be deleted) at any moment: only
    // `cancel` and `target` are used below, never members.
    std::shared_ptr<CancelState> cancel = cancel_;
    absl::StatusOr<scheduler::SequenceId> id = target->Submit(std::move(*parsed));
    if (!id.ok()) return Refuse(id.status());
    absl::MutexLock lock(&cancel->mu);
    cancel->scheduler = target;
    cancel->id = *id;
    if (cancel->cancelled) target->Cancel(*id);
  }

  // --- GenerationSink: the scheduler thread (OnFinished also a cancelling one).
  void OnTokens(std::span<const int32_t> token_ids, std::span<const float> logprobs) override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      if (broken_) return;
      for (int32_t id : token_ids) pending_.add_token_ids(id);
      for (float logprob : logprobs) pending_.add_logprobs(logprob);
      if (detokenizer_.has_value()) AppendText(detokenizer_->Add(token_ids));
      if (!write_in_flight_) finish = WriteNext();
    }
    FinishIfDecided(this, std::move(finish));
  }

  void OnFinished(const absl::Status& status, const GenerationSummary& summary) override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      finished_ = true;
      final_status_ = status;
      if (status.ok() && detokenizer_.has_value()) AppendText(detokenizer_->Finish());
      if (status.ok()) {
        pending_.set_finish_reason(ToProto(summary.finish_reason));
        pending_.set_prompt_tokens(static_cast<int32_t>(summary.prompt_tokens));
        pending_.set_completion_tokens(static_cast<int32_t>(summary.completion_tokens));
        pending_.set_time_to_first_token_seconds(
            absl::ToDoubleSeconds(summary.time_to_first_token));
        pending_.set_preemptions(static_cast<int32_t>(summary.preemptions));
      }
      if (!write_in_flight_) finish = WriteNext();
    }
    FinishIfDecided(this, std::move(finish));
  }

  // --- reactor
  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (!ok) broken_ = true;  // the client went away; OnCancel stops the sequence
      finish = WriteNext();
    }
    FinishIfDecided(this, std::move(finish));
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&cancel_->mu);
      cancel_->cancelled = true;
      if (cancel_->scheduler != nullptr) {
        // Cancel may finish the sequence on this thread (OnFinished takes mu_, not this lock's
        // order problem: CancelState::mu is never taken under mu_).
        cancel_->scheduler->Cancel(cancel_->id);
      }
    }
    common::HappensBefore(this);  // OnDone comes after (gRPC's order, invisible to TSan)
  }

  void OnDone() override {
    common::HappensAfter(this);
    delete this;
  }

 private:
  struct CancelState {
    absl::Mutex mu;
    bool cancelled ABSL_GUARDED_BY(mu) = false;
    GenerationScheduler* scheduler ABSL_GUARDED_BY(mu) = nullptr;  // set once submitted
    scheduler::SequenceId id ABSL_GUARDED_BY(mu) = 0;
  };

  // Text is a convenience next to the token ids: a tokenizer that cannot decode some ids (it
  // should not happen: its vocabulary was checked against the model's) costs the text only.
  void AppendText(const absl::StatusOr<std::string>& text) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (text.ok()) pending_.mutable_text()->append(*text);
  }

  // Refused before the scheduler took it: no sink call will come.
  void Refuse(const absl::Status& status) {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      finished_ = true;
      final_status_ = status;
      finish = WriteNext();
    }
    FinishIfDecided(this, std::move(finish));
  }

  // With no write in flight: sends what is pending or the final message, or decides the
  // call's status, which the caller passes to FinishIfDecided once mu_ is released. gRPC does
  // not run reactions inline from StartWrite on the callback API's own threads, so starting a
  // write under mu_ cannot re-enter it.
  [[nodiscard]] std::optional<grpc::Status> WriteNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_called_) return std::nullopt;
    if (finished_ && (!final_status_.ok() || broken_)) {
      return DecideFinish(broken_ && final_status_.ok()
                              ? absl::CancelledError("the client went away")
                              : final_status_);
    }
    if (finished_ && final_sent_) return DecideFinish(absl::OkStatus());
    if (!finished_ && (broken_ || (pending_.token_ids_size() == 0 && pending_.text().empty()))) {
      return std::nullopt;
    }
    in_flight_.Clear();
    in_flight_.Swap(&pending_);
    write_in_flight_ = true;
    if (finished_) final_sent_ = true;
    StartWrite(&in_flight_);
    return std::nullopt;
  }

  grpc::Status DecideFinish(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    finish_called_ = true;
    if (metrics_ != nullptr) metrics_->RecordCall(status.code(), absl::Now() - arrival_);
    return ToGrpcStatus(status);
  }

  // Finish, outside mu_ and as the last thing the calling method does: once it is made, gRPC
  // may run OnDone, which deletes the call, on another thread at any moment (a sink call on
  // the scheduler thread is no reaction, which gRPC would wait for). Static: with nothing
  // decided it must not touch the call at all, since once mu_ is released a write it started
  // may already have completed, finished and deleted the call on a gRPC thread.
  static void FinishIfDecided(GenerateCall* call, std::optional<grpc::Status> status) {
    if (status.has_value()) call->Finish(*std::move(status));
  }

  ModelRegistry* const registry_;
  metrics::ModelMetrics* const metrics_;
  const absl::Time arrival_ = absl::Now();
  const std::shared_ptr<CancelState> cancel_ = std::make_shared<CancelState>();

  absl::Mutex mu_;
  // Set in Start, before the sequence is submitted; then used under mu_ only.
  std::optional<tokenizer::IncrementalDetokenizer> detokenizer_;
  GenerateResponse pending_ ABSL_GUARDED_BY(mu_);    // tokens not yet written
  GenerateResponse in_flight_ ABSL_GUARDED_BY(mu_);  // the message being written
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // the sequence ended (or was refused)
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  bool final_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerWriteReactor<GenerateResponse>* StartGenerateCall(
    grpc::CallbackServerContext*, const moe::v1::GenerateRequest* request, ModelRegistry* registry,
    metrics::ServerMetrics* metrics) {
  auto* call = new GenerateCall(registry, metrics, request->model());
  call->Start(*request);
  return call;
}

}  // namespace moe::api
