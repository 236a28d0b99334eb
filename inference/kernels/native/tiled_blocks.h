// Q5_0 matrices repacked into tiles (tile_layout.h) for decode: the file's bytes, in an order whose dot
// products take a third of the instructions of the file's (tiled_blocks.cpp). ggml_matmul.cpp serves
// them as one more block type beside the file's.
#pragma once

#include <cstdint>

#include "tile_layout.h"

namespace qwen_tiles {

// The tiled layout's type id (100 + the GGML type it holds).
constexpr int64_t kQ5_0Tiled = 106;

inline bool is_tiled(int64_t qtype) { return qtype == kQ5_0Tiled; }

// `rows` Q5_0 rows of k values (`stride` bytes apart) repacked into tiled rows of the same size at `out`.
void pack_q5_0_rows(const uint8_t* raw, int64_t stride, int64_t rows, int64_t k, uint8_t* out);

// y[t * n + row] = <tiled row, token t> for rows [first, last) and m tokens (acts: m x tiles_of(k / 16)).
void dot_tiled_rows(int64_t qtype, const uint8_t* w, int64_t stride, int64_t first, int64_t last,
                    const TileActs* acts, int64_t m, int64_t k, float* y, int64_t n);

// One tiled row as k floats.
void dequantize_tiled_row(int64_t qtype, const uint8_t* w, int64_t k, float* y);

}  // namespace qwen_tiles
