// Keeps idle OpenMP workers from spinning. libgomp's default lets a worker busy-wait after each
// parallel region; in a server that leaves the cores to gRPC threads between batches exactly
// when requests must be read and answered (measured on 2 cores, one row per request at
// concurrency 1: p99 45 ms spinning, 5 ms passive). The runtime reads OMP_WAIT_POLICY once,
// before main, so the only way to change it from inside is to set it and start again.
#pragma once

namespace moe::server {

// When OMP_WAIT_POLICY is unset: sets it to PASSIVE and re-executes this program with the same
// arguments (same process id; does not return on success). When it is set, by the user or by
// the re-execution, returns at once and the user's choice stands.
void EnsurePassiveOpenMPWaitPolicy(char** argv);

}  // namespace moe::server
