// Helper of the soak test: starts ModelInfer calls and then ends the process abruptly, so the
// kernel closes the connection with the calls still in flight (a client that crashes or loses
// its network, as the server sees it).
//
//   disconnect_client TARGET MODEL WIDTH ROWS CALLS DELAY_US
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>

#include "tests/integration/async_calls.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/server_process.h"

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s TARGET MODEL WIDTH ROWS CALLS DELAY_US\n", argv[0]);
    return 2;
  }
  const std::string target = argv[1];
  const std::string model = argv[2];
  const int64_t width = std::atoll(argv[3]);
  const int64_t rows = std::atoll(argv[4]);
  const int calls = std::atoi(argv[5]);
  const int delay_us = std::atoi(argv[6]);
  auto stub = inference::GRPCInferenceService::NewStub(moe::testing::MakeChannel(target));
  std::mt19937_64 rng(static_cast<uint64_t>(getpid()));
  // Leaked on purpose: the process ends without cleaning up, calls in flight.
  auto* in_flight = new moe::integration::AsyncCalls(*stub);
  for (int i = 0; i < calls; ++i) {
    in_flight->Start(moe::integration::MakeInferRequest(
        model, moe::integration::UniformRows(rng, rows, width), rows, width));
  }
  std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
  _exit(0);
}
