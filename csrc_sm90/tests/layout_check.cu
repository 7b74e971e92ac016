// Host-side check that the hand-written swizzle of the cp.async gathers matches CuTe's layout of
// the tiles that wgmma reads. Runs on any machine: nvcc -std=c++17 --expt-relaxed-constexpr -I<cutlass>
// layout_check.cu -o /tmp/layout_check && /tmp/layout_check
#include <cstdio>

#include "../attention/kernel.cuh"

template <typename Element, int kD>
int check() {
  using Layout = typename flashmla_sm90::AttentionConfig<Element, kD>::SmemLayoutK;
  // a tile at address 0: CuTe applies the swizzle to the address, as it does in shared memory
  auto tile = cute::make_tensor(cute::make_smem_ptr(static_cast<Element*>(nullptr)), Layout{});
  int bad = 0;
  for (int row = 0; row < 64; ++row) {
    for (int chunk = 0; chunk < kD / 8; ++chunk) {
      const int want = int(reinterpret_cast<uintptr_t>(&tile(row, chunk * 8)));
      const int got = flashmla_sm90::swizzled_chunk_offset(row, chunk);
      if (want != got && bad++ < 5) std::printf("D=%d row %d chunk %d: cute %d, ours %d\n", kD, row, chunk, want, got);
    }
  }
  return bad;
}

int main() {
  const int bad = check<cutlass::bfloat16_t, 576>() + check<cutlass::bfloat16_t, 512>() +
                  check<cutlass::half_t, 576>();
  std::printf("layout check: %s\n", bad ? "MISMATCH" : "ok");
  return bad ? 1 : 0;
}
