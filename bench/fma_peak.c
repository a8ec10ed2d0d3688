// measured FMA peak: every thread runs 12 independent chains of 8-wide float FMAs (more chains than
// latency x ports, so the loop is throughput-bound). prints the sum of the threads' GFLOP/s.
// build: cc -O2 -mavx2 -mfma -pthread fma_peak.c -o fma_peak; run: fma_peak THREADS
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ITERS (400000000L / 8)

// per-thread CPU time: on a shared machine the peak is what a core does while it runs us
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void* run(void* out) {
  double t0 = cpu_now();
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  __m256 a0 = _mm256_set1_ps(0), a1 = _mm256_set1_ps(1), a2 = _mm256_set1_ps(2), a3 = _mm256_set1_ps(3);
  __m256 a4 = _mm256_set1_ps(4), a5 = _mm256_set1_ps(5), a6 = _mm256_set1_ps(6), a7 = _mm256_set1_ps(7);
  __m256 a8 = _mm256_set1_ps(8), a9 = _mm256_set1_ps(9), a10 = _mm256_set1_ps(10), a11 = _mm256_set1_ps(11);
  for (long it = 0; it < ITERS; it++) {
#define F(r) r = _mm256_fmadd_ps(r, x, y);
    F(a0) F(a1) F(a2) F(a3) F(a4) F(a5) F(a6) F(a7) F(a8) F(a9) F(a10) F(a11)
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                           _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
  ((float*)out)[0] = _mm256_cvtss_f32(s);  // keeps the chains alive
  ((float*)out)[1] = (float)(cpu_now() - t0);
  return NULL;
}

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1;
  if (n < 1 || n > 256) return 2;
  pthread_t th[256];
  float res[256][2];
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, run, res[i]);
    double gf = 0;
    for (int i = 0; i < n; i++) {
      pthread_join(th[i], NULL);
      gf += (double)ITERS * 12 * 8 * 2 / res[i][1] / 1e9;
    }
    if (gf > best) best = gf;
  }
  printf("%.2f\n", best);
  return res[0][0] == 12345.f;  // never true; uses the result
}
