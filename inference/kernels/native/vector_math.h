// Small float helpers shared by the native kernels: half-to-float, and vector math written with GCC/Clang
// vector types so the compiler emits AVX-512, AVX2 or plain code for whatever CPU it targets.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __F16C__
#include <immintrin.h>
#endif

namespace qwen_native {

// The IEEE half at p (little-endian, as GGUF stores it) as a float.
inline float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
#ifdef __F16C__
  return _cvtsh_ss(h);
#else
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF, bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000 | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exponent = 113;
    while (!(mantissa & 0x400)) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

// Below this e^x is taken as 0: smaller results, times a value, fall into denormals, which cost a
// microcode assist per operation (a softmax over 1.5k keys ran 30% slower on some prompts).
constexpr float kExpCutoff = -70.f;

// e^x for x <= 0 (Cephes' polynomial; relative error ~1e-7; 0 below kExpCutoff, under 4e-31), in a
// form `omp simd` loops vectorize.
inline float exp_nonpositive(float x) {
  const bool negligible = x < kExpCutoff;
  x = std::max(x, -87.f);
  const float n = std::nearbyint(x * 1.44269504f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float two_to_n;
  std::memcpy(&two_to_n, &bits, 4);
  return negligible ? 0.f : (p * r * r + r + 1.f) * two_to_n;
}

inline float dot(const float* a, const float* b, int64_t n) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// 16 floats as one vector (one AVX-512 register, two AVX2 ones, or plain code elsewhere).
typedef float Vec16 __attribute__((vector_size(64)));

inline Vec16 load16(const float* p) {
  Vec16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline float max_of(const float* s, int64_t n) {
  Vec16 top = Vec16{} - INFINITY;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const Vec16 v = load16(s + j);
    top = v > top ? v : top;
  }
  float result = -INFINITY;
  for (int i = 0; i < 16; ++i) result = std::max(result, top[i]);
  for (; j < n; ++j) result = std::max(result, s[j]);
  return result;
}

}  // namespace qwen_native
