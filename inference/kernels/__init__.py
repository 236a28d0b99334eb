"""Fast weight kernels: repacked quantized and dequantized layouts, chosen per CPU by measurement."""
