// The CPU workspace's buffers, shared by the fast path and the naive baseline.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/kernels/cpu_moe.h"

namespace moe::kernels {

// One expert FFN over a block of rows: a routed expert's tokens in permuted order, or the
// shared expert over every token.
struct ExpertJob {
  const void* w_in;    // [in_rows, d]
  const void* w_out;   // [d, ffn]
  const float* b_in;   // [in_rows] or null
  const float* b_out;  // [d] or null
  int64_t ffn;
  int64_t in_rows;
  const float* x;  // [rows, d]
  int64_t rows;
  float* hidden;        // [rows, in_rows]
  float* y;             // [rows, d]
  int64_t expert = -1;  // the routed expert's index; -1 for the shared expert
};

// A unit of parallel work: weight rows [begin, begin + count) of one job's phase.
struct ExpertTask {
  int32_t job;
  int64_t begin;
  int64_t count;
};

struct CpuMoEWorkspace::Buffers {
  std::vector<float> logits;           // [T, E] when the caller does not want them
  std::vector<int32_t> ids;            // [T, k]
  std::vector<float> weights;          // [T, k]
  std::vector<int64_t> offsets;        // [E + 1]
  std::vector<int64_t> to_assignment;  // [T*k]
  std::vector<int64_t> to_permuted;    // [T*k]
  std::vector<float> permuted_x;       // [N, d] rows in expert order
  std::vector<float> hidden;           // [N, in_rows] gate|up, then activation in place
  std::vector<float> permuted_y;       // [N, d] expert outputs in expert order
  std::vector<float> shared_hidden;    // [T, shared in_rows]
  std::vector<float> shared_y;         // [T, d]
  std::vector<float> widen_scratch;    // naive loop's widened weight rows
  std::vector<ExpertJob> jobs;
  std::vector<ExpertTask> phase1_tasks;            // gate|up + activation, chunked over ffn columns
  std::vector<ExpertTask> phase2_tasks;            // down projection, chunked over output columns
  std::vector<int64_t> phase1_job_begin;           // profiling passes: [jobs + 1] task ranges
  std::vector<int64_t> phase2_job_begin;           // of each job in phase1/2_tasks
  std::vector<std::vector<float>> thread_scratch;  // per OpenMP thread: widened weight rows    //
                                                   // widened half-precision weight rows
};

}  // namespace moe::kernels
