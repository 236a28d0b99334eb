// Row-wise layer ops in one native call each instead of several tensor ops: RMS norm and the gated
// MLP's silu(gate) * up. At decode sizes their dispatch, not their arithmetic, was the cost.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

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

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwen_ggml, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("silu_mul_(Tensor(a!) gate, Tensor up) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(qwen_ggml, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("silu_mul_", &silu_mul_);
}
