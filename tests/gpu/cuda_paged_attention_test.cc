// CUDA paged attention against the decoder's CPU attention (server/engine/decoder/
// paged_attention.cc), on the decoder's own KvCache: the host pool is mirrored to the device
// byte for byte, both sides write the step's new K/V rows (WriteKv / CudaWritePagedKv: the
// pools must then agree exactly, untouched slots included) and attend (PagedAttention /
// CudaPagedAttention: relative L2 error <= 1e-5, float32 on both sides). Shapes: head_dim 64,
// 80, 128 and 256; GQA ratios 1, 4, 8 and 16; contexts of 1, 15, 16, 17 and 300 tokens in
// blocks of 16, decode (one token per sequence, no query_start_loc) and prefill chunks after a
// cached prefix; block tables drawn from a shuffled free list; every key-partition and split
// path; float32 and bf16 caches. Outputs and workspaces are poisoned (NaN) before each run, the
// pool's unwritten slots hold NaN, and the seed is printed (replay with MOE_TEST_SEED).
// DISABLED_DecodeBenchmark (run by tests/gpu/check.sh) times decode steps against the copy
// ceiling. Skips without a device.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/kernels/cuda_moe.h"
#include "moe/kernels/cuda_paged_attention.h"
#include "moe/kernels/dtype.h"
#include "server/engine/decoder/kv_cache.h"
#include "server/engine/decoder/paged_attention.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::kernels {
namespace {

using gpu_testing::CudaTest;
using gpu_testing::RoundTo;
using ::moe::testing::IsOk;
using ::moe::testing::RelativeL2;
using ::moe::testing::StatusIs;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kLayers = 2;
constexpr int64_t kLayer = 1;  // the second layer, so that a wrong layer offset shows
constexpr int64_t kBlockTokens = 16;
// Both sides accumulate in float32, in different orders.
constexpr double kTolerance = 1e-5;

struct Chunk {
  int64_t cached = 0;      // tokens already in the cache
  int64_t new_tokens = 0;  // this step's tokens (their K/V are written, then they attend)
};

struct StepSpec {
  std::string name;
  int64_t head_dim = 128;
  int64_t num_heads = 8;
  int64_t num_kv_heads = 2;
  std::vector<Chunk> chunks;
  bool decode = false;  // no query_start_loc; every chunk is one token
  int64_t partition_tokens = 0;
  int64_t num_splits = 0;
  DType cache_dtype = DType::kF32;

  std::string ToString() const {
    std::string s =
        absl::StrCat(name, " hd=", head_dim, " H=", num_heads, " KV=", num_kv_heads,
                     " cache=", std::string(DTypeName(cache_dtype)),
                     " partition=", partition_tokens, " splits=", num_splits, " chunks=");
    for (const Chunk& c : chunks) absl::StrAppend(&s, "(", c.cached, "+", c.new_tokens, ")");
    return s;
  }
};

void PrintTo(const StepSpec& spec, std::ostream* os) { *os << spec.ToString(); }

// One step on the host: the decoder's cache and sequences, the step's qkv rows, and the
// metadata the device needs.
struct HostStep {
  std::unique_ptr<engine::KvCache> cache;
  std::vector<std::unique_ptr<engine::KvSequence>> sequences;
  std::vector<engine::AttentionChunk> chunks;
  engine::AttentionGeometry geometry;
  std::vector<float> qkv;  // [rows, width]: q [H hd], k [KV hd], v [KV hd]
  int64_t width = 0;
  int64_t rows = 0;
  int64_t pool_floats = 0;
  std::vector<int32_t> tables;  // [num_seqs, max_blocks], padded with -1
  int64_t max_blocks = 0;
  std::vector<int32_t> context_lens;
  std::vector<int32_t> query_start_loc;
  int64_t max_query_len = 0;
  int64_t max_context_len = 0;

  float* pool() { return cache->keys(0, 0); }  // the whole pool starts at block 0, layer 0
};

std::unique_ptr<HostStep> MakeStep(const StepSpec& spec, std::mt19937_64& rng) {
  auto step = std::make_unique<HostStep>();
  const int64_t hd = spec.head_dim, kv = spec.num_kv_heads, bt = kBlockTokens;
  engine::KvCacheShape shape;
  shape.num_layers = kLayers;
  shape.num_kv_heads = kv;
  shape.head_dim = hd;
  shape.block_tokens = bt;
  int64_t needed = 0;
  for (const Chunk& c : spec.chunks) needed += (c.cached + c.new_tokens + bt - 1) / bt;
  const int64_t total_blocks = needed + 9;  // spare blocks that no sequence gets
  const uint64_t per_block = 2 * sizeof(float) * kLayers * kv * bt * hd;
  auto cache = engine::KvCache::Create(shape, per_block * total_blocks);
  EXPECT_TRUE(cache.ok()) << cache.status();
  if (!cache.ok()) return nullptr;
  step->cache = *std::move(cache);
  engine::KvCache& pool = *step->cache;
  step->pool_floats = total_blocks * static_cast<int64_t>(per_block / sizeof(float));
  std::fill_n(step->pool(), step->pool_floats, kNaN);  // never-written slots read as NaN

  // Shuffle the free list: take every block singly, give them back in random order.
  {
    std::vector<std::unique_ptr<engine::KvSequence>> singles;
    for (int64_t b = 0; b < total_blocks; ++b) {
      singles.push_back(std::make_unique<engine::KvSequence>(&pool));
      EXPECT_TRUE(singles.back()->Reserve(1));
    }
    std::shuffle(singles.begin(), singles.end(), rng);
    for (auto& single : singles) single->Release();
  }
  // Grow the sequences one block at a time in random order, so their tables interleave.
  const size_t n = spec.chunks.size();
  for (size_t i = 0; i < n; ++i) {
    step->sequences.push_back(std::make_unique<engine::KvSequence>(&pool));
  }
  for (;;) {
    std::vector<size_t> growing;
    for (size_t i = 0; i < n; ++i) {
      const Chunk& c = spec.chunks[i];
      if (step->sequences[i]->capacity_tokens() < c.cached + c.new_tokens) growing.push_back(i);
    }
    if (growing.empty()) break;
    engine::KvSequence& seq = *step->sequences[growing[rng() % growing.size()]];
    if (!seq.Reserve(seq.capacity_tokens() + bt)) {
      ADD_FAILURE() << "the pool ran out of blocks";
      return nullptr;
    }
  }

  step->geometry = {spec.num_heads, kv, hd};
  step->width = (spec.num_heads + 2 * kv) * hd;
  for (const Chunk& c : spec.chunks) step->rows += c.new_tokens;
  step->qkv = testing::RandomFloats(rng, step->rows * step->width, 1.0f);
  for (int64_t r = 0; r < step->rows; ++r) {  // k and v as the cache will hold them
    for (int64_t j = spec.num_heads * hd; j < step->width; ++j) {
      float& value = step->qkv[r * step->width + j];
      value = RoundTo(spec.cache_dtype, value);
    }
  }

  // The cached prefix of every sequence, in both layers.
  for (size_t i = 0; i < n; ++i) {
    const std::span<const int32_t> table = step->sequences[i]->blocks();
    for (int64_t p = 0; p < spec.chunks[i].cached; ++p) {
      for (int64_t layer = 0; layer < kLayers; ++layer) {
        for (int64_t h = 0; h < kv; ++h) {
          const int64_t at = (h * bt + p % bt) * hd;
          for (float* row :
               {pool.keys(table[p / bt], layer) + at, pool.values(table[p / bt], layer) + at}) {
            for (int64_t c = 0; c < hd; ++c) {
              row[c] = RoundTo(spec.cache_dtype, std::normal_distribution<float>()(rng));
            }
          }
        }
      }
    }
  }

  int64_t row = 0;
  for (size_t i = 0; i < n; ++i) {
    step->max_blocks = std::max(step->max_blocks, step->sequences[i]->num_blocks());
  }
  step->max_blocks += 1;  // a padded column, never read
  step->tables.assign(n * step->max_blocks, -1);
  step->query_start_loc.push_back(0);
  for (size_t i = 0; i < n; ++i) {
    const Chunk& c = spec.chunks[i];
    step->chunks.push_back({step->sequences[i].get(), c.cached, c.new_tokens, row});
    const std::span<const int32_t> table = step->sequences[i]->blocks();
    std::copy(table.begin(), table.end(), step->tables.begin() + i * step->max_blocks);
    step->context_lens.push_back(static_cast<int32_t>(c.cached + c.new_tokens));
    row += c.new_tokens;
    step->query_start_loc.push_back(static_cast<int32_t>(row));
    step->max_query_len = std::max(step->max_query_len, c.new_tokens);
    step->max_context_len = std::max(step->max_context_len, c.cached + c.new_tokens);
  }
  return step;
}

// The step's buffers on the device.
struct DeviceStep {
  DeviceBuffer pool, qkv, tables, context_lens, query_start_loc, out, workspace;
  PagedKvCacheView cache;
  PagedBatch batch;
};

absl::StatusOr<DeviceBuffer> Upload(CudaContext& context, const void* host, size_t bytes) {
  auto buffer = DeviceBuffer::Allocate(context, std::max<size_t>(bytes, 4));
  if (!buffer.ok()) return buffer.status();
  if (bytes > 0) {
    absl::Status status = buffer->CopyFromHost(host, bytes);
    if (!status.ok()) return status;
  }
  return buffer;
}

// Mirrors the host pool as it is now (before the step's writes) and the step's inputs.
absl::Status UploadStep(CudaContext& context, const StepSpec& spec, HostStep& host,
                        DeviceStep& dev) {
  const size_t pool_elems = static_cast<size_t>(host.pool_floats);
  if (spec.cache_dtype == DType::kF32) {
    auto pool = Upload(context, host.pool(), pool_elems * sizeof(float));
    if (!pool.ok()) return pool.status();
    dev.pool = *std::move(pool);
  } else {
    auto pool = DeviceBuffer::Allocate(context, pool_elems * 2);
    if (!pool.ok()) return pool.status();
    dev.pool = *std::move(pool);
    absl::Status status =
        UploadFloats(context, host.pool(), host.pool_floats, spec.cache_dtype, dev.pool.data());
    if (!status.ok()) return status;
  }
  for (auto [dst, src, bytes] :
       {std::tuple<DeviceBuffer*, const void*, size_t>{&dev.qkv, host.qkv.data(),
                                                       host.qkv.size() * sizeof(float)},
        {&dev.tables, host.tables.data(), host.tables.size() * sizeof(int32_t)},
        {&dev.context_lens, host.context_lens.data(), host.context_lens.size() * sizeof(int32_t)},
        {&dev.query_start_loc, host.query_start_loc.data(),
         host.query_start_loc.size() * sizeof(int32_t)}}) {
    auto buffer = Upload(context, src, bytes);
    if (!buffer.ok()) return buffer.status();
    *dst = *std::move(buffer);
  }
  auto out = DeviceBuffer::Allocate(
      context, std::max<size_t>(4, host.rows * spec.num_heads * spec.head_dim * sizeof(float)));
  if (!out.ok()) return out.status();
  dev.out = *std::move(out);

  dev.cache.data = dev.pool.data();
  dev.cache.dtype = spec.cache_dtype;
  dev.cache.num_blocks = host.cache->total_blocks();
  dev.cache.num_layers = kLayers;
  dev.cache.num_kv_heads = spec.num_kv_heads;
  dev.cache.block_tokens = kBlockTokens;
  dev.cache.head_dim = spec.head_dim;
  dev.batch.num_seqs = static_cast<int64_t>(spec.chunks.size());
  dev.batch.block_tables = dev.tables.as<int32_t>();
  dev.batch.max_blocks_per_seq = host.max_blocks;
  dev.batch.context_lens = dev.context_lens.as<int32_t>();
  dev.batch.query_start_loc = spec.decode ? nullptr : dev.query_start_loc.as<int32_t>();
  dev.batch.num_query_rows = host.rows;
  dev.batch.max_query_len = host.max_query_len;
  dev.batch.max_context_len = host.max_context_len;
  return absl::OkStatus();
}

CudaWritePagedKvParams WriteParams(const StepSpec& spec, const HostStep& host, DeviceStep& dev) {
  CudaWritePagedKvParams w;
  w.cache = dev.cache;
  w.layer = kLayer;
  w.batch = dev.batch;
  w.k = dev.qkv.as<float>() + spec.num_heads * spec.head_dim;
  w.k_stride = host.width;
  w.v = w.k + spec.num_kv_heads * spec.head_dim;
  w.v_stride = host.width;
  return w;
}

CudaPagedAttentionParams AttentionParams(const StepSpec& spec, const HostStep& host,
                                         DeviceStep& dev) {
  CudaPagedAttentionParams a;
  a.cache = dev.cache;
  a.layer = kLayer;
  a.batch = dev.batch;
  a.num_heads = spec.num_heads;
  a.q = dev.qkv.as<float>();
  a.q_stride = host.width;
  a.out = dev.out.as<float>();
  a.partition_tokens = spec.partition_tokens;
  a.num_splits = spec.num_splits;
  return a;
}

// Both NaN or bit-equal, for every element.
int64_t CountDifferences(const std::vector<float>& got, const float* want, int64_t count,
                         int64_t* first) {
  int64_t differences = 0;
  for (int64_t i = 0; i < count; ++i) {
    const bool same = std::isnan(got[i]) ? std::isnan(want[i])
                                         : std::memcmp(&got[i], &want[i], sizeof(float)) == 0;
    if (!same && differences++ == 0) *first = i;
  }
  return differences;
}

class PagedAttentionMatchesCpuTest : public ::testing::WithParamInterface<StepSpec>,
                                     public CudaTest {};

TEST_P(PagedAttentionMatchesCpuTest, WriteAndAttentionMatchCpu) {
  const StepSpec& spec = GetParam();
  const uint64_t seed = testing::FreshSeed();
  std::cout << "seed " << seed << " (MOE_TEST_SEED=" << seed << " replays)\n";
  SCOPED_TRACE(absl::StrCat("seed ", seed, ", ", spec.ToString()));
  std::mt19937_64 rng(seed);
  std::unique_ptr<HostStep> host = MakeStep(spec, rng);
  ASSERT_NE(host, nullptr);
  DeviceStep dev;
  ASSERT_THAT(UploadStep(*context_, spec, *host, dev), IsOk());

  // CPU: the decoder's own write and attention.
  const engine::QkvRows qkv{host->qkv.data(), host->width};
  engine::WriteKv(kLayer, host->chunks, host->geometry, qkv);
  std::vector<float> cpu_out(host->rows * spec.num_heads * spec.head_dim, kNaN);
  engine::PagedAttention(kLayer, host->chunks, host->geometry, qkv, cpu_out.data());

  // 1. The write: the whole device pool equals the CPU pool (in the cache dtype).
  ASSERT_THAT(CudaWritePagedKv(*context_, WriteParams(spec, *host, dev)), IsOk());
  std::vector<float> pool(host->pool_floats);
  ASSERT_THAT(
      DownloadFloats(*context_, dev.pool.data(), spec.cache_dtype, host->pool_floats, pool.data()),
      IsOk());
  int64_t first = -1;
  const int64_t differences = CountDifferences(pool, host->pool(), host->pool_floats, &first);
  EXPECT_EQ(differences, 0) << "pool elements differing from the CPU cache after WriteKv; first "
                            << "at element " << first << ": device " << pool[first] << ", CPU "
                            << host->pool()[first];

  // 2. Attention, on the device's own pool.
  CudaPagedAttentionParams params = AttentionParams(spec, *host, dev);
  auto workspace_bytes = CudaPagedAttentionWorkspaceBytes(*context_, params);
  ASSERT_TRUE(workspace_bytes.ok()) << workspace_bytes.status();
  if (*workspace_bytes > 0) {
    auto workspace = DeviceBuffer::Allocate(*context_, *workspace_bytes);
    ASSERT_TRUE(workspace.ok()) << workspace.status();
    dev.workspace = *std::move(workspace);
    ASSERT_THAT(dev.workspace.FillBytes(0xFF), IsOk());  // NaN partials until written
    params.workspace = dev.workspace.data();
    params.workspace_bytes = dev.workspace.bytes();
  }
  std::vector<std::vector<float>> runs;
  for (int run = 0; run < 2; ++run) {
    ASSERT_THAT(dev.out.FillBytes(0xFF), IsOk());
    ASSERT_THAT(CudaPagedAttention(*context_, params), IsOk());
    ASSERT_THAT(context_->Synchronize(), IsOk());
    std::vector<float> out(cpu_out.size(), kNaN);
    ASSERT_THAT(dev.out.CopyToHost(out.data(), out.size() * sizeof(float)), IsOk());
    runs.push_back(std::move(out));
  }
  const std::vector<float>& gpu_out = runs[0];
  const int64_t not_finite =
      std::count_if(gpu_out.begin(), gpu_out.end(), [](float v) { return !std::isfinite(v); });
  ASSERT_EQ(not_finite, 0) << "output elements left poisoned or not finite";
  const double error = RelativeL2(gpu_out.data(), cpu_out.data(), cpu_out.size());
  EXPECT_LE(error, kTolerance) << "attention output relative L2 " << error << " > " << kTolerance
                               << " (workspace " << *workspace_bytes << " bytes)";
  EXPECT_EQ(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)), 0)
      << "two runs of the same step differ: the kernels must be deterministic";
}

std::vector<StepSpec> AllSteps() {
  // Contexts 1, 15, 16, 17 and 300 in each batch.
  const std::vector<Chunk> decode = {{0, 1}, {14, 1}, {15, 1}, {16, 1}, {299, 1}};
  const std::vector<Chunk> prompts = {{0, 1}, {0, 15}, {0, 16}, {0, 17}, {0, 300}};
  const std::vector<Chunk> chunked = {{16, 1}, {5, 12}, {283, 17}, {100, 200}, {0, 16}, {31, 2}};
  struct Tuning {
    const char* name;
    int64_t partition, splits;
  };
  const Tuning tunings[] = {
      {"auto", 0, 0},      // as the engine would call it
      {"p16s1", 16, 1},    // many partitions, one block: the online softmax across them
      {"p32s4", 32, 4},    // splits of several partitions each, then the combine
      {"p64s64", 64, 64},  // as many splits as partitions
  };
  struct Heads {
    int64_t h, kv;
  };
  std::vector<StepSpec> steps;
  for (int64_t hd : {64, 128}) {
    for (Heads heads : {Heads{4, 4}, Heads{8, 2}, Heads{16, 2}}) {
      for (const auto& [kind, chunks, is_decode] :
           {std::tuple<const char*, const std::vector<Chunk>*, bool>{"decode", &decode, true},
            {"prompts", &prompts, false},
            {"chunked", &chunked, false}}) {
        for (const Tuning& t : tunings) {
          StepSpec s;
          s.name = absl::StrCat(kind, "_hd", hd, "_gqa", heads.h / heads.kv, "_", t.name);
          s.head_dim = hd;
          s.num_heads = heads.h;
          s.num_kv_heads = heads.kv;
          s.chunks = *chunks;
          s.decode = is_decode;
          s.partition_tokens = t.partition;
          s.num_splits = t.splits;
          steps.push_back(s);
        }
      }
    }
  }
  // Larger heads, a head_dim that is no multiple of 32, GQA 16, a bf16 cache, one sequence.
  auto add = [&](const char* name, int64_t hd, int64_t h, int64_t kv, std::vector<Chunk> chunks,
                 bool is_decode, DType dtype, int64_t partition = 0, int64_t splits = 0) {
    StepSpec s;
    s.name = name;
    s.head_dim = hd;
    s.num_heads = h;
    s.num_kv_heads = kv;
    s.chunks = std::move(chunks);
    s.decode = is_decode;
    s.cache_dtype = dtype;
    s.partition_tokens = partition;
    s.num_splits = splits;
    steps.push_back(s);
  };
  add("decode_hd256_gqa1", 256, 4, 4, decode, true, DType::kF32);
  add("chunked_hd256_gqa1", 256, 4, 4, chunked, false, DType::kF32);
  add("chunked_hd256_gqa8_p32s3", 256, 16, 2, chunked, false, DType::kF32, 32, 3);
  add("decode_hd128_gqa16", 128, 32, 2, decode, true, DType::kF32);
  add("chunked_hd128_gqa16", 128, 32, 2, chunked, false, DType::kF32);
  add("chunked_hd80_gqa4", 80, 8, 2, chunked, false, DType::kF32);
  add("decode_hd80_gqa4_p16s5", 80, 8, 2, decode, true, DType::kF32, 16, 5);
  add("decode_bf16_hd128_gqa4", 128, 8, 2, decode, true, DType::kBF16);
  add("chunked_bf16_hd128_gqa4", 128, 8, 2, chunked, false, DType::kBF16);
  add("chunked_bf16_hd64_gqa8_p16s4", 64, 16, 2, chunked, false, DType::kBF16, 16, 4);
  add("decode_one_sequence_long", 128, 8, 2, {{1999, 1}}, true, DType::kF32);
  add("prompt_one_sequence_long", 64, 8, 8, {{0, 700}}, false, DType::kF32);
  add("prefill_one_token_chunks", 128, 8, 2, {{0, 1}, {40, 1}, {299, 1}}, false, DType::kF32);
  return steps;
}

INSTANTIATE_TEST_SUITE_P(Shapes, PagedAttentionMatchesCpuTest, ::testing::ValuesIn(AllSteps()),
                         [](const ::testing::TestParamInfo<StepSpec>& info) {
                           return info.param.name;
                         });

// A small valid decode step whose fields the cases below break one at a time.
class PagedAttentionArgumentsTest : public CudaTest {
 protected:
  void SetUp() override {
    CudaTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    spec_.name = "arguments";
    spec_.head_dim = 64;
    spec_.num_heads = 8;
    spec_.num_kv_heads = 2;
    spec_.chunks = {{299, 1}, {3, 1}};
    spec_.decode = true;
    std::mt19937_64 rng(1);
    host_ = MakeStep(spec_, rng);
    ASSERT_NE(host_, nullptr);
    ASSERT_THAT(UploadStep(*context_, spec_, *host_, dev_), IsOk());
    // Enough for any split count of this step (2 rows x 8 heads x 64 splits x 66 floats).
    auto workspace = DeviceBuffer::Allocate(*context_, size_t{1} << 20);
    ASSERT_TRUE(workspace.ok()) << workspace.status();
    dev_.workspace = *std::move(workspace);
  }

  CudaPagedAttentionParams Params() {
    CudaPagedAttentionParams p = AttentionParams(spec_, *host_, dev_);
    p.workspace = dev_.workspace.data();
    p.workspace_bytes = dev_.workspace.bytes();
    return p;
  }

  StepSpec spec_;
  std::unique_ptr<HostStep> host_;
  DeviceStep dev_;
};

TEST_F(PagedAttentionArgumentsTest, RefusesBadShapesWithInvalidArgument) {
  using Mutation = void (*)(CudaPagedAttentionParams&);
  const std::pair<const char*, Mutation> cases[] = {
      {"head_dim 257", [](CudaPagedAttentionParams& p) { p.cache.head_dim = 257; }},
      {"head_dim 0", [](CudaPagedAttentionParams& p) { p.cache.head_dim = 0; }},
      {"f16 cache", [](CudaPagedAttentionParams& p) { p.cache.dtype = DType::kF16; }},
      {"null cache", [](CudaPagedAttentionParams& p) { p.cache.data = nullptr; }},
      {"layer out of range", [](CudaPagedAttentionParams& p) { p.layer = kLayers; }},
      {"heads not a multiple", [](CudaPagedAttentionParams& p) { p.num_heads = 7; }},
      {"GQA ratio 65", [](CudaPagedAttentionParams& p) { p.num_heads = 65 * 2; }},
      {"null q", [](CudaPagedAttentionParams& p) { p.q = nullptr; }},
      {"null out", [](CudaPagedAttentionParams& p) { p.out = nullptr; }},
      {"q_stride short", [](CudaPagedAttentionParams& p) { p.q_stride = 8 * 64 - 1; }},
      {"context past the tables",
       [](CudaPagedAttentionParams& p) {
         p.batch.max_context_len = p.batch.max_blocks_per_seq * kBlockTokens + 1;
       }},
      {"decode with two tokens", [](CudaPagedAttentionParams& p) { p.batch.max_query_len = 2; }},
      {"decode rows != seqs", [](CudaPagedAttentionParams& p) { p.batch.num_query_rows = 3; }},
      {"null block tables", [](CudaPagedAttentionParams& p) { p.batch.block_tables = nullptr; }},
      {"partition 2000", [](CudaPagedAttentionParams& p) { p.partition_tokens = 2000; }},
      {"splits 65", [](CudaPagedAttentionParams& p) { p.num_splits = 65; }},
      {"negative scale", [](CudaPagedAttentionParams& p) { p.scale = -1.0f; }},
      {"missing workspace",
       [](CudaPagedAttentionParams& p) {
         p.partition_tokens = 16;
         p.num_splits = 4;
         p.workspace = nullptr;
         p.workspace_bytes = 0;
       }},
  };
  for (const auto& [what, mutate] : cases) {
    CudaPagedAttentionParams params = Params();
    EXPECT_THAT(CudaPagedAttention(*context_, params), IsOk()) << "unmodified, before " << what;
    mutate(params);
    EXPECT_THAT(CudaPagedAttention(*context_, params), StatusIs(absl::StatusCode::kInvalidArgument))
        << what;
  }
  // The same checks guard the write.
  using WriteMutation = void (*)(CudaWritePagedKvParams&);
  const std::pair<const char*, WriteMutation> write_cases[] = {
      {"null k", [](CudaWritePagedKvParams& p) { p.k = nullptr; }},
      {"v_stride short", [](CudaWritePagedKvParams& p) { p.v_stride = 2 * 64 - 1; }},
      {"pool of 0 blocks", [](CudaWritePagedKvParams& p) { p.cache.num_blocks = 0; }},
      {"layer -1", [](CudaWritePagedKvParams& p) { p.layer = -1; }},
  };
  for (const auto& [what, mutate] : write_cases) {
    CudaWritePagedKvParams params = WriteParams(spec_, *host_, dev_);
    EXPECT_THAT(CudaWritePagedKv(*context_, params), IsOk()) << "unmodified, before " << what;
    mutate(params);
    EXPECT_THAT(CudaWritePagedKv(*context_, params), StatusIs(absl::StatusCode::kInvalidArgument))
        << what;
  }
  EXPECT_THAT(context_->Synchronize(), IsOk());
}

// A sequence with no cached token (context length 0) gets zeros; an empty batch is a no-op.
TEST_F(PagedAttentionArgumentsTest, ContextOfZeroGivesZerosAndEmptyBatchIsNoOp) {
  ASSERT_THAT(CudaWritePagedKv(*context_, WriteParams(spec_, *host_, dev_)), IsOk());
  const std::vector<int32_t> lens = {0, 4};
  ASSERT_THAT(dev_.context_lens.CopyFromHost(lens.data(), lens.size() * sizeof(int32_t)), IsOk());
  CudaPagedAttentionParams params = Params();
  ASSERT_THAT(dev_.out.FillBytes(0xFF), IsOk());
  ASSERT_THAT(CudaPagedAttention(*context_, params), IsOk());
  std::vector<float> out(2 * 8 * 64);
  ASSERT_THAT(dev_.out.CopyToHost(out.data(), out.size() * sizeof(float)), IsOk());
  for (int64_t i = 0; i < 8 * 64; ++i) ASSERT_EQ(out[i], 0.0f) << "element " << i;
  for (int64_t i = 8 * 64; i < 2 * 8 * 64; ++i) ASSERT_TRUE(std::isfinite(out[i])) << i;

  params.batch.num_seqs = 0;
  params.batch.num_query_rows = 0;
  EXPECT_THAT(CudaPagedAttention(*context_, params), IsOk());
  EXPECT_THAT(context_->Synchronize(), IsOk());
}

// Decode steps of Mixtral-like attention (32 query heads, 8 kv heads, head_dim 128, one layer):
// sequences x context -> microseconds, the bytes each step must read (K and V of every context
// token) over the time, and that rate as a fraction of the device-to-device copy ceiling.
// Printed as '| '-prefixed table lines that tests/gpu/check.sh collects. Disabled in normal runs.
class PagedAttentionBenchmark : public CudaTest {};

TEST_F(PagedAttentionBenchmark, DISABLED_DecodeBenchmark) {
  constexpr int64_t kHeads = 32, kKvHeads = 8, kHeadDim = 128;
  auto copy = MeasureCopyBandwidth(*context_, size_t{1} << 30, 10);
  ASSERT_TRUE(copy.ok()) << copy.status();
  std::printf("| paged attention decode: H=%lld KV=%lld hd=%lld, block 16, device %s\n",
              static_cast<long long>(kHeads), static_cast<long long>(kKvHeads),
              static_cast<long long>(kHeadDim), context_->device_info().name.c_str());
  std::printf("| copy ceiling %.0f GB/s (read + write)\n", copy->gigabytes_per_second);
  std::printf("| %-5s %5s %7s %7s %6s %10s %9s %8s\n", "cache", "seqs", "context", "splits",
              "ws MB", "median us", "GB/s", "of copy");
  std::mt19937_64 rng(testing::FreshSeed());
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (int64_t seqs : {1, 16, 64, 256}) {
      for (int64_t context : {256, 1024, 4096}) {
        if (seqs * context > (int64_t{1} << 18)) continue;  // <= 4 GiB of f32 cache
        const int64_t blocks_per_seq = context / kBlockTokens;
        const int64_t num_blocks = seqs * blocks_per_seq;
        const size_t elem = dtype == DType::kF32 ? 4 : 2;
        const size_t pool_elems =
            static_cast<size_t>(num_blocks) * 2 * kKvHeads * kBlockTokens * kHeadDim;
        auto pool = DeviceBuffer::Allocate(*context_, pool_elems * elem);
        ASSERT_TRUE(pool.ok()) << pool.status();
        ASSERT_THAT(FillRandomNormal(*context_, pool->data(), dtype,
                                     static_cast<int64_t>(pool_elems), rng()),
                    IsOk());
        std::vector<int32_t> ids(num_blocks);
        std::iota(ids.begin(), ids.end(), 0);
        std::shuffle(ids.begin(), ids.end(), rng);
        const std::vector<int32_t> lens(seqs, static_cast<int32_t>(context));
        auto tables = Upload(*context_, ids.data(), ids.size() * sizeof(int32_t));
        auto lens_dev = Upload(*context_, lens.data(), lens.size() * sizeof(int32_t));
        auto q = DeviceBuffer::Allocate(*context_, seqs * kHeads * kHeadDim * sizeof(float));
        auto out = DeviceBuffer::Allocate(*context_, seqs * kHeads * kHeadDim * sizeof(float));
        ASSERT_TRUE(tables.ok() && lens_dev.ok() && q.ok() && out.ok());
        ASSERT_THAT(
            FillRandomNormal(*context_, q->data(), DType::kF32, seqs * kHeads * kHeadDim, rng()),
            IsOk());
        CudaPagedAttentionParams p;
        p.cache = {pool->data(), dtype, num_blocks, 1, kKvHeads, kBlockTokens, kHeadDim};
        p.batch.num_seqs = seqs;
        p.batch.block_tables = tables->as<int32_t>();
        p.batch.max_blocks_per_seq = blocks_per_seq;
        p.batch.context_lens = lens_dev->as<int32_t>();
        p.batch.num_query_rows = seqs;
        p.batch.max_query_len = 1;
        p.batch.max_context_len = context;
        p.num_heads = kHeads;
        p.q = q->as<float>();
        p.q_stride = kHeads * kHeadDim;
        p.out = out->as<float>();
        auto ws_bytes = CudaPagedAttentionWorkspaceBytes(*context_, p);
        ASSERT_TRUE(ws_bytes.ok()) << ws_bytes.status();
        DeviceBuffer workspace;
        if (*ws_bytes > 0) {
          auto ws = DeviceBuffer::Allocate(*context_, *ws_bytes);
          ASSERT_TRUE(ws.ok()) << ws.status();
          workspace = *std::move(ws);
          p.workspace = workspace.data();
          p.workspace_bytes = workspace.bytes();
        }
        auto times = TimeOnStreamMs(
            *context_, [&] { return CudaPagedAttention(*context_, p); }, 3, 20);
        ASSERT_TRUE(times.ok()) << times.status();
        const double ms = MedianOf(*times);
        const double bytes = static_cast<double>(seqs) * context * kKvHeads * kHeadDim * 2 * elem +
                             2.0 * seqs * kHeads * kHeadDim * sizeof(float);
        const double gbps = bytes / (ms * 1e-3) / 1e9;
        // Splits as the plan chose them: partials are [rows, H, splits, hd + 2] floats.
        const double splits = *ws_bytes == 0
                                  ? 1.0
                                  : std::round(static_cast<double>(*ws_bytes) /
                                               (seqs * kHeads * (kHeadDim + 2) * sizeof(float)));
        std::printf("| %-5s %5lld %7lld %7.0f %6.1f %10.1f %9.0f %7.0f%%\n",
                    std::string(DTypeName(dtype)).c_str(), static_cast<long long>(seqs),
                    static_cast<long long>(context), splits, *ws_bytes / 1e6, ms * 1e3, gbps,
                    100.0 * gbps / copy->gigabytes_per_second);
      }
    }
  }
}

}  // namespace
}  // namespace moe::kernels
