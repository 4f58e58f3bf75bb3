// sample: one token per row of logits on the GPU (temperature, top-k, top-p, seeded draw), so
// whole logits never go to the host. Exact semantics in plugin-api/src/shapes/sampling.rs:
//   greedy (temperature <= 0 or NaN, or no finite max): the argmax op's token;
//   w_i = exp((l_i - m) / temperature) in f32 (0 for non-finite logits);
//   t = the largest w_j with count{w >= w_j} >= top_k (top-k on) or
//       mass{w >= w_j} >= top_p * sum(w) (top-p on); K = {w >= t};
//   u = (splitmix64(seed) >> 11) * 2^-53; the token is the smallest index whose cumulative
//   kept mass (vocabulary order) exceeds u * mass(K).
// One block per row (for a few rows on sm_90+, a cluster of `cl` blocks splits the argmax scan;
// rank 0 merges and alone samples). The threshold comes from a radix select over the f32 bit patterns of w
// (non-negative floats order like their bits): 4 passes of 8-bit digits, each building
// per-warp histograms of counts and f64 masses in shared memory (no atomics: one lane per
// distinct digit in the warp writes, so the sums are deterministic), merged in warp order.
// The draw is a deterministic block prefix scan (f64) over tiles of 8 consecutive tokens per
// thread. Grid (L * cl), block SAMPLE_THREADS, dynamic shared (see sample_row; plugins/cuda/src/sampling.rs
// computes the same size).

#define SAMPLE_THREADS 512
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)
#define SAMPLE_ITEMS 8  // consecutive tokens per thread in the draw's scan
#define SAMPLE_NO_WINNER 0x7fffffff
#define SAMPLE_MAX_CLUSTER 8  // blocks per row at most (plugins/cuda/src/sampling.rs)
#define SAMPLE_SCAN_BATCH 8   // 16-byte argmax loads each thread has in flight at once

__device__ __forceinline__ u64 sample_splitmix64(u64 x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__device__ __forceinline__ bool sample_finite(float v) { return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u; }

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Whether (va, ia) is a better argmax candidate than (vb, ib): a non-NaN larger value, or an
// equal value at a lower index; NaN never wins.
__device__ __forceinline__ bool sample_better(float va, int ia, float vb, int ib) {
  if (va != va) return false;
  if (vb != vb) return true;
  return va > vb || (va == vb && ia < ib);
}

// Block-wide inclusive scan of doubles (blockDim.x == SAMPLE_THREADS); `scratch` holds
// SAMPLE_WARPS + 1 doubles. Returns the thread's inclusive prefix; *total gets the block sum.
// Starts and ends with the block synchronized.
__device__ double block_scan_f64(double v, double* scratch, double* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double up = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += up;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double w = lane < SAMPLE_WARPS ? scratch[lane] : 0.0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const double up = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += up;
    }
    if (lane < SAMPLE_WARPS) scratch[lane] = w;  // inclusive warp totals
  }
  __syncthreads();
  const double before = warp > 0 ? scratch[warp - 1] : 0.0;
  *total = scratch[SAMPLE_WARPS - 1];
  __syncthreads();
  return before + v;
}

template <typename T>
__device__ __forceinline__ float sample_weight(const T* x, int i, float m, float temp) {
  const float l = to_float(x[i]);
  return sample_finite(l) ? expf((l - m) / temp) : 0.0f;
}

// Shared memory: wmass [SAMPLE_WARPS][256] f64, mass [256] f64, scan scratch [SAMPLE_WARPS + 1]
// f64, wcnt [SAMPLE_WARPS][256] u32, cnt [256] u32.
template <typename T>
__device__ void sample_row(const T* logits, const float* temperature,
                           const int* top_k, const float* top_p,
                           const i64* seeds, int* tokens, int L, int V, int cl) {
  extern __shared__ double sm[];
  double* wmass = sm;
  double* mass = wmass + SAMPLE_WARPS * 256;
  double* scan = mass + 256;
  u32* wcnt = (u32*)(scan + SAMPLE_WARPS + 1);
  u32* cnt = wcnt + SAMPLE_WARPS * 256;
  __shared__ float s_best_v[SAMPLE_WARPS];
  __shared__ int s_best_i[SAMPLE_WARPS];
  __shared__ u32 s_prefix, s_mask;
  __shared__ int s_keep_all, s_winner;
  __shared__ double s_above_mass;
  __shared__ unsigned long long s_above_cnt;

  // A row is one block, or a cluster of `cl` blocks that split the argmax scan; rank 0 merges
  // their results and alone goes on (sampling rows need the whole row in one block).
  // Programmatic dependent launch: the row's parameters are step inputs (copied from the host
  // before the step's first kernel), read while the kernel before (the LM head) finishes; the
  // logits only after pdl_wait.
  pdl_trigger();
  const int row = blockIdx.x / cl;
  const float temp = row < L ? temperature[row] : 0.0f;
  pdl_wait();
  if (row >= L) return;  // cluster-uniform
  const int rank = cl > 1 ? (int)cluster_rank() : 0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const T* x = logits + (long long)row * V;

  // 1. argmax (the `argmax` op's rule: first index of the largest non-NaN value).
  float bv = __int_as_float(0x7fc00000);
  int bi = 0x7fffffff;
  constexpr int P = Pack16<T>::N;
  if (V % P == 0 && aligned16(x)) {
    // 16-byte loads, several in flight per thread: the row is read at close to the SM's
    // bandwidth (the scalar loop below managed ~7 GB/s on a 128K vocabulary).
    // SAMPLE_SCAN_BATCH loads are issued before any is compared (unconditionally: a load past
    // the slice re-reads its last chunk, unused), so their latencies overlap.
    const int chunks = V / P;
    const int c_end = (int)((long long)chunks * (rank + 1) / cl);
    for (int c0 = (int)((long long)chunks * rank / cl) + tid; c0 < c_end; c0 += SAMPLE_SCAN_BATCH * SAMPLE_THREADS) {
      Pack16<T> pk[SAMPLE_SCAN_BATCH];
#pragma unroll
      for (int b = 0; b < SAMPLE_SCAN_BATCH; ++b) {
        const int c = min(c0 + b * SAMPLE_THREADS, c_end - 1);
        pk[b] = *reinterpret_cast<const Pack16<T>*>(x + (long long)c * P);
      }
#pragma unroll
      for (int b = 0; b < SAMPLE_SCAN_BATCH; ++b) {
        const int c = c0 + b * SAMPLE_THREADS;
        if (c >= c_end) break;
#pragma unroll
        for (int e = 0; e < P; ++e) {
          const float v = to_float(pk[b].v[e]);
          if (sample_better(v, c * P + e, bv, bi)) { bv = v; bi = c * P + e; }
        }
      }
    }
  } else {
    const int i_end = (int)((long long)V * (rank + 1) / cl);
    for (int i = (int)((long long)V * rank / cl) + tid; i < i_end; i += SAMPLE_THREADS) {
      const float v = to_float(x[i]);
      if (sample_better(v, i, bv, bi)) { bv = v; bi = i; }
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (sample_better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
  }
  if (lane == 0) { s_best_v[warp] = bv; s_best_i[warp] = bi; }
  __syncthreads();
  bv = s_best_v[0];
  bi = s_best_i[0];
  for (int w = 1; w < SAMPLE_WARPS; ++w)
    if (sample_better(s_best_v[w], s_best_i[w], bv, bi)) { bv = s_best_v[w]; bi = s_best_i[w]; }
  if (cl > 1) {
    // Every block's best goes through distributed shared memory to rank 0.
    __shared__ float s_cl_v;
    __shared__ u32 s_cl_i;
    if (tid == 0) {
      s_cl_v = bv;
      s_cl_i = (u32)bi;
    }
    cluster_sync();
    if (rank == 0) {
      // Every block's (value, index) is loaded at once (one latency), then merged in rank order.
      float ov[SAMPLE_MAX_CLUSTER];
      int oi[SAMPLE_MAX_CLUSTER];
#pragma unroll
      for (int r = 1; r < SAMPLE_MAX_CLUSTER; ++r) {
        if (r < cl) {
          ov[r] = cluster_load_f32(&s_cl_v, r);
          oi[r] = (int)cluster_load_u32(&s_cl_i, r);
        }
      }
#pragma unroll
      for (int r = 1; r < SAMPLE_MAX_CLUSTER; ++r) {
        if (r < cl && sample_better(ov[r], oi[r], bv, bi)) { bv = ov[r]; bi = oi[r]; }
      }
    }
    cluster_sync();  // no block leaves while rank 0 may still read its shared memory
    if (rank != 0) return;
  }
  const int amax = bv != bv ? 0 : bi;
  const float m = bv;
  if (!(temp > 0.0f) || !sample_finite(m)) {
    if (tid == 0) tokens[row] = amax;
    return;  // block-uniform
  }
  const int k = top_k[row];
  const float pp = top_p[row];
  const bool k_on = k > 0 && k < V;
  const bool p_on = pp < 1.0f;

  // 2. The threshold t (0 = keep all).
  u32 t_bits = 0;
  if (k_on || p_on) {
    double z = 0.0;
    for (int i = tid; i < V; i += SAMPLE_THREADS) z += (double)sample_weight(x, i, m, temp);
    z = warp_sum_f64(z);
    if (lane == 0) scan[warp] = z;
    __syncthreads();
    z = 0.0;
    for (int w = 0; w < SAMPLE_WARPS; ++w) z += scan[w];
    const double target = (double)pp * z;
    if (tid == 0) { s_prefix = 0; s_mask = 0; s_keep_all = 0; s_above_mass = 0.0; s_above_cnt = 0; }
    for (int pass = 0; pass < 4; ++pass) {
      const int shift = 24 - 8 * pass;
      for (int i = tid; i < SAMPLE_WARPS * 256; i += SAMPLE_THREADS) { wmass[i] = 0.0; wcnt[i] = 0; }
      __syncthreads();
      const u32 prefix = s_prefix, pmask = s_mask;
      if (s_keep_all) break;  // block-uniform (read after the barrier)
      for (int base = 0; base < V; base += SAMPLE_THREADS) {
        const int i = base + tid;
        float w = 0.0f;
        bool match = false;
        if (i < V) {
          w = sample_weight(x, i, m, temp);
          match = (__float_as_uint(w) & pmask) == prefix;
        }
        const int digit = (int)((__float_as_uint(w) >> shift) & 255u);
        unsigned todo = __ballot_sync(0xffffffffu, match);
        while (todo) {
          const int leader = __ffs(todo) - 1;
          const int d = __shfl_sync(0xffffffffu, digit, leader);
          const bool mine = match && digit == d;
          const unsigned grp = __ballot_sync(0xffffffffu, mine);
          const double part = warp_sum_f64(mine ? (double)w : 0.0);
          if (lane == leader) {
            wcnt[warp * 256 + d] += __popc(grp);
            wmass[warp * 256 + d] += part;
          }
          __syncwarp();  // the leader's update is visible to the next leader of this warp
          todo &= ~grp;
        }
      }
      __syncthreads();
      for (int d = tid; d < 256; d += SAMPLE_THREADS) {
        u32 c = 0;
        double ms = 0.0;
        for (int w = 0; w < SAMPLE_WARPS; ++w) { c += wcnt[w * 256 + d]; ms += wmass[w * 256 + d]; }
        cnt[d] = c;
        mass[d] = ms;
      }
      __syncthreads();
      if (tid == 0) {
        unsigned long long c = s_above_cnt;
        double ms = s_above_mass;
        int chosen = -1, lowest = -1;
        for (int d = 255; d >= 0; --d) {
          if (cnt[d] == 0) continue;
          lowest = d;
          const bool hit = (k_on && c + cnt[d] >= (unsigned long long)k) || (p_on && ms + mass[d] >= target);
          if (hit) { chosen = d; break; }
          c += cnt[d];
          ms += mass[d];
        }
        if (chosen < 0 && pass == 0) {
          s_keep_all = 1;  // rounding kept top-p from ever being reached: keep everything
        } else {
          if (chosen < 0) chosen = lowest;  // rounding within the bucket chosen before: keep it all
          unsigned long long ca = s_above_cnt;
          double ma = s_above_mass;
          for (int d = 255; d > chosen; --d) { ca += cnt[d]; ma += mass[d]; }
          s_above_cnt = ca;
          s_above_mass = ma;
          s_prefix = prefix | ((u32)chosen << shift);
          s_mask = pmask | (255u << shift);
        }
      }
      __syncthreads();
    }
    t_bits = s_keep_all ? 0u : s_prefix;
  }
  const float t = __uint_as_float(t_bits);

  // 3. The draw: two identical scans over tiles (the first sums the kept mass M, the second
  // finds the first token whose cumulative kept mass exceeds u * M).
  const double u = (double)(sample_splitmix64((u64)seeds[row]) >> 11) * (1.0 / 9007199254740992.0);
  const int tile = SAMPLE_THREADS * SAMPLE_ITEMS;
  double total_mass = 0.0;
  for (int base = 0; base < V; base += tile) {
    const int i0 = base + tid * SAMPLE_ITEMS;
    double s = 0.0;
    for (int j = 0; j < SAMPLE_ITEMS && i0 + j < V; ++j) {
      const float w = sample_weight(x, i0 + j, m, temp);
      if (w >= t) s += (double)w;
    }
    double tot;
    block_scan_f64(s, scan, &tot);
    total_mass += tot;
  }
  const double target = u * total_mass;
  if (tid == 0) s_winner = SAMPLE_NO_WINNER;
  __syncthreads();
  double run = 0.0;
  for (int base = 0; base < V; base += tile) {
    const int i0 = base + tid * SAMPLE_ITEMS;
    double s = 0.0;
    for (int j = 0; j < SAMPLE_ITEMS && i0 + j < V; ++j) {
      const float w = sample_weight(x, i0 + j, m, temp);
      if (w >= t) s += (double)w;
    }
    double tot;
    const double incl = block_scan_f64(s, scan, &tot);
    const double before = run + (incl - s);
    const bool crosses = s > 0.0 && before + s > target;
    if (crosses) atomicMin(&s_winner, tid);  // the first crossing thread wins
    __syncthreads();
    if (s_winner != SAMPLE_NO_WINNER) {
      if (tid == s_winner) {
        double part = 0.0;
        int tok = amax;
        for (int j = 0; j < SAMPLE_ITEMS && i0 + j < V; ++j) {
          const float w = sample_weight(x, i0 + j, m, temp);
          if (!(w >= t) || w <= 0.0f) continue;
          part += (double)w;
          tok = i0 + j;
          if (before + part > target) break;
        }
        tokens[row] = tok;
      }
      return;  // block-uniform: s_winner was read after the barrier
    }
    run += tot;
  }
  if (tid == 0) tokens[row] = amax;  // rounding left no crossing
}

#define SAMPLE_ENTRY(S, T)                                                                                 \
  extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_##S(                                  \
      const T* logits, const float* temperature, const int* top_k, const float* top_p, const i64* seeds,   \
      int* tokens, int L, int V, int cl) {                                                                 \
    sample_row<T>(logits, temperature, top_k, top_p, seeds, tokens, L, V, cl);                             \
  }
RTLLM_FOR_FLOAT_TYPES(SAMPLE_ENTRY)
