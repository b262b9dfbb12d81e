// Plans one iteration of iteration-level (continuous) batching: which sequences run how many
// tokens in the next forward pass, which running sequences give their KV blocks back
// (preemption), and which waiting ones join. Pure arithmetic over counts, so every policy
// decision is testable without a model; GenerationScheduler applies the plan.
//
// Policy, in order:
//   1. Every running sequence in decode (one token pending) gets its token, oldest first.
//   2. Running sequences still prefilling get prompt chunks from what is left of the token
//      budget (chunked prefill), oldest first.
//   3. Waiting sequences join in queue order while budget, free blocks and the running limit
//      allow; one that does not fit stops admission (no overtaking, so a long prompt is never
//      starved by short ones). A sequence joins only when its whole pending prompt fits the
//      free blocks, even if only its first chunk runs now.
// When a running sequence needs a block and none is free, the newest running sequence is
// preempted (all its blocks freed; it waits again, at the front of the queue, and is recomputed
// later), never an older one: the oldest work always makes progress. A step that preempts
// admits nothing, so no later arrival overtakes the preempted sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moe::scheduler {

// What the planner needs to know of one sequence.
struct PlannerSequence {
  int64_t cached_tokens = 0;  // tokens whose K/V are in the cache
  int64_t total_tokens = 0;   // prompt + generated; the ones beyond cached_tokens are pending
  int64_t blocks_held = 0;    // KV blocks it holds now
};

struct StepPlanInput {
  std::vector<PlannerSequence> running;  // admission order, oldest first
  std::vector<PlannerSequence> waiting;  // queue order (hold no blocks)
  int64_t free_blocks = 0;
  int64_t block_tokens = 16;
  int64_t max_batch_tokens = 512;  // tokens in one forward pass
  int64_t max_running = 256;       // sequences holding a place at once
  bool admit = true;               // false: no sequence joins this step (static batching)
};

struct PlannedChunk {
  bool waiting = false;  // index refers to StepPlanInput::waiting, else ::running
  size_t index = 0;
  int64_t tokens = 0;  // how many pending tokens run now (>= 1)
};

struct StepPlan {
  std::vector<PlannedChunk> chunks;  // decode chunks first, then prefill, then admissions
  std::vector<size_t> preempted;     // running indices, newest first
  std::vector<size_t> admitted;      // waiting indices, in queue order
  int64_t tokens = 0;                // sum of chunk tokens
};

// Blocks needed to hold `tokens` tokens.
int64_t BlocksFor(int64_t tokens, int64_t block_tokens);

StepPlan PlanStep(const StepPlanInput& input);

}  // namespace moe::scheduler
