// max_pool2d with indices (torch's CUDA scan) and its backward.
#include "common.cuh"

// torch semantics: the scan starts at the first tap that is not left padding, a later value wins only if it is
// greater or NaN (so ties go to the first maximum and the last NaN wins), padding never wins, and a window lying
// wholly in padding keeps -inf with the index of its first tap (which may lie outside the plane).
template <typename T>
__device__ void max_pool2d_impl(const T* x, T* out, i64* indices, i64 planes, i64 H, i64 W, i64 Ho, i64 Wo,
                                i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw) {
    const i64 total = planes * Ho * Wo;
    GRID_STRIDE(idx, total) {
        const i64 ox = idx % Wo;
        const i64 oy = (idx / Wo) % Ho;
        const i64 p = idx / (Ho * Wo);
        i64 hstart = oy * sh - ph;
        i64 wstart = ox * sw - pw;
        const i64 hend = min(hstart + (kh - 1) * dh + 1, H);
        const i64 wend = min(wstart + (kw - 1) * dw + 1, W);
        while (hstart < 0) hstart += dh;
        while (wstart < 0) wstart += dw;
        const T* plane = x + p * H * W;
        T best = neg_inf<T>();
        i64 best_index = hstart * W + wstart;
        for (i64 y = hstart; y < hend; y += dh) {
            for (i64 xx = wstart; xx < wend; xx += dw) {
                const T v = plane[y * W + xx];
                if (v > best || isnan(v)) {
                    best = v;
                    best_index = y * W + xx;
                }
            }
        }
        out[idx] = best;
        indices[idx] = best_index;
    }
}

// Windows overlap when stride < kernel, so several outputs may pick one pixel: atomic adds.
template <typename T>
__device__ void max_pool2d_backward_impl(const T* grad, const i64* indices, T* dx, i64 planes, i64 plane_size,
                                         i64 out_plane_size) {
    const i64 total = planes * out_plane_size;
    GRID_STRIDE(idx, total) {
        const i64 k = indices[idx];
        if (k >= 0 && k < plane_size) atomicAdd(dx + (idx / out_plane_size) * plane_size + k, grad[idx]);
    }
}

#define DEFINE_POOL(T, S)                                                                                      \
    extern "C" __global__ void max_pool2d_##S(const T* x, T* out, i64* indices, i64 planes, i64 H, i64 W,     \
                                              i64 Ho, i64 Wo, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw,  \
                                              i64 dh, i64 dw) {                                                \
        max_pool2d_impl<T>(x, out, indices, planes, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw);             \
    }                                                                                                          \
    extern "C" __global__ void max_pool2d_backward_##S(const T* grad, const i64* indices, T* dx, i64 planes,  \
                                                       i64 plane_size, i64 out_plane_size) {                  \
        max_pool2d_backward_impl<T>(grad, indices, dx, planes, plane_size, out_plane_size);                    \
    }

FOR_EACH_FLOAT(DEFINE_POOL)
