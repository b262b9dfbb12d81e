// The iteration-level batching policy (step_planner.h), on counts alone: decodes first, chunked
// prefill within the token budget, admission in queue order without overtaking, and
// preemption of the newest sequence when blocks run out. A randomized simulation checks the
// invariants over many steps.
#include "server/scheduler/step_planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>

#include "tests/testing/random.h"

namespace moe::scheduler {
namespace {

PlannerSequence Decoding(int64_t cached, int64_t block_tokens) {
  return {cached, cached + 1, BlocksFor(cached, block_tokens)};
}

PlannerSequence Waiting(int64_t prompt) { return {0, prompt, 0}; }

TEST(StepPlanner, BlocksForRoundsUp) {
  EXPECT_EQ(BlocksFor(0, 16), 0);
  EXPECT_EQ(BlocksFor(1, 16), 1);
  EXPECT_EQ(BlocksFor(16, 16), 1);
  EXPECT_EQ(BlocksFor(17, 16), 2);
}

TEST(StepPlanner, EveryDecodeGetsOneTokenBeforeAnyPrefill) {
  StepPlanInput in;
  in.block_tokens = 4;
  in.free_blocks = 100;
  in.max_batch_tokens = 10;
  in.running = {{0, 30, 0}, Decoding(5, 4), Decoding(9, 4)};  // first still prefilling
  in.waiting = {Waiting(3)};
  const StepPlan plan = PlanStep(in);
  ASSERT_EQ(plan.chunks.size(), 3u);
  // The two decodes first, though the prefilling sequence is older...
  EXPECT_FALSE(plan.chunks[0].waiting);
  EXPECT_EQ(plan.chunks[0].index, 1u);
  EXPECT_EQ(plan.chunks[0].tokens, 1);
  EXPECT_EQ(plan.chunks[1].index, 2u);
  EXPECT_EQ(plan.chunks[1].tokens, 1);
  // ... then a chunk of its prompt with what is left of the budget; nothing is admitted.
  EXPECT_EQ(plan.chunks[2].index, 0u);
  EXPECT_EQ(plan.chunks[2].tokens, 8);
  EXPECT_TRUE(plan.admitted.empty());
  EXPECT_EQ(plan.tokens, 10);
  // With room left after the whole prompt, the waiting sequence joins.
  in.max_batch_tokens = 40;
  const StepPlan more = PlanStep(in);
  ASSERT_EQ(more.chunks.size(), 4u);
  EXPECT_EQ(more.chunks[2].tokens, 30);
  EXPECT_TRUE(more.chunks[3].waiting);
  EXPECT_EQ(more.chunks[3].tokens, 3);
  EXPECT_EQ(more.tokens, 35);
}

TEST(StepPlanner, AdmitsInQueueOrderAndStopsAtTheFirstThatDoesNotFit) {
  StepPlanInput in;
  in.block_tokens = 4;
  in.free_blocks = 5;  // 20 tokens
  in.max_batch_tokens = 100;
  in.waiting = {Waiting(8), Waiting(16), Waiting(2)};
  const StepPlan plan = PlanStep(in);
  // 8 tokens take 2 blocks; 16 need 4 more of the 3 left: admission stops there, and the short
  // third prompt does not overtake it.
  ASSERT_EQ(plan.admitted.size(), 1u);
  EXPECT_EQ(plan.admitted[0], 0u);
  EXPECT_TRUE(plan.preempted.empty());
}

TEST(StepPlanner, AdmissionRespectsTheRunningLimitAndTheStaticFlag) {
  StepPlanInput in;
  in.block_tokens = 16;
  in.free_blocks = 100;
  in.max_running = 2;
  in.waiting = {Waiting(3), Waiting(3), Waiting(3)};
  EXPECT_EQ(PlanStep(in).admitted.size(), 2u);
  in.admit = false;
  EXPECT_TRUE(PlanStep(in).admitted.empty());
}

TEST(StepPlanner, ChunkedPrefillOfAnAdmittedPromptKeepsItsWholePromptPromised) {
  StepPlanInput in;
  in.block_tokens = 4;
  in.free_blocks = 6;  // 24 tokens
  in.max_batch_tokens = 8;
  in.waiting = {Waiting(20), Waiting(4)};
  const StepPlan plan = PlanStep(in);
  ASSERT_EQ(plan.chunks.size(), 1u);
  EXPECT_EQ(plan.chunks[0].tokens, 8);  // first chunk of the 20-token prompt
  // The budget is spent, so the second waits; with budget left it would still not be admitted
  // into blocks the first prompt's later chunks need.
  in.max_batch_tokens = 100;
  in.free_blocks = 5;
  const StepPlan tight = PlanStep(in);
  EXPECT_EQ(tight.admitted.size(), 1u);
}

TEST(StepPlanner, PreemptsTheNewestWhenADecodeNeedsABlock) {
  StepPlanInput in;
  in.block_tokens = 4;
  in.free_blocks = 0;
  in.max_batch_tokens = 100;
  // Three decoding sequences, each at a block boundary: each needs a new block.
  in.running = {Decoding(4, 4), Decoding(8, 4), Decoding(4, 4)};
  const StepPlan plan = PlanStep(in);
  // The newest (index 2) gives its block to the oldest; the middle one then has none left
  // to take from a newer sequence, so it gives up its own place too.
  ASSERT_EQ(plan.preempted.size(), 2u);
  EXPECT_EQ(plan.preempted[0], 2u);
  EXPECT_EQ(plan.preempted[1], 1u);
  ASSERT_EQ(plan.chunks.size(), 1u);
  EXPECT_EQ(plan.chunks[0].index, 0u);
}

TEST(StepPlanner, AStepThatPreemptsAdmitsNothing) {
  StepPlanInput in;
  in.block_tokens = 4;
  in.free_blocks = 0;
  in.max_batch_tokens = 100;
  // The oldest needs a block; the newest holds 3 and gives them up. A 2-token prompt waiting
  // would fit in the 2 left over, but it arrived after the preempted sequence, which rejoins
  // first.
  in.running = {Decoding(4, 4), Decoding(9, 4)};
  in.waiting = {Waiting(2)};
  const StepPlan plan = PlanStep(in);
  ASSERT_EQ(plan.preempted.size(), 1u);
  EXPECT_EQ(plan.preempted[0], 1u);
  EXPECT_TRUE(plan.admitted.empty());
  ASSERT_EQ(plan.chunks.size(), 1u);
  EXPECT_EQ(plan.chunks[0].index, 0u);
  // With a block for the oldest and one for the prompt, nothing is preempted and it joins.
  in.free_blocks = 2;
  const StepPlan roomy = PlanStep(in);
  EXPECT_TRUE(roomy.preempted.empty());
  EXPECT_EQ(roomy.admitted.size(), 1u);
}

// Runs the planner as the scheduler does, over many steps of random arrivals and output
// lengths, and checks: blocks are never over-committed, the budget is kept, every sequence
// finishes, and preempted ones restart from zero.
TEST(StepPlanner, RandomSimulationKeepsEveryInvariantAndFinishesEverySequence) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (MOE_TEST_SEED replays it)");
  std::mt19937_64 rng(seed);
  struct Sim {
    PlannerSequence s;
    int64_t output_left;
  };
  const int64_t block_tokens = 4;
  const int64_t total_blocks = 40;
  std::vector<Sim> running, waiting;
  int64_t finished = 0, arrived = 0, preemptions = 0;
  std::uniform_int_distribution<int64_t> prompt(1, 60), output(1, 40), arrivals(0, 3);
  for (int step = 0; step < 2000 && (arrived < 200 || !running.empty() || !waiting.empty());
       ++step) {
    for (int64_t a = arrivals(rng); a > 0 && arrived < 200; --a, ++arrived) {
      waiting.push_back({Waiting(prompt(rng)), output(rng)});
    }
    StepPlanInput in;
    in.block_tokens = block_tokens;
    int64_t held = 0;
    for (const Sim& r : running) held += r.s.blocks_held;
    ASSERT_LE(held, total_blocks);
    in.free_blocks = total_blocks - held;
    in.max_batch_tokens = 32;
    in.max_running = 8;
    for (const Sim& r : running) in.running.push_back(r.s);
    for (const Sim& w : waiting) in.waiting.push_back(w.s);
    const StepPlan plan = PlanStep(in);
    ASSERT_LE(plan.tokens, in.max_batch_tokens);
    ASSERT_TRUE(!plan.chunks.empty() || (running.empty() && waiting.empty()));

    // Apply: run chunks, then preemptions, admissions.
    int64_t blocks_after = in.free_blocks;
    for (size_t victim : plan.preempted) blocks_after += running[victim].s.blocks_held;
    for (const PlannedChunk& chunk : plan.chunks) {
      Sim& sim = chunk.waiting ? waiting[chunk.index] : running[chunk.index];
      ASSERT_GE(chunk.tokens, 1);
      ASSERT_LE(chunk.tokens, sim.s.total_tokens - sim.s.cached_tokens);
      const int64_t need = BlocksFor(sim.s.cached_tokens + chunk.tokens, block_tokens);
      blocks_after -= std::max<int64_t>(0, need - sim.s.blocks_held);
      sim.s.blocks_held = std::max(sim.s.blocks_held, need);
      sim.s.cached_tokens += chunk.tokens;
      if (sim.s.cached_tokens == sim.s.total_tokens) {  // sampled a token
        --sim.output_left;
        ++sim.s.total_tokens;
      }
    }
    ASSERT_GE(blocks_after, 0) << "plan over-commits the KV cache at step " << step;
    std::vector<Sim> next_running;
    std::vector<bool> gone(running.size(), false);
    std::vector<Sim> back;
    for (size_t victim : plan.preempted) {
      gone[victim] = true;
      Sim sim = running[victim];
      sim.s = {0, sim.s.total_tokens, 0};
      back.insert(back.begin(), sim);
      ++preemptions;
    }
    for (size_t i = 0; i < running.size(); ++i) {
      if (!gone[i]) next_running.push_back(running[i]);
    }
    std::vector<bool> admitted(waiting.size(), false);
    for (size_t index : plan.admitted) {
      admitted[index] = true;
      next_running.push_back(waiting[index]);
    }
    std::vector<Sim> next_waiting = back;
    for (size_t i = 0; i < waiting.size(); ++i) {
      if (!admitted[i]) next_waiting.push_back(waiting[i]);
    }
    running.clear();
    for (Sim& sim : next_running) {
      if (sim.output_left == 0) {
        ++finished;
      } else {
        running.push_back(sim);
      }
    }
    waiting = std::move(next_waiting);
  }
  EXPECT_EQ(finished, arrived) << "preemptions: " << preemptions;
  EXPECT_EQ(arrived, 200);
}

}  // namespace
}  // namespace moe::scheduler
