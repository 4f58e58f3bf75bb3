// dummy_fill: generated (dummy) weights made on the GPU. Element i of a tensor is a pure function
// of the tensor's base seed and i (splitmix64), the same expression as framework/src/weights/fill.rs
// on the host, so GPU-made weights are bit-identical to host-made ones.

__device__ __forceinline__ u64 splitmix64(u64 x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// out[i] = ones ? 1 : (u(base, i) * 2 - 1) * scale with u = top 24 bits / 2^24, rounded once to T.
template <typename T>
__device__ void dummy_fill(T* out, u64 n, u64 base, float scale, int ones) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    float v = 1.0f;
    if (!ones) {
      const u64 r = splitmix64(base ^ (i * 0xd6e8feb86659fd93ull));
      const float unit = __fmul_rn((float)(r >> 40), 1.0f / 16777216.0f);  // exact: [0, 1)
      v = __fmul_rn(__fsub_rn(__fmul_rn(unit, 2.0f), 1.0f), scale);
    }
    out[i] = from_float<T>(v);
  }
}

#define DUMMY_FILL(S, T) \
  extern "C" __global__ void dummy_fill_##S(T* out, u64 n, u64 base, float scale, int ones) { \
    pdl_enter(); \
    dummy_fill<T>(out, n, base, scale, ones); \
  }
RTLLM_FOR_FLOAT_TYPES(DUMMY_FILL)

// FP8 E4M3 weights: the same values, stored as their codes (common.cuh's e4m3_code, as the host
// does).
DUMMY_FILL(f8_e4m3, e4m3_code)
