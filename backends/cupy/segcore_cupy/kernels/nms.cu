// NMS, the bitmask formulation (torchvision's CUDA NMS): boxes sorted by score; block (row, col) compares 64
// boxes of row chunk `row` with 64 of chunk `col` and writes, for each row box, a 64-bit mask of the later boxes
// it suppresses. The host then walks the sorted boxes once, OR-ing the masks of the boxes it keeps.
#include "common.cuh"

#define NMS_THREADS 64

// NaN-propagating min / max, as the reference's xp.minimum / xp.maximum (CUDA's min / max on floating types
// are fminf / fmaxf, which drop a NaN operand).
template <typename T>
__device__ __forceinline__ T nan_min(T a, T b) { return (a < b || a != a) ? a : b; }
template <typename T>
__device__ __forceinline__ T nan_max(T a, T b) { return (a > b || a != a) ? a : b; }

template <typename T>
__device__ bool suppresses(const T* a, const T* b, double threshold) {
    // torchvision's grouping: inter / ((area_a + area_b) - inter), with max(0, d) that maps NaN to 0; a NaN IoU
    // (0 / 0) never suppresses. Compared in double, like the reference.
    const T w0 = nan_min<T>(a[2], b[2]) - nan_max<T>(a[0], b[0]);
    const T h0 = nan_min<T>(a[3], b[3]) - nan_max<T>(a[1], b[1]);
    const T w = w0 > T(0) ? w0 : T(0);
    const T h = h0 > T(0) ? h0 : T(0);
    const T inter = w * h;
    const T area_a = (a[2] - a[0]) * (a[3] - a[1]);
    const T area_b = (b[2] - b[0]) * (b[3] - b[1]);
    const T iou = inter / (area_a + area_b - inter);
    return (double)iou > threshold;
}

template <typename T>
__device__ void nms_mask_impl(const T* boxes, unsigned long long* mask, i64 count, double threshold) {
    const i64 chunks = (count + NMS_THREADS - 1) / NMS_THREADS;
    const i64 row = blockIdx.y;
    const i64 col = blockIdx.x;
    if (col < row) return;  // only later boxes can be suppressed
    const i64 row_size = min(count - row * NMS_THREADS, (i64)NMS_THREADS);
    const i64 col_size = min(count - col * NMS_THREADS, (i64)NMS_THREADS);
    __shared__ T block[NMS_THREADS * 4];
    if (threadIdx.x < col_size)
        for (int j = 0; j < 4; ++j) block[threadIdx.x * 4 + j] = boxes[(col * NMS_THREADS + threadIdx.x) * 4 + j];
    __syncthreads();
    if (threadIdx.x < row_size) {
        const i64 i = row * NMS_THREADS + threadIdx.x;
        const T* a = boxes + i * 4;
        unsigned long long bits = 0;
        const i64 first = row == col ? threadIdx.x + 1 : 0;
        for (i64 j = first; j < col_size; ++j)
            if (suppresses<T>(a, block + j * 4, threshold)) bits |= 1ULL << j;
        mask[i * chunks + col] = bits;
    }
}

#define DEFINE_NMS(T, S)                                                                                       \
    extern "C" __global__ void nms_mask_##S(const T* boxes, unsigned long long* mask, i64 count,              \
                                            double threshold) {                                               \
        nms_mask_impl<T>(boxes, mask, count, threshold);                                                      \
    }

FOR_EACH_FLOAT(DEFINE_NMS)
