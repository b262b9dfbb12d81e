#include "server/api/model_registry.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moe::api {

absl::Status ModelRegistry::Declare(const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (!models_.emplace(name, nullptr).second) {
    return absl::AlreadyExistsError(absl::StrCat("model name '", name, "' is given twice"));
  }
  return absl::OkStatus();
}

absl::Status ModelRegistry::SetLoaded(const std::string& name,
                                      std::unique_ptr<scheduler::BatchScheduler> scheduler,
                                      std::unique_ptr<scheduler::GenerationScheduler> generator,
                                      std::unique_ptr<tokenizer::Tokenizer> tokenizer) {
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' was not declared"));
  }
  if (generator != nullptr) {
    generators_[name] = OwnedGenerator{std::move(generator), std::move(tokenizer)};
  }
  it->second = std::move(scheduler);
  return absl::OkStatus();
}

absl::StatusOr<Generator> ModelRegistry::FindGenerator(const std::string& name) const {
  absl::StatusOr<scheduler::BatchScheduler*> loaded = FindReady(name);
  if (!loaded.ok()) return loaded.status();
  const Generator generator = GeneratorOf(name);
  if (generator.scheduler == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", name, "' (", (*loaded)->model().architecture,
                     ") is not a language model and does not generate; use ModelInfer"));
  }
  return generator;
}

Generator ModelRegistry::GeneratorOf(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = generators_.find(name);
  if (it == generators_.end()) return {};
  return {it->second.scheduler.get(), it->second.tokenizer.get()};
}

absl::StatusOr<scheduler::BatchScheduler*> ModelRegistry::FindLoaded(
    const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) {
    std::vector<std::string> names;
    for (const auto& [served, scheduler] : models_) names.push_back(served);
    return absl::NotFoundError(absl::StrCat("no model named '", name,
                                            "'; this server serves: ", absl::StrJoin(names, ", ")));
  }
  if (it->second == nullptr) {
    return absl::UnavailableError(absl::StrCat("model '", name, "' is still loading"));
  }
  return it->second.get();
}

absl::StatusOr<scheduler::BatchScheduler*> ModelRegistry::FindReady(const std::string& name) const {
  absl::StatusOr<scheduler::BatchScheduler*> scheduler = FindLoaded(name);
  if (scheduler.ok() && draining()) {
    return absl::UnavailableError("server is shutting down and accepts no new requests");
  }
  return scheduler;
}

bool ModelRegistry::IsReady(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  return !draining_ && it != models_.end() && it->second != nullptr;
}

bool ModelRegistry::AllReady() const {
  absl::MutexLock lock(&mu_);
  if (draining_ || models_.empty()) return false;
  for (const auto& [name, scheduler] : models_) {
    if (scheduler == nullptr) return false;
  }
  return true;
}

bool ModelRegistry::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

std::vector<std::string> ModelRegistry::Names() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const auto& [name, scheduler] : models_) names.push_back(name);
  return names;
}

void ModelRegistry::BeginDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  for (auto& [name, scheduler] : models_) {
    if (scheduler != nullptr) scheduler->BeginDrain();
  }
  for (auto& [name, generator] : generators_) generator.scheduler->BeginDrain();
}

bool ModelRegistry::FinishDrain(absl::Duration timeout) {
  std::vector<scheduler::BatchScheduler*> schedulers;
  std::vector<scheduler::GenerationScheduler*> generators;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    for (auto& [name, scheduler] : models_) {
      if (scheduler != nullptr) schedulers.push_back(scheduler.get());
    }
    for (auto& [name, generator] : generators_) generators.push_back(generator.scheduler.get());
  }
  // Models drain one after another against one overall deadline; their threads keep working in
  // parallel meanwhile, so waiting in turn costs nothing.
  const absl::Time deadline = absl::Now() + timeout;
  bool clean = true;
  for (scheduler::BatchScheduler* scheduler : schedulers) {
    scheduler->BeginDrain();
  }
  for (scheduler::GenerationScheduler* generator : generators) generator->BeginDrain();
  for (scheduler::BatchScheduler* scheduler : schedulers) {
    clean = scheduler->FinishDrain(std::max(deadline - absl::Now(), absl::ZeroDuration())) && clean;
  }
  for (scheduler::GenerationScheduler* generator : generators) {
    clean = generator->FinishDrain(std::max(deadline - absl::Now(), absl::ZeroDuration())) && clean;
  }
  return clean;
}

}  // namespace moe::api
