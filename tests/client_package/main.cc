// A program outside moe-serve using the installed client library.
//   moe-client-consumer            makes a client (no server needed)
//   moe-client-consumer HOST:PORT  waits for that server, then asks for liveness, the digits
//                                  model's description and one inference with routing
#include <cstdio>
#include <string>
#include <vector>

#include "moe/client/client.h"

namespace {

int Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "moe-client-consumer: %s: %s\n", what, status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  moe::client::ConnectOptions options;
  if (argc > 1) options.target = argv[1];
  auto client = moe::client::Client::Connect(options);
  if (!client.ok()) return Fail("connect", client.status());
  if (argc <= 1) {
    std::printf("client made for %s\n", options.target.c_str());
    return 0;
  }

  if (absl::Status ready = (*client)->WaitForReady(absl::Seconds(60)); !ready.ok()) {
    return Fail("wait for ready", ready);
  }
  auto live = (*client)->ServerLive();
  if (!live.ok()) return Fail("live", live.status());
  auto info = (*client)->DescribeModel("digits");
  if (!info.ok()) return Fail("describe", info.status());

  moe::client::InferInput input;
  input.name = info->input_name();
  input.shape = {1, info->input_width()};
  input.values.assign(static_cast<size_t>(info->input_width()), 0.5f);
  input.wire_type = moe::client::WireType::kBf16;
  moe::client::InferOptions infer_options;
  infer_options.want_routing = true;
  auto result = (*client)->Infer("digits", {input}, infer_options);
  if (!result.ok()) return Fail("infer", result.status());
  const moe::client::OutputTensor* logits = result->Find(info->output_name());
  const moe::client::OutputTensor* experts = result->Find("routing_expert_ids");
  if (logits == nullptr || experts == nullptr ||
      logits->fp32.size() != static_cast<size_t>(info->output_width())) {
    std::fprintf(stderr, "moe-client-consumer: unexpected outputs\n");
    return 1;
  }
  std::printf("live=%d model=%s (%s, %lld experts, top-%d) logits=%zu experts=%zu\n",
              static_cast<int>(*live), info->name().c_str(), info->architecture().c_str(),
              static_cast<long long>(info->num_experts()), info->top_k(), logits->fp32.size(),
              experts->int32.size());
  return 0;
}
