// Q5_0, Q4_K and Q6_K matrices repacked into tiles (tile_layout.h): the file's bytes, in an order whose dot
// products take a third of the instructions of the file's (tiled_blocks.cpp). ggml_matmul.cpp serves
// them as more block types beside the file's.
#pragma once

#include <cstdint>
#include <utility>

#include "tile_layout.h"

namespace qwen_tiles {

// The tiled layouts' type ids (100 + the GGML type they hold).
constexpr int64_t kQ5_0Tiled = 106, kQ4_KTiled = 112, kQ6_KTiled = 114;

inline bool is_tiled(int64_t qtype) { return qtype == kQ5_0Tiled || qtype == kQ4_KTiled || qtype == kQ6_KTiled; }

// The 256 unsigned 6-bit codes of each Q6_K block of a row of k values (code - 32 is the stored integer).
void q6_k_file_codes(const uint8_t* w, int64_t k, uint8_t* codes);

// Values and bytes of a block of GGML type `qtype` (Q5_0, Q4_K or Q6_K; an error for others).
std::pair<int64_t, int64_t> file_block(int64_t qtype);

// `rows` rows of GGML type `qtype` (Q5_0, Q4_K or Q6_K; k values, `stride` bytes apart) repacked into tiled
// rows of the same size at `out`.
void pack_tiled_rows(int64_t qtype, const uint8_t* raw, int64_t stride, int64_t rows, int64_t k, uint8_t* out);

// y[t * n + row] = <tiled row, token t> for rows [first, last) and m tokens (acts: m x tiles_of(k / 16)).
void dot_tiled_rows(int64_t qtype, const uint8_t* w, int64_t stride, int64_t first, int64_t last,
                    const TileActs* acts, int64_t m, int64_t k, float* y, int64_t n);

// One tiled row as k floats.
void dequantize_tiled_row(int64_t qtype, const uint8_t* w, int64_t k, float* y);

}  // namespace qwen_tiles
