// Block-quantized matrices in tiles (tile_layout.h), the file's bytes in another order. Per tile of g
// groups (values 16j..16j+15 of the tile form group j):
//   Q5_0: the g / 2 blocks' fp16 scales (g bytes), the codes' low 4 bits as nibble runs (8g bytes), then
//         their fifth bits as one mask per register (4 masks of 4g bits: bit 4j + i of mask t is value
//         4t + i of group j): 11g bytes, the file's 22 per block; weight = d * (code - 16)
//   Q4_K: the block's fp16 d and dmin and 12 bytes of 6-bit scales and mins as in the file, then the
//         codes as nibble runs (144 bytes, g = 16); weight = d * scale * code - dmin * min
//   Q6_K: the codes' low 4 bits as nibble runs (128 bytes), their high 2 bits as one run (register t in
//         bits 2t, 2t+1; 64 bytes), then the file's 16 int8 group scales and fp16 d (210 bytes, g = 16);
//         weight = d * scale * (code - 32)
// A group's weights are mul * code - sub. A decode step unpacks a tile with a few loads, and/shifts
// (and Q5_0's masked adds), then takes one vpdpbusd per register for each token, and sums 16 rows at
// once (lane_sums) instead of each row across its lanes: a third of the file layout's instructions.

#include "tiled_blocks.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "huge_pages.h"
#include "k_quant_scales.h"
#include "vector_math.h"

namespace qwen_tiles {
namespace {

using qwen_native::half_to_float;

constexpr int64_t kQ5_0 = 6, kQ4_K = 12, kQ6_K = 14;

struct Q5_0Tiles {
  static constexpr int64_t kFileBlockValues = 32, kFileBlockBytes = 22;
  static int64_t tile_bytes(int64_t g) { return 11 * g; }
  static int64_t masks_at(int64_t g) { return 9 * g; }

  static int code(const uint8_t* tile, int i, int64_t j, int64_t g) {
    const uint8_t* mask = tile + masks_at(g) + (i / 4) * (g / 2);
    const int64_t bit = 4 * j + i % 4;
    return nibble(tile + g, i, j, g) | (((mask[bit / 8] >> (bit % 8)) & 1) << 4);
  }
  static void factors(const uint8_t* tile, int64_t j, float& mul, float& sub) {
    mul = half_to_float(tile + 2 * (j / 2));
    sub = 16.f * mul;
  }
  // The file's unsigned codes of one row (k values).
  static void file_codes(const uint8_t* w, int64_t k, uint8_t* codes) {
    for (int64_t b = 0; b < k / 32; ++b, w += kFileBlockBytes) {
      uint32_t high;
      std::memcpy(&high, w + 2, 4);
      for (int i = 0; i < 16; ++i) {
        codes[32 * b + i] = (w[6 + i] & 0x0F) | (((high >> i) & 1) << 4);
        codes[32 * b + 16 + i] = (w[6 + i] >> 4) | (((high >> (i + 16)) & 1) << 4);
      }
    }
  }
  static void pack_tile(const uint8_t* row, int64_t t, int64_t g, const uint8_t* codes, uint8_t* tile) {
    for (int64_t b = 0; b < g / 2; ++b) std::memcpy(tile + 2 * b, row + kFileBlockBytes * (8 * t + b), 2);
    for (int64_t j = 0; j < g; ++j)
      for (int i = 0; i < kGroupValues; ++i) {
        const int c = codes[kGroupValues * j + i], bit = 4 * int(j) + i % 4;
        tile[g + nibble_byte(i, j, g)] |= uint8_t((c & 0x0F) << nibble_shift(i));
        tile[masks_at(g) + (i / 4) * (g / 2) + bit / 8] |= uint8_t((c >> 4) << (bit % 8));
      }
  }
#ifdef QWEN_TILES_AVX512
  QWEN_TILES_INLINE static void codes(const uint8_t* tile, int64_t g, __m512i c[4]) {
    nibble_codes(tile + g, g, c);
    const __m512i sixteen = _mm512_set1_epi8(16);
    const __mmask16 bytes = __mmask16((1u << (g / 2)) - 1);  // a mask's g / 2 bytes, loaded without reading past them
    for (int t = 0; t < 4; ++t) {
      const __m128i fifth = _mm_maskz_loadu_epi8(bytes, tile + masks_at(g) + t * (g / 2));
      c[t] = _mm512_mask_add_epi8(c[t], __mmask64(_mm_cvtsi128_si64(fifth)), c[t], sixteen);
    }
  }
  QWEN_TILES_INLINE static void factors(const uint8_t* tile, int64_t g, __m512& mul, __m512& sub) {
    mul = block_scales(tile, g);
    sub = _mm512_mul_ps(mul, _mm512_set1_ps(16.f));
  }
#endif
};

struct Q4_KTiles {
  static constexpr int64_t kFileBlockValues = 256, kFileBlockBytes = 144;
  static int64_t tile_bytes(int64_t) { return 144; }

  static int code(const uint8_t* tile, int i, int64_t j, int64_t g) { return nibble(tile + 16, i, j, g); }
  static void factors(const uint8_t* tile, int64_t j, float& mul, float& sub) {
    uint8_t scale, min;
    qwen_native::k_scale_min(int(j / 2), tile + 4, scale, min);
    mul = half_to_float(tile) * float(scale);
    sub = half_to_float(tile + 2) * float(min);
  }
  static void file_codes(const uint8_t* w, int64_t k, uint8_t* codes) {
    for (int64_t b = 0; b < k / 256; ++b, w += kFileBlockBytes, codes += 256)
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
          codes[64 * c + l] = w[16 + 32 * c + l] & 0x0F;
          codes[64 * c + 32 + l] = w[16 + 32 * c + l] >> 4;
        }
  }
  static void pack_tile(const uint8_t* row, int64_t t, int64_t g, const uint8_t* codes, uint8_t* tile) {
    std::memcpy(tile, row + kFileBlockBytes * t, 16);
    for (int64_t j = 0; j < g; ++j)
      for (int i = 0; i < kGroupValues; ++i)
        tile[16 + nibble_byte(i, j, g)] |= uint8_t(codes[kGroupValues * j + i] << nibble_shift(i));
  }
#ifdef QWEN_TILES_AVX512
  QWEN_TILES_INLINE static void codes(const uint8_t* tile, int64_t g, __m512i c[4]) { nibble_codes(tile + 16, g, c); }
  QWEN_TILES_INLINE static void factors(const uint8_t* tile, int64_t, __m512& mul, __m512& sub) {
    uint8_t scales_mins[16];
    qwen_native::k_scales_mins(tile + 4, scales_mins, scales_mins + 8);
    const __m512 both = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales_mins))));
    const __m512i pairs = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    mul = _mm512_mul_ps(_mm512_permutexvar_ps(pairs, both), _mm512_set1_ps(half_to_float(tile)));
    sub = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_add_epi32(pairs, _mm512_set1_epi32(8)), both),
                        _mm512_set1_ps(half_to_float(tile + 2)));
  }
#endif
};

struct Q6_KTiles {
  static constexpr int64_t kFileBlockValues = 256, kFileBlockBytes = 210;
  static int64_t tile_bytes(int64_t) { return 210; }

  static int code(const uint8_t* tile, int i, int64_t j, int64_t g) {
    return nibble(tile, i, j, g) | (crumb(tile + 128, i, j) << 4);
  }
  static void factors(const uint8_t* tile, int64_t j, float& mul, float& sub) {
    mul = half_to_float(tile + 208) * float(int8_t(tile[192 + j]));
    sub = 32.f * mul;
  }
  static void file_codes(const uint8_t* w, int64_t k, uint8_t* codes) { q6_k_file_codes(w, k, codes); }
  static void pack_tile(const uint8_t* row, int64_t t, int64_t g, const uint8_t* codes, uint8_t* tile) {
    std::memcpy(tile + 192, row + kFileBlockBytes * t + 192, 18);
    for (int64_t j = 0; j < g; ++j)
      for (int i = 0; i < kGroupValues; ++i) {
        const int c = codes[kGroupValues * j + i];
        tile[nibble_byte(i, j, g)] |= uint8_t((c & 0x0F) << nibble_shift(i));
        tile[128 + crumb_byte(i, j)] |= uint8_t((c >> 4) << crumb_shift(i));
      }
  }
#ifdef QWEN_TILES_AVX512
  QWEN_TILES_INLINE static void codes(const uint8_t* tile, int64_t g, __m512i c[4]) {
    __m512i high[4];
    nibble_codes(tile, g, c);
    crumb_codes(tile + 128, g, high);
    for (int t = 0; t < 4; ++t) c[t] = _mm512_or_si512(c[t], _mm512_slli_epi16(high[t], 4));
  }
  QWEN_TILES_INLINE static void factors(const uint8_t* tile, int64_t, __m512& mul, __m512& sub) {
    const __m512 scales = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tile + 192))));
    mul = _mm512_mul_ps(scales, _mm512_set1_ps(half_to_float(tile + 208)));
    sub = _mm512_mul_ps(mul, _mm512_set1_ps(32.f));
  }
#endif
};

template <class F>
float row_plain(const uint8_t* w, const TileActs* acts, int64_t k) {
  const int64_t groups = k / kGroupValues;
  float sum = 0.f;
  for (int64_t t = 0; t < tiles_of(groups); ++t) {
    const int64_t g = groups_in_tile(t, groups);
    for (int64_t j = 0; j < g; ++j) {
      int32_t dot = 0;
      for (int i = 0; i < kGroupValues; ++i) dot += F::code(w, i, j, g) * acts[t].x[i / 4][4 * j + i % 4];
      float mul, sub;
      F::factors(w, j, mul, sub);
      sum += mul * (acts[t].scale[j] * float(dot)) - sub * acts[t].scaled_sum[j];
    }
    w += F::tile_bytes(g);
  }
  return sum;
}

#ifdef QWEN_TILES_AVX512
template <class F, int R>
QWEN_TILES_INLINE void tile_sums(const uint8_t* tile, int64_t g, const TileActs* const* acts, int64_t t, __m512* sum) {
  __m512 mul, sub;
  F::factors(tile, g, mul, sub);
  __m512i codes[4];
  F::codes(tile, g, codes);
  for (int r = 0; r < R; ++r) {
    const TileActs& a = acts[r][t];
    const __m512 dots = _mm512_mul_ps(_mm512_load_ps(a.scale), _mm512_cvtepi32_ps(group_dots(codes, a)));
    sum[r] = _mm512_fnmadd_ps(sub, _mm512_load_ps(a.scaled_sum), _mm512_fmadd_ps(mul, dots, sum[r]));
  }
}

// R tokens on rows [first, last), 16 rows at a time.
template <class F, int R>
void rows_avx512(const uint8_t* w, int64_t stride, int64_t first, int64_t last, const TileActs* const* acts,
                 int64_t k, float* y, int64_t n) {
  const int64_t groups = k / kGroupValues, full = groups / kTileGroups, tail = groups % kTileGroups;
  alignas(64) __m512 sums[R][kBlockRows];
  for (int64_t block = first; block < last; block += kBlockRows) {
    const int64_t rows = std::min<int64_t>(kBlockRows, last - block);
    for (int64_t i = 0; i < kBlockRows; ++i) {
      __m512 sum[R];
      for (int r = 0; r < R; ++r) sum[r] = _mm512_setzero_ps();
      if (i < rows) {
        const uint8_t* tile = w + (block + i) * stride;
        for (int64_t ahead = 0; ahead < stride; ahead += 64) __builtin_prefetch(tile + kPrefetchAhead + ahead, 0, 3);
        for (int64_t t = 0; t < full; ++t, tile += F::tile_bytes(kTileGroups))
          tile_sums<F, R>(tile, kTileGroups, acts, t, sum);
        if (tail) tile_sums<F, R>(tile, tail, acts, full, sum);
      }
      for (int r = 0; r < R; ++r) sums[r][i] = sum[r];
    }
    for (int r = 0; r < R; ++r)
      _mm512_mask_storeu_ps(y + r * n + block, __mmask16((1u << rows) - 1), lane_sums(sums[r]));
  }
}
#endif

template <class F>
void pack_rows(const uint8_t* raw, int64_t stride, int64_t rows, int64_t k, uint8_t* out) {
  const int64_t groups = k / kGroupValues, row_bytes = k / F::kFileBlockValues * F::kFileBlockBytes;
  std::vector<uint8_t> codes(k);
  for (int64_t row = 0; row < rows; ++row) {
    const uint8_t* w = raw + row * stride;
    F::file_codes(w, k, codes.data());
    uint8_t* tile = out + row * row_bytes;
    for (int64_t t = 0; t < tiles_of(groups); ++t) {
      const int64_t g = groups_in_tile(t, groups);
      std::memset(tile, 0, F::tile_bytes(g));
      F::pack_tile(w, t, g, codes.data() + kTileGroups * kGroupValues * t, tile);
      tile += F::tile_bytes(g);
    }
  }
}

template <class F>
void dot_rows(const uint8_t* w, int64_t stride, int64_t first, int64_t last, const TileActs* acts, int64_t m,
              int64_t k, float* y, int64_t n) {
  const int64_t tiles = tiles_of(k / kGroupValues);
  for (int64_t t0 = 0; t0 < m; t0 += 8) {
    const int count = int(std::min<int64_t>(8, m - t0));
    const TileActs* tokens[8];
    for (int r = 0; r < count; ++r) tokens[r] = acts + (t0 + r) * tiles;
    float* out = y + t0 * n;
#ifdef QWEN_TILES_AVX512
    with_count(count, [&](auto R) { rows_avx512<F, R()>(w, stride, first, last, tokens, k, out, n); });
    continue;
#endif
    for (int64_t row = first; row < last; ++row)
      for (int r = 0; r < count; ++r) out[r * n + row] = row_plain<F>(w + row * stride, tokens[r], k);
  }
}

template <class F>
void dequantize_row(const uint8_t* w, int64_t k, float* y) {
  const int64_t groups = k / kGroupValues;
  for (int64_t t = 0; t < tiles_of(groups); ++t) {
    const int64_t g = groups_in_tile(t, groups);
    float* out = y + kGroupValues * kTileGroups * t;
#ifdef QWEN_TILES_AVX512
    alignas(64) uint8_t codes[4][64];
    __m512i registers[4];
    F::codes(w, g, registers);
    for (int r = 0; r < 4; ++r) _mm512_store_si512(codes[r], registers[r]);
    alignas(64) float mul[16], sub[16];
    __m512 mul_lanes, sub_lanes;
    F::factors(w, g, mul_lanes, sub_lanes);
    _mm512_store_ps(mul, mul_lanes);
    _mm512_store_ps(sub, sub_lanes);
    for (int64_t j = 0; j < g; ++j) {  // group j: 4 bytes of each register, in value order
      uint32_t parts[4];
      for (int r = 0; r < 4; ++r) std::memcpy(parts + r, codes[r] + 4 * j, 4);
      const __m512 values = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(parts))));
      _mm512_storeu_ps(out + kGroupValues * j, _mm512_fmsub_ps(_mm512_set1_ps(mul[j]), values, _mm512_set1_ps(sub[j])));
    }
#else
    for (int64_t j = 0; j < g; ++j) {
      float mul, sub;
      F::factors(w, j, mul, sub);
      for (int i = 0; i < kGroupValues; ++i) out[kGroupValues * j + i] = mul * float(F::code(w, i, j, g)) - sub;
    }
#endif
    w += F::tile_bytes(g);
  }
}

}  // namespace

void q6_k_file_codes(const uint8_t* w, int64_t k, uint8_t* codes) {
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

std::pair<int64_t, int64_t> file_block(int64_t qtype) {
  if (qtype == kQ5_0) return {Q5_0Tiles::kFileBlockValues, Q5_0Tiles::kFileBlockBytes};
  if (qtype == kQ4_K) return {Q4_KTiles::kFileBlockValues, Q4_KTiles::kFileBlockBytes};
  TORCH_CHECK(qtype == kQ6_K, "tile_pack: Q5_0, Q4_K or Q6_K weights only, not GGML type ", qtype);
  return {Q6_KTiles::kFileBlockValues, Q6_KTiles::kFileBlockBytes};
}

void pack_tiled_rows(int64_t qtype, const uint8_t* raw, int64_t stride, int64_t rows, int64_t k, uint8_t* out) {
  if (qtype == kQ5_0) return pack_rows<Q5_0Tiles>(raw, stride, rows, k, out);
  if (qtype == kQ4_K) return pack_rows<Q4_KTiles>(raw, stride, rows, k, out);
  return pack_rows<Q6_KTiles>(raw, stride, rows, k, out);
}

void dot_tiled_rows(int64_t qtype, const uint8_t* w, int64_t stride, int64_t first, int64_t last,
                    const TileActs* acts, int64_t m, int64_t k, float* y, int64_t n) {
  if (qtype == kQ5_0Tiled) return dot_rows<Q5_0Tiles>(w, stride, first, last, acts, m, k, y, n);
  if (qtype == kQ4_KTiled) return dot_rows<Q4_KTiles>(w, stride, first, last, acts, m, k, y, n);
  return dot_rows<Q6_KTiles>(w, stride, first, last, acts, m, k, y, n);
}

void dequantize_tiled_row(int64_t qtype, const uint8_t* w, int64_t k, float* y) {
  if (qtype == kQ5_0Tiled) return dequantize_row<Q5_0Tiles>(w, k, y);
  if (qtype == kQ4_KTiled) return dequantize_row<Q4_KTiles>(w, k, y);
  return dequantize_row<Q6_KTiles>(w, k, y);
}

}  // namespace qwen_tiles

namespace {

// A Q5_0, Q4_K or Q6_K weight `raw` [rows, row_bytes] of `in_features` columns, tiled: the same shape and bytes.
at::Tensor tile_pack(const at::Tensor& raw, int64_t qtype, int64_t in_features) {
  const auto [values, bytes] = qwen_tiles::file_block(qtype);
  TORCH_CHECK(raw.scalar_type() == at::kByte && raw.dim() == 2 && raw.stride(1) == 1 && in_features % values == 0 &&
                  raw.size(1) == in_features / values * bytes,
              "tile_pack: raw must be uint8 [rows, ", in_features / values * bytes, "]");
  at::Tensor out = at::empty({raw.size(0), raw.size(1)}, raw.options());
  qwen_native::advise_huge_pages(out.data_ptr(), out.numel());
  at::parallel_for(0, raw.size(0), 256, [&](int64_t begin, int64_t end) {
    qwen_tiles::pack_tiled_rows(qtype, raw.data_ptr<uint8_t>() + begin * raw.stride(0), raw.stride(0), end - begin,
                                in_features, out.data_ptr<uint8_t>() + begin * out.size(1));
  });
  return out;
}

// Whether the tiled kernels (and the split head) were built with their AVX-512 code.
bool tiles_vectorized() {
#ifdef QWEN_TILES_AVX512
  return true;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwen_ggml, m) {
  m.def("tile_pack(Tensor raw, int qtype, int in_features) -> Tensor");
  m.def("tiles_vectorized() -> bool", &tiles_vectorized);
}

TORCH_LIBRARY_IMPL(qwen_ggml, CPU, m) { m.impl("tile_pack", &tile_pack); }
