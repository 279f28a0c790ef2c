// Lets the grid-stride CUDA kernels of segcore_cupy/kernels compile as plain C++ and run serially on the host
// (one block of one thread, so every grid-stride loop visits all elements in order), for tests without a GPU.
// Only for kernels whose threads do not cooperate: no real shared memory or __syncthreads semantics here.
#include <cmath>
#include <cstring>
#include <algorithm>

struct SerialDim { long long x, y, z; };
static const SerialDim blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};

#define __global__
#define __device__
#define __forceinline__ inline
// Cooperative kernels still compile (their shared arrays become locals) but are not run by the host tests.
#define __shared__
inline void __syncthreads() {}

template <typename T> inline T atomicAdd(T* address, T value) { T old = *address; *address += value; return old; }
inline float __int_as_float(unsigned int bits) { float f; std::memcpy(&f, &bits, sizeof f); return f; }
inline double __longlong_as_double(long long bits) { double d; std::memcpy(&d, &bits, sizeof d); return d; }
using std::ceil; using std::floor; using std::isnan; using std::max; using std::min; using std::round;
