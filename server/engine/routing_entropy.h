// Entropy of a router's gate distribution, the "how sure is the router" figure of the metrics:
// 0 when one expert gets all the probability, ln(E) when every expert gets the same.
#pragma once

#include <cstdint>

#include "moe/kernels/moe_layer.h"

namespace moe::engine {

// Sum over `rows` tokens of the entropy (nats) of each token's gate distribution over all E
// experts, from its router logits ([rows, E], row-major). The distribution is the softmax of
// the logits for softmax routers, and the sigmoid scores scaled to sum to 1 for sigmoid
// routers. Computed in double precision.
double GateEntropySumNats(const float* router_logits, int64_t rows, int64_t num_experts,
                          kernels::ScoringFunc scoring);

}  // namespace moe::engine
