// Bilinear interpolation (NCHW). The host computes torch's source indices and weights per output row and column
// (segcore.kernels.resample.bilinear_source_weights, the reference's own rounding rules), so the kernels only
// gather and scatter: out[y, x] = sum over the 2 x 2 taps of row weight * column weight * input.
#include "common.cuh"

template <typename T>
__device__ void bilinear_forward_impl(const T* x, T* out, const i64* r0, const i64* r1, const T* wr0,
                                      const T* wr1, const i64* c0, const i64* c1, const T* wc0, const T* wc1,
                                      i64 planes, i64 H, i64 W, i64 Ho, i64 Wo) {
    const i64 total = planes * Ho * Wo;
    GRID_STRIDE(idx, total) {
        const i64 ox = idx % Wo;
        const i64 oy = (idx / Wo) % Ho;
        const T* plane = x + (idx / (Ho * Wo)) * H * W;
        const T* top = plane + r0[oy] * W;
        const T* bottom = plane + r1[oy] * W;
        out[idx] = wr0[oy] * (wc0[ox] * top[c0[ox]] + wc1[ox] * top[c1[ox]]) +
                   wr1[oy] * (wc0[ox] * bottom[c0[ox]] + wc1[ox] * bottom[c1[ox]]);
    }
}

// Outputs share input pixels (upsampling reads each one from many outputs): atomic adds into dx.
template <typename T>
__device__ void bilinear_backward_impl(const T* grad, T* dx, const i64* r0, const i64* r1, const T* wr0,
                                       const T* wr1, const i64* c0, const i64* c1, const T* wc0, const T* wc1,
                                       i64 planes, i64 H, i64 W, i64 Ho, i64 Wo) {
    const i64 total = planes * Ho * Wo;
    GRID_STRIDE(idx, total) {
        const i64 ox = idx % Wo;
        const i64 oy = (idx / Wo) % Ho;
        T* plane = dx + (idx / (Ho * Wo)) * H * W;
        const T g = grad[idx];
        atomicAdd(plane + r0[oy] * W + c0[ox], g * wr0[oy] * wc0[ox]);
        atomicAdd(plane + r0[oy] * W + c1[ox], g * wr0[oy] * wc1[ox]);
        atomicAdd(plane + r1[oy] * W + c0[ox], g * wr1[oy] * wc0[ox]);
        atomicAdd(plane + r1[oy] * W + c1[ox], g * wr1[oy] * wc1[ox]);
    }
}

#define BILINEAR_TABLES(T) const i64 *r0, const i64 *r1, const T *wr0, const T *wr1, const i64 *c0, const i64 *c1, \
                        const T *wc0, const T *wc1
#define DEFINE_RESAMPLE(T, S)                                                                                  \
    extern "C" __global__ void bilinear_forward_##S(const T* x, T* out, BILINEAR_TABLES(T), i64 planes, i64 H,   \
                                                    i64 W, i64 Ho, i64 Wo) {                                   \
        bilinear_forward_impl<T>(x, out, r0, r1, wr0, wr1, c0, c1, wc0, wc1, planes, H, W, Ho, Wo);            \
    }                                                                                                          \
    extern "C" __global__ void bilinear_backward_##S(const T* grad, T* dx, BILINEAR_TABLES(T), i64 planes, i64 H, \
                                                     i64 W, i64 Ho, i64 Wo) {                                  \
        bilinear_backward_impl<T>(grad, dx, r0, r1, wr0, wr1, c0, c1, wc0, wc1, planes, H, W, Ho, Wo);         \
    }

FOR_EACH_FLOAT(DEFINE_RESAMPLE)
