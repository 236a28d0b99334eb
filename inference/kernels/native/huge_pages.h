// Asking Linux for transparent huge pages under a freshly allocated buffer that decoding streams every
// token (a repacked weight): 4 KiB pages cost a TLB miss per page, ~40k a token for the 0.5B's matrices.
// Where the kernel's THP mode is `madvise` (common), nothing is huge unless asked; elsewhere a no-op.
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace qwen_native {

// Call before the buffer is first written: its 2 MiB-aligned part is then faulted in as huge pages.
inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

}  // namespace qwen_native
