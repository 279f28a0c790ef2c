// RoIAlign (forward, atomic backward, deterministic gather backward) and RoIPool (forward, backward) with
// torchvision's semantics and operation order. rois (K, 5): (batch_index, x1, y1, x2, y2) in image coordinates.
#include "common.cuh"

// torchvision's per-RoI geometry for RoIAlign, in the input's scalar type.
template <typename T>
struct AlignGeometry {
    i64 batch;
    T start_h, start_w, bin_h, bin_w;
    i64 grid_h, grid_w;
    T count;
};

template <typename T>
__device__ AlignGeometry<T> align_geometry(const T* roi, T scale, i64 PH, i64 PW, i64 sampling_ratio,
                                           bool aligned) {
    AlignGeometry<T> g;
    const T offset = aligned ? T(0.5) : T(0);
    g.batch = (i64)roi[0];
    g.start_w = roi[1] * scale - offset;
    g.start_h = roi[2] * scale - offset;
    T width = roi[3] * scale - offset - g.start_w;
    T height = roi[4] * scale - offset - g.start_h;
    if (!aligned) {
        width = width > T(1) ? width : T(1);
        height = height > T(1) ? height : T(1);
    }
    g.bin_h = height / (T)PH;
    g.bin_w = width / (T)PW;
    g.grid_h = sampling_ratio > 0 ? sampling_ratio : (i64)ceil(height / (T)PH);
    g.grid_w = sampling_ratio > 0 ? sampling_ratio : (i64)ceil(width / (T)PW);
    const i64 n = g.grid_h * g.grid_w;
    g.count = (T)(n > 1 ? n : 1);
    return g;
}

template <typename T>
__device__ __forceinline__ T sample_coordinate(T start, i64 bin, T bin_size, i64 s, i64 grid) {
    return start + (T)bin * bin_size + (T)(s + .5f) * bin_size / (T)grid;
}

// One axis of torchvision's bilinear_interpolate: false for a sample outside [-1, size]; otherwise the two
// neighbouring pixels (equal at the last one) and their weights. The 2-D weights are products of these.
template <typename T>
__device__ bool axis_taps(T v, i64 size, i64& lo, i64& hi, T& w_lo, T& w_hi) {
    if (v < T(-1) || v > (T)size) return false;
    if (v <= T(0)) v = T(0);
    lo = (i64)v;
    if (lo >= size - 1) {
        hi = lo = size - 1;
        v = (T)lo;
    } else {
        hi = lo + 1;
    }
    w_hi = v - (T)lo;
    w_lo = T(1) - w_hi;
    return true;
}

template <typename T>
__device__ void roi_align_forward_impl(const T* input, const T* rois, T* out, i64 K, i64 C, i64 H, i64 W,
                                       i64 PH, i64 PW, T scale, i64 sampling_ratio, bool aligned) {
    const i64 total = K * C * PH * PW;
    GRID_STRIDE(idx, total) {
        const i64 pw = idx % PW;
        const i64 ph = (idx / PW) % PH;
        const i64 c = (idx / (PW * PH)) % C;
        const i64 k = idx / (PW * PH * C);
        const AlignGeometry<T> g = align_geometry<T>(rois + k * 5, scale, PH, PW, sampling_ratio, aligned);
        const T* plane = input + (g.batch * C + c) * H * W;
        T acc = T(0);
        for (i64 iy = 0; iy < g.grid_h; ++iy) {
            i64 y0, y1;
            T hy, ly;
            const bool row_in = axis_taps<T>(sample_coordinate<T>(g.start_h, ph, g.bin_h, iy, g.grid_h), H, y0,
                                             y1, hy, ly);
            for (i64 ix = 0; ix < g.grid_w; ++ix) {
                i64 x0, x1;
                T hx, lx;
                const bool col_in = axis_taps<T>(sample_coordinate<T>(g.start_w, pw, g.bin_w, ix, g.grid_w), W,
                                                 x0, x1, hx, lx);
                if (!row_in || !col_in) continue;
                acc += hy * hx * plane[y0 * W + x0] + hy * lx * plane[y0 * W + x1] + ly * hx * plane[y1 * W + x0] +
                       ly * lx * plane[y1 * W + x1];
            }
        }
        out[idx] = acc / g.count;
    }
}

// torchvision's backward: one thread per output bin scatters to its samples' neighbours with atomic adds
// (fast; the summation order, hence the last bits, vary from run to run).
template <typename T>
__device__ void roi_align_backward_atomic_impl(const T* grad, const T* rois, T* dx, i64 K, i64 C, i64 H, i64 W,
                                               i64 PH, i64 PW, T scale, i64 sampling_ratio, bool aligned) {
    const i64 total = K * C * PH * PW;
    GRID_STRIDE(idx, total) {
        const i64 pw = idx % PW;
        const i64 ph = (idx / PW) % PH;
        const i64 c = (idx / (PW * PH)) % C;
        const i64 k = idx / (PW * PH * C);
        const AlignGeometry<T> g = align_geometry<T>(rois + k * 5, scale, PH, PW, sampling_ratio, aligned);
        T* plane = dx + (g.batch * C + c) * H * W;
        const T share = grad[idx] / g.count;
        for (i64 iy = 0; iy < g.grid_h; ++iy) {
            i64 y0, y1;
            T hy, ly;
            if (!axis_taps<T>(sample_coordinate<T>(g.start_h, ph, g.bin_h, iy, g.grid_h), H, y0, y1, hy, ly))
                continue;
            for (i64 ix = 0; ix < g.grid_w; ++ix) {
                i64 x0, x1;
                T hx, lx;
                if (!axis_taps<T>(sample_coordinate<T>(g.start_w, pw, g.bin_w, ix, g.grid_w), W, x0, x1, hx, lx))
                    continue;
                atomicAdd(plane + y0 * W + x0, share * hy * hx);
                atomicAdd(plane + y0 * W + x1, share * hy * lx);
                atomicAdd(plane + y1 * W + x0, share * ly * hx);
                atomicAdd(plane + y1 * W + x1, share * ly * lx);
            }
        }
    }
}

// Weight of pixel `target` along one axis in bin `bin` of a RoI: the sum over the bin's samples.
template <typename T>
__device__ T axis_bin_weight(T start, i64 bin, T bin_size, i64 grid, i64 size, i64 target) {
    T total = T(0);
    for (i64 s = 0; s < grid; ++s) {
        i64 lo, hi;
        T w_lo, w_hi;
        if (!axis_taps<T>(sample_coordinate<T>(start, bin, bin_size, s, grid), size, lo, hi, w_lo, w_hi)) continue;
        if (lo == target) total += w_lo;
        if (hi == target) total += w_hi;
    }
    return total;
}

// Deterministic backward as a gather: one thread per input pixel visits the RoIs of its image in index order.
// RoIAlign is separable, so the pixel's gradient from RoI k is sum_ph Ay[ph] * sum_pw Ax[pw] * G[k, c, ph, pw]
// / count; the sums run in a fixed order, so the result is bitwise reproducible.
template <typename T>
__device__ void roi_align_backward_gather_impl(const T* grad, const T* rois, T* dx, i64 K, i64 N, i64 C, i64 H,
                                               i64 W, i64 PH, i64 PW, T scale, i64 sampling_ratio, bool aligned) {
    const i64 total = N * C * H * W;
    GRID_STRIDE(idx, total) {
        const i64 x = idx % W;
        const i64 y = (idx / W) % H;
        const i64 c = (idx / (W * H)) % C;
        const i64 n = idx / (W * H * C);
        T acc = T(0);
        for (i64 k = 0; k < K; ++k) {
            const AlignGeometry<T> g = align_geometry<T>(rois + k * 5, scale, PH, PW, sampling_ratio, aligned);
            if (g.batch != n) continue;
            // Samples lie in [start, start + PH * bin]; a pixel more than two away from that gets no weight.
            if ((T)y < g.start_h - T(2) || (T)y > g.start_h + (T)PH * g.bin_h + T(2)) continue;
            if ((T)x < g.start_w - T(2) || (T)x > g.start_w + (T)PW * g.bin_w + T(2)) continue;
            const T* gk = grad + (k * C + c) * PH * PW;
            T roi_sum = T(0);
            for (i64 ph = 0; ph < PH; ++ph) {
                const T wy = axis_bin_weight<T>(g.start_h, ph, g.bin_h, g.grid_h, H, y);
                if (wy == T(0)) continue;
                T row = T(0);
                for (i64 pw = 0; pw < PW; ++pw) {
                    const T wx = axis_bin_weight<T>(g.start_w, pw, g.bin_w, g.grid_w, W, x);
                    row += wx * gk[ph * PW + pw];
                }
                roi_sum += wy * row;
            }
            acc += roi_sum / g.count;
        }
        dx[idx] = acc;
    }
}

// RoIPool: torchvision's integer bins (corners rounded half away from zero, at least 1 x 1, clamped to the map);
// an empty bin gives 0 and argmax -1, otherwise the first maximum above -FLT_MAX in row-major order wins.
template <typename T>
__device__ void roi_pool_forward_impl(const T* input, const T* rois, T* out, i64* argmax, i64 K, i64 C, i64 H,
                                      i64 W, i64 PH, i64 PW, T scale) {
    const i64 total = K * C * PH * PW;
    GRID_STRIDE(idx, total) {
        const i64 pw = idx % PW;
        const i64 ph = (idx / PW) % PH;
        const i64 c = (idx / (PW * PH)) % C;
        const i64 k = idx / (PW * PH * C);
        const T* roi = rois + k * 5;
        const i64 batch = (i64)roi[0];
        const i64 start_w = (i64)round(roi[1] * scale);
        const i64 start_h = (i64)round(roi[2] * scale);
        const i64 end_w = (i64)round(roi[3] * scale);
        const i64 end_h = (i64)round(roi[4] * scale);
        const i64 width = max(end_w - start_w + 1, (i64)1);
        const i64 height = max(end_h - start_h + 1, (i64)1);
        const T bin_h = (T)height / (T)PH;
        const T bin_w = (T)width / (T)PW;
        i64 hstart = (i64)floor((T)ph * bin_h);
        i64 wstart = (i64)floor((T)pw * bin_w);
        i64 hend = (i64)ceil((T)(ph + 1) * bin_h);
        i64 wend = (i64)ceil((T)(pw + 1) * bin_w);
        hstart = min(max(hstart + start_h, (i64)0), H);
        hend = min(max(hend + start_h, (i64)0), H);
        wstart = min(max(wstart + start_w, (i64)0), W);
        wend = min(max(wend + start_w, (i64)0), W);
        const bool empty = hend <= hstart || wend <= wstart;
        // -FLT_MAX for double too, as torchvision.
        T best = empty ? T(0) : (T)(-3.402823466e+38f);
        i64 best_index = -1;
        const T* plane = input + (batch * C + c) * H * W;
        for (i64 yy = hstart; yy < hend; ++yy) {
            for (i64 xx = wstart; xx < wend; ++xx) {
                const i64 i = yy * W + xx;
                if (plane[i] > best) {
                    best = plane[i];
                    best_index = i;
                }
            }
        }
        out[idx] = best;
        argmax[idx] = best_index;
    }
}

template <typename T>
__device__ void roi_pool_backward_impl(const T* grad, const T* rois, const i64* argmax, T* dx, i64 K, i64 C,
                                       i64 H, i64 W, i64 PH, i64 PW) {
    const i64 total = K * C * PH * PW;
    GRID_STRIDE(idx, total) {
        const i64 a = argmax[idx];
        if (a < 0) continue;
        const i64 c = (idx / (PW * PH)) % C;
        const i64 k = idx / (PW * PH * C);
        const i64 batch = (i64)rois[k * 5];
        atomicAdd(dx + (batch * C + c) * H * W + a, grad[idx]);
    }
}

#define ALIGN_ARGS(T) i64 PH, i64 PW, T scale, i64 sampling_ratio, int aligned
#define DEFINE_ROI(T, S)                                                                                        \
    extern "C" __global__ void roi_align_forward_##S(const T* input, const T* rois, T* out, i64 K, i64 C, i64 H, \
                                                     i64 W, ALIGN_ARGS(T)) {                                       \
        roi_align_forward_impl<T>(input, rois, out, K, C, H, W, PH, PW, scale, sampling_ratio, aligned != 0);   \
    }                                                                                                           \
    extern "C" __global__ void roi_align_backward_atomic_##S(const T* grad, const T* rois, T* dx, i64 K, i64 C, \
                                                             i64 H, i64 W, ALIGN_ARGS(T)) {                        \
        roi_align_backward_atomic_impl<T>(grad, rois, dx, K, C, H, W, PH, PW, scale, sampling_ratio,            \
                                          aligned != 0);                                                        \
    }                                                                                                           \
    extern "C" __global__ void roi_align_backward_gather_##S(const T* grad, const T* rois, T* dx, i64 K, i64 N, \
                                                             i64 C, i64 H, i64 W, ALIGN_ARGS(T)) {                 \
        roi_align_backward_gather_impl<T>(grad, rois, dx, K, N, C, H, W, PH, PW, scale, sampling_ratio,         \
                                          aligned != 0);                                                        \
    }                                                                                                           \
    extern "C" __global__ void roi_pool_forward_##S(const T* input, const T* rois, T* out, i64* argmax, i64 K,  \
                                                    i64 C, i64 H, i64 W, i64 PH, i64 PW, T scale) {             \
        roi_pool_forward_impl<T>(input, rois, out, argmax, K, C, H, W, PH, PW, scale);                          \
    }                                                                                                           \
    extern "C" __global__ void roi_pool_backward_##S(const T* grad, const T* rois, const i64* argmax, T* dx,     \
                                                     i64 K, i64 C, i64 H, i64 W, i64 PH, i64 PW) {              \
        roi_pool_backward_impl<T>(grad, rois, argmax, dx, K, C, H, W, PH, PW);                                  \
    }

FOR_EACH_FLOAT(DEFINE_ROI)
