// Device-side fills: deterministic uniform random values (dummy weights generated on the
// GPU) and constant fills. Counter-based (splitmix64 of seed and index), so the same seed
// gives the same tensor on any launch shape.

__device__ __forceinline__ u64 splitmix64(u64 x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// out[i] = lo + (hi - lo) * u(seed, i), u uniform in [0, 1).
template <typename T>
__device__ void fill_uniform(T* out, u64 n, u64 seed, float lo, float hi) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    const float u = (float)(splitmix64(seed ^ (i * 0xd1b54a32d192ed03ull)) >> 40) * (1.0f / 16777216.0f);
    out[i] = from_float<T>(lo + (hi - lo) * u);
  }
}

#define FILL_UNIFORM(S, T) \
  extern "C" __global__ void fill_uniform_##S(T* out, u64 n, u64 seed, float lo, float hi) { \
    fill_uniform<T>(out, n, seed, lo, hi); \
  }
RTLLM_FOR_FLOAT_TYPES(FILL_UNIFORM)
