// The attention of a pass of a few tokens (decode, speculative verification) in one native call per
// layer: bias, per-head RMS norm (qwen3), rotary embedding, the cache write, and each token's
// attention over the keys up to its own position, as decoding that token alone computes it.
// Replaces some forty small tensor ops per layer whose dispatch cost more than their arithmetic.
// Work is split into (kv head, chunk of key positions) tasks that the threads take in turn
// (parallel_chunks), each chunk serving every token; the chunks' partial softmaxes are merged at the end.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "count_dispatch.h"
#include "vector_math.h"
#include "work_sharing.h"

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

namespace {

using namespace qwen_native;

// Key positions per parallel task.
constexpr int64_t kChunk = 256;

// The cache stores keys and values as float or as _Float16 (half the bytes to stream; each element
// widened to float as it is read, so the arithmetic is the same), 16 at a time with F16C / AVX-512.
template <typename T>
inline Vec16 load16(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return qwen_native::load16(p);
  } else {
    Vec16 v;
#if defined(__AVX512F__)
    const __m512 wide = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    std::memcpy(&v, &wide, sizeof v);
#elif defined(__F16C__) && defined(__AVX__)
    const __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256 hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
    std::memcpy(&v, &lo, 32);
    std::memcpy(reinterpret_cast<char*>(&v) + 32, &hi, 32);
#else  // the compiler widens element by element
    typedef T Half16 __attribute__((vector_size(16 * sizeof(T))));
    Half16 h;
    std::memcpy(&h, p, sizeof h);
    v = __builtin_convertvector(h, Vec16);
#endif
    return v;
  }
}

template <typename T>
inline void prefetch_row(const T* row, int64_t d) {
  for (int64_t i = 0; i < d; i += 64 / sizeof(T)) __builtin_prefetch(row + i, 0, 3);
}

#if defined(__AVX512F__)
// Rows r[0..16) of a 16 x 16 float block become its columns.
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4i + j], 128-bit lane L: rows 4i..4i+3 of column 4L + j.
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 even_lo = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
    const __m512 even_hi = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
    const __m512 odd_lo = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
    const __m512 odd_hi = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
    r[j] = _mm512_shuffle_f32x4(even_lo, even_hi, 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(even_lo, even_hi, 0xDD);
    r[j + 4] = _mm512_shuffle_f32x4(odd_lo, odd_hi, 0x88);
    r[j + 12] = _mm512_shuffle_f32x4(odd_lo, odd_hi, 0xDD);
  }
}
#endif

// A chunk's keys transposed in blocks of 16 positions, [block][d][16] floats (positions past `length`
// zero), so one vector of 16 scores accumulates with a broadcast query element per channel: the
// queries of every token and head sharing the chunk reuse it, and no score needs a horizontal sum.
// The key rows are read from the cache once, here (with the value rows, ahead of the values pass).
template <typename T>
void transpose_keys(const T* key, const T* value, int64_t length, int64_t d, float* kt) {
  for (int64_t first = 0; first < length; first += 16) {
    const int64_t rows = std::min<int64_t>(16, length - first);
    float* block = kt + first * d;
    for (int64_t j = 0; j < 16; ++j) {
      prefetch_row(key + (first + 16 + j) * d, d);
      prefetch_row(value + (first + j) * d, d);
    }
    int64_t c = 0;
#if defined(__AVX512F__)
    for (; rows == 16 && c + 16 <= d; c += 16) {
      __m512 r[16];
      for (int j = 0; j < 16; ++j) {
        const Vec16 v = load16(key + (first + j) * d + c);
        std::memcpy(&r[j], &v, sizeof v);
      }
      transpose16(r);
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(block + (c + i) * 16, r[i]);
    }
#endif
    for (; c < d; ++c)
      for (int64_t j = 0; j < 16; ++j) block[c * 16 + j] = j < rows ? float(key[(first + j) * d + c]) : 0.f;
  }
}

// s[g * stride + j] = scale * <query g, key j> for G query heads and `length` keys of width d, from keys
// transposed by transpose_keys (s is written up to `length` rounded up to 16).
template <int G>
void head_scores(const float* query, const float* kt, int64_t length, int64_t d, float scale, float* s,
                 int64_t stride) {
  for (int64_t first = 0; first < length; first += 16) {
    const float* block = kt + first * d;
    Vec16 even[G], odd[G];  // two chains per head over alternate channels keep the FMA units busy
    for (int g = 0; g < G; ++g) even[g] = odd[g] = Vec16{};
    int64_t c = 0;
    for (; c + 2 <= d; c += 2) {
      const Vec16 k0 = load16(block + c * 16), k1 = load16(block + (c + 1) * 16);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
        even[g] += query[g * d + c] * k0;
        odd[g] += query[g * d + c + 1] * k1;
      }
    }
    if (c < d) {
      const Vec16 k0 = load16(block + c * 16);
      for (int g = 0; g < G; ++g) even[g] += query[g * d + c] * k0;
    }
    for (int g = 0; g < G; ++g) {
      const Vec16 total = (even[g] + odd[g]) * scale;
      std::memcpy(s + g * stride + first, &total, sizeof total);
    }
  }
}

// out[g][c..) = sum_j s[g * stride + j] * value j [c..) for G heads over channels [c, end), P vectors of 16
// channels per step, all G * P sums in registers.
template <int G, int P, typename T>
void value_sums(const float* s, int64_t stride, const T* value, int64_t length, int64_t d, float* out,
                int64_t c, int64_t end) {
  for (; c + 16 * P <= end; c += 16 * P) {
    Vec16 acc[G][P];
    for (int g = 0; g < G; ++g)
      for (int p = 0; p < P; ++p) acc[g][p] = Vec16{};
    for (int64_t j = 0; j < length; ++j) {
      const T* row = value + j * d + c;
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const Vec16 v = load16(row + 16 * p);
#pragma GCC unroll 8
        for (int g = 0; g < G; ++g) acc[g][p] += s[g * stride + j] * v;
      }
    }
    for (int g = 0; g < G; ++g)
      for (int p = 0; p < P; ++p) std::memcpy(out + g * d + c + 16 * p, &acc[g][p], sizeof(Vec16));
  }
}

// out[g] = sum_j s[g * stride + j] * value j for G heads.
template <int G, typename T>
void head_values(const float* s, int64_t stride, const T* value, int64_t length, int64_t d, float* out) {
  constexpr int kWide = G <= 6 ? 4 : 2;  // vectors per step: G * kWide accumulators fit 32 registers
  const int64_t full = d / 16 * 16, wide = full / (16 * kWide) * (16 * kWide);
  value_sums<G, kWide, T>(s, stride, value, length, d, out, 0, wide);
  value_sums<G, 1, T>(s, stride, value, length, d, out, wide, full);
  for (int64_t c = full; c < d; ++c)
    for (int g = 0; g < G; ++g) {
      float total = 0.f;
      for (int64_t j = 0; j < length; ++j) total += s[g * stride + j] * float(value[j * d + c]);
      out[g * d + c] = total;
    }
}

// f(first, G) for the query heads sharing a kv head in batches of G <= 8 (what registers hold).
template <typename F>
void in_head_batches(int64_t heads, F&& f) {
  for (int64_t first = 0; first < heads; first += 8)
    with_count(int(std::min<int64_t>(8, heads - first)), [&](auto batch) { f(first, batch); });
}

// x[0..d) <- weight * x / rms(x), in place.
void rms_norm(float* x, const float* weight, int64_t d, double eps) {
  const float inverse = 1.f / std::sqrt(dot(x, x, d) / float(d) + float(eps));
  for (int64_t i = 0; i < d; ++i) x[i] = weight[i] * (x[i] * inverse);
}

// Rotate-half rotary embedding of the first `rotary` channels of x with one position's cos/sin rows.
void rotate(float* x, const float* cos, const float* sin, int64_t rotary) {
  const int64_t half = rotary / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i + half] + a * sin[i + half];
  }
}

// One head of one token before attention: bias, norm, rotation, into `out` [d].
void prepare_head(const float* in, float* out, int64_t d, const float* bias, const float* norm, double eps,
                  const float* cos, const float* sin, int64_t rotary) {
  for (int64_t i = 0; i < d; ++i) out[i] = in[i] + (bias ? bias[i] : 0.f);
  if (norm) rms_norm(out, norm, d, eps);
  rotate(out, cos, sin, rotary);
}

const float* optional_data(const std::optional<at::Tensor>& t, int64_t numel) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->numel() == numel,
              "few_token_attention: bias/norm of ", numel, " contiguous floats expected");
  return t->data_ptr<float>();
}

// Softmax state of one chunk of keys for one query head: max score, sum of e^(score - max) and
// the e^(score - max)-weighted sum of values.
struct Partial {
  float max, sum;
};

// The pass itself, for cache storage of element type T (float or _Float16).
template <typename T>
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const float* qb, const float* kb,
                  const float* vb, const float* qn, const float* kn, double eps, const at::Tensor& cos,
                  const at::Tensor& sin, T* key_store, T* value_store, int64_t capacity, int64_t start,
                  double scale) {
  const int64_t n = q.size(0), heads = q.size(1), d = q.size(2), kv_heads = k.size(1);
  const int64_t group = heads / kv_heads, rotary = cos.size(1);
  // Queries prepared once; keys and values of the new tokens written to the cache.
  std::vector<float> queries(n * heads * d), key(d);
  for (int64_t t = 0; t < n; ++t) {
    const float* c = cos.data_ptr<float>() + (start + t) * rotary;
    const float* s = sin.data_ptr<float>() + (start + t) * rotary;
    for (int64_t h = 0; h < heads; ++h)
      prepare_head(q.data_ptr<float>() + (t * heads + h) * d, queries.data() + (t * heads + h) * d, d,
                   qb ? qb + h * d : nullptr, qn, eps, c, s, rotary);
    for (int64_t h = 0; h < kv_heads; ++h) {
      const int64_t slot = (h * capacity + start + t) * d;
      prepare_head(k.data_ptr<float>() + (t * kv_heads + h) * d, key.data(), d, kb ? kb + h * d : nullptr, kn, eps,
                   c, s, rotary);
      const float* vin = v.data_ptr<float>() + (t * kv_heads + h) * d;
      for (int64_t i = 0; i < d; ++i) {
        key_store[slot + i] = T(key[i]);
        value_store[slot + i] = T(vin[i] + (vb ? vb[h * d + i] : 0.f));
      }
    }
  }

  // Tasks: (kv head, chunk of positions); each serves every token that sees into its chunk (keys and
  // values read from memory once), each token exactly as decoding it alone would (same chunks).
  // Slot (t, h, c) holds token t's partials for kv head h's `group` query heads over chunk c.
  const int64_t chunks = (start + n + kChunk - 1) / kChunk;
  const auto slot = [&](int64_t t, int64_t h, int64_t c) { return (t * kv_heads + h) * chunks + c; };
  std::vector<Partial> partials(n * kv_heads * chunks * group);
  std::vector<float> sums(n * kv_heads * chunks * group * d);

  qwen_native::parallel_chunks(kv_heads * chunks, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores, transposed;
    scores.resize(group * kChunk);
    transposed.resize(kChunk * d);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h = task / chunks, c = task % chunks, first = c * kChunk;
      const T* key = key_store + (h * capacity + first) * d;
      const T* value = value_store + (h * capacity + first) * d;
      transpose_keys(key, value, std::min(kChunk, start + n - first), d, transposed.data());
      for (int64_t t = std::max<int64_t>(0, first - start); t < n; ++t) {  // the tokens that see this chunk
        const int64_t length = std::min(kChunk, start + t + 1 - first), i = slot(t, h, c);
        const float* query = queries.data() + (t * heads + h * group) * d;
        in_head_batches(group, [&](int64_t g0, auto batch) {
          head_scores<batch()>(query + g0 * d, transposed.data(), length, d, float(scale),
                               scores.data() + g0 * kChunk, kChunk);
        });
        for (int64_t g = 0; g < group; ++g) {
          float* s = scores.data() + g * kChunk;
          const float top = max_of(s, length);
          float total = 0.f;
#pragma omp simd reduction(+ : total)
          for (int64_t j = 0; j < length; ++j) {
            s[j] = exp_nonpositive(s[j] - top);
            total += s[j];
          }
          partials[i * group + g] = {top, total};
        }
        in_head_batches(group, [&](int64_t g0, auto batch) {
          head_values<batch(), T>(scores.data() + g0 * kChunk, kChunk, value, length, d,
                               sums.data() + (i * group + g0) * d);
        });
      }
    }
  });

  // Merge each query head's chunks (token t sees chunks 0 .. (start + t) / kChunk).
  at::Tensor result = at::empty({n, heads * d}, q.options());
  float* y = result.data_ptr<float>();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kv_head = h / group, g = h % group, seen = (start + t) / kChunk + 1;
      float top = -INFINITY;
      for (int64_t c = 0; c < seen; ++c) top = std::max(top, partials[slot(t, kv_head, c) * group + g].max);
      float total = 0.f;
      float* o = y + (t * heads + h) * d;
      std::fill(o, o + d, 0.f);
      for (int64_t c = 0; c < seen; ++c) {
        const int64_t i = slot(t, kv_head, c) * group + g;
        const float weight = std::exp(partials[i].max - top);
        total += weight * partials[i].sum;
        const float* part = sums.data() + i * d;
        for (int64_t e = 0; e < d; ++e) o[e] += weight * part[e];
      }
      for (int64_t e = 0; e < d; ++e) o[e] /= total;
    }
  return result;
}

// q [n, H, D], k and v [n, KVH, D] (the projections of n tokens at positions start..start+n-1);
// keys/values: the layer's cache storage [KVH, capacity, D] (float32 or float16), written at those positions.
// Returns [n, H * D]: token i attends to positions 0..start+i.
at::Tensor few_token_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                               const std::optional<at::Tensor>& q_bias, const std::optional<at::Tensor>& k_bias,
                               const std::optional<at::Tensor>& v_bias, const std::optional<at::Tensor>& q_norm,
                               const std::optional<at::Tensor>& k_norm, double eps, const at::Tensor& cos,
                               const at::Tensor& sin, at::Tensor keys, at::Tensor values, int64_t start,
                               double scale) {
  TORCH_CHECK(q_in.dim() == 3 && k_in.dim() == 3 && v_in.dim() == 3 && q_in.scalar_type() == at::kFloat &&
                  k_in.scalar_type() == at::kFloat && v_in.scalar_type() == at::kFloat,
              "few_token_attention: q, k, v must be float32 [tokens, heads, head_dim]");
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const int64_t n = q.size(0), heads = q.size(1), d = q.size(2), kv_heads = k.size(1), rotary = cos.size(1);
  TORCH_CHECK(heads % kv_heads == 0 && k.size(0) == n && v.sizes() == k.sizes() && k.size(2) == d,
              "few_token_attention: q [n, H, D], k and v [n, KVH, D] with KVH dividing H");
  TORCH_CHECK((keys.scalar_type() == at::kFloat || keys.scalar_type() == at::kHalf) &&
                  values.scalar_type() == keys.scalar_type() && keys.is_contiguous() && values.is_contiguous() &&
                  keys.sizes() == values.sizes() && keys.dim() == 3 && keys.size(0) == kv_heads &&
                  keys.size(2) == d && start + n <= keys.size(1),
              "few_token_attention: cache storage must be float32 or float16 [KVH, capacity >= start + n, D]");
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.scalar_type() == at::kFloat &&
                  sin.sizes() == cos.sizes() && cos.size(0) >= start + n && rotary <= d && rotary % 2 == 0,
              "few_token_attention: cos/sin tables [>= start + n, rotary <= D] of float32");
  const float *qb = optional_data(q_bias, heads * d), *kb = optional_data(k_bias, kv_heads * d);
  const float *vb = optional_data(v_bias, kv_heads * d), *qn = optional_data(q_norm, d);
  const float* kn = optional_data(k_norm, d);
  const int64_t capacity = keys.size(1);
  if (keys.scalar_type() == at::kHalf)
    return attend(q, k, v, qb, kb, vb, qn, kn, eps, cos, sin, reinterpret_cast<_Float16*>(keys.data_ptr()),
                  reinterpret_cast<_Float16*>(values.data_ptr()), capacity, start, scale);
  return attend(q, k, v, qb, kb, vb, qn, kn, eps, cos, sin, keys.data_ptr<float>(), values.data_ptr<float>(),
                capacity, start, scale);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwen_ggml, m) {
  m.def("few_token_attention(Tensor q, Tensor k, Tensor v, Tensor? q_bias, Tensor? k_bias, Tensor? v_bias, "
        "Tensor? q_norm, Tensor? k_norm, float eps, Tensor cos, Tensor sin, Tensor(a!) keys, Tensor(b!) values, "
        "int start, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwen_ggml, CPU, m) { m.impl("few_token_attention", &few_token_attention); }
