// Timing for the microbenchmarks: the mean time of a launch, with CUDA events.
#pragma once
#include <cuda_runtime.h>

// Runs `launch` twice to warm up, then `reps` times between two events; returns the mean in ms.
template <typename Launch>
float mean_launch_ms(Launch launch, int reps = 5) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int rep = 0; rep < 2; ++rep) launch();
  cudaEventRecord(a);
  for (int rep = 0; rep < reps; ++rep) launch();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / reps;
}
