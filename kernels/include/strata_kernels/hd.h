// STRATA_KERNELS_HD marks inline functions shared by the CPU reference and the CUDA kernels, so
// both compile the very same arithmetic (the basis of bit-exact CPU/CUDA agreement).
#pragma once

#if defined(__CUDACC__)
#define STRATA_KERNELS_HD __host__ __device__
#else
#define STRATA_KERNELS_HD
#endif
