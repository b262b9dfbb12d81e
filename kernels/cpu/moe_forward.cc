// The CPU MoE layer's fast path:
//   router sgemm -> scores + top-k -> permutation by expert -> gather rows ->
//   per expert: gate|up GEMM with the activation fused per column chunk, down GEMM ->
//   weighted combine (+ shared expert).
//
// Parallelism: the expert work is cut into (expert, weight-row chunk) tasks that the OpenMP
// threads take dynamically, each running single-threaded BLAS on its chunk. Every expert's
// weights are still read once per call, by several cores at once, which is what small batches
// need (one expert's 8 rows would leave a threaded BLAS call starved of work) and what large
// ones tolerate (chunks grow with the row count so re-packing activations per chunk stays
// cheap). One thread pool runs everything: BLAS's own pool is parked for the call.
//
// Profiling pass (outputs.expert_seconds set): the same tasks, but one expert at a time (its
// phase-1 tasks, barrier, its phase-2 tasks, barrier), the steady clock read on one thread
// around each. Every task computes what it computes in a normal pass, so the output is
// bit-identical; only the overlap between experts is lost.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "expert_gemm.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/cpu_moe.h"
#include "moe/kernels/cpu_routing.h"
#include "workspace_buffers.h"

namespace moe::kernels {

CpuMoEWorkspace::CpuMoEWorkspace() : buffers_(std::make_unique<Buffers>()) {}
CpuMoEWorkspace::~CpuMoEWorkspace() = default;

namespace {

template <typename T>
T* Ensure(std::vector<T>& buffer, int64_t count) {
  if (buffer.size() < static_cast<size_t>(count)) buffer.resize(static_cast<size_t>(count));
  return buffer.data();
}

const void* ExpertSlice(const void* base, DType dtype, int64_t expert, int64_t elements) {
  return static_cast<const char*>(base) +
         expert * elements * static_cast<int64_t>(DTypeSize(dtype));
}

// Weight rows per task. Small row counts: ~512 KiB of float32 weights per task, so a chunk
// (and its packed copy) stays in L2 and there are enough tasks for every core. Many rows: at
// least 512 weight rows, because BLAS re-packs the [rows, k] activations for every task
// (measured: Qwen3-30B-A3B shape at T=1024 went from 66% to 73% of sgemm against 256).
int64_t RowsPerTask(int64_t token_rows, int64_t k_dim, int64_t total) {
  int64_t rows = std::max<int64_t>(16, (int64_t{1} << 17) / k_dim);
  if (token_rows >= 32) rows = std::max<int64_t>(rows, 512);
  rows = (rows + 15) / 16 * 16;
  return std::min(rows, total);
}

// Builds phase-1 (gate|up + activation, chunked over f) and phase-2 (down, chunked over d)
// tasks for every job with rows.
void PlanTasks(const std::vector<ExpertJob>& jobs, int64_t d, bool gated,
               std::vector<ExpertTask>* phase1, std::vector<ExpertTask>* phase2) {
  phase1->clear();
  phase2->clear();
  for (int32_t j = 0; j < static_cast<int32_t>(jobs.size()); ++j) {
    const ExpertJob& job = jobs[j];
    if (job.rows == 0) continue;
    const int64_t chunk1 = RowsPerTask(job.rows, gated ? 2 * d : d, job.ffn);
    for (int64_t begin = 0; begin < job.ffn; begin += chunk1) {
      phase1->push_back({j, begin, std::min(chunk1, job.ffn - begin)});
    }
    const int64_t chunk2 = RowsPerTask(job.rows, job.ffn, d);
    for (int64_t begin = 0; begin < d; begin += chunk2) {
      phase2->push_back({j, begin, std::min(chunk2, d - begin)});
    }
  }
}

// (*job_begin)[j] = index of job j's first task in `tasks` (grouped by job, in job order, as
// PlanTasks builds them); (*job_begin)[num_jobs] = tasks.size().
void TaskRangesByJob(const std::vector<ExpertTask>& tasks, int64_t num_jobs,
                     std::vector<int64_t>* job_begin) {
  job_begin->assign(static_cast<size_t>(num_jobs + 1), 0);
  size_t i = 0;
  for (int64_t j = 0; j <= num_jobs; ++j) {
    while (i < tasks.size() && tasks[i].job < j) ++i;
    (*job_begin)[j] = static_cast<int64_t>(i);
  }
}

// Gate|up for ffn columns [task.begin, +task.count) of one job, then the activation on them.
void RunPhase1Task(const MoELayerWeightsView& w, const ExpertJob& job, const ExpertTask& task,
                   std::vector<float>* scratch) {
  const int64_t d = w.hidden_size;
  cpu::WeightGemmRowsSerial(job.w_in, w.weight_dtype, task.begin, task.count, d, job.b_in, job.x, d,
                            job.rows, job.hidden + task.begin, job.in_rows, scratch);
  if (IsGated(w.activation)) {
    cpu::WeightGemmRowsSerial(job.w_in, w.weight_dtype, job.ffn + task.begin, task.count, d,
                              job.b_in, job.x, d, job.rows, job.hidden + job.ffn + task.begin,
                              job.in_rows, scratch);
  }
  cpu::ApplyActivationColumnsSerial(w.activation, job.hidden, job.rows, job.ffn, job.in_rows,
                                    task.begin, task.count);
}

// Down projection for output columns [task.begin, +task.count) of one job.
void RunPhase2Task(const MoELayerWeightsView& w, const ExpertJob& job, const ExpertTask& task,
                   std::vector<float>* scratch) {
  cpu::WeightGemmRowsSerial(job.w_out, w.weight_dtype, task.begin, task.count, job.ffn, job.b_out,
                            job.hidden, job.in_rows, job.rows, job.y + task.begin, w.hidden_size,
                            scratch);
}

float SharedGate(const MoELayerWeightsView& w, const float* x) {
  if (w.shared_gate == nullptr) return 1.0f;
  float dot = 0.0f;
  for (int64_t j = 0; j < w.hidden_size; ++j) dot += x[j] * w.shared_gate[j];
  return 1.0f / (1.0f + std::exp(-dot));
}

}  // namespace

namespace {

absl::Status MoEForwardCpuImpl(const MoELayerWeightsView& w, const RouterConfig& router,
                               const float* input, int64_t num_tokens,
                               const MoELayerOutputs& outputs, CpuMoEWorkspace* workspace) {
  MOE_RETURN_IF_ERROR(ValidateMoEForward(w, router, num_tokens, outputs));
  if (num_tokens > 0 && input == nullptr) {
    return absl::InvalidArgumentError("MoE forward: input is null");
  }
  if (workspace == nullptr) return absl::InvalidArgumentError("MoE forward: workspace is null");
  const int64_t num_experts = w.num_experts;
  if (outputs.expert_seconds != nullptr) std::fill_n(outputs.expert_seconds, num_experts, 0.0);
  if (num_tokens == 0) {
    if (outputs.expert_token_counts != nullptr) {
      std::fill_n(outputs.expert_token_counts, num_experts, 0);
    }
    if (outputs.dropped_assignments != nullptr) *outputs.dropped_assignments = 0;
    return absl::OkStatus();
  }
  CpuMoEWorkspace::Buffers& ws = workspace->buffers();
  const int64_t d = w.hidden_size;
  const int k = router.top_k;
  const int64_t in_rows = w.in_rows();
  const int64_t num_assignments = num_tokens * k;
  const cpu::ScopedSingleThreadedBlas single_threaded_blas;

  // 1. Router logits [T, E] = x [T, d] * router^T, in blocks of tokens across threads.
  float* logits = outputs.router_logits != nullptr ? outputs.router_logits
                                                   : Ensure(ws.logits, num_tokens * num_experts);
  constexpr int64_t kRouterBlock = 64;
  const int64_t router_blocks = (num_tokens + kRouterBlock - 1) / kRouterBlock;
#pragma omp parallel for schedule(static) if (router_blocks > 1)
  for (int64_t b = 0; b < router_blocks; ++b) {
    const int64_t begin = b * kRouterBlock;
    const int64_t count = std::min(kRouterBlock, num_tokens - begin);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(count),
                static_cast<blasint>(num_experts), static_cast<blasint>(d), 1.0f, input + begin * d,
                static_cast<blasint>(d), w.router_weight, static_cast<blasint>(d), 0.0f,
                logits + begin * num_experts, static_cast<blasint>(num_experts));
  }

  // 2. Scores and top-k.
  int32_t* ids = outputs.topk_ids != nullptr ? outputs.topk_ids : Ensure(ws.ids, num_assignments);
  float* weights =
      outputs.topk_weights != nullptr ? outputs.topk_weights : Ensure(ws.weights, num_assignments);
  RouteTopKCpu(logits, w.router_bias, num_tokens, num_experts, router, ids, weights);

  // 3. Permutation into expert order (capacity applied here).
  ExpertPermutation permutation{Ensure(ws.offsets, num_experts + 1),
                                Ensure(ws.to_assignment, num_assignments),
                                Ensure(ws.to_permuted, num_assignments)};
  const int64_t dropped =
      BuildExpertPermutationCpu(ids, num_tokens, k, num_experts,
                                ExpertCapacity(router, num_tokens, num_experts), permutation);
  const int64_t* offsets = permutation.expert_offsets;
  const int64_t num_rows = offsets[num_experts];

  // 4. One job per expert with tokens (+ the shared expert over every token).
  float* permuted_x = Ensure(ws.permuted_x, num_rows * d);
  float* hidden = Ensure(ws.hidden, num_rows * in_rows);
  float* permuted_y = Ensure(ws.permuted_y, num_rows * d);
  ws.jobs.clear();
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t begin = offsets[e];
    const int64_t rows = offsets[e + 1] - begin;
    if (rows == 0) continue;
    ws.jobs.push_back({ExpertSlice(w.w_in, w.weight_dtype, e, in_rows * d),
                       ExpertSlice(w.w_out, w.weight_dtype, e, d * w.ffn_size),
                       w.b_in != nullptr ? w.b_in + e * in_rows : nullptr,
                       w.b_out != nullptr ? w.b_out + e * d : nullptr, w.ffn_size, in_rows,
                       permuted_x + begin * d, rows, hidden + begin * in_rows,
                       permuted_y + begin * d, e});
  }
  const int64_t num_routed_jobs = static_cast<int64_t>(ws.jobs.size());
  float* shared_y = nullptr;
  if (w.shared_ffn_size > 0) {
    const int64_t shared_in_rows = w.shared_in_rows();
    shared_y = Ensure(ws.shared_y, num_tokens * d);
    ws.jobs.push_back({w.shared_w_in, w.shared_w_out, nullptr, nullptr, w.shared_ffn_size,
                       shared_in_rows, input, num_tokens,
                       Ensure(ws.shared_hidden, num_tokens * shared_in_rows), shared_y});
  }
  PlanTasks(ws.jobs, d, IsGated(w.activation), &ws.phase1_tasks, &ws.phase2_tasks);
  const int64_t phase1_count = static_cast<int64_t>(ws.phase1_tasks.size());
  const int64_t phase2_count = static_cast<int64_t>(ws.phase2_tasks.size());
  if (ws.thread_scratch.size() < static_cast<size_t>(omp_get_max_threads())) {
    ws.thread_scratch.resize(omp_get_max_threads());
  }
  if (w.weight_dtype != DType::kF32) {
    // Half weights are widened per task: size every thread's scratch for the largest task now,
    // so nothing allocates inside the parallel region.
    int64_t largest = 0;
    for (const ExpertTask& task : ws.phase1_tasks) largest = std::max(largest, task.count * d);
    for (const ExpertTask& task : ws.phase2_tasks) {
      largest = std::max(largest, task.count * ws.jobs[task.job].ffn);
    }
    for (auto& scratch : ws.thread_scratch) Ensure(scratch, largest);
  }
  float* output = outputs.output;
  double* expert_seconds = outputs.expert_seconds;
  if (expert_seconds != nullptr) {
    const int64_t num_jobs = static_cast<int64_t>(ws.jobs.size());
    TaskRangesByJob(ws.phase1_tasks, num_jobs, &ws.phase1_job_begin);
    TaskRangesByJob(ws.phase2_tasks, num_jobs, &ws.phase2_job_begin);
  }
  using Clock = std::chrono::steady_clock;
  Clock::time_point expert_start;  // profiling passes: written and read by `omp single` only

  // 5. Gather, experts (two phases), combine: one parallel region, barriers between steps.
  // Tiny layers stay on the calling thread: waking the team costs more than their work.
  const int64_t expert_macs = (num_rows + (shared_y != nullptr ? num_tokens : 0)) * 3 * d *
                              std::max(w.ffn_size, w.shared_ffn_size);
#pragma omp parallel if (expert_macs > (int64_t{1} << 20))
  {
    std::vector<float>* scratch = &ws.thread_scratch[omp_get_thread_num()];
#pragma omp for schedule(static)
    for (int64_t p = 0; p < num_rows; ++p) {
      const int64_t token = permutation.permuted_to_assignment[p] / k;
      std::memcpy(permuted_x + p * d, input + token * d, static_cast<size_t>(d) * sizeof(float));
    }
    if (expert_seconds == nullptr) {
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < phase1_count; ++i) {
        const ExpertTask& task = ws.phase1_tasks[i];
        RunPhase1Task(w, ws.jobs[task.job], task, scratch);
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < phase2_count; ++i) {
        const ExpertTask& task = ws.phase2_tasks[i];
        RunPhase2Task(w, ws.jobs[task.job], task, scratch);
      }
    } else {
      // Profiling pass: routed experts one at a time, every thread on each; the barriers that
      // end `single` and `for` put each expert's work between the two clock reads. The shared
      // expert runs after them, untimed. Every thread takes the same branch and loop trips.
      for (int64_t j = 0; j < num_routed_jobs; ++j) {
#pragma omp single
        expert_start = Clock::now();
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = ws.phase1_job_begin[j]; i < ws.phase1_job_begin[j + 1]; ++i) {
          const ExpertTask& task = ws.phase1_tasks[i];
          RunPhase1Task(w, ws.jobs[task.job], task, scratch);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = ws.phase2_job_begin[j]; i < ws.phase2_job_begin[j + 1]; ++i) {
          const ExpertTask& task = ws.phase2_tasks[i];
          RunPhase2Task(w, ws.jobs[task.job], task, scratch);
        }
#pragma omp single
        expert_seconds[ws.jobs[j].expert] =
            std::chrono::duration<double>(Clock::now() - expert_start).count();
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = ws.phase1_job_begin[num_routed_jobs]; i < phase1_count; ++i) {
        const ExpertTask& task = ws.phase1_tasks[i];
        RunPhase1Task(w, ws.jobs[task.job], task, scratch);
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = ws.phase2_job_begin[num_routed_jobs]; i < phase2_count; ++i) {
        const ExpertTask& task = ws.phase2_tasks[i];
        RunPhase2Task(w, ws.jobs[task.job], task, scratch);
      }
    }
    // Weighted combine in fixed slot order (deterministic); dropped assignments add nothing.
#pragma omp for schedule(static)
    for (int64_t t = 0; t < num_tokens; ++t) {
      float* out = output + t * d;
      std::fill_n(out, d, 0.0f);
      for (int s = 0; s < k; ++s) {
        const int64_t row = permutation.assignment_to_permuted[t * k + s];
        if (row < 0) continue;
        const float weight = weights[t * k + s];
        const float* y = permuted_y + row * d;
        for (int64_t j = 0; j < d; ++j) out[j] += weight * y[j];
      }
      if (shared_y != nullptr) {
        const float gate = SharedGate(w, input + t * d);
        const float* y = shared_y + t * d;
        for (int64_t j = 0; j < d; ++j) out[j] += gate * y[j];
      }
    }
  }

  if (outputs.expert_token_counts != nullptr) {
    for (int64_t e = 0; e < num_experts; ++e) {
      outputs.expert_token_counts[e] = offsets[e + 1] - offsets[e];
    }
  }
  if (outputs.dropped_assignments != nullptr) *outputs.dropped_assignments = dropped;
  return absl::OkStatus();
}

}  // namespace

absl::Status MoEForwardCpu(const MoELayerWeightsView& weights, const RouterConfig& router,
                           const float* input, int64_t num_tokens, const MoELayerOutputs& outputs,
                           CpuMoEWorkspace* workspace) {
  // The workspace grows with the batch; a batch too large for memory must fail this call, not
  // the process. (Allocation happens before the parallel region, so nothing escapes a thread.)
  try {
    return MoEForwardCpuImpl(weights, router, input, num_tokens, outputs, workspace);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("MoE forward: out of memory for the workspace of " +
                                        std::to_string(num_tokens) + " tokens");
  }
}

}  // namespace moe::kernels
