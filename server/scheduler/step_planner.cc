#include "server/scheduler/step_planner.h"

#include <algorithm>

namespace moe::scheduler {

int64_t BlocksFor(int64_t tokens, int64_t block_tokens) {
  return tokens <= 0 ? 0 : (tokens + block_tokens - 1) / block_tokens;
}

namespace {

int64_t Pending(const PlannerSequence& s) { return s.total_tokens - s.cached_tokens; }

// Extra blocks `s` needs to cache `n` more tokens.
int64_t ExtraBlocks(const PlannerSequence& s, int64_t n, int64_t block_tokens) {
  return std::max<int64_t>(0, BlocksFor(s.cached_tokens + n, block_tokens) - s.blocks_held);
}

}  // namespace

StepPlan PlanStep(const StepPlanInput& input) {
  StepPlan plan;
  const int64_t bt = std::max<int64_t>(1, input.block_tokens);
  int64_t free_blocks = input.free_blocks;
  int64_t budget = input.max_batch_tokens;

  // Running sequences still holding their place, oldest first; preemption takes from the back.
  std::vector<size_t> active;
  for (size_t i = 0; i < input.running.size(); ++i) {
    if (Pending(input.running[i]) > 0) active.push_back(i);
  }
  // Running sequences with nothing pending (should not happen: a running sequence always has
  // its last sampled token pending) keep their place and run nothing.
  std::vector<bool> scheduled(input.running.size(), false);

  // Frees the newest active sequence that is not yet scheduled this step and not `keep`.
  auto preempt_newest = [&](size_t keep) {
    for (size_t pos = active.size(); pos-- > 0;) {
      const size_t victim = active[pos];
      if (victim == keep || scheduled[victim]) continue;
      free_blocks += input.running[victim].blocks_held;
      plan.preempted.push_back(victim);
      active.erase(active.begin() + static_cast<std::ptrdiff_t>(pos));
      return true;
    }
    return false;
  };

  // Gives running sequence `index` up to `want` tokens; preempts newer ones for blocks.
  auto schedule_running = [&](size_t index, int64_t want) {
    const PlannerSequence& s = input.running[index];
    int64_t n = std::min(want, budget);
    if (n <= 0) return;
    while (ExtraBlocks(s, n, bt) > free_blocks && preempt_newest(index)) {
    }
    if (ExtraBlocks(s, n, bt) > free_blocks) {
      // Nothing newer left to free: run what the free blocks hold, or give up the place.
      n = std::min(n, (s.blocks_held + free_blocks) * bt - s.cached_tokens);
      if (n <= 0) {
        free_blocks += s.blocks_held;
        plan.preempted.push_back(index);
        active.erase(std::find(active.begin(), active.end(), index));
        return;
      }
    }
    free_blocks -= ExtraBlocks(s, n, bt);
    budget -= n;
    scheduled[index] = true;
    plan.chunks.push_back({false, index, n});
    plan.tokens += n;
  };

  // 1. Decodes. (A copy: preemption edits `active`.)
  for (size_t index : std::vector<size_t>(active)) {
    if (budget <= 0) break;
    if (Pending(input.running[index]) != 1) continue;
    if (std::find(active.begin(), active.end(), index) == active.end()) continue;  // preempted
    schedule_running(index, 1);
  }
  // 2. Prefill chunks of running sequences.
  for (size_t index : std::vector<size_t>(active)) {
    if (budget <= 0) break;
    if (Pending(input.running[index]) <= 1) continue;
    if (std::find(active.begin(), active.end(), index) == active.end()) continue;
    schedule_running(index, Pending(input.running[index]));
  }
  // 3. Admissions, unless this step preempted: the preempted sequences go back to the front of
  // the queue and are first to rejoin, so nothing that arrived after them takes their blocks.
  if (input.admit && plan.preempted.empty()) {
    int64_t places = input.max_running - static_cast<int64_t>(active.size());
    // Blocks the admitted sequences' later prompt chunks will need: not free for the next one.
    int64_t promised = 0;
    for (size_t index = 0; index < input.waiting.size(); ++index) {
      if (budget <= 0 || places <= 0) break;
      const PlannerSequence& s = input.waiting[index];
      const int64_t pending = Pending(s);
      if (pending <= 0) continue;
      const int64_t whole = ExtraBlocks(s, pending, bt);
      if (whole > free_blocks - promised) break;
      const int64_t n = std::min(pending, budget);
      free_blocks -= ExtraBlocks(s, n, bt);
      promised += whole - ExtraBlocks(s, n, bt);
      budget -= n;
      --places;
      plan.admitted.push_back(index);
      plan.chunks.push_back({true, index, n});
      plan.tokens += n;
    }
  }
  return plan;
}

}  // namespace moe::scheduler
