// Splitting a parallel loop into chunks that torch's threads take in turn.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace qwen_native {

// f(begin, end) over [0, total) in chunks of `chunk`, each thread taking the next chunk from a shared
// counter. With at::parallel_for's even split, a thread slowed by another process on its core (common
// on shared virtual machines) holds up the whole call; here it holds up only its last chunk.
template <class F>
void parallel_chunks(int64_t total, int64_t chunk, const F& f) {
  chunk = std::max<int64_t>(1, chunk);
  const int64_t chunks = (total + chunk - 1) / chunk;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), chunks);
  if (threads <= 1 || at::in_parallel_region()) {
    if (total > 0) f(0, total);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) f(c * chunk, std::min(total, (c + 1) * chunk));
  });
}

}  // namespace qwen_native
