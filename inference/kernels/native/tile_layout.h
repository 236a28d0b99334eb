// Weights in tiles of 16 groups of 16 values, laid out so that int32 lane j of a 64-byte register sums
// group j: register t holds values 4t..4t+3 of every group (4 bytes per lane). A group shares one scale
// (half a 32-value block, or a k-quant sub-block), so a tile's dot products need no shuffles: one
// vpdpbusd per register, then one scale per lane. The activations are permuted the same way once per
// call (TileActs). The last tile of a row may hold fewer groups (g); its lanes past g are zero.
// 4-bit codes are stored as two runs of 4g bytes: registers 0 and 1 as low and high nibbles, then 2 and 3.
// Used by the split output head (split_head.cpp) and the tiled matrices (tiled_blocks.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "count_dispatch.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && \
    defined(__F16C__)
#define QWEN_TILES_AVX512 1
#include <immintrin.h>
#endif

// The per-tile helpers sit in the innermost loops: a call there costs more than their work.
#define QWEN_TILES_INLINE inline __attribute__((always_inline))

namespace qwen_tiles {

constexpr int kGroupValues = 16, kTileGroups = 16;
// Rows whose sums are reduced together (lane_sums).
constexpr int kBlockRows = 16;
// Bytes prefetched ahead of the tile being read (see ggml_matmul's kPrefetchAhead).
constexpr int kPrefetchAhead = 4096;

inline int64_t tiles_of(int64_t groups) { return (groups + kTileGroups - 1) / kTileGroups; }
inline int64_t groups_in_tile(int64_t tile, int64_t groups) {
  return std::min<int64_t>(kTileGroups, groups - kTileGroups * tile);
}

// Byte and shift of value i (0-15) of group j in a tile of g groups' nibble runs.
inline int64_t nibble_byte(int i, int64_t j, int64_t g) { return (i / 8) * 4 * g + 4 * j + i % 4; }
inline int nibble_shift(int i) { return 4 * ((i / 4) % 2); }
inline int nibble(const uint8_t* runs, int i, int64_t j, int64_t g) {
  return (runs[nibble_byte(i, j, g)] >> nibble_shift(i)) & 0x0F;
}

// 2-bit codes are stored as one run of 4g bytes: register t's codes in bits 2t, 2t + 1.
inline int64_t crumb_byte(int i, int64_t j) { return 4 * j + i % 4; }
inline int crumb_shift(int i) { return 2 * (i / 4); }
inline int crumb(const uint8_t* run, int i, int64_t j) { return (run[crumb_byte(i, j)] >> crumb_shift(i)) & 3; }

using qwen_native::with_count;

// One tile of one token's activations, rounded to int8 with one scale per 32 values (as the Q8_0
// kernels round them), in the tiles' order; per group (lane j): the scale, scale * sum of the codes and
// scale * sum of their magnitudes.
struct alignas(64) TileActs {
  int8_t x[4][64];  // x[t][4j + i]: value 4t + i of group j
  float scale[16];
  float scaled_sum[16];
  float scaled_magnitude[16];
};

// One token's k activations as tiles_of(k / 16) TileActs (k a multiple of 32).
inline void quantize_tile_acts(const float* row, int64_t k, TileActs* out) {
  const int64_t groups = k / kGroupValues;
  std::memset(static_cast<void*>(out), 0, tiles_of(groups) * sizeof(TileActs));
  for (int64_t b = 0; b < k / 32; ++b) {
#ifdef QWEN_TILES_AVX512  // the same codes as the loops after #else: cvtps rounds to nearest even, as nearbyint
    const __m512 values[2] = {_mm512_loadu_ps(row + 32 * b), _mm512_loadu_ps(row + 32 * b + 16)};
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(values[0]), _mm512_abs_ps(values[1])));
    const float scale = amax / 127.f, inverse = amax > 0.f ? 127.f / amax : 0.f;
    for (int half = 0; half < 2; ++half) {
      const int64_t group = 2 * b + half, j = group % kTileGroups;
      TileActs& a = out[group / kTileGroups];
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(values[half], _mm512_set1_ps(inverse)));
      uint32_t quads[4];  // quad t: values 4t..4t+3 of the group, stored at lane j of register t
      _mm_storeu_si128(reinterpret_cast<__m128i*>(quads), _mm512_cvtsepi32_epi8(q));
      for (int t = 0; t < 4; ++t) std::memcpy(&a.x[t][4 * j], &quads[t], 4);
      a.scale[j] = scale;
      a.scaled_sum[j] = scale * float(_mm512_reduce_add_epi32(q));
      a.scaled_magnitude[j] = scale * float(_mm512_reduce_add_epi32(_mm512_abs_epi32(q)));
    }
#else
    float amax = 0.f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(row[32 * b + i]));
    const float scale = amax / 127.f, inverse = amax > 0.f ? 127.f / amax : 0.f;
    for (int half = 0; half < 2; ++half) {
      const int64_t group = 2 * b + half, j = group % kTileGroups;
      TileActs& a = out[group / kTileGroups];
      int sum = 0, magnitude = 0;
      for (int i = 0; i < kGroupValues; ++i) {
        const int8_t q = int8_t(std::nearbyint(row[kGroupValues * group + i] * inverse));
        a.x[i / 4][4 * j + i % 4] = q;
        sum += q;
        magnitude += std::abs(int(q));
      }
      a.scale[j] = scale;
      a.scaled_sum[j] = scale * float(sum);
      a.scaled_magnitude[j] = scale * float(magnitude);
    }
#endif
  }
}

// m rows of k floats as tiles: row r's at [r * tiles_of(k / 16), ...).
inline std::vector<TileActs> quantize_tile_rows(const float* x, int64_t m, int64_t k) {
  const int64_t tiles = tiles_of(k / kGroupValues);
  std::vector<TileActs> acts(m * tiles);
  for (int64_t r = 0; r < m; ++r) quantize_tile_acts(x + r * k, k, acts.data() + r * tiles);
  return acts;
}

#ifdef QWEN_TILES_AVX512
QWEN_TILES_INLINE __m512i dot_u8_s8(__m512i acc, __m512i u, __m512i s) {
#ifdef __AVX512VNNI__
  return _mm512_dpbusd_epi32(acc, u, s);
#else  // codes <= 31 here: the int16 pair sums cannot saturate
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
}

// The bytes of a tile of g groups' run (4g bytes).
inline __mmask64 run_mask(int64_t g) { return g == kTileGroups ? ~__mmask64(0) : (__mmask64(1) << (4 * g)) - 1; }

// The four registers of 4-bit codes stored as nibble runs at p.
QWEN_TILES_INLINE void nibble_codes(const uint8_t* p, int64_t g, __m512i codes[4]) {
  const __mmask64 mask = run_mask(g);
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i first = _mm512_maskz_loadu_epi8(mask, p), second = _mm512_maskz_loadu_epi8(mask, p + 4 * g);
  codes[0] = _mm512_and_si512(first, low);
  codes[1] = _mm512_and_si512(_mm512_srli_epi16(first, 4), low);
  codes[2] = _mm512_and_si512(second, low);
  codes[3] = _mm512_and_si512(_mm512_srli_epi16(second, 4), low);
}

// The four registers of 2-bit codes stored as a crumb run at p.
QWEN_TILES_INLINE void crumb_codes(const uint8_t* p, int64_t g, __m512i codes[4]) {
  const __m512i bits = _mm512_maskz_loadu_epi8(run_mask(g), p), two = _mm512_set1_epi8(3);
  for (int t = 0; t < 4; ++t) codes[t] = _mm512_and_si512(_mm512_srli_epi16(bits, 2 * t), two);
}

// Lane j: the sum over group j of code * activation code.
QWEN_TILES_INLINE __m512i group_dots(const __m512i codes[4], const TileActs& a) {
  const __m512i* x = reinterpret_cast<const __m512i*>(a.x);
  const __m512i even = dot_u8_s8(dot_u8_s8(_mm512_setzero_si512(), codes[0], x[0]), codes[2], x[2]);
  const __m512i odd = dot_u8_s8(dot_u8_s8(_mm512_setzero_si512(), codes[1], x[1]), codes[3], x[3]);
  return _mm512_add_epi32(even, odd);
}

// Lane j: the fp16 scale of group j's 32-value block, from g / 2 scales at p (0 past g).
QWEN_TILES_INLINE __m512 block_scales(const uint8_t* p, int64_t g) {
  const __m256 halves = _mm256_cvtph_ps(_mm_maskz_loadu_epi16(__mmask8((1u << (g / 2)) - 1), p));
  return _mm512_permutexvar_ps(_mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0),
                               _mm512_castps256_ps512(halves));
}

// Lane i of the result: the sum of v[i]'s lanes, added as tree_sum adds them.
inline __m512 lane_sums(const __m512* v) {
  __m512 pairs[8], quads[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit chunk: (x0 + x2, y0 + y2, x1 + x3, y1 + y3)
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per chunk: the chunk sums of four vectors
    quads[i] = _mm512_add_ps(_mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], 0xEE));
  const __m512 first =
      _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], 0x44), _mm512_shuffle_f32x4(quads[0], quads[1], 0xEE));
  const __m512 second =
      _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], 0x44), _mm512_shuffle_f32x4(quads[2], quads[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(first, second, 0x88), _mm512_shuffle_f32x4(first, second, 0xDD));
}

// The sum of v's lanes in lane_sums' order: per 128-bit chunk (x0 + x2) + (x1 + x3), then chunks (0 + 2) + (1 + 3).
inline float tree_sum(__m512 v) {
  alignas(64) float x[16];
  _mm512_store_ps(x, v);
  float chunk[4];
  for (int c = 0; c < 4; ++c) chunk[c] = (x[4 * c] + x[4 * c + 2]) + (x[4 * c + 1] + x[4 * c + 3]);
  return (chunk[0] + chunk[2]) + (chunk[1] + chunk[3]);
}
#endif

}  // namespace qwen_tiles
