// The models this process serves, by name: declared at start-up (loading), then ready with
// their batch scheduler (tensor requests and metadata) and, for decoder language models, their
// generation scheduler. Readiness and drain state live here so every service agrees on them.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/scheduler/batch_scheduler.h"
#include "server/scheduler/generation_scheduler.h"
#include "server/tokenizer/tokenizer.h"

namespace moe::api {

// A decoder language model as the Generate API sees it.
struct Generator {
  scheduler::GenerationScheduler* scheduler = nullptr;
  const tokenizer::Tokenizer* tokenizer = nullptr;  // null: the model takes token ids only
};

class ModelRegistry {
 public:
  ModelRegistry() = default;
  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // Announces a model that is still loading (listed, not ready). ALREADY_EXISTS on a repeat.
  absl::Status Declare(const std::string& name);
  // Makes a declared model ready. `generator` (and, when the checkpoint has one, `tokenizer`)
  // are set for decoder language models.
  absl::Status SetLoaded(const std::string& name,
                         std::unique_ptr<scheduler::BatchScheduler> scheduler,
                         std::unique_ptr<scheduler::GenerationScheduler> generator = nullptr,
                         std::unique_ptr<tokenizer::Tokenizer> tokenizer = nullptr);

  // The scheduler of a ready model. NOT_FOUND for a name this server does not serve (listing
  // the ones it does), UNAVAILABLE while that model loads or the server drains.
  absl::StatusOr<scheduler::BatchScheduler*> FindReady(const std::string& name) const;
  // A loaded model's scheduler whatever the drain state (metadata is served while draining);
  // NOT_FOUND / UNAVAILABLE as above.
  absl::StatusOr<scheduler::BatchScheduler*> FindLoaded(const std::string& name) const;

  // The generation scheduler of a ready decoder model: NOT_FOUND / UNAVAILABLE as FindReady,
  // FAILED_PRECONDITION for a model that does not generate.
  absl::StatusOr<Generator> FindGenerator(const std::string& name) const;
  // The generator of a loaded model; its scheduler is null when the model is loading, unknown,
  // or not a decoder.
  Generator GeneratorOf(const std::string& name) const;

  bool IsReady(const std::string& name) const;
  // Every declared model loaded and not draining.
  bool AllReady() const;
  bool draining() const;
  std::vector<std::string> Names() const;

  // Refuses new inference from now on; queued work still runs.
  void BeginDrain();
  // Finishes every model's queued and running work, up to `timeout` in all. Returns true when
  // no accepted request had to be failed.
  bool FinishDrain(absl::Duration timeout);

 private:
  mutable absl::Mutex mu_;
  // nullptr while loading.
  std::map<std::string, std::unique_ptr<scheduler::BatchScheduler>> models_ ABSL_GUARDED_BY(mu_);
  // Decoder language models only.
  struct OwnedGenerator {
    std::unique_ptr<scheduler::GenerationScheduler> scheduler;
    std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  };
  std::map<std::string, OwnedGenerator> generators_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace moe::api
