#include "server/model/builtin_model.h"

#include <cstddef>
#include <span>
#include <string_view>

// Defined by builtin_model_data.S.
extern "C" {
extern const char moe_builtin_config_begin[];
extern const char moe_builtin_config_end[];
extern const std::byte moe_builtin_weights_begin[];
extern const std::byte moe_builtin_weights_end[];
}

namespace moe::model {

std::string_view BuiltinModelConfigJson() {
  return std::string_view(moe_builtin_config_begin,
                          static_cast<size_t>(moe_builtin_config_end - moe_builtin_config_begin));
}

std::span<const std::byte> BuiltinModelWeights() {
  return std::span<const std::byte>(
      moe_builtin_weights_begin,
      static_cast<size_t>(moe_builtin_weights_end - moe_builtin_weights_begin));
}

}  // namespace moe::model
