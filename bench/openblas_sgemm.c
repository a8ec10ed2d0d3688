// OpenBLAS sgemm timing harness for bench/gemm.ts (row-major C = A * op(B)). It serves one timed
// call per input line, so the benchmark times both sides from one process, shape by shape, close
// together in time.
// build: cc -O2 openblas_sgemm.c -o openblas_sgemm -lopenblas
// prints "corename threads" once, then for each line "M N K TRANSB" the line "wall_s cpu_s"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

char* openblas_get_corename(void);
int openblas_get_num_threads(void);

static double clock_s(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void) {
  printf("%s %d\n", openblas_get_corename(), openblas_get_num_threads());
  fflush(stdout);
  long M, N, K, cap = 0;
  int tb;
  float *A = NULL, *B = NULL, *C = NULL;
  while (scanf("%ld %ld %ld %d", &M, &N, &K, &tb) == 4) {
    long need = M * K > K * N ? M * K : K * N;
    if (M * N > need) need = M * N;
    if (need > cap) {
      free(A), free(B), free(C);
      A = malloc(sizeof(float) * need), B = malloc(sizeof(float) * need), C = malloc(sizeof(float) * need);
      if (!A || !B || !C) return 3;
      for (long i = 0; i < need; i++) {
        A[i] = (float)((i * 7919) % 1000) / 1000.f - 0.5f;
        B[i] = (float)((i * 104729) % 1000) / 1000.f - 0.5f;
      }
      cap = need;
    }
    double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    // B stored [N, K] (weights [out, in]) when tb, else [K, N]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.f, A, K, B, tb ? K : N,
                0.f, C, N);
    double w = clock_s(CLOCK_MONOTONIC) - w0, c = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("%.9f %.9f\n", w, c);
    fflush(stdout);
  }
  return 0;
}
