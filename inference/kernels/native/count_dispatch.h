// A small run-time count (tokens of a pass, query heads of a batch: 1 to 8) as a template argument, so
// loops over it unroll and their accumulators stay in registers.
#pragma once

#include <type_traits>

namespace qwen_native {

// f(std::integral_constant<int, R>) for R = count (1-8; larger counts take 8).
template <class F>
void with_count(int count, F&& f) {
  switch (count) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

}  // namespace qwen_native
