// The output head split into coarse and residual codes: exact greedy steps that read about half of it.
//
// A Q8_0 or Q6_K output head is repacked once, at load, into two planes that hold the file's bytes:
// coarse codes (the top 4 bits of each weight's code, with the file's scales) and residual codes (the
// other 4 or 2 bits): code = multiplier * coarse + residual, weight = scale * (code + offset). With the
// activations rounded to int8 (per 32 values, as the Q8_0 kernel rounds them), the coarse plane alone
// bounds every row's logit: taking each residual at the middle of its range errs by at most half that
// range times the sum of |scale * activation|. A greedy step wants only the largest logit, so only the
// rows whose upper bound reaches the best exact logit read their residual codes (0.5B on real code:
// 17 rows at the median step, 100 at the 90th percentile, of 151,936); the others are -inf. Full logits
// (sampling, scoring) read both planes of every row, and give a row the same exact logit.
//
// Layout (tile_layout.h): per tile of a row,
//   coarse, Q8_0: g / 2 fp16 block scales, then the coarse nibble runs
//   coarse, Q6_K: fp16 d, 16 int8 group scales (a group's scale is d * scale), the coarse nibble runs
//   residual:     Q8_0 nibble runs; Q6_K one run of 4g bytes, register t's codes in bits 2t, 2t+1

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "huge_pages.h"
#include "tile_layout.h"
#include "tiled_blocks.h"
#include "vector_math.h"
#include "work_sharing.h"

namespace {

using namespace qwen_tiles;
using qwen_native::half_to_float;

constexpr int64_t kQ8_0 = 8, kQ6_K = 14;

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

int64_t coarse_row_bytes(const Format& f, int64_t k) {
  const int64_t groups = k / kGroupValues;
  int64_t bytes = 0;
  for (int64_t t = 0; t < tiles_of(groups); ++t) bytes += f.coarse_tile_bytes(groups_in_tile(t, groups));
  return bytes;
}

int64_t residual_row_bytes(const Format& f, int64_t k) {
  return (f.qtype == kQ8_0 ? 8 : 4) * (k / kGroupValues);
}

// ---------------------------------------------------------------- repacking

// The file's unsigned codes of one row (code + offset = the stored integer).
void decode_row(const Format& f, const uint8_t* w, int64_t k, uint8_t* codes) {
  if (f.qtype == kQ8_0) {
    for (int64_t b = 0; b < k / 32; ++b, w += 34)
      for (int i = 0; i < 32; ++i) codes[32 * b + i] = uint8_t(int(int8_t(w[2 + i])) + 128);
    return;
  }
  qwen_tiles::q6_k_file_codes(w, k, codes);
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

// ---------------------------------------------------------------- one row: plain C++

float group_scale(const Format& f, const uint8_t* tile, int64_t j) {
  if (f.qtype == kQ8_0) return half_to_float(tile + 2 * (j / 2));
  return half_to_float(tile) * float(int8_t(tile[2 + j]));
}

inline int residual_code(const Format& f, const uint8_t* residual, int i, int64_t j, int64_t g) {
  if (f.qtype == kQ8_0) return nibble(residual, i, j, g);
  return crumb(residual, i, j);
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
        int code = nibble(nibbles, i, j, g) << f.shift;
        if (residual) code += residual_code(f, residual, i, j, g);
        dot += code * a.x[i / 4][4 * j + i % 4];
      }
      const float s = group_scale(f, coarse, j);
      const float offset = residual ? float(f.offset) : float(f.offset) + f.half_residual();
      estimate += s * (a.scale[j] * float(dot) + offset * a.scaled_sum[j]);
      bound += std::fabs(s) * f.half_residual() * a.scaled_magnitude[j];
    }
    coarse += f.coarse_tile_bytes(g);
    if (residual) residual += f.residual_tile_bytes(g);
  }
  *lower = residual ? estimate : estimate - bound;
  if (upper) *upper = estimate + bound;
}

// A token's factors for one tile of the coarse pass, its own per call: its scales times 2^shift (the
// coarse codes are a code's high bits) and (offset + the residual's mid-range) times its scaled sums.
// The same numbers row_plain forms per group (power-of-two scaling is exact).
struct alignas(64) CoarseFactors {
  float scale[kTileGroups];
  float offset_sum[kTileGroups];
};

std::vector<CoarseFactors> coarse_factors(const Format& f, const std::vector<TileActs>& acts) {
  std::vector<CoarseFactors> factors(acts.size());
  const float offset = float(f.offset) + f.half_residual();
  for (size_t i = 0; i < acts.size(); ++i)
    for (int j = 0; j < kTileGroups; ++j) {
      factors[i].scale[j] = acts[i].scale[j] * float(1 << f.shift);
      factors[i].offset_sum[j] = offset * acts[i].scaled_sum[j];
    }
  return factors;
}

#ifdef QWEN_TILES_AVX512
// ---------------------------------------------------------------- R tokens on one row: AVX-512

// Lane j: group j's scale (0 past g).
inline __m512 group_scales(const Format& f, const uint8_t* tile, int64_t g) {
  if (f.qtype == kQ8_0) return block_scales(tile, g);
  const __m512 sub = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tile + 2))));
  return _mm512_mul_ps(sub, _mm512_set1_ps(half_to_float(tile)));
}

inline void residual_codes(const Format& f, const uint8_t* p, int64_t g, __m512i codes[4]) {
  if (f.qtype == kQ8_0) return nibble_codes(p, g, codes);
  crumb_codes(p, g, codes);
}

// One tile of R tokens' bounds on one row: estimate and bound sums per group.
template <int R>
inline void coarse_tile(const Format& f, const uint8_t* tile, int64_t g, const TileActs* const* acts,
                        const CoarseFactors* const* factors, int64_t t, __m512* estimate, __m512* bound) {
  const __m512 scales = group_scales(f, tile, g);
  const __m512 magnitudes = _mm512_mul_ps(_mm512_abs_ps(scales), _mm512_set1_ps(f.half_residual()));
  __m512i codes[4];
  nibble_codes(tile + f.scale_bytes(g), g, codes);
  for (int r = 0; r < R; ++r) {
    const CoarseFactors& c = factors[r][t];
    const __m512 dots = _mm512_cvtepi32_ps(group_dots(codes, acts[r][t]));
    const __m512 sums = _mm512_fmadd_ps(_mm512_load_ps(c.scale), dots, _mm512_load_ps(c.offset_sum));
    estimate[r] = _mm512_fmadd_ps(scales, sums, estimate[r]);
    bound[r] = _mm512_fmadd_ps(magnitudes, _mm512_load_ps(acts[r][t].scaled_magnitude), bound[r]);
  }
}

// Bounds of R tokens' logits on rows [first, last): lower[r][row] and upper[r][row].
template <int R>
void coarse_rows(const Format& f, const uint8_t* coarse, int64_t stride, int64_t first, int64_t last,
                 const TileActs* const* acts, const CoarseFactors* const* factors, int64_t k, float* const* lower,
                 float* const* upper) {
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
        for (int64_t t = 0; t < full; ++t, tile += full_bytes) coarse_tile<R>(f, tile, kTileGroups, acts, factors, t, estimate, bound);
        if (tail) coarse_tile<R>(f, tile, tail, acts, factors, full, estimate, bound);
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
    const __m512 offset = _mm512_set1_ps(float(f.offset));
    __m512i high[4], low[4];
    nibble_codes(coarse + f.scale_bytes(g), g, high);
    residual_codes(f, residual, g, low);
    for (int r = 0; r < R; ++r) {
      const TileActs& a = acts[r][t];
      const __m512i dots = _mm512_add_epi32(_mm512_slli_epi32(group_dots(high, a), f.shift), group_dots(low, a));
      const __m512 sums = _mm512_fmadd_ps(_mm512_load_ps(a.scale), _mm512_cvtepi32_ps(dots),
                                          _mm512_mul_ps(offset, _mm512_load_ps(a.scaled_sum)));
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

// R (1-8) tokens on rows [first, last): their bounds (residual null; lower[r][row], upper[r][row]) or exact
// logits (into lower).
void tokens_on_rows(const Format& f, const uint8_t* coarse, int64_t coarse_stride, const uint8_t* residual,
                    int64_t residual_stride, int64_t first, int64_t last, const TileActs* const* acts,
                    const CoarseFactors* const* factors, int count, int64_t k, float* const* lower,
                    float* const* upper) {
#ifdef QWEN_TILES_AVX512
  return with_count(count, [&](auto R) {
    if (residual)
      exact_rows<R()>(f, coarse, coarse_stride, residual, residual_stride, first, last, acts, k, lower);
    else
      coarse_rows<R()>(f, coarse, coarse_stride, first, last, acts, factors, k, lower, upper);
  });
#endif
  for (int64_t row = first; row < last; ++row)
    for (int r = 0; r < count; ++r)
      row_plain(f, coarse + row * coarse_stride, residual ? residual + row * residual_stride : nullptr, acts[r], k,
                lower[r] + row, upper ? upper[r] + row : nullptr);
}

// One token's exact logit on one row, the same number tokens_on_rows gives it.
float exact_logit(const Format& f, const uint8_t* coarse, const uint8_t* residual, const TileActs* acts, int64_t k) {
#ifdef QWEN_TILES_AVX512
  __m512 sum;
  exact_row<1>(f, coarse, residual, &acts, k, &sum);
  return tree_sum(sum);
#else
  float logit;
  row_plain(f, coarse, residual, acts, k, &logit, nullptr);
  return logit;
#endif
}

constexpr int64_t kTokensPerPass = 8;
// Candidates a greedy step computes exactly before narrowing the rest down (see split_head_logits).
constexpr int64_t kFirstExact = 16;

// A bound's threshold lowered by the float rounding the bounds may carry.
float within_rounding(float value) { return value - 1e-3f * (1.f + std::fabs(value)); }

// The rows of [0, n) whose upper bound reaches `reach`, as (lower + upper, row); blocks of 16 rows with
// none (nearly all) are passed over with one vectorised test each.
void rows_reaching(const float* lower, const float* upper, int64_t n, float reach,
                   std::vector<std::pair<float, int64_t>>& out) {
  out.clear();
  int64_t base = 0;
  for (; base + 16 <= n; base += 16) {
    bool any = false;
    for (int i = 0; i < 16; ++i) any |= upper[base + i] >= reach;
    if (!any) continue;
    for (int64_t row = base; row < base + 16; ++row)
      if (upper[row] >= reach) out.emplace_back(lower[row] + upper[row], row);
  }
  for (int64_t row = base; row < n; ++row)
    if (upper[row] >= reach) out.emplace_back(lower[row] + upper[row], row);
}

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

// Empty coarse and residual planes for the rows of `raw` [rows, row_bytes], asked for huge pages.
std::vector<at::Tensor> split_head_planes(const at::Tensor& raw, int64_t qtype, int64_t in_features) {
  const Format f = format_of(qtype);
  TORCH_CHECK(raw.dim() == 2 && in_features % f.block_values == 0, "split_head_planes: rows of ", in_features,
              " values do not fill whole blocks");
  const int64_t rows = raw.size(0);
  const auto options = at::TensorOptions().dtype(at::kByte);
  at::Tensor coarse = at::empty({rows, coarse_row_bytes(f, in_features)}, options);
  at::Tensor residual = at::empty({rows, residual_row_bytes(f, in_features)}, options);
  qwen_native::advise_huge_pages(coarse.data_ptr(), coarse.numel());
  qwen_native::advise_huge_pages(residual.data_ptr(), residual.numel());
  return {coarse, residual};
}

// Fills planes (or row slices of them) from a Q8_0/Q6_K weight's rows `raw` [rows, row_bytes]; a head
// packed slice by slice can give each slice's file pages back before reading the next.
void split_head_pack_(const at::Tensor& raw, const at::Tensor& coarse, const at::Tensor& residual, int64_t qtype,
                      int64_t in_features) {
  const Format f = format_of(qtype);
  check_planes(f, coarse, residual, in_features);
  TORCH_CHECK(raw.scalar_type() == at::kByte && raw.dim() == 2 && raw.stride(1) == 1 &&
                  raw.size(0) == coarse.size(0) && raw.size(1) == in_features / f.block_values * f.block_bytes,
              "split_head_pack_: raw must be uint8 [", coarse.size(0), ", ",
              in_features / f.block_values * f.block_bytes, "]");
  const uint8_t* w = raw.data_ptr<uint8_t>();
  uint8_t* c = coarse.data_ptr<uint8_t>();
  uint8_t* r = residual.data_ptr<uint8_t>();
  at::parallel_for(0, raw.size(0), 256, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> codes(in_features);
    for (int64_t row = begin; row < end; ++row)
      pack_row(f, w + row * raw.stride(0), in_features, c + row * coarse.size(1), r + row * residual.size(1), codes);
  });
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
  const std::vector<TileActs> acts = quantize_tile_rows(x.data_ptr<float>(), m, k);
  const int64_t tiles = tiles_of(k / kGroupValues);
  const std::vector<CoarseFactors> factors = greedy ? coarse_factors(f, acts) : std::vector<CoarseFactors>();
  std::vector<const TileActs*> token(m);
  std::vector<const CoarseFactors*> token_factors(m, nullptr);  // the coarse pass's only (greedy)
  for (int64_t r = 0; r < m; ++r) {
    token[r] = acts.data() + r * tiles;
    if (greedy) token_factors[r] = factors.data() + r * tiles;
  }
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
      tokens_on_rows(f, c, cb, greedy ? nullptr : res, rb, begin, end, token.data() + r, token_factors.data() + r,
                     count, k, lower, greedy ? high : nullptr);
    }
  });
  if (!greedy) return y;
  // Rows whose upper bound reaches the best lower bound may hold the largest logit. Where there are
  // many (an unsure step), the most promising few are computed exactly first: no row whose upper bound
  // stays below the best of their exact logits can win, which leaves far fewer to compute.
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  std::vector<std::pair<int64_t, int64_t>> candidates;  // (token, row)
  std::vector<std::pair<float, int64_t>> reaching;      // (lower + upper bound, row)
  for (int64_t r = 0; r < m; ++r) {
    float* logits = out + r * n;
    float* up = upper.data() + r * n;
    float reach = within_rounding(qwen_native::max_of(logits, n));
    rows_reaching(logits, up, n, reach, reaching);
    if (int64_t(reaching.size()) > 2 * kFirstExact) {
      std::nth_element(reaching.begin(), reaching.begin() + kFirstExact, reaching.end(), std::greater<>());
      float best = kNone;
      for (int64_t i = 0; i < kFirstExact; ++i) {
        const int64_t row = reaching[i].second;
        logits[row] = exact_logit(f, c + row * cb, res + row * rb, token[r], k);
        best = std::max(best, logits[row]);
      }
      reach = std::max(reach, within_rounding(best));
      for (int64_t i = kFirstExact; i < int64_t(reaching.size()); ++i)
        if (up[reaching[i].second] >= reach) candidates.emplace_back(r, reaching[i].second);
      for (int64_t i = 0; i < kFirstExact; ++i) up[reaching[i].second] = std::numeric_limits<float>::infinity();  // kept
    } else {
      for (const auto& [estimate, row] : reaching) candidates.emplace_back(r, row);
    }
#pragma omp simd
    for (int64_t row = 0; row < n; ++row) logits[row] = up[row] >= reach ? logits[row] : kNone;
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
          const int code = (nibble(cp + f.scale_bytes(g), v, j, g) << f.shift) + residual_code(f, rp, v, j, g);
          out[kGroupValues * (kTileGroups * t + j) + v] = s * float(code + f.offset);
        }
      }
      cp += f.coarse_tile_bytes(g);
      rp += f.residual_tile_bytes(g);
    }
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwen_ggml, m) {
  m.def("split_head_planes(Tensor raw, int qtype, int in_features) -> Tensor[]");
  m.def("split_head_pack_(Tensor raw, Tensor(a!) coarse, Tensor(b!) residual, int qtype, int in_features) -> ()");
  m.def("split_head_logits(Tensor x, Tensor coarse, Tensor residual, int qtype, bool greedy) -> Tensor");
  m.def("split_head_rows(Tensor coarse, Tensor residual, int qtype, int in_features, Tensor ids) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwen_ggml, CPU, m) {
  m.impl("split_head_planes", &split_head_planes);
  m.impl("split_head_pack_", &split_head_pack_);
  m.impl("split_head_logits", &split_head_logits);
  m.impl("split_head_rows", &split_head_rows);
}
