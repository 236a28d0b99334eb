// Q5_0 in tiles (tile_layout.h): per tile of g groups (g / 2 blocks of 32), the blocks' fp16 scales
// (g bytes), the codes' low 4 bits as two nibble runs (8g bytes), then their fifth bits as one mask per
// register (4 masks of 4g bits: bit 4j + i of mask t is value 4t + i of group j): 11g bytes, the file's
// 22 per block. weight = scale * (code - 16). A decode step unpacks a tile with two loads, four
// and/shifts and four masked adds, then one vpdpbusd per register for each token, and sums 16 rows at
// once (lane_sums) instead of each row across its lanes.

#include "tiled_blocks.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "vector_math.h"

namespace qwen_tiles {
namespace {

using qwen_native::half_to_float;

constexpr int64_t kQ5_0Bytes = 22;

// Bytes of a tile of g groups, and where its fifth-bit masks start.
inline int64_t tile_bytes(int64_t g) { return 11 * g; }
inline int64_t masks_at(int64_t g) { return 9 * g; }

// Fifth bit of value i of group j in a tile of g groups.
inline int fifth_bit(const uint8_t* tile, int i, int64_t j, int64_t g) {
  const uint8_t* mask = tile + masks_at(g) + (i / 4) * (g / 2);
  const int64_t bit = 4 * j + i % 4;
  return (mask[bit / 8] >> (bit % 8)) & 1;
}

inline int code_of(const uint8_t* tile, int i, int64_t j, int64_t g) {
  return nibble(tile + g, i, j, g) | (fifth_bit(tile, i, j, g) << 4);
}

float row_plain(const uint8_t* w, const TileActs* acts, int64_t k) {
  const int64_t groups = k / kGroupValues;
  float sum = 0.f;
  for (int64_t t = 0; t < tiles_of(groups); ++t) {
    const int64_t g = groups_in_tile(t, groups);
    for (int64_t j = 0; j < g; ++j) {
      int32_t dot = 0;
      for (int i = 0; i < kGroupValues; ++i) dot += code_of(w, i, j, g) * acts[t].x[i / 4][4 * j + i % 4];
      sum += half_to_float(w + 2 * (j / 2)) * (acts[t].scale[j] * float(dot) - 16.f * acts[t].scaled_sum[j]);
    }
    w += tile_bytes(g);
  }
  return sum;
}

#ifdef QWEN_TILES_AVX512
// One tile's codes in [0, 31].
inline void tile_codes(const uint8_t* tile, int64_t g, __m512i codes[4]) {
  nibble_codes(tile + g, g, codes);
  const __m512i sixteen = _mm512_set1_epi8(16);
  for (int t = 0; t < 4; ++t) {
    uint64_t fifth = 0;
    std::memcpy(&fifth, tile + masks_at(g) + t * (g / 2), g / 2);
    codes[t] = _mm512_mask_add_epi8(codes[t], fifth, codes[t], sixteen);
  }
}

template <int R>
inline void tile_sums(const uint8_t* tile, int64_t g, const TileActs* const* acts, int64_t t, __m512* sum) {
  const __m512 scales = block_scales(tile, g);
  __m512i codes[4];
  tile_codes(tile, g, codes);
  const __m512 minus16 = _mm512_set1_ps(-16.f);
  for (int r = 0; r < R; ++r) {
    const TileActs& a = acts[r][t];
    const __m512 dots = _mm512_cvtepi32_ps(group_dots(codes, a));
    const __m512 v = _mm512_fmadd_ps(_mm512_load_ps(a.scale), dots, _mm512_mul_ps(minus16, _mm512_load_ps(a.scaled_sum)));
    sum[r] = _mm512_fmadd_ps(scales, v, sum[r]);
  }
}

// R tokens on rows [first, last), 16 rows at a time.
template <int R>
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
        for (int64_t t = 0; t < full; ++t, tile += tile_bytes(kTileGroups)) tile_sums<R>(tile, kTileGroups, acts, t, sum);
        if (tail) tile_sums<R>(tile, tail, acts, full, sum);
      }
      for (int r = 0; r < R; ++r) sums[r][i] = sum[r];
    }
    for (int r = 0; r < R; ++r)
      _mm512_mask_storeu_ps(y + r * n + block, __mmask16((1u << rows) - 1), lane_sums(sums[r]));
  }
}
#endif

}  // namespace

void pack_q5_0_rows(const uint8_t* raw, int64_t stride, int64_t rows, int64_t k, uint8_t* out) {
  const int64_t groups = k / kGroupValues, row_bytes = k / 32 * kQ5_0Bytes;
  std::vector<uint8_t> codes(k);
  for (int64_t row = 0; row < rows; ++row) {
    const uint8_t* w = raw + row * stride;
    for (int64_t b = 0; b < k / 32; ++b) {
      const uint8_t* block = w + kQ5_0Bytes * b;
      uint32_t high;
      std::memcpy(&high, block + 2, 4);
      for (int i = 0; i < 16; ++i) {
        codes[32 * b + i] = (block[6 + i] & 0x0F) | (((high >> i) & 1) << 4);
        codes[32 * b + 16 + i] = (block[6 + i] >> 4) | (((high >> (i + 16)) & 1) << 4);
      }
    }
    uint8_t* tile = out + row * row_bytes;
    for (int64_t t = 0; t < tiles_of(groups); ++t) {
      const int64_t g = groups_in_tile(t, groups), first = kTileGroups * t;
      std::memset(tile, 0, tile_bytes(g));
      for (int64_t b = 0; b < g / 2; ++b) std::memcpy(tile + 2 * b, w + kQ5_0Bytes * (first / 2 + b), 2);
      for (int64_t j = 0; j < g; ++j)
        for (int i = 0; i < kGroupValues; ++i) {
          const int code = codes[kGroupValues * (first + j) + i];
          tile[g + nibble_byte(i, j, g)] |= uint8_t((code & 0x0F) << nibble_shift(i));
          const int64_t bit = 4 * j + i % 4;
          tile[masks_at(g) + (i / 4) * (g / 2) + bit / 8] |= uint8_t((code >> 4) << (bit % 8));
        }
      tile += tile_bytes(g);
    }
  }
}

void dot_tiled_rows(int64_t qtype, const uint8_t* w, int64_t stride, int64_t first, int64_t last,
                    const TileActs* acts, int64_t m, int64_t k, float* y, int64_t n) {
  const int64_t tiles = tiles_of(k / kGroupValues);
  for (int64_t t0 = 0; t0 < m; t0 += 8) {
    const int count = int(std::min<int64_t>(8, m - t0));
    const TileActs* tokens[8];
    for (int r = 0; r < count; ++r) tokens[r] = acts + (t0 + r) * tiles;
    float* out = y + t0 * n;
#ifdef QWEN_TILES_AVX512
    switch (count) {
      case 1: rows_avx512<1>(w, stride, first, last, tokens, k, out, n); continue;
      case 2: rows_avx512<2>(w, stride, first, last, tokens, k, out, n); continue;
      case 3: rows_avx512<3>(w, stride, first, last, tokens, k, out, n); continue;
      case 4: rows_avx512<4>(w, stride, first, last, tokens, k, out, n); continue;
      case 5: rows_avx512<5>(w, stride, first, last, tokens, k, out, n); continue;
      case 6: rows_avx512<6>(w, stride, first, last, tokens, k, out, n); continue;
      case 7: rows_avx512<7>(w, stride, first, last, tokens, k, out, n); continue;
      default: rows_avx512<8>(w, stride, first, last, tokens, k, out, n); continue;
    }
#endif
    for (int64_t row = first; row < last; ++row)
      for (int r = 0; r < count; ++r) out[r * n + row] = row_plain(w + row * stride, tokens[r], k);
  }
}

void dequantize_tiled_row(int64_t qtype, const uint8_t* w, int64_t k, float* y) {
  const int64_t groups = k / kGroupValues;
  for (int64_t t = 0; t < tiles_of(groups); ++t) {
    const int64_t g = groups_in_tile(t, groups);
#ifdef QWEN_TILES_AVX512
    alignas(64) uint8_t codes[4][64];
    __m512i registers[4];
    tile_codes(w, g, registers);
    for (int r = 0; r < 4; ++r) _mm512_store_si512(codes[r], registers[r]);
    for (int64_t j = 0; j < g; ++j) {  // group j: 4 bytes of each register, in value order
      uint32_t parts[4];
      for (int r = 0; r < 4; ++r) std::memcpy(parts + r, codes[r] + 4 * j, 4);
      const __m512 values = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(parts))));
      const float d = half_to_float(w + 2 * (j / 2));
      _mm512_storeu_ps(y + kGroupValues * (kTileGroups * t + j), _mm512_fmadd_ps(_mm512_set1_ps(d), values, _mm512_set1_ps(-16.f * d)));
    }
#else
    for (int64_t j = 0; j < g; ++j) {
      const float d = half_to_float(w + 2 * (j / 2));
      for (int i = 0; i < kGroupValues; ++i) y[kGroupValues * (kTileGroups * t + j) + i] = d * float(code_of(w, i, j, g) - 16);
    }
#endif
    w += tile_bytes(g);
  }
}

}  // namespace qwen_tiles

namespace {

// A Q5_0 weight `raw` [rows, row_bytes] of `in_features` columns, tiled: the same shape and bytes.
at::Tensor tile_pack(const at::Tensor& raw, int64_t qtype, int64_t in_features) {
  TORCH_CHECK(qtype == 6, "tile_pack: Q5_0 weights only, not GGML type ", qtype);
  TORCH_CHECK(raw.scalar_type() == at::kByte && raw.dim() == 2 && raw.stride(1) == 1 && in_features % 32 == 0 &&
                  raw.size(1) == in_features / 32 * 22,
              "tile_pack: raw must be uint8 [rows, ", in_features / 32 * 22, "]");
  at::Tensor out = at::empty({raw.size(0), raw.size(1)}, raw.options());
  at::parallel_for(0, raw.size(0), 256, [&](int64_t begin, int64_t end) {
    qwen_tiles::pack_q5_0_rows(raw.data_ptr<uint8_t>() + begin * raw.stride(0), raw.stride(0), end - begin, in_features,
                               out.data_ptr<uint8_t>() + begin * out.size(1));
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
