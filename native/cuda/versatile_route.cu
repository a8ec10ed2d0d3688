// VersatileFFN's routing on CUDA: the two heads, top-K and the loop choice (with the Philox
// Gumbel stream the CPU draws), the balance loss, and the stable counting sorts that order tokens
// by depth and assignments by expert, all without the host seeing a count.
#include "../core/philox.h"
#include "versatile.cuh"

namespace vffn::cuda {

namespace {

// one warp per (token, head row); plain float32 dot products, so a routing decision depends on
// rounding only as much as the CPU's does
__global__ void heads_kernel(int64_t T, int D, int N, int L, const float* x, const void* rw, int rdt, const void* dw,
                             int ddt, float* logits) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31, H = N + L;
  if (w >= T * H) return;
  const int64_t t = w / H;
  const int h = int(w - t * H);
  const void* W = h < N ? rw : dw;
  const int dt = h < N ? rdt : ddt;
  const int64_t row = h < N ? h : h - N;
  float s = 0.f;
  for (int j = lane; j < D; j += 32) s += x[t * D + j] * load_f(W, dt, row * D + j);
  s = warp_sum(s);
  if (lane == 0) logits[t * H + h] = s;
}

// one thread per token; the arithmetic mirrors the CPU backend (double softmax sums, float
// logits, ties to the lower index)
__global__ void route_kernel(int64_t T, int N, int K, int L, const float* logits, int train, int noise, uint64_t seed,
                             float tau, int32_t* experts, float* weights, int32_t* loops, float* lambda,
                             float* router_p, float* depth_p, int32_t* counts) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= T) return;
  const float* r = logits + t * (N + L);
  uint64_t taken = 0;
  double sum = 0;
  int first = 0;
  for (int k = 0; k < K; k++) {
    int best = -1;
    for (int j = 0; j < N; j++)
      if (!((taken >> j) & 1) && (best < 0 || r[j] > r[best])) best = j;
    taken |= uint64_t(1) << best;
    if (k == 0) first = best;
    experts[t * K + k] = best;
    sum += exp(double(r[best]) - r[first]);
    atomicAdd(counts + best, 1);
  }
  for (int k = 0; k < K; k++) weights[t * K + k] = float(exp(double(r[experts[t * K + k]]) - r[first]) / sum);
  if (train) {
    double s = 0;
    for (int j = 0; j < N; j++) s += exp(double(r[j]) - r[first]);
    for (int j = 0; j < N; j++) router_p[t * N + j] = float(exp(double(r[j]) - r[first]) / s);
  }
  // the loop head: argmax of z + g; g from Philox counter (t, j/4, 0, 0), word j mod 4 (SPEC.md)
  const float* z0 = r + N;
  auto zj = [&](int j) {
    float z = z0[j];
    if (train && noise) {
      U32x4 b = philox4x32_10(uint32_t(t), uint32_t(j / 4), 0, 0, seed);
      // in double like the CPU (this library's fast-math logf is an approximation)
      z += philox_gumbel(b.v[j % 4]);
    }
    return z;
  };
  int c = 0;
  float zc = zj(0);
  for (int j = 1; j < L; j++) {
    const float v = zj(j);
    if (v > zc) {
      c = j;
      zc = v;
    }
  }
  loops[t] = c + 1;
  lambda[t] = __fdiv_rn(float(L - (c + 1)), float(L));  // IEEE division: --use_fast_math's is not the CPU's
  if (train) {
    double s = 0;
    for (int j = 0; j < L; j++) s += exp((double(zj(j)) - zc) / tau);
    for (int j = 0; j < L; j++) depth_p[t * L + j] = float(exp((double(zj(j)) - zc) / tau) / s);
  }
}

__global__ void balance_kernel(int64_t T, int N, int K, const float* router_p, const int32_t* counts, float alpha,
                               float* aux) {
  __shared__ double part[256];
  double total = 0;
  for (int e = 0; e < N; e++) {
    double s = 0;
    for (int64_t t = threadIdx.x; t < T; t += blockDim.x) s += router_p[t * N + e];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
      if (int(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
      __syncthreads();
    }
    total += double(counts[e]) / double(T * K) * part[0] / double(T);
    __syncthreads();
  }
  if (threadIdx.x == 0) aux[0] = alpha == 0.f ? 0.f : float(total * double(alpha) * double(N));
}

// stable counting sort of n items into B buckets (key < 0: left out), one block of 1024 threads.
// pass 1 counts; pass 2 walks chunks of 1024 items in order: within a warp __match_any gives each
// item its rank among equal keys, warps are ranked per bucket through shared memory.
constexpr int kSortThreads = 1024;

template <class Items>
__global__ void __launch_bounds__(kSortThreads) stable_sort_kernel(Items it, int64_t n, int B, int32_t* start) {
  __shared__ int count[kMaxBuckets + 1];
  __shared__ int warp_count[kSortThreads / 32][kMaxBuckets];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int b = threadIdx.x; b <= B; b += kSortThreads) count[b] = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += kSortThreads) {
    const int k = it.key(i);
    if (k >= 0) atomicAdd(&count[k], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {  // exclusive starts; count[b] becomes the next free slot of bucket b
    int run = 0;
    for (int b = 0; b < B; b++) {
      const int c = count[b];
      start[b] = run;
      count[b] = run;
      run += c;
    }
    start[B] = run;
  }
  __syncthreads();
  for (int64_t base = 0; base < n; base += kSortThreads) {
    const int64_t i = base + threadIdx.x;
    const int k = i < n ? it.key(i) : -1;
    for (int b = lane; b < B; b += 32) warp_count[warp][b] = 0;
    __syncwarp();
    const unsigned peers = __match_any_sync(0xffffffffu, k);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    if (k >= 0 && rank == 0) warp_count[warp][k] = __popc(peers);
    __syncthreads();
    if (threadIdx.x < B) {  // per bucket: each warp's offset, then advance the bucket
      const int b = threadIdx.x;
      int run = count[b];
      for (int w = 0; w < kSortThreads / 32; w++) {
        const int c = warp_count[w][b];
        warp_count[w][b] = run;
        run += c;
      }
      count[b] = run;
    }
    __syncthreads();
    if (k >= 0) it.place(i, warp_count[warp][k] + rank);
    __syncthreads();
  }
}

// tokens by loop count, descending: bucket L − loops
struct DepthItems {
  const int32_t* loops;
  int L;
  int32_t* order;
  int32_t* pos;
  __device__ int key(int64_t t) const { return L - loops[t]; }
  __device__ void place(int64_t t, int s) const {
    order[s] = int32_t(t);
    pos[t] = s;
  }
};

// assignments a = t*K + k of active tokens, by expert
struct WidthItems {
  const int32_t* experts;
  const int32_t* loops;
  const float* lambda;
  const float* weights;
  const int32_t* pos;
  int K, L, train;
  int32_t *assign, *rows, *tok, *slot;
  float* scale;
  __device__ int key(int64_t a) const {
    const int64_t t = a / K;
    return (train || loops[t] < L) ? experts[a] : -1;
  }
  __device__ void place(int64_t a, int p) const {
    const int64_t t = a / K;
    assign[p] = int32_t(a);
    rows[p] = pos[t];
    tok[p] = int32_t(t);
    scale[p] = lambda[t] * weights[a];
    slot[a] = p;
  }
};

// m[j] = tokens with at least j loops, j = 0..L+1, from the bucket starts of the depth sort
__global__ void depth_prefix_kernel(int L, const int32_t* bucket_start, int32_t* m) {
  const int j = threadIdx.x;
  if (j <= L + 1) m[j] = j == 0 ? bucket_start[L] : bucket_start[L - j + 1];
}

__global__ void depth_counts_kernel(int64_t T, int L, const int32_t* loops, const int32_t* order, int32_t* pos,
                                    int32_t* m) {
  __shared__ int count[kMaxBuckets + 2];
  for (int j = threadIdx.x; j <= L + 1; j += blockDim.x) count[j] = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < T; i += blockDim.x) {
    atomicAdd(&count[loops[i]], 1);  // loops is by token, order by sorted row: both cover all T
    pos[order[i]] = int32_t(i);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int run = 0;
    m[L + 1] = 0;
    for (int j = L; j >= 1; j--) m[j] = (run += count[j]);
    m[0] = run;
  }
}

__global__ void width_rows_kernel(int64_t P, int K, const int32_t* assign, const int32_t* pos, int32_t* rows,
                                  int32_t* tok, int32_t* slot) {
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= P) return;
  const int32_t a = assign[p];
  rows[p] = pos[a / K];
  tok[p] = a / K;
  slot[a] = int32_t(p);
}

__global__ void gather_rows_kernel(int64_t rows, int64_t D, float* dst, const float* src, const int32_t* idx) {
  const int64_t total = rows * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / D, j = i - r * D;
    dst[i] = src[(idx ? int64_t(idx[r]) : r) * D + j];
  }
}

}  // namespace

void versatile_heads(int dev, const VSizes& s, const float* x, const View& router_w, const View& depth_w, float* logits) {
  cudaStream_t st = stream(dev);
  const int64_t warps = s.T * (s.N + s.L);
  heads_kernel<<<blocks_for(warps * 32, 256, 1u << 30), 256, 0, st>>>(s.T, int(s.D), int(s.N), int(s.L), x,
                                                                       router_w.data, router_w.dtype, depth_w.data,
                                                                       depth_w.dtype, logits);
  check_launch("versatile heads");
}

void versatile_route(int dev, const VSizes& s, const float* logits, bool train, bool noise, uint64_t seed, float tau,
                     int32_t* experts, float* weights, int32_t* loops, float* lambda, float* router_p, float* depth_p,
                     int32_t* expert_counts) {
  cudaStream_t st = stream(dev);
  check(cudaMemsetAsync(expert_counts, 0, size_t(s.N) * 4, st), "versatile route");
  route_kernel<<<blocks_for(s.T, 128, 1u << 30), 128, 0, st>>>(s.T, int(s.N), int(s.K), int(s.L), logits, train,
                                                               noise, seed, tau, experts, weights, loops, lambda,
                                                               router_p, depth_p, expert_counts);
  check_launch("versatile route");
}

void versatile_balance(int dev, const VSizes& s, const float* router_p, const int32_t* expert_counts, float alpha,
                       float* aux) {
  balance_kernel<<<1, 256, 0, stream(dev)>>>(s.T, int(s.N), int(s.K), router_p, expert_counts, alpha, aux);
  check_launch("versatile balance loss");
}

void versatile_depth_order(int dev, const VSizes& s, const int32_t* loops, int32_t* order, int32_t* pos, int32_t* m) {
  cudaStream_t st = stream(dev);
  Scratch bucket(dev, size_t(s.L + 1) * 4);
  stable_sort_kernel<<<1, kSortThreads, 0, st>>>(DepthItems{loops, int(s.L), order, pos}, s.T, int(s.L),
                                                 bucket.as<int32_t>());
  check_launch("versatile depth order");
  depth_prefix_kernel<<<1, 128, 0, st>>>(int(s.L), bucket.as<int32_t>(), m);
  check_launch("versatile depth order");
}

void versatile_depth_counts(int dev, const VSizes& s, const int32_t* loops, const int32_t* order, int32_t* pos,
                            int32_t* m) {
  cudaStream_t st = stream(dev);
  depth_counts_kernel<<<1, 1024, 0, st>>>(s.T, int(s.L), loops, order, pos, m);
  check_launch("versatile depth counts");
}

void versatile_width_plan(int dev, const VSizes& s, const int32_t* experts, const int32_t* loops, const float* lambda,
                          const float* weights, const int32_t* pos, bool train, int32_t* assign, int32_t* start,
                          int32_t* rows, int32_t* tok, float* scale, int32_t* slot) {
  WidthItems it{experts, loops, lambda, weights, pos, int(s.K), int(s.L), train, assign, rows, tok, slot, scale};
  stable_sort_kernel<<<1, kSortThreads, 0, stream(dev)>>>(it, s.T * s.K, int(s.N), start);
  check_launch("versatile width plan");
}

void versatile_width_rows(int dev, const VSizes& s, const int32_t* assign, const int32_t* pos, int32_t* rows,
                          int32_t* tok, int32_t* slot) {
  const int64_t P = s.T * s.K;
  width_rows_kernel<<<blocks_for(P, 256, 1u << 30), 256, 0, stream(dev)>>>(P, int(s.K), assign, pos, rows, tok, slot);
  check_launch("versatile width rows");
}

void gather_rows(int dev, int64_t rows, int64_t D, float* dst, const float* src, const int32_t* idx) {
  if (rows * D == 0) return;
  gather_rows_kernel<<<blocks_for(rows * D, 256, 1u << 20), 256, 0, stream(dev)>>>(rows, D, dst, src, idx);
  check_launch("gather rows");
}

}  // namespace vffn::cuda
