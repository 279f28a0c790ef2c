// 2-D convolution (NCHW): im2col / col2im around cuBLAS GEMMs done by the host (cupy.matmul), and direct
// kernels for depthwise convolution (one input channel per group), where a GEMM would have K = kh * kw only.
#include "common.cuh"

// cols (nb, C * kh * kw, Ho * Wo), row (c * kh + i) * kw + j: the weight (O, C/G, kh, kw) reshaped to
// (G, O/G, C/G * kh * kw) multiplies it group by group without any transpose.
template <typename T>
__device__ void im2col_impl(const T* x, T* cols, i64 nb, i64 C, i64 H, i64 W, i64 kh, i64 kw, i64 sh, i64 sw,
                            i64 ph, i64 pw, i64 dh, i64 dw, i64 Ho, i64 Wo) {
    const i64 total = nb * C * kh * kw * Ho * Wo;
    GRID_STRIDE(idx, total) {
        i64 r = idx;
        const i64 ox = r % Wo; r /= Wo;
        const i64 oy = r % Ho; r /= Ho;
        const i64 j = r % kw; r /= kw;
        const i64 i = r % kh; r /= kh;
        const i64 c = r % C;
        const i64 n = r / C;
        const i64 y = oy * sh - ph + i * dh;
        const i64 xx = ox * sw - pw + j * dw;
        cols[idx] = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[((n * C + c) * H + y) * W + xx] : T(0);
    }
}

// The adjoint of im2col as a gather: one thread per input pixel sums the columns that read it, in a fixed
// order, so the input gradient needs no atomics and is deterministic.
template <typename T>
__device__ void col2im_impl(const T* cols, T* dx, i64 nb, i64 C, i64 H, i64 W, i64 kh, i64 kw, i64 sh, i64 sw,
                            i64 ph, i64 pw, i64 dh, i64 dw, i64 Ho, i64 Wo) {
    const i64 total = nb * C * H * W;
    const i64 P = Ho * Wo;
    GRID_STRIDE(idx, total) {
        i64 r = idx;
        const i64 xx = r % W; r /= W;
        const i64 y = r % H; r /= H;
        const i64 c = r % C;
        const i64 n = r / C;
        T acc = T(0);
        for (i64 i = 0; i < kh; ++i) {
            const i64 ynum = y + ph - i * dh;
            if (ynum < 0 || ynum % sh != 0) continue;
            const i64 oy = ynum / sh;
            if (oy >= Ho) continue;
            for (i64 j = 0; j < kw; ++j) {
                const i64 xnum = xx + pw - j * dw;
                if (xnum < 0 || xnum % sw != 0) continue;
                const i64 ox = xnum / sw;
                if (ox >= Wo) continue;
                acc += cols[(((n * C + c) * kh + i) * kw + j) * P + oy * Wo + ox];
            }
        }
        dx[idx] = acc;
    }
}

// Depthwise: w (O, 1, kh, kw) with O = C * m; output channel o reads input channel o / m.
template <typename T>
__device__ void depthwise_forward_impl(const T* x, const T* w, T* out, i64 N, i64 C, i64 H, i64 W, i64 O,
                                       i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw, i64 Ho,
                                       i64 Wo) {
    const i64 total = N * O * Ho * Wo;
    const i64 m = O / C;
    GRID_STRIDE(idx, total) {
        i64 r = idx;
        const i64 ox = r % Wo; r /= Wo;
        const i64 oy = r % Ho; r /= Ho;
        const i64 o = r % O;
        const i64 n = r / O;
        const T* plane = x + (n * C + o / m) * H * W;
        const T* taps = w + o * kh * kw;
        T acc = T(0);
        for (i64 i = 0; i < kh; ++i) {
            const i64 y = oy * sh - ph + i * dh;
            if (y < 0 || y >= H) continue;
            for (i64 j = 0; j < kw; ++j) {
                const i64 xx = ox * sw - pw + j * dw;
                if (xx < 0 || xx >= W) continue;
                acc += plane[y * W + xx] * taps[i * kw + j];
            }
        }
        out[idx] = acc;
    }
}

template <typename T>
__device__ void depthwise_grad_input_impl(const T* go, const T* w, T* dx, i64 N, i64 C, i64 H, i64 W, i64 O,
                                          i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw,
                                          i64 Ho, i64 Wo) {
    const i64 total = N * C * H * W;
    const i64 m = O / C;
    GRID_STRIDE(idx, total) {
        i64 r = idx;
        const i64 xx = r % W; r /= W;
        const i64 y = r % H; r /= H;
        const i64 c = r % C;
        const i64 n = r / C;
        T acc = T(0);
        for (i64 o = c * m; o < (c + 1) * m; ++o) {
            const T* g = go + (n * O + o) * Ho * Wo;
            const T* taps = w + o * kh * kw;
            for (i64 i = 0; i < kh; ++i) {
                const i64 ynum = y + ph - i * dh;
                if (ynum < 0 || ynum % sh != 0) continue;
                const i64 oy = ynum / sh;
                if (oy >= Ho) continue;
                for (i64 j = 0; j < kw; ++j) {
                    const i64 xnum = xx + pw - j * dw;
                    if (xnum < 0 || xnum % sw != 0) continue;
                    const i64 ox = xnum / sw;
                    if (ox >= Wo) continue;
                    acc += g[oy * Wo + ox] * taps[i * kw + j];
                }
            }
        }
        dx[idx] = acc;
    }
}

// One block per weight element reduces over (N, Ho, Wo): a fixed-shape tree in shared memory, so the
// weight gradient is deterministic too. blockDim.x must be a power of two <= DW_THREADS (the host launches
// DW_THREADS; the host-emulation tests run one thread).
#define DW_THREADS 256

template <typename T>
__device__ void depthwise_grad_weight_impl(const T* x, const T* go, T* dw_out, i64 N, i64 C, i64 H, i64 W, i64 O,
                                           i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw,
                                           i64 Ho, i64 Wo) {
    __shared__ T partial[DW_THREADS];
    const i64 m = O / C;
    const i64 per_image = Ho * Wo;
    for (i64 e = blockIdx.x; e < O * kh * kw; e += gridDim.x) {
        const i64 j = e % kw;
        const i64 i = (e / kw) % kh;
        const i64 o = e / (kh * kw);
        const i64 c = o / m;
        T acc = T(0);
        for (i64 t = threadIdx.x; t < N * per_image; t += blockDim.x) {
            const i64 n = t / per_image;
            const i64 oy = (t % per_image) / Wo;
            const i64 ox = t % Wo;
            const i64 y = oy * sh - ph + i * dh;
            const i64 xx = ox * sw - pw + j * dw;
            if (y >= 0 && y < H && xx >= 0 && xx < W)
                acc += go[((n * O + o) * Ho + oy) * Wo + ox] * x[((n * C + c) * H + y) * W + xx];
        }
        partial[threadIdx.x] = acc;
        __syncthreads();
        for (int half = blockDim.x / 2; half > 0; half /= 2) {
            if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
            __syncthreads();
        }
        if (threadIdx.x == 0) dw_out[e] = partial[0];
        __syncthreads();
    }
}

#define CONV_GEOMETRY i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw, i64 Ho, i64 Wo
#define CONV_GEOMETRY_ARGS kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo

#define DEFINE_CONV(T, S)                                                                                        \
    extern "C" __global__ void im2col_##S(const T* x, T* cols, i64 nb, i64 C, i64 H, i64 W, CONV_GEOMETRY) {   \
        im2col_impl<T>(x, cols, nb, C, H, W, CONV_GEOMETRY_ARGS);                                              \
    }                                                                                                          \
    extern "C" __global__ void col2im_##S(const T* cols, T* dx, i64 nb, i64 C, i64 H, i64 W, CONV_GEOMETRY) {  \
        col2im_impl<T>(cols, dx, nb, C, H, W, CONV_GEOMETRY_ARGS);                                             \
    }                                                                                                          \
    extern "C" __global__ void depthwise_forward_##S(const T* x, const T* w, T* out, i64 N, i64 C, i64 H,      \
                                                     i64 W, i64 O, CONV_GEOMETRY) {                            \
        depthwise_forward_impl<T>(x, w, out, N, C, H, W, O, CONV_GEOMETRY_ARGS);                               \
    }                                                                                                          \
    extern "C" __global__ void depthwise_grad_input_##S(const T* go, const T* w, T* dx, i64 N, i64 C, i64 H,   \
                                                        i64 W, i64 O, CONV_GEOMETRY) {                         \
        depthwise_grad_input_impl<T>(go, w, dx, N, C, H, W, O, CONV_GEOMETRY_ARGS);                            \
    }                                                                                                          \
    extern "C" __global__ void depthwise_grad_weight_##S(const T* x, const T* go, T* dw_out, i64 N, i64 C,     \
                                                         i64 H, i64 W, i64 O, CONV_GEOMETRY) {                 \
        depthwise_grad_weight_impl<T>(x, go, dw_out, N, C, H, W, O, CONV_GEOMETRY_ARGS);                       \
    }

FOR_EACH_FLOAT(DEFINE_CONV)
