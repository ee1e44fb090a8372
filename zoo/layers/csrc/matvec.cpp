// One row times weight matrices on x86 CPUs with AVX-512 BF16: the products a decode step is
// made of (zoo/layers/matvec.py builds, loads and dispatches to these; the why is there).
//
//   matvec_int8(weight [O, I] int8, scale [O] bf16, x [I] bf16) -> [O] bf16
//       (weight . x) in float32, times scale, rounded once: what torch._weight_int8pack_mm does
//   matvec_bf16(weight [O, I] bf16, x [I] bf16) -> [O] bf16
//   moe_experts(x [H] bf16, gate_up [E, 2M, H], gate_up_scale [E, 2M] or None,
//               down [E, H, M], down_scale [E, H] or None, expert_ids [k], weights [k] f32)
//       -> [H] bf16: sum over the k chosen experts of weight * down(silu(gate) * up), the
//       SwiGLU experts of a mixture-of-experts layer (bf16 stacks, or int8 ones with scales),
//       rounded to bf16 at the steps where the eager layer rounds.
//
// Four rows go together so that each load of x serves four weight rows; the inner dimension is
// read in whole vectors, its tail under a mask. Products that do not depend on each other (the
// chosen experts' gate and up rows, then their down rows) run as one job list: their row groups
// are split among torch's threads in one parallel region instead of one region per product
// (the released model's int8 decode step: 68.5 ms instead of 72.1, medians of six alternations
// in one process).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace {

using c10::BFloat16;

constexpr int64_t kRowsTogether = 4;
// Row groups per task: at least this many bytes of weight, so small matrices are not split
// into tasks that cost more to hand out than to run.
constexpr int64_t kMinTaskBytes = 64 * 1024;
// Each row is prefetched this many bytes ahead of its reads, into L2: a core streams no faster
// than its outstanding misses allow, and L1 tracks few of them. Measured here on cold weights
// of the release's shapes (2 threads, two runs of each): int8 rows were read at 11 GB/s
// prefetching 2 KB ahead into L1 and at 13-15 GB/s 16 KB ahead into L2, bfloat16 rows at 13-15
// and 17-18 GB/s.
constexpr int64_t kPrefetchBytes = 16384;

void prefetch(const void* p) {
  _mm_prefetch(static_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T1);
}

// sums[r] = weight[first + r] . x for count (<= 4) rows of a row-major bf16 [rows, width]
// weight and a bf16 x.
void bf16_row_group(const BFloat16* weight, int64_t width, const BFloat16* x, int64_t first,
                    int64_t count, float* sums) {
  const int64_t full = width / 32 * 32;
  const __mmask32 tail = (__mmask32)((1ull << (width - full)) - 1);
  const auto load = [](const BFloat16* p, __mmask32 mask) {
    return (__m512bh)_mm512_maskz_loadu_epi16(mask, p);
  };
  __m512 acc[kRowsTogether];
  const BFloat16* row[kRowsTogether];
  for (int64_t r = 0; r < kRowsTogether; ++r) {
    acc[r] = _mm512_setzero_ps();
    row[r] = weight + (first + std::min(r, count - 1)) * width;
  }
  for (int64_t i = 0; i < full; i += 32) {  // 32 elements: one cache line of each row
    const __m512bh xs = load(x + i, ~(__mmask32)0);
    for (int64_t r = 0; r < kRowsTogether; ++r) {
      prefetch(row[r] + i);
      acc[r] = _mm512_dpbf16_ps(acc[r], load(row[r] + i, ~(__mmask32)0), xs);
    }
  }
  if (tail) {
    const __m512bh xs = load(x + full, tail);
    for (int64_t r = 0; r < kRowsTogether; ++r) {
      acc[r] = _mm512_dpbf16_ps(acc[r], load(row[r] + full, tail), xs);
    }
  }
  for (int64_t r = 0; r < count; ++r) sums[r] = _mm512_reduce_add_ps(acc[r]);
}

// sums[r] = (weight[first + r] . x) * scale[first + r] for count (<= 4) rows of a row-major
// int8 [rows, width] weight and a float32 x zero-padded to a multiple of 16 elements.
void int8_row_group(const int8_t* weight, const BFloat16* scale, int64_t width, const float* x,
                    int64_t first, int64_t count, float* sums) {
  const int64_t lines = width / 64 * 64, full = width / 16 * 16;
  const __mmask16 tail = (__mmask16)((1u << (width - full)) - 1);
  __m512 acc[kRowsTogether];
  const int8_t* row[kRowsTogether];
  for (int64_t r = 0; r < kRowsTogether; ++r) {
    acc[r] = _mm512_setzero_ps();
    row[r] = weight + (first + std::min(r, count - 1)) * width;
  }
  const auto step = [&](int64_t i, __mmask16 mask) {  // 16 elements of each row
    const __m512 xs = _mm512_loadu_ps(x + i);
    for (int64_t r = 0; r < kRowsTogether; ++r) {
      const __m128i bytes = _mm_maskz_loadu_epi8(mask, row[r] + i);
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes)), xs, acc[r]);
    }
  };
  for (int64_t i = 0; i < lines; i += 64) {  // one cache line of each row
    for (int64_t r = 0; r < kRowsTogether; ++r) prefetch(row[r] + i);
    step(i, 0xFFFF), step(i + 16, 0xFFFF), step(i + 32, 0xFFFF), step(i + 48, 0xFFFF);
  }
  for (int64_t i = lines; i < full; i += 16) step(i, 0xFFFF);
  if (tail) step(full, tail);
  for (int64_t r = 0; r < count; ++r) {
    sums[r] = _mm512_reduce_add_ps(acc[r]) * float(scale[first + r]);
  }
}

// A weight matrix of a stack (one expert's) or a lone one: bf16, or int8 with its scales.
struct Weight {
  const void* data;
  const BFloat16* scale;  // null for bf16
  int64_t rows, width;
};

Weight expert(const at::Tensor& stack, const std::optional<at::Tensor>& scale, int64_t e) {
  const int64_t rows = stack.size(1), width = stack.size(2);
  const char* base = static_cast<const char*>(stack.data_ptr());
  return {base + e * rows * width * stack.element_size(),
          scale ? scale->data_ptr<BFloat16>() + e * rows : nullptr, rows, width};
}

// One product of a job list: out = weight . x in float32 (scaled for int8), x bf16 of
// weight.width elements.
struct Product {
  Weight weight;
  const BFloat16* x;
  float* out;
};

// Runs products in one parallel region, over all their groups of four rows.
void run_products(const std::vector<Product>& products) {
  std::vector<int64_t> first_group(products.size() + 1, 0);  // prefix sums of groups
  std::vector<std::vector<float>> x32(products.size());       // int8 products' x in float32
  int64_t bytes = 0;
  for (size_t p = 0; p < products.size(); ++p) {
    const Weight& w = products[p].weight;
    first_group[p + 1] = first_group[p] + (w.rows + kRowsTogether - 1) / kRowsTogether;
    bytes += w.rows * w.width * (w.scale ? 1 : 2);
    if (w.scale) {
      x32[p].assign((w.width + 15) / 16 * 16, 0.0f);
      for (int64_t i = 0; i < w.width; ++i) x32[p][i] = float(products[p].x[i]);
    }
  }
  const int64_t groups = first_group.back();
  const int64_t grain = std::max<int64_t>(1, kMinTaskBytes * groups / std::max<int64_t>(1, bytes));
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    size_t p = std::upper_bound(first_group.begin(), first_group.end(), begin) -
               first_group.begin() - 1;
    for (int64_t g = begin; g < end; ++g) {
      while (g >= first_group[p + 1]) ++p;
      const Product& product = products[p];
      const Weight& w = product.weight;
      const int64_t first = (g - first_group[p]) * kRowsTogether;
      const int64_t count = std::min(kRowsTogether, w.rows - first);
      if (w.scale) {
        int8_row_group(static_cast<const int8_t*>(w.data), w.scale, w.width, x32[p].data(),
                       first, count, product.out + first);
      } else {
        bf16_row_group(static_cast<const BFloat16*>(w.data), w.width, product.x, first, count,
                       product.out + first);
      }
    }
  });
}

void check_vector(const at::Tensor& t, at::ScalarType type, int64_t size, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 1 && t.is_contiguous() &&
                  t.scalar_type() == type && t.size(0) == size,
              name, ": expected a contiguous CPU ", type, " vector of ", size,
              " elements, got ", t.scalar_type(), " of shape ", t.sizes());
}

void check_matrices(const at::Tensor& w, const std::optional<at::Tensor>& scale, int64_t dims,
                    const char* name) {
  const bool int8 = scale.has_value();
  TORCH_CHECK(w.device().is_cpu() && w.dim() == dims && w.is_contiguous() &&
                  w.scalar_type() == (int8 ? at::kChar : at::kBFloat16),
              name, ": expected a contiguous CPU ", (int8 ? "int8" : "bfloat16"), " tensor of ",
              dims, " dimensions, got ", w.scalar_type(), " of shape ", w.sizes());
  if (int8) {
    TORCH_CHECK(scale->is_contiguous() && scale->scalar_type() == at::kBFloat16 &&
                    scale->sizes() == w.sizes().slice(0, dims - 1),
                name, ": its scale must be a contiguous bfloat16 tensor of shape ",
                w.sizes().slice(0, dims - 1), ", got ", scale->sizes());
  }
}

// weight . x as a bf16 vector, rounded once.
at::Tensor matvec(const Weight& weight, const at::Tensor& x) {
  std::vector<float> sums(weight.rows);
  run_products({{weight, x.data_ptr<BFloat16>(), sums.data()}});
  at::Tensor out = at::empty({weight.rows}, x.options());
  BFloat16* y = out.data_ptr<BFloat16>();
  for (int64_t o = 0; o < weight.rows; ++o) y[o] = BFloat16(sums[o]);
  return out;
}

at::Tensor matvec_int8(const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& x) {
  check_matrices(weight, scale, 2, "matvec_int8 weight");
  check_vector(x, at::kBFloat16, weight.size(1), "matvec_int8 x");
  return matvec(expert(weight.unsqueeze(0), scale.unsqueeze(0), 0), x);
}

at::Tensor matvec_bf16(const at::Tensor& weight, const at::Tensor& x) {
  check_matrices(weight, std::nullopt, 2, "matvec_bf16 weight");
  check_vector(x, at::kBFloat16, weight.size(1), "matvec_bf16 x");
  return matvec(expert(weight.unsqueeze(0), std::nullopt, 0), x);
}

at::Tensor moe_experts(const at::Tensor& x, const at::Tensor& gate_up,
                       const std::optional<at::Tensor>& gate_up_scale, const at::Tensor& down,
                       const std::optional<at::Tensor>& down_scale,
                       const at::Tensor& expert_ids, const at::Tensor& weights) {
  check_matrices(gate_up, gate_up_scale, 3, "moe_experts gate_up");
  check_matrices(down, down_scale, 3, "moe_experts down");
  const int64_t experts = gate_up.size(0), inner = gate_up.size(1) / 2, width = gate_up.size(2);
  TORCH_CHECK(gate_up.size(1) == 2 * inner && down.size(0) == experts &&
                  down.size(1) == width && down.size(2) == inner &&
                  gate_up_scale.has_value() == down_scale.has_value(),
              "moe_experts: gate_up ", gate_up.sizes(), " and down ", down.sizes(),
              " are not the stacks of one layer's experts");
  check_vector(x, at::kBFloat16, width, "moe_experts x");
  check_vector(expert_ids, at::kLong, expert_ids.numel(), "moe_experts expert_ids");
  check_vector(weights, at::kFloat, expert_ids.numel(), "moe_experts weights");
  const int64_t* ids = expert_ids.data_ptr<int64_t>();
  const float* mix = weights.data_ptr<float>();
  // the eager layer adds the experts' outputs in ascending expert order
  std::vector<int64_t> order(expert_ids.numel());
  for (int64_t k = 0; k < expert_ids.numel(); ++k) {
    TORCH_CHECK(ids[k] >= 0 && ids[k] < experts, "moe_experts: expert id ", ids[k],
                " outside 0..", experts - 1);
    order[k] = k;
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return ids[a] < ids[b]; });
  const int64_t chosen = expert_ids.numel();
  std::vector<float> projected(chosen * 2 * inner), expert_out(chosen * width);
  std::vector<BFloat16> hidden(chosen * inner);
  std::vector<Product> products;
  for (int64_t k = 0; k < chosen; ++k) {
    products.push_back({expert(gate_up, gate_up_scale, ids[k]), x.data_ptr<BFloat16>(),
                        projected.data() + k * 2 * inner});
  }
  run_products(products);
  products.clear();
  for (int64_t k = 0; k < chosen; ++k) {
    const float* gates = projected.data() + k * 2 * inner;
    for (int64_t j = 0; j < inner; ++j) {
      const float gate = float(BFloat16(gates[j])), up = float(BFloat16(gates[inner + j]));
      const float activated = float(BFloat16(gate / (1.0f + std::exp(-gate))));
      hidden[k * inner + j] = BFloat16(activated * up);
    }
    products.push_back({expert(down, down_scale, ids[k]), hidden.data() + k * inner,
                        expert_out.data() + k * width});
  }
  run_products(products);
  std::vector<float> mixed(width, 0.0f);
  for (const int64_t k : order) {
    for (int64_t h = 0; h < width; ++h) {
      mixed[h] += float(BFloat16(expert_out[k * width + h])) * mix[k];
    }
  }
  at::Tensor out = at::empty({width}, x.options());
  BFloat16* y = out.data_ptr<BFloat16>();
  for (int64_t h = 0; h < width; ++h) y[h] = BFloat16(mixed[h]);
  return out;
}

}  // namespace

TORCH_LIBRARY(zoo_matvec, m) {
  m.def("matvec_int8(Tensor weight, Tensor scale, Tensor x) -> Tensor", &matvec_int8);
  m.def("matvec_bf16(Tensor weight, Tensor x) -> Tensor", &matvec_bf16);
  m.def(
      "moe_experts(Tensor x, Tensor gate_up, Tensor? gate_up_scale, Tensor down, "
      "Tensor? down_scale, Tensor expert_ids, Tensor weights) -> Tensor",
      &moe_experts);
}
