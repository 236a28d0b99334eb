// Row-wise ops in one native call each instead of several tensor ops: RMS norm, the gated MLP's
// silu(gate) * up, and each row's argmax. At decode sizes their dispatch, not their arithmetic, was the
// cost (torch.argmax reads a 151,936-entry row of logits at ~0.5 G entries/s on one thread).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>

#include "vector_math.h"

namespace {

using namespace qwen_native;

// Elements per parallel task: smaller calls run on the calling thread.
constexpr int64_t kGrain = 1 << 16;

// x [..., d] float32 -> weight * x / sqrt(mean(x^2) + eps), row by row.
at::Tensor rms_norm(const at::Tensor& x_in, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat && weight.dim() == 1 &&
                  weight.is_contiguous() && x_in.size(-1) == weight.size(0),
              "rms_norm: float32 x [..., d] and weight [d]");
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x);
  const int64_t d = weight.size(0), rows = d ? x.numel() / d : 0;
  const float *xp = x.data_ptr<float>(), *w = weight.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(d, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = xp + r * d;
      float* out = yp + r * d;
      const float inverse = 1.f / std::sqrt(dot(in, in, d) / float(d) + float(eps));
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) out[i] = w[i] * (in[i] * inverse);
    }
  });
  return y;
}

// silu(gate) * up, elementwise (gate and up of one shape, float32).
// gate <- silu(gate) * up in place (a prefill's gate is megabytes: no second buffer beside it).
at::Tensor silu_mul_(at::Tensor gate, const at::Tensor& up_in) {
  TORCH_CHECK(gate.scalar_type() == at::kFloat && up_in.scalar_type() == at::kFloat && gate.is_contiguous() &&
                  gate.sizes() == up_in.sizes(),
              "silu_mul_: gate (contiguous) and up must be float32 tensors of one shape");
  const at::Tensor up = up_in.contiguous();
  float* g = gate.data_ptr<float>();
  const float* u = up.data_ptr<float>();
  at::parallel_for(0, gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      // silu(x) = x / (1 + e^-x), from e^-|x| so the exponential never overflows.
      const float x = g[i], t = exp_nonpositive(-std::fabs(x));
      g[i] = (x >= 0.f ? x / (1.f + t) : x * t / (1.f + t)) * u[i];
    }
  });
  return gate;
}

typedef int32_t Int16 __attribute__((vector_size(64)));

// The index of the largest of n entries, as torch.argmax: the first of equal ones, a NaN counted largest.
int64_t argmax_of(const float* s, int64_t n) {
  Vec16 top = Vec16{} - INFINITY;
  Int16 at = Int16{} - 1, lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, nan = Int16{};
  const int64_t vector_end = n < (int64_t(1) << 31) ? n / 16 * 16 : 0;  // lanes hold int32 indices
  int64_t j = 0;
  for (; j < vector_end; j += 16) {  // per lane: its largest and where it first was
    const Vec16 v = load16(s + j);
    const Int16 larger = v > top;
    top = larger ? v : top;
    at = larger ? lane + int32_t(j) : at;
    nan |= v != v;
  }
  float best = -INFINITY;
  int64_t index = -1;
  for (int i = 0; i < 16; ++i)
    if (at[i] >= 0 && (top[i] > best || (top[i] == best && at[i] < index))) best = top[i], index = at[i];
  bool any_nan = false;
  for (int i = 0; i < 16; ++i) any_nan |= nan[i] != 0;
  for (int64_t i = j; i < n; ++i) {
    any_nan |= s[i] != s[i];
    if (s[i] > best) best = s[i], index = i;
  }
  if (any_nan)
    for (int64_t i = 0; i < n; ++i)
      if (s[i] != s[i]) return i;
  return index < 0 ? 0 : index;  // none above -inf: the first entry
}

// Each row's argmax_of.
at::Tensor argmax_rows(const at::Tensor& x_in) {
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && x_in.dim() == 2 && x_in.size(1) > 0,
              "argmax_rows: x must be float32 [rows, n] with n > 0");
  const at::Tensor x = x_in.contiguous();
  const int64_t rows = x.size(0), n = x.size(1);
  at::Tensor indices = at::empty({rows}, x.options().dtype(at::kLong));
  for (int64_t r = 0; r < rows; ++r) indices.data_ptr<int64_t>()[r] = argmax_of(x.data_ptr<float>() + r * n, n);
  return indices;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwen_ggml, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("silu_mul_(Tensor(a!) gate, Tensor up) -> Tensor(a!)");
  m.def("argmax_rows(Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwen_ggml, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("silu_mul_", &silu_mul_);
  m.impl("argmax_rows", &argmax_rows);
}
