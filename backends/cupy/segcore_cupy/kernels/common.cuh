// Shared by every kernel family of segcore-cupy. Compiled by NVRTC (CuPy's RawModule, which gets this file
// pasted in place of its #include) and by nvcc in the compile-only tests, so it uses no standard header.
#ifndef SEGCORE_CUPY_COMMON_CUH
#define SEGCORE_CUPY_COMMON_CUH

typedef long long i64;

// One thread per element, grid-stride so that the host may cap the grid size.
#define GRID_STRIDE(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

// Every kernel is a template over the scalar type, instantiated for float32 and float64 under extern "C"
// names "<kernel>_f32" / "<kernel>_f64" so that the host looks them up without C++ name mangling.
#define FOR_EACH_FLOAT(M) M(float, f32) M(double, f64)

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return __longlong_as_double((long long)0xfff0000000000000ULL);
}

#endif  // SEGCORE_CUPY_COMMON_CUH
