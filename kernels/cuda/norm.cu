// RMSNorm kernels: `rmsnorm` (y = x / sqrt(mean(x^2) + eps) * w) and `fused_add_rmsnorm`
// (r = x + residual, stored; y = rmsnorm(r) * w). One block per row of H elements; the sum of
// squares is accumulated in f32 and reduced over the block. 16-byte vector loads and stores of
// x / residual / y when every row start is 16-byte aligned (checked in the kernel, uniformly for
// the whole grid); a scalar path otherwise. Weights may have any float dtype (W), independent
// of the activation dtype (T). Entry points: rmsnorm_<T>_<W>, fused_add_rmsnorm_<T>_<W>.

// The vector path is taken when every row start of every tensor is 16-byte aligned.
template <typename T>
__device__ __forceinline__ bool rows_vectorisable(int h, const void* a, const void* b, const void* c, const void* d) {
  return (h % Pack16<T>::N) == 0 && aligned16(a) && aligned16(b) && aligned16(c) && aligned16(d);
}

// y = x * inv * w over one row (x read back from `x`, which this thread wrote or only reads).
template <typename T, typename W>
__device__ __forceinline__ void scale_row(const T* x, const W* w, T* y, int h, float inv, bool vec) {
  if (vec) {
    constexpr int N = Pack16<T>::N;
    const int nvec = h / N;
    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
      Pack16<T> in = reinterpret_cast<const Pack16<T>*>(x)[i];
      Pack16<T> out;
#pragma unroll
      for (int j = 0; j < N; ++j) out.v[j] = from_float<T>(to_float(in.v[j]) * inv * to_float(w[i * N + j]));
      reinterpret_cast<Pack16<T>*>(y)[i] = out;
    }
  } else {
    for (int i = threadIdx.x; i < h; i += blockDim.x) y[i] = from_float<T>(to_float(x[i]) * inv * to_float(w[i]));
  }
}

// Whether the row is one 16-byte pack per thread (vector path, h / N <= blockDim.x); if so,
// loads this thread's N weights into `wv` (weights: never written by another kernel, so this runs
// before pdl_wait).
template <typename T, typename W>
__device__ __forceinline__ bool norm_weights_early(const W* w, int h, bool vec, float* wv) {
  constexpr int N = Pack16<T>::N;
  pdl_trigger();
  const bool one = vec && h > 0 && h / N <= (int)blockDim.x;
  if (one && (int)threadIdx.x < h / N) {
#pragma unroll
    for (int j = 0; j < N; ++j) wv[j] = to_float(w[threadIdx.x * N + j]);
  }
  return one;
}

// y's pack `threadIdx.x` = in * inv * w, as scale_row computes it.
template <typename T>
__device__ __forceinline__ void norm_store_pack(const Pack16<T>& in, const float* wv, float inv, T* yr) {
  Pack16<T> out;
#pragma unroll
  for (int j = 0; j < Pack16<T>::N; ++j) out.v[j] = from_float<T>(to_float(in.v[j]) * inv * wv[j]);
  reinterpret_cast<Pack16<T>*>(yr)[threadIdx.x] = out;
}

template <typename T, typename W>
__device__ void rmsnorm(const T* x, const W* __restrict__ w, T* y, int rows, int h,
                        float eps) {
  __shared__ float scratch[32];
  const int row = blockIdx.x;
  const T* xr = x + (i64)row * h;
  T* yr = y + (i64)row * h;
  const bool vec = rows_vectorisable<T>(h, x, y, x, y);
  // The weights are read before waiting for the kernel that writes x (see pdl_trigger).
  constexpr int N = Pack16<T>::N;
  float wv[N];
  const bool one = norm_weights_early<T, W>(w, h, vec, wv);
  pdl_wait();
  if (row >= rows || h <= 0) return;
  if (one) {
    // One 16-byte pack per thread: the row stays in registers.
    Pack16<T> in;
    float acc = 0.0f;
    if ((int)threadIdx.x < h / N) {
      in = reinterpret_cast<const Pack16<T>*>(xr)[threadIdx.x];
#pragma unroll
      for (int j = 0; j < N; ++j) acc += to_float(in.v[j]) * to_float(in.v[j]);
    }
    const float inv = 1.0f / sqrtf(block_sum(acc, scratch) / (float)h + eps);
    if ((int)threadIdx.x < h / N) norm_store_pack<T>(in, wv, inv, yr);
    return;
  }
  float acc = 0.0f;
  if (vec) {
    constexpr int N = Pack16<T>::N;
    const int nvec = h / N;
    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
      Pack16<T> in = reinterpret_cast<const Pack16<T>*>(xr)[i];
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float v = to_float(in.v[j]);
        acc += v * v;
      }
    }
  } else {
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
      const float v = to_float(xr[i]);
      acc += v * v;
    }
  }
  const float sum = block_sum(acc, scratch);
  const float inv = 1.0f / sqrtf(sum / (float)h + eps);
  scale_row<T, W>(xr, w, yr, h, inv, vec);
}

// r = x + residual is rounded to T and stored in residual_out; the norm is taken of the stored
// (rounded) r, which each thread reads back from the elements it wrote itself.
template <typename T, typename W>
__device__ void fused_add_rmsnorm(const T* x, const T* residual, const W* __restrict__ w, T* y, T* residual_out,
                                  int rows, int h, float eps) {
  __shared__ float scratch[32];
  const int row = blockIdx.x;
  const i64 off = (i64)row * h;
  const T* xr = x + off;
  const T* rr = residual + off;
  T* yr = y + off;
  T* ro = residual_out + off;
  const bool vec = rows_vectorisable<T>(h, x, residual, y, residual_out);
  constexpr int N = Pack16<T>::N;
  float wv[N];
  const bool one = norm_weights_early<T, W>(w, h, vec, wv);
  pdl_wait();
  if (row >= rows || h <= 0) return;
  if (one) {
    Pack16<T> sum;
    float acc = 0.0f;
    if ((int)threadIdx.x < h / N) {
      const Pack16<T> a = reinterpret_cast<const Pack16<T>*>(xr)[threadIdx.x];
      const Pack16<T> b = reinterpret_cast<const Pack16<T>*>(rr)[threadIdx.x];
#pragma unroll
      for (int j = 0; j < N; ++j) {
        sum.v[j] = from_float<T>(to_float(a.v[j]) + to_float(b.v[j]));
        acc += to_float(sum.v[j]) * to_float(sum.v[j]);
      }
      reinterpret_cast<Pack16<T>*>(ro)[threadIdx.x] = sum;
    }
    const float inv = 1.0f / sqrtf(block_sum(acc, scratch) / (float)h + eps);
    if ((int)threadIdx.x < h / N) norm_store_pack<T>(sum, wv, inv, yr);
    return;
  }
  float acc = 0.0f;
  if (vec) {
    constexpr int N = Pack16<T>::N;
    const int nvec = h / N;
    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
      Pack16<T> a = reinterpret_cast<const Pack16<T>*>(xr)[i];
      Pack16<T> b = reinterpret_cast<const Pack16<T>*>(rr)[i];
      Pack16<T> s;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        s.v[j] = from_float<T>(to_float(a.v[j]) + to_float(b.v[j]));
        const float v = to_float(s.v[j]);
        acc += v * v;
      }
      reinterpret_cast<Pack16<T>*>(ro)[i] = s;
    }
  } else {
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
      const T s = from_float<T>(to_float(xr[i]) + to_float(rr[i]));
      const float v = to_float(s);
      acc += v * v;
      ro[i] = s;
    }
  }
  const float sum = block_sum(acc, scratch);
  const float inv = 1.0f / sqrtf(sum / (float)h + eps);
  scale_row<T, W>(ro, w, yr, h, inv, vec);
}

#define NORM_ENTRY(S, T, WS, W)                                                                                  \
  extern "C" __global__ void rmsnorm_##S##_##WS(const T* x, const W* w, T* y, int rows, int h, float eps) {      \
    rmsnorm<T, W>(x, w, y, rows, h, eps);                                                                        \
  }                                                                                                              \
  extern "C" __global__ void fused_add_rmsnorm_##S##_##WS(const T* x, const T* residual, const W* w, T* y,       \
                                                          T* residual_out, int rows, int h, float eps) {         \
    fused_add_rmsnorm<T, W>(x, residual, w, y, residual_out, rows, h, eps);                                      \
  }
#define NORM_FOR_WEIGHTS(S, T) NORM_ENTRY(S, T, f32, float) NORM_ENTRY(S, T, bf16, bf16) NORM_ENTRY(S, T, f16, f16)
RTLLM_FOR_FLOAT_TYPES(NORM_FOR_WEIGHTS)
