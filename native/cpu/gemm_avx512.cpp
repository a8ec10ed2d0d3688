// AVX-512 GEMM pieces (compiled with -mavx512f when the build enables it; otherwise absent).
#include "gemm_kernels.h"

namespace vffn::cpu {
const GemmKernel* gemm_kernel_avx512() { return nullptr; }
}  // namespace vffn::cpu
