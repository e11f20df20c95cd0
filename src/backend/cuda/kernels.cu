// The CUDA backend's element-wise, layout and reduction kernels, compiled at
// run time by NVRTC once per float type (`-DREAL=float` or `-DREAL=double`).
// Matrix products are cuBLAS's; nothing here sums in an order that depends
// on the launch (no atomics on floats), so two runs give the same bits.
typedef REAL real;

// +∞ without math.h (NVRTC has no standard headers).
__device__ __forceinline__ real real_inf() { return (real)__longlong_as_double(0x7ff0000000000000LL); }

__device__ __forceinline__ real safe_div(real a, real b) { return b == (real)0 ? (real)0 : a / b; }

// One element-wise operation per `op` (see `Ewise` in mod.rs).
extern "C" __global__ void ewise(int op, long long n, const real* a, const real* b, real* out, real p0, real p1) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        real x = a[i];
        real y = b[i];
        real r;
        switch (op) {
            case 0: r = x > (real)0 ? x : (real)0; break;                        // relu
            case 1: r = x + y; break;
            case 2: r = x - y; break;
            case 3: r = x * y; break;
            case 4: r = x > (real)0 ? y : (real)0; break;                        // relu gradient
            case 5: r = p0 * x; break;                                             // scale
            case 6: r = x + p0 * y; break;                                         // scaled add
            case 7: r = x < (real)0 ? -x : (x == (real)0 ? (real)0 : x); break;  // |x|, +0 for ±0
            case 8: r = p0; break;                                                 // fill
            case 9: {                                                              // stabilised divide
                real z = y;
                if (p1 != (real)0) z = z >= (real)0 ? z + p0 : z - p0;
                r = safe_div(x, z);
                break;
            }
            case 10: r = x > (real)0 ? x : (real)0; break;                         // positive part
            case 11: r = -x > (real)0 ? -x : (real)0; break;                       // negative part, as a magnitude
            case 12: r = x < (real)0 ? x : (real)0; break;                         // min(x, 0)
            case 13: r = x / p0; break;                                            // divide
            default: r = (real)0;
        }
        out[i] = r;
    }
}

// Unfolds `samples` samples of x (C×H×W each) into columns: col[s][(c,u,v)][(p,q)]
// = x_pad[s][c][p·sh+u][q·sw+v] (zero outside the input).
extern "C" __global__ void im2col(const real* x, real* col, int C, int H, int W, int kh, int kw, int sh, int sw,
                                  int pt, int pl, int Ho, int Wo, long long total) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long P = (long long)Ho * Wo;
        long long rows = (long long)C * kh * kw;
        int q = (int)(i % Wo);
        int p = (int)((i / Wo) % Ho);
        long long row = (i / P) % rows;
        long long s = i / (P * rows);
        int v = (int)(row % kw);
        int u = (int)((row / kw) % kh);
        int c = (int)(row / ((long long)kw * kh));
        int h = p * sh + u - pt;
        int w = q * sw + v - pl;
        real val = (real)0;
        if (h >= 0 && h < H && w >= 0 && w < W) val = x[((s * C + c) * H + h) * W + w];
        col[i] = val;
    }
}

// Folds columns back onto the input (the adjoint of im2col), one thread per
// input element gathering its kernel positions in a fixed order:
// mode 0: out = Σ; mode 1: out = m ⊙ Σ; mode 2: out -= m ⊙ Σ.
extern "C" __global__ void col2im(const real* col, real* out, const real* m, int mode, int C, int H, int W, int kh,
                                  int kw, int sh, int sw, int pt, int pl, int Ho, int Wo, long long total) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        int w = (int)(i % W);
        int h = (int)((i / W) % H);
        int c = (int)((i / ((long long)W * H)) % C);
        long long s = i / ((long long)W * H * C);
        long long P = (long long)Ho * Wo;
        const real* cs = col + s * (long long)C * kh * kw * P;
        real sum = (real)0;
        for (int u = 0; u < kh; ++u) {
            int hp = h + pt - u;
            if (hp < 0 || hp % sh != 0) continue;
            int p = hp / sh;
            if (p >= Ho) continue;
            for (int v = 0; v < kw; ++v) {
                int wp = w + pl - v;
                if (wp < 0 || wp % sw != 0) continue;
                int q = wp / sw;
                if (q >= Wo) continue;
                sum += cs[(((long long)c * kh + u) * kw + v) * P + (long long)p * Wo + q];
            }
        }
        if (mode == 0) out[i] = sum;
        else if (mode == 1) out[i] = m[i] * sum;
        else out[i] = out[i] - m[i] * sum;
    }
}

// The sectional rule's quotient for one section: with R^± the positive part
// of ±r, S = R^± ⊘ A where R^± > 0, else 0.
extern "C" __global__ void section_quotient(const real* r, const real* a, real* s, int negative, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        real v = negative ? -r[i] : r[i];
        real part = v > (real)0 ? v : (real)0;
        s[i] = part > (real)0 ? safe_div(part, a[i]) : (real)0;
    }
}

// One statistic per sample (one block each, `per` elements; a fixed tree, so
// the result does not depend on anything but the data): 0 sum, 1 count of
// non-zeros, 2 minimum, 3 maximum, 4 count of negatives, 5 sum of squares,
// 6 largest magnitude.
extern "C" __global__ void sample_stat(const real* x, real* out, long long per, int what) {
    __shared__ real part[256];
    const real* xs = x + blockIdx.x * per;
    real acc = what == 2 ? real_inf() : (what == 3 ? -real_inf() : (real)0);
    for (long long i = threadIdx.x; i < per; i += blockDim.x) {
        real v = xs[i];
        if (what == 0) acc += v;
        else if (what == 1) acc += v != (real)0 ? (real)1 : (real)0;
        else if (what == 2) acc = v < acc ? v : acc;
        else if (what == 3) acc = v > acc ? v : acc;
        else if (what == 4) acc += v < (real)0 ? (real)1 : (real)0;
        else if (what == 5) acc += v * v;
        else { real m = v < (real)0 ? -v : v; acc = m > acc ? m : acc; }
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int step = blockDim.x / 2; step > 0; step /= 2) {
        if (threadIdx.x < step) {
            real a = part[threadIdx.x], b = part[threadIdx.x + step];
            if (what == 2) part[threadIdx.x] = b < a ? b : a;
            else if (what == 3 || what == 6) part[threadIdx.x] = b > a ? b : a;
            else part[threadIdx.x] = a + b;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

// The sectional rule's doubling and shift: where c ≠ 0, 2c − Σr ⊘ #{c ≠ 0}.
extern "C" __global__ void double_and_shift(real* c, const real* total, const real* count, long long per, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long s = i / per;
        real shift = safe_div(total[s], count[s]);
        real v = c[i];
        if (v != (real)0) c[i] = (real)2 * v - shift;
    }
}

// y[n][o][p] += bias[o].
extern "C" __global__ void add_bias(real* y, const real* bias, int O, long long P, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        y[i] = y[i] + bias[(i / P) % O];
    }
}

// (x − mean[c]) · scale[c] + shift[c]; without the shift, x · scale[c].
extern "C" __global__ void channel_affine(const real* x, const real* mean, const real* scale, const real* shift,
                                          int with_shift, real* out, int C, long long P, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int c = (int)((i / P) % C);
        out[i] = with_shift ? (x[i] - mean[c]) * scale[c] + shift[c] : x[i] * scale[c];
    }
}

// out[i] = x[i] · values[i / per].
extern "C" __global__ void mul_per_sample(const real* x, const real* values, real* out, long long per, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        out[i] = x[i] * values[i / per];
    }
}

// out[i] = Σ_j parts[j·per + i], j = 0, 1, … in order (split-K's sum).
extern "C" __global__ void sum_parts(const real* parts, real* out, int count, long long per, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        real sum = parts[i];
        for (int j = 1; j < count; ++j) sum += parts[(long long)j * per + i];
        out[i] = sum;
    }
}

// out[i] = x[i] ⊘ values[i / per] (0 where the value is 0).
extern "C" __global__ void div_per_sample(const real* x, const real* values, real* out, long long per, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        out[i] = safe_div(x[i], values[i / per]);
    }
}

// out[i] = values[i / per].
extern "C" __global__ void fill_per_sample(real* out, const real* values, long long per, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        out[i] = values[i / per];
    }
}

// The z^B rule's last step: x ⊙ t_w − ℓ ⊙ t_+ − h ⊙ t_−, ℓ and h per sample.
extern "C" __global__ void zb_combine(const real* x, const real* tw, const real* tp, const real* tn, const real* low,
                                      const real* high, real* out, long long per, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long s = i / per;
        real o = x[i] * tw[i];
        out[i] = o - low[s] * tp[i] - high[s] * tn[i];
    }
}

// The residual sum's rule: shares of r in proportion to max(a,0)+1e-9 and max(b,0)+1e-9.
extern "C" __global__ void add_rule(const real* a, const real* b, const real* r, real* ra, real* rb, long long n) {
    const real eps = (real)1e-9;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        real at = (a[i] > (real)0 ? a[i] : (real)0) + eps;
        real bt = (b[i] > (real)0 ? b[i] : (real)0) + eps;
        real s = safe_div(r[i], at + bt);
        ra[i] = at * s;
        rb[i] = bt * s;
    }
}

// Max pooling over windows given by their row and column ranges, one thread
// per output; ties go to the first maximum in row-major order.
extern "C" __global__ void max_pool(const real* x, real* out, const int* r0, const int* r1, const int* c0,
                                    const int* c1, int H, int W, int Ho, int Wo, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int j = (int)(i % Wo);
        int k = (int)((i / Wo) % Ho);
        const real* plane = x + (i / ((long long)Wo * Ho)) * (long long)H * W;
        real best = -real_inf();
        for (int r = r0[k]; r < r1[k]; ++r)
            for (int q = c0[j]; q < c1[j]; ++q) {
                real v = plane[r * W + q];
                if (v > best) best = v;
            }
        out[i] = best;
    }
}

// Routing through max pooling with windows that do not overlap (each input
// in at most one window), one thread per output; `out` is zero beforehand.
// mode 0: the adjoint (g to the first maximum of x);
// mode 1: RSP's rule (x̃ = x + 1e-9; x̃ ⊙ (P ⊘ z) + x̃ ⊙ (N ⊘ z) at the first maximum of x̃).
extern "C" __global__ void max_pool_route(const real* x, const real* g, real* out, int mode, const int* r0,
                                          const int* r1, const int* c0, const int* c1, int H, int W, int Ho, int Wo,
                                          long long n) {
    const real eps = mode == 1 ? (real)1e-9 : (real)0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int j = (int)(i % Wo);
        int k = (int)((i / Wo) % Ho);
        long long base = (i / ((long long)Wo * Ho)) * (long long)H * W;
        real best = -real_inf();
        int at = r0[k] * W + c0[j];
        for (int r = r0[k]; r < r1[k]; ++r)
            for (int q = c0[j]; q < c1[j]; ++q) {
                real v = x[base + r * W + q] + eps;
                if (v > best) { best = v; at = r * W + q; }
            }
        real gv = g[i];
        if (mode == 0) {
            out[base + at] = (real)0 + gv;
        } else {
            real p = safe_div(gv > (real)0 ? gv : (real)0, best);
            real m = safe_div(gv < (real)0 ? gv : (real)0, best);
            real xt = x[base + at] + eps;
            out[base + at] = xt * p + xt * m;
        }
    }
}

// The flat index of the first non-finite element (atomicMin: the same
// answer whatever the order).
extern "C" __global__ void first_non_finite(const real* x, long long n, unsigned long long* first) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        real v = x[i];
        if (!isfinite(v)) atomicMin(first, (unsigned long long)i);
    }
}
