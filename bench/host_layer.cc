#include "bench/host_layer.h"

#include <cmath>
#include <new>

#include "absl/strings/str_cat.h"
#include "bench/random_fill.h"

namespace moe::bench {
namespace {

using kernels::DType;

// Distinct streams per tensor from one user seed.
constexpr uint64_t kRouterStream = 0x726f75746572ull;
constexpr uint64_t kWInStream = 0x775f696eull;
constexpr uint64_t kWOutStream = 0x775f6f7574ull;

template <typename T>
absl::StatusOr<std::unique_ptr<T[]>> Allocate(int64_t count, const char* what) {
  // No value-initialisation: the parallel fill touches the pages first.
  std::unique_ptr<T[]> buffer(new (std::nothrow) T[static_cast<size_t>(count)]);
  if (buffer == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", count * static_cast<int64_t>(sizeof(T)), " bytes for ", what));
  }
  return buffer;
}

}  // namespace

int64_t ExpertWeightBytes(const MoEShape& shape, DType dtype) {
  return (2 * shape.ffn * shape.hidden + shape.hidden * shape.ffn) *
         static_cast<int64_t>(kernels::DTypeSize(dtype));
}

int64_t RouterWeightBytes(const MoEShape& shape) {
  return shape.experts * shape.hidden * static_cast<int64_t>(sizeof(float));
}

int64_t LayerWeightBytes(const MoEShape& shape, DType dtype) {
  return RouterWeightBytes(shape) + shape.experts * ExpertWeightBytes(shape, dtype);
}

absl::StatusOr<std::unique_ptr<HostMoELayer>> HostMoELayer::Create(const MoEShape& shape,
                                                                   DType dtype, uint64_t seed) {
  std::unique_ptr<HostMoELayer> layer(new HostMoELayer(shape, dtype));
  const int64_t d = shape.hidden;
  const int64_t f = shape.ffn;
  const int64_t e = shape.experts;
  const int64_t elem = static_cast<int64_t>(kernels::DTypeSize(dtype));
  const int64_t in_count = e * 2 * f * d;
  const int64_t out_count = e * d * f;

  auto router = Allocate<float>(e * d, "router weights");
  if (!router.ok()) return router.status();
  layer->router_weight_ = *std::move(router);
  auto w_in = Allocate<char>(in_count * elem, "expert w_in");
  if (!w_in.ok()) return w_in.status();
  layer->w_in_ = *std::move(w_in);
  auto w_out = Allocate<char>(out_count * elem, "expert w_out");
  if (!w_out.ok()) return w_out.status();
  layer->w_out_ = *std::move(w_out);

  const float in_scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float out_scale = 1.0f / std::sqrt(static_cast<float>(f));
  FillUniform(DType::kF32, layer->router_weight_.get(), e * d, in_scale, seed ^ kRouterStream);
  FillUniform(dtype, layer->w_in_.get(), in_count, in_scale, seed ^ kWInStream);
  FillUniform(dtype, layer->w_out_.get(), out_count, out_scale, seed ^ kWOutStream);

  kernels::MoELayerWeightsView& view = layer->view_;
  view.hidden_size = d;
  view.ffn_size = f;
  view.num_experts = e;
  view.activation = kernels::Activation::kSwiGLU;
  view.weight_dtype = dtype;
  view.router_weight = layer->router_weight_.get();
  view.w_in = layer->w_in_.get();
  view.w_out = layer->w_out_.get();
  return layer;
}

kernels::RouterConfig HostMoELayer::router() const {
  kernels::RouterConfig router;
  router.top_k = shape_.top_k;
  router.scoring = kernels::ScoringFunc::kSoftmax;
  router.renormalize = shape_.renormalize;
  return router;
}

}  // namespace moe::bench
