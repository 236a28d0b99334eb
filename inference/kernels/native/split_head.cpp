// The output head split into coarse and residual codes: exact greedy steps that read about half of it.
//
// A Q8_0 or Q6_K output head is repacked once, at load, into two planes that hold the file's bytes:
// coarse codes (the top 4 bits of each weight's code, with the file's scales) and residual codes (the
// other 4 or 2 bits): code = multiplier * coarse + residual, weight = scale * (code + offset). With the
// activations rounded to int8 (per 32 values, as the Q8_0 kernel rounds them), the coarse plane alone
// bounds every row's logit: taking each residual at the middle of its range errs by at most half that
// range times the sum of |scale * activation|. A greedy step wants only the largest logit, so only the
// rows whose upper bound reaches the best lower bound (a few hundred of 151,936 on real code) read
// their residual codes for their exact logit; the others are -inf. Full logits (sampling, scoring) read
// both planes of every row, and give a row the same exact logit.
//
// Layout: tiles of 16 groups of 16 values (a group shares one scale: half a Q8_0 block, a Q6_K
// sub-block); a Q8_0 row's last tile may hold fewer groups (G). Codes are ordered so that int32 lane j
// of a 64-byte register sums group j: register t holds values 4t..4t+3 of every group, and the
// activations are permuted the same way once per call. Per tile of a row:
//   coarse, Q8_0: G/2 fp16 block scales, then two runs of 4G bytes of nibbles (registers 0 and 1 as
//                 low and high nibbles, then 2 and 3)
//   coarse, Q6_K: fp16 d, 16 int8 group scales (a group's scale is d * scale), the same nibble runs
//   residual:     Q8_0 the same nibble runs; Q6_K one run of 4G bytes, register t's codes in bits 2t, 2t+1

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "vector_math.h"
#include "work_sharing.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && \
    defined(__F16C__)
#define QWEN_SPLIT_AVX512 1
#include <immintrin.h>
#endif

namespace {

using qwen_native::half_to_float;

constexpr int64_t kQ8_0 = 8, kQ6_K = 14;
constexpr int kGroupValues = 16, kTileGroups = 16;
// Rows whose sums are reduced together (lane_sums), and the multiple a thread's share of rows comes in.
constexpr int kBlockRows = 16;
// Coarse-plane bytes prefetched ahead of the tile being read (see ggml_matmul's kPrefetchAhead).
constexpr int kPrefetchAhead = 4096;

// What differs between the two source formats.
struct Format {
  int64_t qtype;
  int shift;       // code = (coarse << shift) + residual
  int offset;      // weight = scale * (code + offset)
  int block_values, block_bytes;  // the file's blocks

  float half_residual() const { return float((1 << shift) - 1) / 2.f; }
  // Bytes of a tile of g groups before its coarse nibbles (the scales).
  int64_t scale_bytes(int64_t g) const { return qtype == kQ8_0 ? g : 18; }
  int64_t coarse_tile_bytes(int64_t g) const { return scale_bytes(g) + 8 * g; }
  int64_t residual_tile_bytes(int64_t g) const { return qtype == kQ8_0 ? 8 * g : 4 * g; }
};

Format format_of(int64_t qtype) {
  if (qtype == kQ8_0) return {kQ8_0, 4, -128, 32, 34};
  TORCH_CHECK(qtype == kQ6_K, "split_head: Q8_0 or Q6_K heads only, not GGML type ", qtype);
  return {kQ6_K, 2, -32, 256, 210};
}

int64_t groups_in_tile(int64_t tile, int64_t groups) { return std::min<int64_t>(kTileGroups, groups - kTileGroups * tile); }

int64_t tiles_of(int64_t groups) { return (groups + kTileGroups - 1) / kTileGroups; }

int64_t coarse_row_bytes(const Format& f, int64_t k) {
  const int64_t groups = k / kGroupValues;
  int64_t bytes = 0;
  for (int64_t t = 0; t < tiles_of(groups); ++t) bytes += f.coarse_tile_bytes(groups_in_tile(t, groups));
  return bytes;
}

int64_t residual_row_bytes(const Format& f, int64_t k) {
  return (f.qtype == kQ8_0 ? 8 : 4) * (k / kGroupValues);
}

// Byte and bit of value i (0-15) of group j in a tile of g groups' nibble runs / 2-bit run.
inline int64_t nibble_byte(int i, int64_t j, int64_t g) { return (i / 8) * 4 * g + 4 * j + i % 4; }
inline int nibble_shift(int i) { return 4 * ((i / 4) % 2); }
inline int64_t crumb_byte(int i, int64_t j) { return 4 * j + i % 4; }
inline int crumb_shift(int i) { return 2 * (i / 4); }

// ---------------------------------------------------------------- repacking

// The file's unsigned codes (code + offset = the stored integer) and per-group scales of one row.
void decode_row(const Format& f, const uint8_t* w, int64_t k, uint8_t* codes) {
  if (f.qtype == kQ8_0) {
    for (int64_t b = 0; b < k / 32; ++b, w += 34)
      for (int i = 0; i < 32; ++i) codes[32 * b + i] = uint8_t(int(int8_t(w[2 + i])) + 128);
    return;
  }
  for (int64_t b = 0; b < k / 256; ++b, w += 210) {
    uint8_t* c = codes + 256 * b;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = w + 64 * half;
      const uint8_t* qh = w + 128 + 32 * half;
      for (int l = 0; l < 32; ++l) {
        c[128 * half + l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
        c[128 * half + l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
        c[128 * half + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
        c[128 * half + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
      }
    }
  }
}

void pack_row(const Format& f, const uint8_t* w, int64_t k, uint8_t* coarse, uint8_t* residual,
              std::vector<uint8_t>& codes) {
  decode_row(f, w, k, codes.data());
  const int64_t groups = k / kGroupValues;
  const int low_mask = (1 << f.shift) - 1;
  for (int64_t t = 0; t < tiles_of(groups); ++t) {
    const int64_t g = groups_in_tile(t, groups), first = kTileGroups * t;
    if (f.qtype == kQ8_0) {
      for (int64_t b = 0; b < g / 2; ++b) std::memcpy(coarse + 2 * b, w + 34 * (first / 2 + b), 2);
    } else {
      const uint8_t* block = w + 210 * t;
      std::memcpy(coarse, block + 208, 2);
      std::memcpy(coarse + 2, block + 192, 16);
    }
    uint8_t* nibbles = coarse + f.scale_bytes(g);
    std::memset(nibbles, 0, 8 * g);
    std::memset(residual, 0, f.residual_tile_bytes(g));
    for (int64_t j = 0; j < g; ++j) {
      for (int i = 0; i < kGroupValues; ++i) {
        const int code = codes[kGroupValues * (first + j) + i];
        nibbles[nibble_byte(i, j, g)] |= uint8_t((code >> f.shift) << nibble_shift(i));
        if (f.qtype == kQ8_0)
          residual[nibble_byte(i, j, g)] |= uint8_t((code & low_mask) << nibble_shift(i));
        else
          residual[crumb_byte(i, j)] |= uint8_t((code & low_mask) << crumb_shift(i));
      }
    }
    coarse += f.coarse_tile_bytes(g);
    residual += f.residual_tile_bytes(g);
  }
}

// ---------------------------------------------------------------- activations

// One tile of one token's activations in the tiles' code order, with per-group terms (lane j: group j;
// zero past the tile's groups).
struct alignas(64) TileActs {
  int8_t x[4][64];          // x[t][4j + i] = code of value 4t + i of group j
  float scale[16];          // the int8 codes' scale (their 32-value block's)
  float coarse_offset[16];  // scale * (offset + half residual range) * sum of codes
  float exact_offset[16];   // scale * offset * sum of codes
  float bound[16];          // scale * half residual range * sum of |codes|
};

std::vector<TileActs> quantize_tokens(const Format& f, const float* x, int64_t m, int64_t k) {
  const int64_t groups = k / kGroupValues, tiles = tiles_of(groups);
  std::vector<TileActs> acts(m * tiles);
  std::memset(static_cast<void*>(acts.data()), 0, acts.size() * sizeof(TileActs));
  std::vector<int8_t> q(k);
  std::vector<float> scales(k / 32);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * k;
    for (int64_t b = 0; b < k / 32; ++b) {  // as ggml_matmul's quantize_run rounds
      float amax = 0.f;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(row[32 * b + i]));
      const float inverse = amax > 0.f ? 127.f / amax : 0.f;
      scales[b] = amax / 127.f;
      for (int i = 0; i < 32; ++i) q[32 * b + i] = int8_t(std::nearbyint(row[32 * b + i] * inverse));
    }
    for (int64_t group = 0; group < groups; ++group) {
      TileActs& a = acts[r * tiles + group / kTileGroups];
      const int64_t j = group % kTileGroups;
      int sum = 0, magnitude = 0;
      for (int i = 0; i < kGroupValues; ++i) {
        const int8_t v = q[kGroupValues * group + i];
        a.x[i / 4][4 * j + i % 4] = v;
        sum += v;
        magnitude += std::abs(int(v));
      }
      const float s = scales[group / 2];
      a.scale[j] = s;
      a.coarse_offset[j] = s * (float(f.offset) + f.half_residual()) * float(sum);
      a.exact_offset[j] = s * float(f.offset) * float(sum);
      a.bound[j] = s * f.half_residual() * float(magnitude);
    }
  }
  return acts;
}

// ---------------------------------------------------------------- one row: plain C++

float group_scale(const Format& f, const uint8_t* tile, int64_t j) {
  if (f.qtype == kQ8_0) return half_to_float(tile + 2 * (j / 2));
  return half_to_float(tile) * float(int8_t(tile[2 + j]));
}

inline int coarse_code(const uint8_t* nibbles, int i, int64_t j, int64_t g) {
  return (nibbles[nibble_byte(i, j, g)] >> nibble_shift(i)) & 0x0F;
}

inline int residual_code(const Format& f, const uint8_t* residual, int i, int64_t j, int64_t g) {
  if (f.qtype == kQ8_0) return (residual[nibble_byte(i, j, g)] >> nibble_shift(i)) & 0x0F;
  return (residual[crumb_byte(i, j)] >> crumb_shift(i)) & 3;
}

// Bounds of one row's logit (residual null) or its exact logit (residual given; `lower` gets it).
void row_plain(const Format& f, const uint8_t* coarse, const uint8_t* residual, const TileActs* acts, int64_t k,
               float* lower, float* upper) {
  const int64_t groups = k / kGroupValues;
  float estimate = 0.f, bound = 0.f;
  for (int64_t t = 0; t < tiles_of(groups); ++t) {
    const int64_t g = groups_in_tile(t, groups);
    const uint8_t* nibbles = coarse + f.scale_bytes(g);
    const TileActs& a = acts[t];
    for (int64_t j = 0; j < g; ++j) {
      int32_t dot = 0;
      for (int i = 0; i < kGroupValues; ++i) {
        int code = coarse_code(nibbles, i, j, g) << f.shift;
        if (residual) code += residual_code(f, residual, i, j, g);
        dot += code * a.x[i / 4][4 * j + i % 4];
      }
      const float s = group_scale(f, coarse, j);
      estimate += s * (a.scale[j] * float(dot) + (residual ? a.exact_offset[j] : a.coarse_offset[j]));
      bound += std::fabs(s) * a.bound[j];
    }
    coarse += f.coarse_tile_bytes(g);
    if (residual) residual += f.residual_tile_bytes(g);
  }
  *lower = residual ? estimate : estimate - bound;
  if (upper) *upper = estimate + bound;
}

#ifdef QWEN_SPLIT_AVX512
// ---------------------------------------------------------------- R tokens on one row: AVX-512

inline __m512i dot_u8_s8(__m512i acc, __m512i u, __m512i s) {
#ifdef __AVX512VNNI__
  return _mm512_dpbusd_epi32(acc, u, s);
#else  // codes <= 15: the int16 pair sums cannot saturate
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
}

inline __mmask64 tile_mask(int64_t g) { return g == 16 ? ~__mmask64(0) : (__mmask64(1) << (4 * g)) - 1; }

// Lane j: group j's scale (0 past g).
inline __m512 group_scales(const Format& f, const uint8_t* tile, int64_t g) {
  if (f.qtype == kQ8_0) {
    const __m256 halves = _mm256_cvtph_ps(_mm_maskz_loadu_epi16(__mmask8((1u << (g / 2)) - 1), tile));
    const __m512i pairs = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    return _mm512_permutexvar_ps(pairs, _mm512_castps256_ps512(halves));
  }
  const __m512 sub = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tile + 2))));
  return _mm512_mul_ps(sub, _mm512_set1_ps(half_to_float(tile)));
}

// The four registers of 4-bit codes in nibble runs at p.
inline void nibble_codes(const uint8_t* p, int64_t g, __m512i codes[4]) {
  const __mmask64 mask = tile_mask(g);
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i first = _mm512_maskz_loadu_epi8(mask, p), second = _mm512_maskz_loadu_epi8(mask, p + 4 * g);
  codes[0] = _mm512_and_si512(first, low);
  codes[1] = _mm512_and_si512(_mm512_srli_epi16(first, 4), low);
  codes[2] = _mm512_and_si512(second, low);
  codes[3] = _mm512_and_si512(_mm512_srli_epi16(second, 4), low);
}

inline void residual_codes(const Format& f, const uint8_t* p, int64_t g, __m512i codes[4]) {
  if (f.qtype == kQ8_0) return nibble_codes(p, g, codes);
  const __m512i bits = _mm512_maskz_loadu_epi8(tile_mask(g), p), two = _mm512_set1_epi8(3);
  codes[0] = _mm512_and_si512(bits, two);
  codes[1] = _mm512_and_si512(_mm512_srli_epi16(bits, 2), two);
  codes[2] = _mm512_and_si512(_mm512_srli_epi16(bits, 4), two);
  codes[3] = _mm512_and_si512(_mm512_srli_epi16(bits, 6), two);
}

// Lane j: sum over group j of code * activation code.
inline __m512i group_dots(const __m512i codes[4], const TileActs& a) {
  const __m512i* x = reinterpret_cast<const __m512i*>(a.x);
  const __m512i even = dot_u8_s8(dot_u8_s8(_mm512_setzero_si512(), codes[0], x[0]), codes[2], x[2]);
  const __m512i odd = dot_u8_s8(dot_u8_s8(_mm512_setzero_si512(), codes[1], x[1]), codes[3], x[3]);
  return _mm512_add_epi32(even, odd);
}

// lane i of the result: the sum of v[i]'s lanes, each as tree_sum adds them.
inline __m512 lane_sums(const __m512* v) {
  __m512 pairs[8], quads[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit chunk: (x0 + x2, y0 + y2, x1 + x3, y1 + y3)
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per chunk: the chunk sums of four vectors
    quads[i] = _mm512_add_ps(_mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], 0xEE));
  const __m512 first = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], 0x44), _mm512_shuffle_f32x4(quads[0], quads[1], 0xEE));
  const __m512 second = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], 0x44), _mm512_shuffle_f32x4(quads[2], quads[3], 0xEE));
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

// One tile of R tokens' bounds on one row: estimate and bound sums per group.
template <int R>
inline void coarse_tile(const Format& f, const uint8_t* tile, int64_t g, const TileActs* const* acts, int64_t t,
                        __m512* estimate, __m512* bound) {
  const __m512 scales = group_scales(f, tile, g);
  const __m512 magnitudes = _mm512_abs_ps(scales);
  __m512i codes[4];
  nibble_codes(tile + f.scale_bytes(g), g, codes);
  for (int r = 0; r < R; ++r) {
    const TileActs& a = acts[r][t];
    const __m512 dots = _mm512_cvtepi32_ps(_mm512_slli_epi32(group_dots(codes, a), f.shift));
    const __m512 sums = _mm512_fmadd_ps(_mm512_load_ps(a.scale), dots, _mm512_load_ps(a.coarse_offset));
    estimate[r] = _mm512_fmadd_ps(scales, sums, estimate[r]);
    bound[r] = _mm512_fmadd_ps(magnitudes, _mm512_load_ps(a.bound), bound[r]);
  }
}

// Bounds of R tokens' logits on rows [first, last): lower[r][row] and upper[r][row].
template <int R>
void coarse_rows(const Format& f, const uint8_t* coarse, int64_t stride, int64_t first, int64_t last,
                 const TileActs* const* acts, int64_t k, float* const* lower, float* const* upper) {
  const int64_t groups = k / kGroupValues, full = groups / kTileGroups, tail = groups % kTileGroups;
  const int64_t full_bytes = f.coarse_tile_bytes(kTileGroups);
  alignas(64) __m512 estimates[R][kBlockRows], bounds[R][kBlockRows];
  for (int64_t block = first; block < last; block += kBlockRows) {
    const int64_t rows = std::min<int64_t>(kBlockRows, last - block);
    for (int64_t i = 0; i < kBlockRows; ++i) {
      __m512 estimate[R], bound[R];
      for (int r = 0; r < R; ++r) estimate[r] = bound[r] = _mm512_setzero_ps();
      if (i < rows) {
        const uint8_t* tile = coarse + (block + i) * stride;
        for (int64_t ahead = 0; ahead < stride; ahead += 64) __builtin_prefetch(tile + kPrefetchAhead + ahead, 0, 3);
        for (int64_t t = 0; t < full; ++t, tile += full_bytes) coarse_tile<R>(f, tile, kTileGroups, acts, t, estimate, bound);
        if (tail) coarse_tile<R>(f, tile, tail, acts, full, estimate, bound);
      }
      for (int r = 0; r < R; ++r) estimates[r][i] = estimate[r], bounds[r][i] = bound[r];
    }
    const __mmask16 keep = __mmask16((1u << rows) - 1);
    for (int r = 0; r < R; ++r) {
      const __m512 e = lane_sums(estimates[r]), b = lane_sums(bounds[r]);
      _mm512_mask_storeu_ps(lower[r] + block, keep, _mm512_sub_ps(e, b));
      _mm512_mask_storeu_ps(upper[r] + block, keep, _mm512_add_ps(e, b));
    }
  }
}

// R tokens' exact logits on one row, as per-group sums.
template <int R>
void exact_row(const Format& f, const uint8_t* coarse, const uint8_t* residual, const TileActs* const* acts,
               int64_t k, __m512* sum) {
  const int64_t groups = k / kGroupValues;
  for (int r = 0; r < R; ++r) sum[r] = _mm512_setzero_ps();
  for (int64_t t = 0; t < tiles_of(groups); ++t) {
    const int64_t g = groups_in_tile(t, groups);
    const __m512 scales = group_scales(f, coarse, g);
    __m512i high[4], low[4];
    nibble_codes(coarse + f.scale_bytes(g), g, high);
    residual_codes(f, residual, g, low);
    for (int r = 0; r < R; ++r) {
      const TileActs& a = acts[r][t];
      const __m512i dots = _mm512_add_epi32(_mm512_slli_epi32(group_dots(high, a), f.shift), group_dots(low, a));
      const __m512 sums = _mm512_fmadd_ps(_mm512_load_ps(a.scale), _mm512_cvtepi32_ps(dots), _mm512_load_ps(a.exact_offset));
      sum[r] = _mm512_fmadd_ps(scales, sums, sum[r]);
    }
    coarse += f.coarse_tile_bytes(g);
    residual += f.residual_tile_bytes(g);
  }
}

// Exact logits of R tokens on rows [first, last): out[r][row].
template <int R>
void exact_rows(const Format& f, const uint8_t* coarse, int64_t coarse_stride, const uint8_t* residual,
                int64_t residual_stride, int64_t first, int64_t last, const TileActs* const* acts, int64_t k,
                float* const* out) {
  alignas(64) __m512 sums[R][kBlockRows];
  for (int64_t block = first; block < last; block += kBlockRows) {
    const int64_t rows = std::min<int64_t>(kBlockRows, last - block);
    for (int64_t i = 0; i < kBlockRows; ++i) {
      __m512 sum[R];
      if (i < rows)
        exact_row<R>(f, coarse + (block + i) * coarse_stride, residual + (block + i) * residual_stride, acts, k, sum);
      else
        for (int r = 0; r < R; ++r) sum[r] = _mm512_setzero_ps();
      for (int r = 0; r < R; ++r) sums[r][i] = sum[r];
    }
    for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out[r] + block, __mmask16((1u << rows) - 1), lane_sums(sums[r]));
  }
}
#endif

// R (1-4) tokens on rows [first, last): their bounds (residual null; lower[r][row], upper[r][row]) or exact
// logits (into lower).
void tokens_on_rows(const Format& f, const uint8_t* coarse, int64_t coarse_stride, const uint8_t* residual,
                    int64_t residual_stride, int64_t first, int64_t last, const TileActs* const* acts, int count,
                    int64_t k, float* const* lower, float* const* upper) {
#ifdef QWEN_SPLIT_AVX512
  switch (count) {
#define QWEN_SPLIT_CASE(R)                                                                                      \
  case R:                                                                                                       \
    if (residual)                                                                                               \
      exact_rows<R>(f, coarse, coarse_stride, residual, residual_stride, first, last, acts, k, lower);          \
    else                                                                                                        \
      coarse_rows<R>(f, coarse, coarse_stride, first, last, acts, k, lower, upper);                             \
    return;
    QWEN_SPLIT_CASE(1)
    QWEN_SPLIT_CASE(2)
    QWEN_SPLIT_CASE(3)
    QWEN_SPLIT_CASE(4)
#undef QWEN_SPLIT_CASE
  }
#endif
  for (int64_t row = first; row < last; ++row)
    for (int r = 0; r < count; ++r)
      row_plain(f, coarse + row * coarse_stride, residual ? residual + row * residual_stride : nullptr, acts[r], k,
                lower[r] + row, upper ? upper[r] + row : nullptr);
}

// One token's exact logit on one row, the same number tokens_on_rows gives it.
float exact_logit(const Format& f, const uint8_t* coarse, const uint8_t* residual, const TileActs* acts, int64_t k) {
#ifdef QWEN_SPLIT_AVX512
  __m512 sum;
  exact_row<1>(f, coarse, residual, &acts, k, &sum);
  return tree_sum(sum);
#else
  float logit;
  row_plain(f, coarse, residual, acts, k, &logit, nullptr);
  return logit;
#endif
}

constexpr int64_t kTokensPerPass = 4;

// ---------------------------------------------------------------- ops

void check_planes(const Format& f, const at::Tensor& coarse, const at::Tensor& residual, int64_t k) {
  TORCH_CHECK(coarse.scalar_type() == at::kByte && residual.scalar_type() == at::kByte && coarse.dim() == 2 &&
                  residual.dim() == 2 && coarse.is_contiguous() && residual.is_contiguous() &&
                  coarse.size(0) == residual.size(0),
              "split_head: coarse and residual planes must be contiguous uint8 [rows, bytes]");
  TORCH_CHECK(k % f.block_values == 0 && coarse.size(1) == coarse_row_bytes(f, k) &&
                  residual.size(1) == residual_row_bytes(f, k),
              "split_head: planes do not hold rows of ", k, " values");
}

// The two planes of a Q8_0/Q6_K weight `raw` [rows, row_bytes] of `in_features` columns.
std::vector<at::Tensor> split_head_pack(const at::Tensor& raw, int64_t qtype, int64_t in_features) {
  const Format f = format_of(qtype);
  TORCH_CHECK(raw.scalar_type() == at::kByte && raw.dim() == 2 && raw.stride(1) == 1 &&
                  in_features % f.block_values == 0 &&
                  raw.size(1) == in_features / f.block_values * f.block_bytes,
              "split_head_pack: raw must be uint8 [rows, ", in_features / f.block_values * f.block_bytes, "]");
  const int64_t n = raw.size(0);
  at::Tensor coarse = at::empty({n, coarse_row_bytes(f, in_features)}, raw.options());
  at::Tensor residual = at::empty({n, residual_row_bytes(f, in_features)}, raw.options());
  const uint8_t* w = raw.data_ptr<uint8_t>();
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> codes(in_features);
    for (int64_t row = begin; row < end; ++row)
      pack_row(f, w + row * raw.stride(0), in_features, coarse.data_ptr<uint8_t>() + row * coarse.size(1),
               residual.data_ptr<uint8_t>() + row * residual.size(1), codes);
  });
  return {coarse, residual};
}

// x [M, K] float32 against the head: exact logits [M, rows], or with `greedy` exact only for the rows
// that may hold a token's largest logit and -inf elsewhere (the same argmax, reading the coarse plane).
at::Tensor split_head_logits(const at::Tensor& x_in, const at::Tensor& coarse, const at::Tensor& residual,
                             int64_t qtype, bool greedy) {
  const Format f = format_of(qtype);
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && x_in.dim() == 2, "split_head_logits: x must be float32 [tokens, K]");
  const int64_t k = x_in.size(1), m = x_in.size(0), n = coarse.size(0);
  check_planes(f, coarse, residual, k);
  const at::Tensor x = x_in.contiguous();
  const std::vector<TileActs> acts = quantize_tokens(f, x.data_ptr<float>(), m, k);
  const int64_t tiles = tiles_of(k / kGroupValues);
  std::vector<const TileActs*> token(m);
  for (int64_t r = 0; r < m; ++r) token[r] = acts.data() + r * tiles;
  at::Tensor y = at::empty({m, n}, x.options());
  float* out = y.data_ptr<float>();
  const uint8_t* c = coarse.data_ptr<uint8_t>();
  const uint8_t* res = residual.data_ptr<uint8_t>();
  const int64_t cb = coarse.size(1), rb = residual.size(1);
  const int64_t chunk = std::max<int64_t>(kBlockRows, (1 << 16) / (greedy ? cb : cb + rb) / kBlockRows * kBlockRows);
  std::vector<float> upper(greedy ? m * n : 0);
  qwen_native::parallel_chunks(n, chunk, [&](int64_t begin, int64_t end) {
    for (int64_t r = 0; r < m; r += kTokensPerPass) {
      const int count = int(std::min(kTokensPerPass, m - r));
      float* lower[kTokensPerPass];
      float* high[kTokensPerPass];
      for (int i = 0; i < count; ++i) lower[i] = out + (r + i) * n, high[i] = upper.data() + (r + i) * n;
      tokens_on_rows(f, c, cb, greedy ? nullptr : res, rb, begin, end, token.data() + r, count, k, lower,
                     greedy ? high : nullptr);
    }
  });
  if (!greedy) return y;
  // Rows whose upper bound reaches the best lower bound (with a margin for the bounds' float rounding).
  std::vector<std::pair<int64_t, int64_t>> candidates;  // (token, row)
  for (int64_t r = 0; r < m; ++r) {
    float* logits = out + r * n;
    const float* up = upper.data() + r * n;
    const float best = qwen_native::max_of(logits, n);
    const float reach = best - 1e-3f * (1.f + std::fabs(best));
    for (int64_t row = 0; row < n; ++row) {
      if (up[row] >= reach)
        candidates.emplace_back(r, row);
      else
        logits[row] = -std::numeric_limits<float>::infinity();
    }
  }
  qwen_native::parallel_chunks(int64_t(candidates.size()), 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto [r, row] = candidates[i];
      out[r * n + row] = exact_logit(f, c + row * cb, res + row * rb, token[r], k);
    }
  });
  return y;
}

// Rows `ids` of the weight as float32 [len(ids), K] (an embedding lookup where the head is tied).
at::Tensor split_head_rows(const at::Tensor& coarse, const at::Tensor& residual, int64_t qtype, int64_t in_features,
                           const at::Tensor& ids_in) {
  const Format f = format_of(qtype);
  check_planes(f, coarse, residual, in_features);
  const at::Tensor ids = ids_in.to(at::kLong).contiguous().reshape({-1});
  const int64_t count = ids.numel(), n = coarse.size(0), groups = in_features / kGroupValues;
  at::Tensor y = at::empty({count, in_features}, coarse.options().dtype(at::kFloat));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t row = ids.data_ptr<int64_t>()[i];
    TORCH_CHECK(row >= 0 && row < n, "split_head_rows: row ", row, " out of range [0, ", n, ")");
    const uint8_t* cp = coarse.data_ptr<uint8_t>() + row * coarse.size(1);
    const uint8_t* rp = residual.data_ptr<uint8_t>() + row * residual.size(1);
    float* out = y.data_ptr<float>() + i * in_features;
    for (int64_t t = 0; t < tiles_of(groups); ++t) {
      const int64_t g = groups_in_tile(t, groups);
      for (int64_t j = 0; j < g; ++j) {
        const float s = group_scale(f, cp, j);
        for (int v = 0; v < kGroupValues; ++v) {
          const int code = (coarse_code(cp + f.scale_bytes(g), v, j, g) << f.shift) + residual_code(f, rp, v, j, g);
          out[kGroupValues * (kTileGroups * t + j) + v] = s * float(code + f.offset);
        }
      }
      cp += f.coarse_tile_bytes(g);
      rp += f.residual_tile_bytes(g);
    }
  }
  return y;
}

bool split_head_vectorized() {
#ifdef QWEN_SPLIT_AVX512
  return true;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwen_ggml, m) {
  m.def("split_head_pack(Tensor raw, int qtype, int in_features) -> Tensor[]");
  m.def("split_head_logits(Tensor x, Tensor coarse, Tensor residual, int qtype, bool greedy) -> Tensor");
  m.def("split_head_rows(Tensor coarse, Tensor residual, int qtype, int in_features, Tensor ids) -> Tensor");
  m.def("split_head_vectorized() -> bool", &split_head_vectorized);
}

TORCH_LIBRARY_IMPL(qwen_ggml, CPU, m) {
  m.impl("split_head_pack", &split_head_pack);
  m.impl("split_head_logits", &split_head_logits);
  m.impl("split_head_rows", &split_head_rows);
}
