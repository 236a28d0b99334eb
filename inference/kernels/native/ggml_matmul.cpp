// y = x @ W^T with W kept as a GGUF file's raw GGML blocks (Q8_0, Q5_0, Q4_K, Q5_K, Q6_K).
//
// Few tokens (decode): each activation row is quantized once per call to int8 blocks (per-32 scale
// for Q8_0/Q5_0, per-256 scale with per-16 sums for the k-quants) and dotted with the weight blocks
// in integers, as llama.cpp does. Many tokens (prefill): a tile of weight rows is dequantized to
// fp32 (or bf16, where the CPU multiplies bf16 in hardware) and multiplied with BLAS (oneDNN for
// bf16), so no dense copy of the weight outlives the call.
// A MoE decode step routes and runs the selected experts in one call (moe_decode).
// Work is split over output rows in chunks that torch's threads take in turn (work_sharing.h).
// AVX-512 (BW/DQ/VL, with VNNI where present) and AVX2 (+FMA, F16C) code where the compiler targets
// them (AVX-512 BF16 for the bf16 tiles); plain C++ otherwise.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "count_dispatch.h"
#include "k_quant_scales.h"
#include "tiled_blocks.h"
#include "vector_math.h"
#include "work_sharing.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define QWEN_AVX2 1
#include <immintrin.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define QWEN_AVX512 1
#endif
#endif

namespace {

// GGML type ids.
constexpr int64_t kQ5_0 = 6, kQ8_0 = 8, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14;

struct BlockGeometry {
  int64_t values, bytes;
};

BlockGeometry geometry(int64_t qtype) {
  switch (qtype) {
    case kQ8_0: return {32, 34};
    case kQ5_0: return {32, 22};
    case kQ4_K: return {256, 144};
    case kQ5_K: return {256, 176};
    case kQ6_K: return {256, 210};
    case qwen_tiles::kQ5_0Tiled: return {32, 22};
    case qwen_tiles::kQ4_KTiled: return {256, 144};
    case qwen_tiles::kQ6_KTiled: return {256, 210};
  }
  TORCH_CHECK(false, "ggml_matmul: unsupported GGML type ", qtype);
}

bool k_quant(int64_t qtype) { return qtype == kQ4_K || qtype == kQ5_K || qtype == kQ6_K; }

using qwen_native::half_to_float;

using qwen_native::k_scale_min;
using qwen_native::k_scales_mins;

// ---------------------------------------------------------------- quantized activations

// A row of k activations in 32-value blocks: x[32b + i] ~= d[b] * q[32b + i], sum[b] = sum of block b's
// q, minus16[i] = -16 * (q[4i] + ... + q[4i+3]) (Q5_0's code offset, per 4-value dot lane). Stored as
// arrays (codes, scales, sums, offsets), so consecutive blocks' codes load as one register.
struct Act32Row {
  int8_t* q;
  float* d;
  int32_t* sum;
  int32_t* minus16;

  static Act32Row at(const uint8_t* bytes, int64_t k) {
    uint8_t* p = const_cast<uint8_t*>(bytes);
    return {reinterpret_cast<int8_t*>(p), reinterpret_cast<float*>(p + k),
            reinterpret_cast<int32_t*>(p + k + 4 * (k / 32)), reinterpret_cast<int32_t*>(p + k + 8 * (k / 32))};
  }

  static size_t bytes(int64_t k) { return size_t(2 * k + 8 * (k / 32)); }
};

// 256 activations: x ~= d * q; sums[g] = sum of q over values 16g..16g+15, sums32[j] over 32j..32j+31.
struct Act256 {
  float d;
  int16_t sums[16];
  int16_t sums32[8];
  int8_t q[256];
};

// Round x[0..n) to int8 codes with one scale (amax / 127); returns the scale.
float quantize_run(const float* x, int n, int8_t* q) {
  float amax = 0.f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
  for (int i = 0; i < n; ++i) q[i] = int8_t(std::nearbyint(x[i] * id));
  return d;
}

void quantize_act32(const float* x, int64_t k, uint8_t* out) {
  const Act32Row a = Act32Row::at(out, k);
  for (int64_t b = 0; b < k / 32; ++b) {
    a.d[b] = quantize_run(x + 32 * b, 32, a.q + 32 * b);
    int32_t s = 0;
    for (int i = 0; i < 32; ++i) s += a.q[32 * b + i];
    a.sum[b] = s;
  }
  for (int64_t i = 0; i < k / 4; ++i)
    a.minus16[i] = -16 * (a.q[4 * i] + a.q[4 * i + 1] + a.q[4 * i + 2] + a.q[4 * i + 3]);
}

void quantize_act256(const float* x, int64_t k, Act256* out) {
  for (int64_t b = 0; b < k / 256; ++b) {
    Act256& a = out[b];
    a.d = quantize_run(x + 256 * b, 256, a.q);
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += a.q[16 * g + i];
      a.sums[g] = int16_t(s);
    }
    for (int j = 0; j < 8; ++j) a.sums32[j] = int16_t(a.sums[2 * j] + a.sums[2 * j + 1]);
  }
}

// ---------------------------------------------------------------- dot products, one weight row

// A decode step streams each weight from memory once, and one thread's demand misses alone leave
// the memory bus idle (the 0.5B's Q8_0 LM head ran 1.6x faster on one thread with this, flat from
// 2 to 8 KiB ahead): each block loop asks for the bytes kPrefetchAhead beyond those it reads.
constexpr int kPrefetchAhead = 4096;

inline void prefetch_ahead(const uint8_t* w, int bytes) {
  for (int offset = 0; offset < bytes; offset += 64) __builtin_prefetch(w + kPrefetchAhead + offset, 0, 3);
}

#ifdef QWEN_AVX2
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hsum4(__m128 s) {
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Sum of u8 x s8 products as 8 int32 lanes (u in [0, 127]: no int16 saturation for |x| <= 127).
inline __m256i dot_u8_s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// 32 bits -> 32 bytes, 0xFF where the bit is set (bit i -> byte i).
inline __m256i bits_to_bytes(uint32_t bits) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ULL));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// Q5_0 block's 32 codes in [0, 31] (value i in byte i).
inline __m256i q5_0_codes(const uint8_t* w) {
  uint32_t high;
  std::memcpy(&high, w + 2, 4);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 6));
  const __m256i codes = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), low4), _mm_and_si128(packed, low4));
  return _mm256_or_si256(codes, _mm256_and_si256(bits_to_bytes(high), _mm256_set1_epi8(0x10)));
}

// Q4_K/Q5_K: codes of sub-blocks 2c (lo) and 2c+1 (hi); `fifth` holds Q5_K's 32 bytes of fifth bits.
template <bool kFifthBit>
inline void q45_k_codes(const uint8_t* nibbles, __m256i fifth, int c, __m256i& lo, __m256i& hi) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  const __m256i packed = load32(nibbles + 32 * c);
  lo = _mm256_and_si256(packed, low4);
  hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
  if (kFifthBit) {
    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(fifth, 2 * c), one), 4));
    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(fifth, 2 * c + 1), one), 4));
  }
}

// Q6_K: codes in [0, 63] of the 4 runs of 32 values of one half (128 values) of a block.
inline void q6_k_codes(const uint8_t* w, int half, __m256i codes[4]) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03);
  const __m256i high = load32(w + 128 + 32 * half);
  const __m256i q0 = load32(w + 64 * half), q1 = load32(w + 64 * half + 32);
  codes[0] = _mm256_or_si256(_mm256_and_si256(q0, low4), _mm256_slli_epi16(_mm256_and_si256(high, low2), 4));
  codes[1] = _mm256_or_si256(_mm256_and_si256(q1, low4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 2), low2), 4));
  codes[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q0, 4), low4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 4), low2), 4));
  codes[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q1, 4), low4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 6), low2), 4));
}

// y[0..16) = scale * code - offset for 16 int8 (kSigned) or uint8 codes.
template <bool kSigned>
inline void store16(__m128i codes, float scale, float offset, float* y) {
  const __m256 s = _mm256_set1_ps(scale), o = _mm256_set1_ps(offset);
  const __m128i upper = _mm_srli_si128(codes, 8);
  const __m256i a = kSigned ? _mm256_cvtepi8_epi32(codes) : _mm256_cvtepu8_epi32(codes);
  const __m256i b = kSigned ? _mm256_cvtepi8_epi32(upper) : _mm256_cvtepu8_epi32(upper);
  _mm256_storeu_ps(y, _mm256_fmsub_ps(s, _mm256_cvtepi32_ps(a), o));
  _mm256_storeu_ps(y + 8, _mm256_fmsub_ps(s, _mm256_cvtepi32_ps(b), o));
}

template <bool kSigned>
inline void store32(__m256i codes, float scale, float offset, float* y) {
  store16<kSigned>(_mm256_castsi256_si128(codes), scale, offset, y);
  store16<kSigned>(_mm256_extracti128_si256(codes, 1), scale, offset, y + 16);
}
#endif

#ifdef QWEN_AVX512
// 64 values per register: two 32-value blocks (Q8_0, Q5_0) or two 32-value sub-blocks (k-quants).

inline __m512i pair32(const void* lo, const void* hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(load32(lo)), load32(hi), 1);
}

// Two fp16 block scales as floats in lanes 0 and 1.
inline __m128 half_pair(const uint8_t* first, const uint8_t* second) {
  uint16_t lo, hi;
  std::memcpy(&lo, first, 2);
  std::memcpy(&hi, second, 2);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(int(lo | (uint32_t(hi) << 16))));
}

// A block pair's scales over its 16 int32 dot lanes: weight scale * activation scale d[0] in lanes 0-7,
// the second block's in lanes 8-15.
inline __m512 block_pair_scales(__m128 weight_scales, const float* d) {
  const __m128 s = _mm_mul_ps(weight_scales, _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(d))));
  return _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                               _mm512_castps128_ps512(s));
}

// acc + sum of u8 x s8 products as 16 int32 lanes (u <= 128, |s| <= 127: exact either way).
inline __m512i dot_u8_s8_512(__m512i acc, __m512i u, __m512i s) {
#ifdef __AVX512VNNI__
  return _mm512_dpbusd_epi32(acc, u, s);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
}

inline __m512i dot_u8_s8_512(__m512i u, __m512i s) { return dot_u8_s8_512(_mm512_setzero_si512(), u, s); }

// acc + sum of int16 pairs p * scale as 16 int32 lanes.
inline __m512i add_scaled_pairs(__m512i acc, __m512i p, __m512i scale) {
#ifdef __AVX512VNNI__
  return _mm512_dpwssd_epi32(acc, p, scale);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(p, scale));
#endif
}

// Per 64-bit lane right shifts: `lo` for the low 256 bits, `hi` for the high ones.
inline __m512i shift_halves(__m512i v, int lo, int hi) {
  return _mm512_srlv_epi64(v, _mm512_set_epi64(hi, hi, hi, hi, lo, lo, lo, lo));
}

// Q5_0 blocks w and w + 22: their 64 codes in [0, 31].
inline __m512i q5_0_codes_x2(const uint8_t* w) {
  uint32_t high0, high1;
  std::memcpy(&high0, w + 2, 4);
  std::memcpy(&high1, w + 24, 4);
  const __m128i p0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 6));
  const __m128i p1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 28));
  __m512i v = _mm512_inserti32x4(_mm512_castsi128_si512(p0), p0, 1);
  v = _mm512_inserti32x4(_mm512_inserti32x4(v, p1, 2), p1, 3);
  v = _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0)), _mm512_set1_epi8(0x0F));
  const __mmask64 fifth = uint64_t(high0) | (uint64_t(high1) << 32);
  return _mm512_mask_add_epi8(v, fifth, v, _mm512_set1_epi8(0x10));
}
#endif

// Each dot_* computes out[r] = <weight row w, activation row a[r]> for R activation rows at once, so
// a weight block is unpacked once for all of them.

template <int R>
void dot_q8_0(const uint8_t* w, const Act32Row* a, int64_t blocks, float* out) {
#ifdef QWEN_AVX2
  float head[R] = {};
  int64_t b = 0;
#ifdef QWEN_AVX512
  {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (; b + 2 <= blocks; b += 2, w += 68) {
      prefetch_ahead(w, 68);
      const __m512i wq = pair32(w + 2, w + 36), magnitude = _mm512_abs_epi8(wq);
      const __mmask64 negative = _mm512_movepi8_mask(wq);
      const __m128 weight_scales = half_pair(w, w + 34);
      for (int r = 0; r < R; ++r) {
        const __m512i x = _mm512_loadu_si512(a[r].q + 32 * b);
        const __m512i p = dot_u8_s8_512(magnitude, _mm512_mask_sub_epi8(x, negative, _mm512_setzero_si512(), x));
        acc[r] = _mm512_fmadd_ps(block_pair_scales(weight_scales, a[r].d + b), _mm512_cvtepi32_ps(p), acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) head[r] = _mm512_reduce_add_ps(acc[r]);
  }
#endif
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (; b < blocks; ++b, w += 34) {
    prefetch_ahead(w, 34);
    const __m256i wq = load32(w + 2), magnitude = _mm256_sign_epi8(wq, wq);
    const float d = half_to_float(w);
    for (int r = 0; r < R; ++r) {
      // |w| * (x with w's sign) = w * x; |w| <= 128 and |x| <= 127 keep the int16 pair sums exact.
      const __m256i p = dot_u8_s8(magnitude, _mm256_sign_epi8(load32(a[r].q + 32 * b), wq));
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[r].d[b]), _mm256_cvtepi32_ps(p), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = head[r] + hsum(acc[r]);
#else
  for (int r = 0; r < R; ++r) {
    const uint8_t* wb = w;
    float sum = 0.f;
    for (int64_t b = 0; b < blocks; ++b, wb += 34) {
      const int8_t* q = reinterpret_cast<const int8_t*>(wb + 2);
      int32_t s = 0;
      for (int i = 0; i < 32; ++i) s += int32_t(q[i]) * a[r].q[32 * b + i];
      sum += half_to_float(wb) * a[r].d[b] * float(s);
    }
    out[r] = sum;
  }
#endif
}

// Q5_0: fp16 d, 32 high bits (bit i: value i), 16 bytes of nibbles (low: values 0-15, high: 16-31);
// value = d * (code - 16).
template <int R>
void dot_q5_0(const uint8_t* w, const Act32Row* a, int64_t blocks, float* out) {
#ifdef QWEN_AVX2
  float head[R] = {}, offset[R] = {};
  int64_t b = 0;
#ifdef QWEN_AVX512
  {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (; b + 2 <= blocks; b += 2, w += 44) {
      prefetch_ahead(w, 44);
      const __m512i codes = q5_0_codes_x2(w);
      const __m128 weight_scales = half_pair(w, w + 22);
      for (int r = 0; r < R; ++r) {
        // sum (code - 16) * x per lane: the products, from -16 * x summed the same way.
        const __m512i x = _mm512_loadu_si512(a[r].q + 32 * b);
        const __m512i p = dot_u8_s8_512(_mm512_loadu_si512(a[r].minus16 + 8 * b), codes, x);
        acc[r] = _mm512_fmadd_ps(block_pair_scales(weight_scales, a[r].d + b), _mm512_cvtepi32_ps(p), acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) head[r] = _mm512_reduce_add_ps(acc[r]);
  }
#endif
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (; b < blocks; ++b, w += 22) {
    prefetch_ahead(w, 22);
    const __m256i codes = q5_0_codes(w);
    const float d = half_to_float(w);
    for (int r = 0; r < R; ++r) {
      const float scale = d * a[r].d[b];
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(dot_u8_s8(codes, load32(a[r].q + 32 * b))),
                               acc[r]);
      offset[r] += scale * float(a[r].sum[b]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = head[r] + hsum(acc[r]) - 16.f * offset[r];
#else
  for (int r = 0; r < R; ++r) {
    const uint8_t* wb = w;
    float sum = 0.f;
    for (int64_t b = 0; b < blocks; ++b, wb += 22) {
      uint32_t high;
      std::memcpy(&high, wb + 2, 4);
      int32_t s = 0;
      for (int i = 0; i < 16; ++i) {
        const int lo = (wb[6 + i] & 0x0F) | (((high >> i) & 1) << 4);
        const int hi = (wb[6 + i] >> 4) | (((high >> (i + 16)) & 1) << 4);
        s += (lo - 16) * a[r].q[32 * b + i] + (hi - 16) * a[r].q[32 * b + i + 16];
      }
      sum += half_to_float(wb) * a[r].d[b] * float(s);
    }
    out[r] = sum;
  }
#endif
}

// Q4_K: fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles (32-byte run c: low
// nibbles are sub-block 2c, high nibbles 2c+1); value = d * scale_j * code - dmin * min_j.
// Q5_K adds 32 bytes of fifth bits before the nibbles (bit j of byte l: value l of sub-block j).
template <bool kFifthBit, int R>
void dot_q45_k(const uint8_t* w, const Act256* const* a, int64_t blocks, float* out) {
  constexpr int64_t kBytes = kFifthBit ? 176 : 144;
  float sum[R];
#if defined(QWEN_AVX2) && !defined(QWEN_AVX512)
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
#endif
  for (int r = 0; r < R; ++r) sum[r] = 0.f;
#ifdef QWEN_AVX512
  __m512 acc512[R];
  __m128 min_acc[R];  // dmin * min_j * sum of x over sub-block j, 4 lanes
  for (int r = 0; r < R; ++r) acc512[r] = _mm512_setzero_ps(), min_acc[r] = _mm_setzero_ps();
  // Lanes 0-15 / 16-31 (int16 pairs) of sub-block 2c / 2c+1 take its scale: index vectors per c.
  __m512i scale_index[4];
  for (int c = 0; c < 4; ++c)
    scale_index[c] =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(2 * c)), _mm256_set1_epi16(2 * c + 1), 1);
#endif
  for (int64_t b = 0; b < blocks; ++b, w += kBytes) {
    prefetch_ahead(w, kBytes);
    uint8_t scales[8], mins[8];
    k_scales_mins(w + 4, scales, mins);
    const float d = half_to_float(w), dmin = half_to_float(w + 2);
    const uint8_t* nibbles = w + (kFifthBit ? 48 : 16);
#if defined(QWEN_AVX512)
    const __m128i mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mins)));
    for (int r = 0; r < R; ++r) {
      const __m128i sums = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[r][b].sums32));
      const __m128i products = _mm_madd_epi16(mins16, sums);
      min_acc[r] = _mm_fmadd_ps(_mm_set1_ps(dmin * a[r][b].d), _mm_cvtepi32_ps(products), min_acc[r]);
    }
    const __m512i fifth = kFifthBit ? _mm512_broadcast_i64x4(load32(w + 16)) : _mm512_setzero_si512();
    const __m128i scales8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales));
    const __m512i scales16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(scales8));
    __m512i isum[R];
    for (int r = 0; r < R; ++r) isum[r] = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      // Sub-blocks 2c (low nibbles) and 2c+1 (high nibbles): values 64c..64c+63, contiguous in x.
      __m512i codes = _mm512_and_si512(shift_halves(_mm512_broadcast_i64x4(load32(nibbles + 32 * c)), 0, 4),
                                       _mm512_set1_epi8(0x0F));
      if (kFifthBit)
        codes = _mm512_or_si512(codes, _mm512_slli_epi16(_mm512_and_si512(shift_halves(fifth, 2 * c, 2 * c + 1),
                                                                          _mm512_set1_epi8(1)), 4));
      const __m512i scale = _mm512_permutexvar_epi16(scale_index[c], scales16);
      for (int r = 0; r < R; ++r) {
        const __m512i x = _mm512_loadu_si512(a[r][b].q + 64 * c);
        isum[r] = add_scaled_pairs(isum[r], _mm512_maddubs_epi16(codes, x), scale);
      }
    }
    for (int r = 0; r < R; ++r)
      acc512[r] = _mm512_fmadd_ps(_mm512_set1_ps(d * a[r][b].d), _mm512_cvtepi32_ps(isum[r]), acc512[r]);
#else
    for (int r = 0; r < R; ++r) {
      int32_t min_sum = 0;
      for (int j = 0; j < 8; ++j) min_sum += int32_t(mins[j]) * a[r][b].sums32[j];
      sum[r] -= dmin * a[r][b].d * float(min_sum);
    }
#ifdef QWEN_AVX2
    const __m256i fifth = kFifthBit ? load32(w + 16) : _mm256_setzero_si256();
    __m256i isum[R];
    for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      __m256i lo, hi;
      q45_k_codes<kFifthBit>(nibbles, fifth, c, lo, hi);
      const __m256i scale_lo = _mm256_set1_epi16(scales[2 * c]), scale_hi = _mm256_set1_epi16(scales[2 * c + 1]);
      for (int r = 0; r < R; ++r) {
        const int8_t* x = a[r][b].q + 64 * c;
        const __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load32(x)), scale_lo);
        const __m256i phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load32(x + 32)), scale_hi);
        isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(plo, phi));
      }
    }
    for (int r = 0; r < R; ++r)
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[r][b].d), _mm256_cvtepi32_ps(isum[r]), acc[r]);
#else
    for (int r = 0; r < R; ++r) {
      const int8_t* x = a[r][b].q;
      int32_t isum = 0;
      for (int c = 0; c < 4; ++c) {
        int32_t slo = 0, shi = 0;
        for (int l = 0; l < 32; ++l) {
          int lo = nibbles[32 * c + l] & 0x0F, hi = nibbles[32 * c + l] >> 4;
          if (kFifthBit) {
            lo |= ((w[16 + l] >> (2 * c)) & 1) << 4;
            hi |= ((w[16 + l] >> (2 * c + 1)) & 1) << 4;
          }
          slo += lo * x[64 * c + l];
          shi += hi * x[64 * c + 32 + l];
        }
        isum += slo * scales[2 * c] + shi * scales[2 * c + 1];
      }
      sum[r] += d * a[r][b].d * float(isum);
    }
#endif
#endif
  }
  for (int r = 0; r < R; ++r) {
#if defined(QWEN_AVX512)
    sum[r] += _mm512_reduce_add_ps(acc512[r]) - hsum4(min_acc[r]);
#elif defined(QWEN_AVX2)
    sum[r] += hsum(acc[r]);
#endif
    out[r] = sum[r];
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales (one per 16 values),
// fp16 d; value = d * scale * (code - 32). Per half of 128 values: ql[0:32] low/high nibbles are
// values 0-31 / 64-95, ql[32:64] values 32-63 / 96-127; qh bits 2k..2k+1 go with value run k.
template <int R>
void dot_q6_k(const uint8_t* w, const Act256* const* a, int64_t blocks, float* out) {
  float sum[R];
#if defined(QWEN_AVX2) && !defined(QWEN_AVX512)
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
#endif
  for (int r = 0; r < R; ++r) sum[r] = 0.f;
#ifdef QWEN_AVX512
  __m512 acc512[R];
  __m256 min_acc[R];  // 32 * d * scale_g * sum of x over group g, 8 lanes
  for (int r = 0; r < R; ++r) acc512[r] = _mm512_setzero_ps(), min_acc[r] = _mm256_setzero_ps();
  // int16 lane j (values 2j, 2j+1 of a 64-value run) takes scale j / 8 of the run's four: index
  // vectors for the runs starting at scale 0, 4, 8, 12.
  __m512i scale_index[4];
  for (int run = 0; run < 4; ++run) {
    alignas(64) int16_t index[32];
    for (int j = 0; j < 32; ++j) index[j] = int16_t(4 * run + j / 8);
    scale_index[run] = _mm512_load_si512(index);
  }
#endif
  for (int64_t b = 0; b < blocks; ++b, w += 210) {
    prefetch_ahead(w, 210);
    const int8_t* scales = reinterpret_cast<const int8_t*>(w + 192);
    const float d = half_to_float(w + 208);
#if defined(QWEN_AVX512)
    const __m256i scales16_256 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales)));
    const __m512i scales16 = _mm512_castsi256_si512(scales16_256);
    for (int r = 0; r < R; ++r) {
      const __m256i products = _mm256_madd_epi16(scales16_256, load32(a[r][b].sums));
      min_acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(32.f * d * a[r][b].d), _mm256_cvtepi32_ps(products), min_acc[r]);
    }
    const __m512i low4 = _mm512_set1_epi8(0x0F), low2 = _mm512_set1_epi8(0x03);
    __m512i isum[R];
    for (int r = 0; r < R; ++r) isum[r] = _mm512_setzero_si512();
    for (int half = 0; half < 2; ++half) {
      // ql[0:32] | ql[32:64] of this half, and its 32 bytes of high bits twice.
      const __m512i low = _mm512_loadu_si512(w + 64 * half);
      const __m512i high = _mm512_broadcast_i64x4(load32(w + 128 + 32 * half));
      // Values 0-63 of the half (runs 0 and 1), then 64-127 (runs 2 and 3).
      const __m512i codes[2] = {
          _mm512_or_si512(_mm512_and_si512(low, low4),
                          _mm512_slli_epi16(_mm512_and_si512(shift_halves(high, 0, 2), low2), 4)),
          _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(low, 4), low4),
                          _mm512_slli_epi16(_mm512_and_si512(shift_halves(high, 4, 6), low2), 4))};
      for (int pair = 0; pair < 2; ++pair) {
        const __m512i scale = _mm512_permutexvar_epi16(scale_index[2 * half + pair], scales16);
        for (int r = 0; r < R; ++r) {
          const __m512i x = _mm512_loadu_si512(a[r][b].q + 128 * half + 64 * pair);
          isum[r] = add_scaled_pairs(isum[r], _mm512_maddubs_epi16(codes[pair], x), scale);
        }
      }
    }
    for (int r = 0; r < R; ++r)
      acc512[r] = _mm512_fmadd_ps(_mm512_set1_ps(d * a[r][b].d), _mm512_cvtepi32_ps(isum[r]), acc512[r]);
#else
    for (int r = 0; r < R; ++r) {
      int32_t offset = 0;
      for (int g = 0; g < 16; ++g) offset += int32_t(scales[g]) * a[r][b].sums[g];
      sum[r] -= 32.f * d * a[r][b].d * float(offset);
    }
#ifdef QWEN_AVX2
    __m256i isum[R];
    for (int r = 0; r < R; ++r) isum[r] = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      __m256i codes[4];
      q6_k_codes(w, half, codes);
      for (int run = 0; run < 4; ++run) {
        const int g = 8 * half + 2 * run;  // scale of the run's first 16 values; g + 1 for the next 16
        const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(scales[g + 1]), _mm_set1_epi16(scales[g]));
        for (int r = 0; r < R; ++r) {
          const __m256i p = _mm256_maddubs_epi16(codes[run], load32(a[r][b].q + 128 * half + 32 * run));
          isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(p, scale));
        }
      }
    }
    for (int r = 0; r < R; ++r)
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[r][b].d), _mm256_cvtepi32_ps(isum[r]), acc[r]);
#else
    for (int r = 0; r < R; ++r) {
      const int8_t* x = a[r][b].q;
      int32_t isum = 0;
      for (int half = 0; half < 2; ++half) {
        const uint8_t* ql = w + 64 * half;
        const uint8_t* qh = w + 128 + 32 * half;
        for (int l = 0; l < 32; ++l) {
          const int codes[4] = {(ql[l] & 0x0F) | ((qh[l] & 3) << 4), (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4), (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)};
          for (int run = 0; run < 4; ++run) {
            const int v = 128 * half + 32 * run + l;
            isum += codes[run] * x[v] * scales[v / 16];
          }
        }
      }
      sum[r] += d * a[r][b].d * float(isum);
    }
#endif
#endif
  }
  for (int r = 0; r < R; ++r) {
#if defined(QWEN_AVX512)
    sum[r] += _mm512_reduce_add_ps(acc512[r]) - hsum(min_acc[r]);
#elif defined(QWEN_AVX2)
    sum[r] += hsum(acc[r]);
#endif
    out[r] = sum[r];
  }
}

// Bytes of one quantized activation row of k values, for weights of `qtype`.
size_t activation_bytes(int64_t qtype, int64_t k) {
  const int64_t blocks = k / geometry(qtype).values;
  return k_quant(qtype) ? sizeof(Act256) * blocks : Act32Row::bytes(k);
}

// Activation rows one pass over a weight row serves (a speculative verification pass: up to 12 or so).
constexpr int64_t kMaxRows = 8;

// y[t * n + row] = <weight row `row`, activation row t> for rows [first, last) of one weight (rows `stride`
// bytes apart) and all m activation rows, up to kMaxRows activation rows per pass over a weight row.
template <typename Dot>
void dot_rows_of(Dot dot, const uint8_t* w, int64_t stride, int64_t first, int64_t last, int64_t m, float* y,
                 int64_t n) {
  float out[kMaxRows];
  for (int64_t row = first; row < last; ++row) {
    const uint8_t* weight_row = w + row * stride;
    for (int64_t t = 0; t < m; t += kMaxRows) {
      const int64_t r = std::min<int64_t>(kMaxRows, m - t);
      qwen_native::with_count(int(r), [&](auto rows) { dot(rows, weight_row, t, out); });
      for (int64_t j = 0; j < r; ++j) y[(t + j) * n + row] = out[j];
    }
  }
}

// dot_rows_of for a weight of `qtype` and m rows of activations quantized for it (`acts`), dispatched once.
void dot_weight_rows(int64_t qtype, const uint8_t* w, int64_t stride, int64_t first, int64_t last,
                     const uint8_t* acts, int64_t m, int64_t k, float* y, int64_t n) {
  if (qwen_tiles::is_tiled(qtype))
    return qwen_tiles::dot_tiled_rows(qtype, w, stride, first, last, reinterpret_cast<const qwen_tiles::TileActs*>(acts),
                                      m, k, y, n);
  const int64_t blocks = k / geometry(qtype).values;
  const size_t act_bytes = activation_bytes(qtype, k);
  std::vector<Act32Row> a32;
  std::vector<const Act256*> a256;
  for (int64_t t = 0; t < m; ++t) {
    if (k_quant(qtype))
      a256.push_back(reinterpret_cast<const Act256*>(acts + t * act_bytes));
    else
      a32.push_back(Act32Row::at(acts + t * act_bytes, k));
  }
  switch (qtype) {
    case kQ8_0:
      return dot_rows_of([&](auto R, const uint8_t* row, int64_t t, float* out) {
        dot_q8_0<R()>(row, a32.data() + t, blocks, out);
      }, w, stride, first, last, m, y, n);
    case kQ5_0:
      return dot_rows_of([&](auto R, const uint8_t* row, int64_t t, float* out) {
        dot_q5_0<R()>(row, a32.data() + t, blocks, out);
      }, w, stride, first, last, m, y, n);
    case kQ4_K:
      return dot_rows_of([&](auto R, const uint8_t* row, int64_t t, float* out) {
        dot_q45_k<false, R()>(row, a256.data() + t, blocks, out);
      }, w, stride, first, last, m, y, n);
    case kQ5_K:
      return dot_rows_of([&](auto R, const uint8_t* row, int64_t t, float* out) {
        dot_q45_k<true, R()>(row, a256.data() + t, blocks, out);
      }, w, stride, first, last, m, y, n);
    default:
      return dot_rows_of([&](auto R, const uint8_t* row, int64_t t, float* out) {
        dot_q6_k<R()>(row, a256.data() + t, blocks, out);
      }, w, stride, first, last, m, y, n);
  }
}

// ---------------------------------------------------------------- dequantization, one row

#ifdef QWEN_AVX2
void dequantize_row(const uint8_t* w, int64_t qtype, int64_t k, float* y) {
  if (qwen_tiles::is_tiled(qtype)) return qwen_tiles::dequantize_tiled_row(qtype, w, k, y);
  switch (qtype) {
    case kQ8_0:
      for (int64_t b = 0; b < k / 32; ++b, w += 34, y += 32) store32<true>(load32(w + 2), half_to_float(w), 0.f, y);
      return;
    case kQ5_0:
      for (int64_t b = 0; b < k / 32; ++b, w += 22, y += 32) {
        const float d = half_to_float(w);
        store32<false>(q5_0_codes(w), d, 16.f * d, y);
      }
      return;
    case kQ4_K:
    case kQ5_K: {
      const bool fifth_bit = qtype == kQ5_K;
      for (int64_t b = 0; b < k / 256; ++b, w += fifth_bit ? 176 : 144, y += 256) {
        const float d = half_to_float(w), dmin = half_to_float(w + 2);
        const uint8_t* nibbles = w + (fifth_bit ? 48 : 16);
        const __m256i fifth = fifth_bit ? load32(w + 16) : _mm256_setzero_si256();
        for (int c = 0; c < 4; ++c) {
          uint8_t s0, m0, s1, m1;
          k_scale_min(2 * c, w + 4, s0, m0);
          k_scale_min(2 * c + 1, w + 4, s1, m1);
          __m256i lo, hi;
          if (fifth_bit)
            q45_k_codes<true>(nibbles, fifth, c, lo, hi);
          else
            q45_k_codes<false>(nibbles, fifth, c, lo, hi);
          store32<false>(lo, d * s0, dmin * m0, y + 64 * c);
          store32<false>(hi, d * s1, dmin * m1, y + 64 * c + 32);
        }
      }
      return;
    }
    case kQ6_K:
      for (int64_t b = 0; b < k / 256; ++b, w += 210, y += 256) {
        const float d = half_to_float(w + 208);
        const int8_t* scales = reinterpret_cast<const int8_t*>(w + 192);
        for (int half = 0; half < 2; ++half) {
          __m256i codes[4];
          q6_k_codes(w, half, codes);
          for (int run = 0; run < 4; ++run) {
            const int g = 8 * half + 2 * run;
            const float s0 = d * scales[g], s1 = d * scales[g + 1];
            float* out = y + 128 * half + 32 * run;
            store16<false>(_mm256_castsi256_si128(codes[run]), s0, 32.f * s0, out);
            store16<false>(_mm256_extracti128_si256(codes[run], 1), s1, 32.f * s1, out + 16);
          }
        }
      }
      return;
  }
  TORCH_CHECK(false, "ggml_matmul: unsupported GGML type ", qtype);
}
#else
void dequantize_row(const uint8_t* w, int64_t qtype, int64_t k, float* y) {
  if (qwen_tiles::is_tiled(qtype)) return qwen_tiles::dequantize_tiled_row(qtype, w, k, y);
  switch (qtype) {
    case kQ8_0:
      for (int64_t b = 0; b < k / 32; ++b, w += 34, y += 32) {
        const float d = half_to_float(w);
        const int8_t* q = reinterpret_cast<const int8_t*>(w + 2);
        for (int i = 0; i < 32; ++i) y[i] = d * q[i];
      }
      return;
    case kQ5_0:
      for (int64_t b = 0; b < k / 32; ++b, w += 22, y += 32) {
        const float d = half_to_float(w);
        uint32_t high;
        std::memcpy(&high, w + 2, 4);
        for (int i = 0; i < 16; ++i) {
          const int lo = (w[6 + i] & 0x0F) | (((high >> i) & 1) << 4);
          const int hi = (w[6 + i] >> 4) | (((high >> (i + 16)) & 1) << 4);
          y[i] = d * float(lo - 16);
          y[i + 16] = d * float(hi - 16);
        }
      }
      return;
    case kQ4_K:
    case kQ5_K: {
      const bool fifth_bit = qtype == kQ5_K;
      for (int64_t b = 0; b < k / 256; ++b, w += fifth_bit ? 176 : 144, y += 256) {
        const float d = half_to_float(w), dmin = half_to_float(w + 2);
        const uint8_t* nibbles = w + (fifth_bit ? 48 : 16);
        for (int c = 0; c < 4; ++c) {
          uint8_t s0, m0, s1, m1;
          k_scale_min(2 * c, w + 4, s0, m0);
          k_scale_min(2 * c + 1, w + 4, s1, m1);
          const float d0 = d * s0, d1 = d * s1, o0 = dmin * m0, o1 = dmin * m1;
          for (int l = 0; l < 32; ++l) {
            int lo = nibbles[32 * c + l] & 0x0F, hi = nibbles[32 * c + l] >> 4;
            if (fifth_bit) {
              lo |= ((w[16 + l] >> (2 * c)) & 1) << 4;
              hi |= ((w[16 + l] >> (2 * c + 1)) & 1) << 4;
            }
            y[64 * c + l] = d0 * lo - o0;
            y[64 * c + 32 + l] = d1 * hi - o1;
          }
        }
      }
      return;
    }
    case kQ6_K:
      for (int64_t b = 0; b < k / 256; ++b, w += 210, y += 256) {
        const float d = half_to_float(w + 208);
        const int8_t* scales = reinterpret_cast<const int8_t*>(w + 192);
        for (int half = 0; half < 2; ++half) {
          const uint8_t* ql = w + 64 * half;
          const uint8_t* qh = w + 128 + 32 * half;
          float* out = y + 128 * half;
          const int8_t* sc = scales + 8 * half;
          for (int l = 0; l < 32; ++l) {
            const int g = l / 16;
            out[l] = d * sc[g] * float(((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32);
            out[l + 32] = d * sc[g + 2] * float(((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
            out[l + 64] = d * sc[g + 4] * float(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            out[l + 96] = d * sc[g + 6] * float(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
          }
        }
      }
      return;
  }
  TORCH_CHECK(false, "ggml_matmul: unsupported GGML type ", qtype);
}
#endif

// ---------------------------------------------------------------- ops

void check_weight(const at::Tensor& raw, int64_t qtype, int64_t in_features) {
  const BlockGeometry g = geometry(qtype);
  TORCH_CHECK(raw.scalar_type() == at::kByte && raw.dim() == 2 && raw.stride(1) == 1,
              "ggml_matmul: raw must be uint8 [rows, row_bytes] with contiguous rows");
  TORCH_CHECK(in_features % g.values == 0 && raw.size(1) == in_features / g.values * g.bytes,
              "ggml_matmul: row of ", raw.size(1), " bytes is not ", in_features, " values of type ", qtype);
}

at::Tensor float_rows(const at::Tensor& x, int64_t in_features) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.size(1) == in_features,
              "ggml_matmul: x must be float32 [tokens, ", in_features, "]");
  return x.contiguous();
}

// m rows of k floats (row stride `stride`) quantized for dot products with `qtype` weights.
std::vector<uint8_t> quantize_activations(const float* x, int64_t m, int64_t k, int64_t stride, int64_t qtype) {
  TORCH_CHECK(!qwen_tiles::is_tiled(qtype), "ggml_matmul: tiled weights take qwen_tiles::quantize_tile_rows");
  const size_t bytes = activation_bytes(qtype, k);
  std::vector<uint8_t> acts(bytes * m);
  for (int64_t i = 0; i < m; ++i) {
    if (k_quant(qtype))
      quantize_act256(x + i * stride, k, reinterpret_cast<Act256*>(acts.data() + i * bytes));
    else
      quantize_act32(x + i * stride, k, acts.data() + i * bytes);
  }
  return acts;
}

// Rows per chunk of work (parallel_chunks): 64 KB of weights.
int64_t chunk_rows(int64_t row_bytes) { return std::max<int64_t>(1, (1 << 16) / row_bytes); }

// x [M, K] float32 @ W_i^T for several weights at once (one parallel pass over all their rows), with
// int8-quantized activations: [M, N_i] each.
std::vector<at::Tensor> quantized_matmuls(const at::Tensor& x_in, at::TensorList raws, at::IntArrayRef qtypes) {
  const int64_t count = int64_t(raws.size());
  TORCH_CHECK(count > 0 && int64_t(qtypes.size()) == count, "quantized_matmuls: one qtype per weight");
  const int64_t k = x_in.size(-1);
  const at::Tensor x = float_rows(x_in, k);
  const int64_t m = x.size(0);
  std::vector<int64_t> first_row(count + 1, 0);
  std::vector<at::Tensor> ys;
  std::vector<const uint8_t*> weights(count);
  std::vector<float*> outputs(count);
  int64_t total_bytes = 0;
  for (int64_t i = 0; i < count; ++i) {
    check_weight(raws[i], qtypes[i], k);
    first_row[i + 1] = first_row[i] + raws[i].size(0);
    total_bytes += raws[i].size(0) * raws[i].size(1);
    ys.push_back(at::empty({m, raws[i].size(0)}, x.options()));
    weights[i] = raws[i].data_ptr<uint8_t>();
    outputs[i] = ys[i].data_ptr<float>();
  }
  // Activations once per format: per-32 blocks (Q8_0, Q5_0), per-256 blocks (k-quants), tiles.
  std::vector<uint8_t> acts32, acts256;
  std::vector<qwen_tiles::TileActs> tile_acts;
  for (int64_t i = 0; i < count; ++i) {
    if (qwen_tiles::is_tiled(qtypes[i])) {
      if (tile_acts.empty()) tile_acts = qwen_tiles::quantize_tile_rows(x.data_ptr<float>(), m, k);
      continue;
    }
    std::vector<uint8_t>& acts = k_quant(qtypes[i]) ? acts256 : acts32;
    if (acts.empty()) acts = quantize_activations(x.data_ptr<float>(), m, k, k, qtypes[i]);
  }
  // Chunks of 64 KB of weights taken in turn; under 256 KB in all, one thread (no wake-up cost).
  const int64_t rows = first_row[count];
  const int64_t chunk = total_bytes < (1 << 18) ? rows : chunk_rows(std::max<int64_t>(1, total_bytes / rows));
  qwen_native::parallel_chunks(rows, chunk, [&](int64_t begin, int64_t end) {
    for (int64_t i = 0; begin < end; ++i) {  // the part of each weight's rows in [begin, end)
      if (begin >= first_row[i + 1]) continue;
      const int64_t stop = std::min(end, first_row[i + 1]);
      const uint8_t* acts = qwen_tiles::is_tiled(qtypes[i]) ? reinterpret_cast<const uint8_t*>(tile_acts.data())
                                                            : (k_quant(qtypes[i]) ? acts256 : acts32).data();
      dot_weight_rows(qtypes[i], weights[i], raws[i].stride(0), begin - first_row[i], stop - first_row[i], acts, m,
                      k, outputs[i], raws[i].size(0));
      begin = stop;
    }
  });
  return ys;
}

// x [M, K] float32 @ W^T with int8-quantized activations: [M, N].
at::Tensor quantized_matmul(const at::Tensor& x, const at::Tensor& raw, int64_t qtype) {
  return quantized_matmuls(x, {raw}, {qtype})[0];
}

// Router probabilities of one token: softmax over the experts' logits, then the top_k experts (highest
// first, the lower id on ties) and their weights (renormalized to sum 1 with `normalize`), as
// torch.softmax + torch.topk compute them.
void route(const float* logits, int64_t experts, int64_t top_k, bool normalize, std::vector<int64_t>& chosen,
           std::vector<float>& weights) {
  const float top = *std::max_element(logits, logits + experts);
  std::vector<float> probs(experts);
  float total = 0.f;
  for (int64_t e = 0; e < experts; ++e) total += probs[e] = std::exp(logits[e] - top);
  for (float& p : probs) p /= total;
  std::vector<int64_t> order(experts);
  for (int64_t e = 0; e < experts; ++e) order[e] = e;
  std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                    [&](int64_t a, int64_t b) { return probs[a] > probs[b] || (probs[a] == probs[b] && a < b); });
  chosen.assign(order.begin(), order.begin() + top_k);
  weights.resize(top_k);
  float kept = 0.f;
  for (int64_t i = 0; i < top_k; ++i) kept += weights[i] = probs[chosen[i]];
  if (normalize)
    for (float& w : weights) w /= kept;
}

// Stacked expert weights [experts, rows, row_bytes] (rows contiguous; experts any stride).
void check_experts(const at::Tensor& raw, int64_t experts, int64_t rows, int64_t qtype, int64_t in_features) {
  TORCH_CHECK(raw.dim() == 3 && raw.size(0) == experts && raw.size(1) == rows,
              "moe_decode: expert weights [", experts, ", ", rows, ", row_bytes] expected");
  check_weight(raw[0], qtype, in_features);
}

// One token through a MoE layer's routed experts: router logits (a float [E, H] matrix, or GGML blocks of
// `router_type`), softmax and top-k, then sum_e weight_e * down_e(silu(gate_e(x)) * up_e(x)) over the chosen
// experts in two parallel passes (all their gate/up rows, then the output rows): one call per layer.
at::Tensor moe_decode(const at::Tensor& x_in, const at::Tensor& router, int64_t router_type, const at::Tensor& gates,
                      const at::Tensor& ups, const at::Tensor& downs, int64_t top_k, bool normalize, int64_t gate_type,
                      int64_t up_type, int64_t down_type) {
  const int64_t all = gates.size(0), width = gates.size(1), hidden = downs.size(1);
  const int64_t k = x_in.size(-1);
  TORCH_CHECK(top_k > 0 && top_k <= all, "moe_decode: top_k must be in 1..", all);
  check_experts(gates, all, width, gate_type, k);
  check_experts(ups, all, width, up_type, k);
  check_experts(downs, all, hidden, down_type, width);
  TORCH_CHECK(hidden == k, "moe_decode: experts map ", k, " features back to ", k);
  const at::Tensor x = float_rows(x_in, k);
  TORCH_CHECK(x.size(0) == 1, "moe_decode: one token");

  std::vector<float> logits(all);
  if (router_type < 0) {
    TORCH_CHECK(router.scalar_type() == at::kFloat && router.dim() == 2 && router.size(0) == all &&
                    router.size(1) == k && router.stride(1) == 1,
                "moe_decode: a float router must be float32 [", all, ", ", k, "]");
    for (int64_t e = 0; e < all; ++e)
      logits[e] = qwen_native::dot(router.data_ptr<float>() + e * router.stride(0), x.data_ptr<float>(), k);
  } else {
    check_weight(router, router_type, k);
    TORCH_CHECK(router.size(0) == all, "moe_decode: the router has one row per expert");
    const std::vector<uint8_t> act = quantize_activations(x.data_ptr<float>(), 1, k, k, router_type);
    dot_weight_rows(router_type, router.data_ptr<uint8_t>(), router.stride(0), 0, all, act.data(), 1, k,
                    logits.data(), all);
  }
  std::vector<int64_t> chosen;
  std::vector<float> weights;
  route(logits.data(), all, top_k, normalize, chosen, weights);

  const int64_t experts = top_k;
  std::vector<const uint8_t*> gate_rows(experts), up_rows(experts), down_rows(experts);
  for (int64_t e = 0; e < experts; ++e) {
    gate_rows[e] = gates.data_ptr<uint8_t>() + chosen[e] * gates.stride(0);
    up_rows[e] = ups.data_ptr<uint8_t>() + chosen[e] * ups.stride(0);
    down_rows[e] = downs.data_ptr<uint8_t>() + chosen[e] * downs.stride(0);
  }
  const std::vector<uint8_t> gate_act = quantize_activations(x.data_ptr<float>(), 1, k, k, gate_type);
  const std::vector<uint8_t> up_act =
      up_type == gate_type ? gate_act : quantize_activations(x.data_ptr<float>(), 1, k, k, up_type);
  const int64_t gate_stride = gates.stride(1), up_stride = ups.stride(1), down_stride = downs.stride(1);

  std::vector<float> gate_up(experts * 2 * width);  // expert e: gate rows, then up rows
  qwen_native::parallel_chunks(experts * 2 * width, chunk_rows(gates.size(2)), [&](int64_t begin, int64_t end) {
    while (begin < end) {  // the part of each (expert, gate or up) in [begin, end)
      const int64_t part = begin / width, stop = std::min(end, (part + 1) * width), e = part / 2;
      float* y = gate_up.data() + part * width;
      if (part % 2 == 0)
        dot_weight_rows(gate_type, gate_rows[e], gate_stride, begin % width, stop - part * width, gate_act.data(), 1,
                        k, y, width);
      else
        dot_weight_rows(up_type, up_rows[e], up_stride, begin % width, stop - part * width, up_act.data(), 1, k, y,
                        width);
      begin = stop;
    }
  });
  std::vector<float> mixed(experts * width);
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t j = 0; j < width; ++j) {
      const float g = gate_up[e * 2 * width + j];
      mixed[e * width + j] = g / (1.f + std::exp(-g)) * gate_up[e * 2 * width + width + j];
    }
  const std::vector<uint8_t> down_act = quantize_activations(mixed.data(), experts, width, width, down_type);
  const size_t down_act_bytes = activation_bytes(down_type, width);

  std::vector<float> down(experts * hidden);  // expert e's output rows
  at::Tensor y = at::empty({1, hidden}, x.options());
  float* yp = y.data_ptr<float>();
  qwen_native::parallel_chunks(hidden, chunk_rows(downs.size(2) * experts), [&](int64_t begin, int64_t end) {
    for (int64_t e = 0; e < experts; ++e)
      dot_weight_rows(down_type, down_rows[e], down_stride, begin, end, down_act.data() + e * down_act_bytes, 1, width,
                      down.data() + e * hidden, hidden);
    for (int64_t row = begin; row < end; ++row) {
      float sum = 0.f;
      for (int64_t e = 0; e < experts; ++e) sum += weights[e] * down[e * hidden + row];
      yp[row] = sum;
    }
  });
  return y;
}

// Floats to bf16, rounding to nearest even (as at::BFloat16 does).
void floats_to_bf16(const float* in, at::BFloat16* out, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(in + i)));
#endif
  for (; i < n; ++i) out[i] = at::BFloat16(in[i]);
}

// dst <- src widened, row by row ([m, cols] bf16 and float, rows contiguous, any row strides): the
// product of a tile, while it is still in cache.
void bf16_rows_to_float(const at::Tensor& src, at::Tensor& dst) {
  const int64_t m = src.size(0), cols = src.size(1);
  const at::BFloat16* in = src.data_ptr<at::BFloat16>();
  float* out = dst.data_ptr<float>();
  const int64_t in_stride = src.stride(0), out_stride = dst.stride(0);
  at::parallel_for(0, m, std::max<int64_t>(1, (1 << 14) / cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const at::BFloat16* a = in + r * in_stride;
      float* b = out + r * out_stride;
      int64_t i = 0;
#ifdef QWEN_AVX512
      for (; i + 16 <= cols; i += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i));
        _mm512_storeu_ps(b + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
      }
#endif
      for (; i < cols; ++i) b[i] = float(a[i]);
    }
  });
}

// Rows `ids` of W dequantized into out [count, K] (contiguous, float or bf16), in parallel.
template <typename T>
void dequantize_rows_into(const at::Tensor& raw, int64_t qtype, int64_t k, const int64_t* ids, int64_t count,
                          T* out) {
  const uint8_t* wp = raw.data_ptr<uint8_t>();
  const int64_t stride = raw.stride(0), rows = raw.size(0);
  at::parallel_for(0, count, std::max<int64_t>(1, (1 << 14) / k), [&](int64_t begin, int64_t end) {
    std::vector<float> row_values(std::is_same_v<T, float> ? 0 : k);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t row = ids[i];
      TORCH_CHECK(row >= 0 && row < rows, "ggml_matmul: row ", row, " out of range");
      if constexpr (std::is_same_v<T, float>) {
        dequantize_row(wp + row * stride, qtype, k, out + i * k);
      } else {
        dequantize_row(wp + row * stride, qtype, k, row_values.data());
        floats_to_bf16(row_values.data(), out + i * k, k);
      }
    }
  });
}

// Rows `ids` of W as float32 [len(ids), K].
at::Tensor dequantize_rows(const at::Tensor& raw, const at::Tensor& ids_in, int64_t qtype) {
  const BlockGeometry g = geometry(qtype);
  const int64_t k = raw.size(1) / g.bytes * g.values;
  check_weight(raw, qtype, k);
  const at::Tensor ids = ids_in.to(at::kLong).contiguous();
  at::Tensor out = at::empty({ids.numel(), k}, raw.options().dtype(at::kFloat));
  dequantize_rows_into(raw, qtype, k, ids.data_ptr<int64_t>(), ids.numel(), out.data_ptr<float>());
  return out.view([&] {
    std::vector<int64_t> shape(ids_in.sizes().begin(), ids_in.sizes().end());
    shape.push_back(k);
    return shape;
  }());
}

// x [M, K] float32 @ W^T, dequantizing `tile_rows` rows of W at a time: exactly (fp32 tiles), or with
// `bf16` the tiles and x rounded to bf16 for the CPU's bf16 matrix units (AMX, AVX-512 BF16), whose
// products are then rounded to bf16 too.
at::Tensor dequantized_matmul(const at::Tensor& x_in, const at::Tensor& raw, int64_t qtype, int64_t tile_rows,
                              bool bf16) {
  const BlockGeometry g = geometry(qtype);
  const int64_t n = raw.size(0), k = raw.size(1) / g.bytes * g.values;
  check_weight(raw, qtype, k);
  const at::Tensor x = bf16 ? float_rows(x_in, k).to(at::kBFloat16) : float_rows(x_in, k);
  tile_rows = std::max<int64_t>(1, std::min(tile_rows, n));
  at::Tensor y = at::empty({x.size(0), n}, x_in.options().dtype(at::kFloat));
  at::Tensor tile = at::empty({tile_rows, k}, x.options());
  // bf16 products land in a tile-wide buffer and widen into y (no whole bf16 output beside y).
  at::Tensor product = bf16 ? at::empty({x.size(0), tile_rows}, x.options()) : at::Tensor();
  std::vector<int64_t> ids(tile_rows);
  for (int64_t start = 0; start < n; start += tile_rows) {
    const int64_t rows = std::min(tile_rows, n - start);
    for (int64_t i = 0; i < rows; ++i) ids[i] = start + i;
    at::Tensor out = y.narrow(1, start, rows);
    if (bf16) {
      dequantize_rows_into(raw, qtype, k, ids.data(), rows, tile.data_ptr<at::BFloat16>());
      at::Tensor part = product.narrow(1, 0, rows);
      at::mm_out(part, x, tile.narrow(0, 0, rows).t());
      bf16_rows_to_float(part, out);
    } else {
      dequantize_rows_into(raw, qtype, k, ids.data(), rows, tile.data_ptr<float>());
      at::mm_out(out, x, tile.narrow(0, 0, rows).t());
    }
  }
  return y;
}

}  // namespace

TORCH_LIBRARY(qwen_ggml, m) {
  m.def("quantized_matmul(Tensor x, Tensor raw, int qtype) -> Tensor");
  m.def("quantized_matmuls(Tensor x, Tensor[] raws, int[] qtypes) -> Tensor[]");
  m.def("dequantized_matmul(Tensor x, Tensor raw, int qtype, int tile_rows, bool bf16=False) -> Tensor");
  m.def("dequantize_rows(Tensor raw, Tensor ids, int qtype) -> Tensor");
  m.def("moe_decode(Tensor x, Tensor router, int router_type, Tensor gates, Tensor ups, Tensor downs, int top_k, "
        "bool normalize, int gate_type, int up_type, int down_type) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwen_ggml, CPU, m) {
  m.impl("quantized_matmul", &quantized_matmul);
  m.impl("quantized_matmuls", &quantized_matmuls);
  m.impl("dequantized_matmul", &dequantized_matmul);
  m.impl("dequantize_rows", &dequantize_rows);
  m.impl("moe_decode", &moe_decode);
}
