// Shared by every kernel in kernels/cuda (the plugin prepends it to each source before NVRTC
// compiles it): storage types for bf16/f16 (and E4M3 codes) with conversions to and from f32, warp and block
// reductions, and a macro that instantiates a template once per float dtype as extern "C"
// entry points named `<kernel>_<dtype>` (f32, bf16, f16). No CUDA headers are needed.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define NEG_INF __int_as_float(0xff800000)
#define POS_INF __int_as_float(0x7f800000)

struct __align__(2) bf16 { u16 bits; };
struct __align__(2) f16 { u16 bits; };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __uint_as_float(((u32)v.bits) << 16); }
__device__ __forceinline__ float to_float(f16 v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
}

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float v) {
  u32 u = __float_as_uint(v);
  bf16 out;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    out.bits = 0x7fc0;  // NaN stays NaN
    return out;
  }
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  out.bits = (u16)(u >> 16);
  return out;
}
template <> __device__ __forceinline__ f16 from_float<f16>(float v) {
  f16 out;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(out.bits) : "f"(v));
  return out;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; the call ends with the block synchronized.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  v = warp_sum(v);
  return v;
}

// Maximum over the block, as `block_sum`.
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : NEG_INF;
  v = warp_max(v);
  return v;
}

// x * sigmoid(x) as torch's CPU kernel writes it: x / (1 + exp(-x)) (finite for any finite x).
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

#define ROPE_SCALING_NONE 0
#define ROPE_SCALING_LINEAR 1
#define ROPE_SCALING_LLAMA3 2

// Inverse frequency of pair i, f32 operation for operation as rope_freqs.rs (HF transformers):
// no contractions into FMAs (the _rn intrinsics), powf correctly rounded through double.
__device__ float rope_inv_freq(int i, int rotary_dim, float theta, int scaling, float factor, float low, float high,
                               float old) {
  const float exponent = __fdiv_rn((float)(2 * i), (float)rotary_dim);
  const float f = __fdiv_rn(1.0f, (float)pow((double)theta, (double)exponent));
  if (scaling == ROPE_SCALING_LINEAR) return __fdiv_rn(f, factor);
  if (scaling != ROPE_SCALING_LLAMA3) return f;
  const float low_wavelen = __fdiv_rn(old, low), high_wavelen = __fdiv_rn(old, high);
  const float wavelen = __fmul_rn(__fdiv_rn(1.0f, f), 6.2831855f);  // f32 TAU
  const float scaled = wavelen > low_wavelen ? __fdiv_rn(f, factor) : f;
  if (!(wavelen >= high_wavelen && wavelen <= low_wavelen)) return scaled;
  const float smooth = __fdiv_rn(__fsub_rn(__fmul_rn(__fdiv_rn(1.0f, wavelen), old), low), __fsub_rn(high, low));
  return __fadd_rn(__fdiv_rn(__fmul_rn(__fsub_rn(1.0f, smooth), scaled), factor), __fmul_rn(smooth, scaled));
}

// f32 → E4M3 code: round to nearest even, saturating at ±448, NaN kept (plugin-api fp8.rs); fp8.cu
// quantizes activations with it, fill.cu makes dummy FP8 weights.
__device__ __forceinline__ u8 f32_to_e4m3(float x) {
  const u32 bits = __float_as_uint(x);
  const u32 sign = (bits >> 24) & 0x80u;
  const u32 a = bits & 0x7fffffffu;
  if (a > 0x7f800000u) return (u8)(sign | 0x7fu);
  if (a >= 0x43e00000u) return (u8)(sign | 0x7eu);
  if (a < (121u << 23)) {
    // Below 2^-6: adding 2^14 leaves the value in units of 2^-9, rounded to nearest even.
    const float shifted = __fadd_rn(__uint_as_float(a), __uint_as_float(141u << 23));
    return (u8)(sign | (__float_as_uint(shifted) - (141u << 23)));
  }
  const u32 odd = (a >> 20) & 1u;
  return (u8)(sign | ((a - (120u << 23) + 0x7ffffu + odd) >> 20));
}

// 2^120, the factor between an E4M3 code's bits placed in an f32 (e4m3_scaled) and its value.
#define F8_UNBIAS __uint_as_float(247u << 23)

// An E4M3 code (the low byte of `c`) as its value times 2^-120, with integer ops only: sign and
// the 7 exponent/mantissa bits moved into an f32 (E4M3 subnormals become f32 subnormals, still
// exact: no flush to zero is compiled). NaN codes (0x7f, 0xff) are not distinguished: the FP8
// weights and activations never hold them (f32_to_e4m3 saturates).
__device__ __forceinline__ float e4m3_scaled(u32 c) {
  return __uint_as_float(((c & 0x80u) << 24) | ((c & 0x7fu) << 20));
}

// The exact f32 value of an E4M3 code (NaN for 0x7f / 0xff; plugin-api's e4m3_to_f32).
__device__ __forceinline__ float e4m3_to_f32(u32 c) {
  if ((c & 0x7fu) == 0x7fu) return __uint_as_float(0x7fc00000u | ((c & 0x80u) << 24));
  return __fmul_rn(e4m3_scaled(c), F8_UNBIAS);
}

// An FP8 E4M3 value stored as its code (dummy FP8 weights in fill.cu, the FP8 KV cache):
// to_float is exact, from_float rounds to nearest even and saturates (f32_to_e4m3).
struct e4m3_code {
  u8 bits;
};
__device__ __forceinline__ float to_float(e4m3_code v) { return e4m3_to_f32(v.bits); }
template <> __device__ __forceinline__ e4m3_code from_float<e4m3_code>(float v) { return e4m3_code{f32_to_e4m3(v)}; }

// RTLLM_FOR_FLOAT_TYPES(M) expands M(suffix, type) for each float dtype.
#define RTLLM_FOR_FLOAT_TYPES(M) M(f32, float) M(bf16, bf16) M(f16, f16)

// 16 bytes of T, loaded or stored as one 16-byte access (N = 4 floats or 8 halves).
template <typename T> struct __align__(16) Pack16 {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

__device__ __forceinline__ bool aligned16(const void* p) { return (((u64)p) & 15ull) == 0; }

// Programmatic dependent launch (sm_90+): the plugin launches every kernel with programmatic
// stream serialization, so a kernel may start while the one before it in the stream is still
// running. Every entry point calls `pdl_enter()` (or `pdl_trigger()`, work that reads nothing
// another kernel writes, then `pdl_wait()`) before it touches any activation: `pdl_wait` returns
// once the previous kernel finished and its writes are visible. `pdl_trigger` lets the next
// kernel be scheduled now. On older GPUs, or launched without the attribute, both are no-ops.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_enter() {
  pdl_trigger();
  pdl_wait();
}

// Starts pulling the 128-byte line holding `p` into L2 (a hint; never faults the kernel).
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Thread-block clusters (sm_90+; a cluster of one block elsewhere): this block's rank, a barrier
// over the cluster's threads (shared-memory writes before it are visible to the other blocks
// after it), and loads from another block's shared memory.
__device__ __forceinline__ u32 cluster_rank() {
  u32 r = 0;
#if __CUDA_ARCH__ >= 900
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
#endif
  return r;
}

__device__ __forceinline__ void cluster_sync() {
#if __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
  __syncthreads();
#endif
}

// Reads the u32 at `p` (this block's shared memory) in cluster block `rank`'s shared memory.
__device__ __forceinline__ u32 cluster_load_u32(const u32* p, u32 rank) {
#if __CUDA_ARCH__ >= 900
  u32 local, remote, v;
  asm volatile("{\n\t.reg .u64 t;\n\tcvta.to.shared.u64 t, %1;\n\tcvt.u32.u64 %0, t;\n\t}" : "=r"(local) : "l"(p));
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(remote) : "memory");
  return v;
#else
  return *p;
#endif
}

// Reads the float at `p` (this block's shared memory) in cluster block `rank`'s shared memory.
__device__ __forceinline__ float cluster_load_f32(const float* p, u32 rank) {
  return __uint_as_float(cluster_load_u32(reinterpret_cast<const u32*>(p), rank));
}
