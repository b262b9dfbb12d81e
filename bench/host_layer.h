// A randomly initialised MoE layer in host memory, in the internal layout of moe_layer.h.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "bench/shapes.h"
#include "moe/kernels/moe_layer.h"

namespace moe::bench {

// Bytes of one routed expert's weights (w_in and w_out) in `dtype`, SwiGLU layout.
int64_t ExpertWeightBytes(const MoEShape& shape, kernels::DType dtype);
// Bytes of the float32 router [E, d].
int64_t RouterWeightBytes(const MoEShape& shape);
// Bytes of the whole layer: router + E experts.
int64_t LayerWeightBytes(const MoEShape& shape, kernels::DType dtype);

class HostMoELayer {
 public:
  // Router and expert weights uniform in +-1/sqrt(fan_in), seeded by `seed`.
  static absl::StatusOr<std::unique_ptr<HostMoELayer>> Create(const MoEShape& shape,
                                                              kernels::DType dtype, uint64_t seed);
  HostMoELayer(const HostMoELayer&) = delete;
  HostMoELayer& operator=(const HostMoELayer&) = delete;

  const MoEShape& shape() const { return shape_; }
  kernels::DType dtype() const { return dtype_; }
  // Host pointers into this object; valid while it lives.
  const kernels::MoELayerWeightsView& view() const { return view_; }
  kernels::RouterConfig router() const;

 private:
  HostMoELayer(const MoEShape& shape, kernels::DType dtype) : shape_(shape), dtype_(dtype) {}

  MoEShape shape_;
  kernels::DType dtype_;
  std::unique_ptr<float[]> router_weight_;  // [E, d]
  std::unique_ptr<char[]> w_in_;            // [E, 2f, d]
  std::unique_ptr<char[]> w_out_;           // [E, d, f]
  kernels::MoELayerWeightsView view_;
};

}  // namespace moe::bench
