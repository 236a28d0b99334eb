// All decoder layers of a few-token pass (decode, speculative verification) in one native call: each
// layer's x + attention(norm(x)), then x + ffn(norm(x)) (a gated MLP, or for one token the routed
// experts of a MoE layer), through the very ops the Python layers call, in the same order (so the same
// numbers), without going back to Python between them. On the 0.5B model Python and the dispatch of a
// dozen small ops per layer took ~3.5 of a token's ~26 ms.

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/add.h>
#include <torch/library.h>

#include <optional>
#include <vector>

namespace {

// Per layer, the tensors of `layers` in this order (nullopt where a model has none), its qtypes, its
// routing (top_k, normalize: top_k 0 for a gated MLP, else gate/up/down are the experts' stacked
// blocks, as moe_decode takes them) and its norm epsilons.
enum LayerTensor {
  kAttentionNorm, kQ, kK, kV, kQBias, kKBias, kVBias, kQNorm, kKNorm, kOutput, kFfnNorm, kGate, kUp, kDown, kRouter,
  kLayerTensors
};
enum LayerQtype { kQType, kKType, kVType, kOutputType, kGateType, kUpType, kDownType, kRouterType, kLayerQtypes };
enum LayerRouting { kTopK, kNormalize, kLayerRouting };
enum LayerEps { kAttentionEps, kFfnEps, kHeadNormEps, kLayerEps };

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using Optional = std::optional<at::Tensor>;

at::Tensor decoder_stack(const at::Tensor& x_in, const c10::List<Optional>& layers, at::IntArrayRef qtypes,
                         at::IntArrayRef routing, at::ArrayRef<double> eps, at::TensorList keys,
                         at::TensorList values, const at::Tensor& cos, const at::Tensor& sin, int64_t start,
                         int64_t heads, int64_t kv_heads, double scale) {
  static const auto rms_norm = op<at::Tensor(const at::Tensor&, const at::Tensor&, double)>("qwen_ggml::rms_norm");
  static const auto matmuls = op<std::vector<at::Tensor>(const at::Tensor&, at::TensorList, at::IntArrayRef)>(
      "qwen_ggml::quantized_matmuls");
  static const auto matmul =
      op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>("qwen_ggml::quantized_matmul");
  static const auto moe =
      op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, const at::Tensor&, const at::Tensor&,
                    const at::Tensor&, int64_t, bool, int64_t, int64_t, int64_t)>("qwen_ggml::moe_decode");
  static const auto silu_mul = op<at::Tensor(at::Tensor, const at::Tensor&)>("qwen_ggml::silu_mul_");
  static const auto attention =
      op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const Optional&, const Optional&,
                    const Optional&, const Optional&, const Optional&, double, const at::Tensor&, const at::Tensor&,
                    at::Tensor, at::Tensor, int64_t, double)>("qwen_ggml::few_token_attention");
  const int64_t count = int64_t(keys.size());
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && x_in.dim() == 2, "decoder_stack: x must be float32 [tokens, hidden]");
  TORCH_CHECK(int64_t(layers.size()) == count * kLayerTensors && int64_t(qtypes.size()) == count * kLayerQtypes &&
                  int64_t(routing.size()) == count * kLayerRouting && int64_t(eps.size()) == count * kLayerEps &&
                  int64_t(values.size()) == count,
              "decoder_stack: ", int64_t(kLayerTensors), " tensors, ", int64_t(kLayerQtypes), " qtypes, ",
              int64_t(kLayerRouting), " routing numbers, ", int64_t(kLayerEps),
              " epsilons, a key and a value storage per layer");
  const int64_t n = x_in.size(0);
  at::Tensor x = x_in;
  for (int64_t i = 0; i < count; ++i) {
    const auto tensor = [&](LayerTensor t) -> Optional { return layers.get(i * kLayerTensors + t); };
    const auto qtype = [&](LayerQtype q) { return qtypes[i * kLayerQtypes + q]; };
    const double* e = eps.data() + i * kLayerEps;
    at::Tensor h = rms_norm.call(x, *tensor(kAttentionNorm), e[kAttentionEps]);
    const std::vector<at::Tensor> qkv = matmuls.call(h, {*tensor(kQ), *tensor(kK), *tensor(kV)},
                                                     {qtype(kQType), qtype(kKType), qtype(kVType)});
    const at::Tensor attended = attention.call(
        qkv[0].view({n, heads, -1}), qkv[1].view({n, kv_heads, -1}), qkv[2].view({n, kv_heads, -1}), tensor(kQBias),
        tensor(kKBias), tensor(kVBias), tensor(kQNorm), tensor(kKNorm), e[kHeadNormEps], cos, sin, keys[i],
        values[i], start, scale);
    x = at::add(x, matmul.call(attended, *tensor(kOutput), qtype(kOutputType)));
    h = rms_norm.call(x, *tensor(kFfnNorm), e[kFfnEps]);
    const int64_t top_k = routing[i * kLayerRouting + kTopK];
    if (top_k > 0) {
      TORCH_CHECK(n == 1, "decoder_stack: routed experts take one token per pass");
      x = at::add(x, moe.call(h, *tensor(kRouter), qtype(kRouterType), *tensor(kGate), *tensor(kUp), *tensor(kDown),
                              top_k, routing[i * kLayerRouting + kNormalize] != 0, qtype(kGateType), qtype(kUpType),
                              qtype(kDownType)));
      continue;
    }
    const std::vector<at::Tensor> gate_up =
        matmuls.call(h, {*tensor(kGate), *tensor(kUp)}, {qtype(kGateType), qtype(kUpType)});
    x = at::add(x, matmul.call(silu_mul.call(gate_up[0], gate_up[1]), *tensor(kDown), qtype(kDownType)));
  }
  return x;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwen_ggml, m) {
  m.def("decoder_stack(Tensor x, Tensor?[] layers, int[] qtypes, int[] routing, float[] eps, "
        "Tensor(a!)[] keys, Tensor(b!)[] values, Tensor cos, Tensor sin, int start, int heads, int kv_heads, "
        "float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwen_ggml, CPU, m) { m.impl("decoder_stack", &decoder_stack); }
