// The 6-bit sub-block scales and mins of a Q4_K/Q5_K block (12 packed bytes).
#pragma once

#include <cstdint>
#include <cstring>

namespace qwen_native {

// Q4_K/Q5_K: 6-bit scale and min of sub-block j from the 12 packed bytes.
inline void k_scale_min(int j, const uint8_t* q, uint8_t& scale, uint8_t& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// All 8 scales and mins of a Q4_K/Q5_K block at once, 4 bytes at a time (little-endian, as GGUF is).
inline void k_scales_mins(const uint8_t* q, uint8_t scales[8], uint8_t mins[8]) {
  uint32_t low, mid, top;
  std::memcpy(&low, q, 4);
  std::memcpy(&mid, q + 4, 4);
  std::memcpy(&top, q + 8, 4);
  const uint32_t packed_scales[2] = {low & 0x3F3F3F3F, (top & 0x0F0F0F0F) | ((low >> 2) & 0x30303030)};
  const uint32_t packed_mins[2] = {mid & 0x3F3F3F3F, ((top >> 4) & 0x0F0F0F0F) | ((mid >> 2) & 0x30303030)};
  std::memcpy(scales, packed_scales, 8);
  std::memcpy(mins, packed_mins, 8);
}

}  // namespace qwen_native
