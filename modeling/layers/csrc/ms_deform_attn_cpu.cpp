// Multi-scale deformable attention sampling on the CPU: forward and backward of
// modeling.layers.ms_deform_attn.ms_deform_attn_sampling, one pass over the samples, no intermediates.
//
// Built at first use by modeling/layers/native_kernels.py (the system C++ compiler, no torch headers) and called
// through ctypes on contiguous tensors. Layouts (row-major):
//   value [B, S, M, D], locations [B, Q, M, L, P, 2] (x, y in [0, 1]), weights [B, Q, M, L, P],
//   output / grad_output [B, Q, M, D]; shapes [L, 2] (h, w) and starts [L] as int64.
// Coordinates follow grid_sample (bilinear, zeros padding, align_corners=False): x = ((2 loc - 1 + 1) w - 1) / 2.
// Threads: the forward splits the rows (b, q, m); the backward splits the (b, m) pairs, so that every thread owns
// the value-gradient rows it writes (a row (b, q, m) only reads values of head m of batch element b).
#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// bf16 values arrive as their raw 16 bits (the upper half of a float32)
struct BFloat16 {
  uint16_t bits;
};

template <typename T>
inline T widen(T x) {
  return x;
}
inline float widen(BFloat16 x) {
  const uint32_t bits = static_cast<uint32_t>(x.bits) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

template <typename T>
struct Corner {
  int64_t x0, y0;
  T wx[2], wy[2];  // left/right, top/bottom bilinear weights
};

template <typename T>
inline Corner<T> locate(T loc_x, T loc_y, int64_t h, int64_t w) {
  const T gx = 2 * loc_x - 1, gy = 2 * loc_y - 1;
  const T x = ((gx + 1) * static_cast<T>(w) - 1) / 2;
  const T y = ((gy + 1) * static_cast<T>(h) - 1) / 2;
  const T fx = std::floor(x), fy = std::floor(y);
  Corner<T> c;
  c.x0 = static_cast<int64_t>(fx);
  c.y0 = static_cast<int64_t>(fy);
  c.wx[0] = fx + 1 - x;
  c.wx[1] = x - fx;
  c.wy[0] = fy + 1 - y;
  c.wy[1] = y - fy;
  return c;
}

// Calls fn(dy, dx, token, weight) for each of the sample's four neighbours that lies on the h x w map: token is its
// index on the level, weight its bilinear weight times the attention weight a.
template <typename T, typename Fn>
inline void for_each_neighbour(const Corner<T>& cn, int64_t h, int64_t w, T a, Fn&& fn) {
  for (int dy = 0; dy < 2; ++dy) {
    const int64_t yy = cn.y0 + dy;
    if (yy < 0 || yy >= h) continue;
    for (int dx = 0; dx < 2; ++dx) {
      const int64_t xx = cn.x0 + dx;
      if (xx < 0 || xx >= w) continue;
      fn(dy, dx, yy * w + xx, cn.wy[dy] * cn.wx[dx] * a);
    }
  }
}

// V: the value's storage type (T, or BFloat16 read into float); T: everything else and the arithmetic
template <typename V, typename T>
void forward(const V* __restrict value, const T* __restrict loc, const T* __restrict attn, T* __restrict out,
             int64_t B, int64_t S, int64_t Q, int64_t M, int64_t D, int64_t L, int64_t P,
             const int64_t* shapes, const int64_t* starts, int threads) {
  const int64_t rows = B * Q * M;
  const int64_t stride = M * D;  // between consecutive tokens of one head
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n = 0; n < rows; ++n) {
    const int64_t m = n % M, b = n / (Q * M);
    const V* vbase = value + b * S * stride + m * D;
    const T* ln = loc + n * L * P * 2;
    const T* an = attn + n * L * P;
    T* __restrict o = out + n * D;
    for (int64_t c = 0; c < D; ++c) o[c] = 0;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
      const V* vlevel = vbase + starts[l] * stride;
      for (int64_t p = 0; p < P; ++p) {
        const int64_t k = l * P + p;
        const Corner<T> cn = locate(ln[2 * k], ln[2 * k + 1], h, w);
        for_each_neighbour(cn, h, w, an[k], [&](int, int, int64_t token, T weight) {
          const V* __restrict v = vlevel + token * stride;
          for (int64_t c = 0; c < D; ++c) o[c] += weight * widen(v[c]);
        });
      }
    }
  }
}

template <typename V, typename T>
void backward(const V* __restrict value, const T* __restrict loc, const T* __restrict attn,
              const T* __restrict grad_out, T* __restrict grad_value, T* __restrict grad_loc,
              T* __restrict grad_attn, int64_t B, int64_t S, int64_t Q, int64_t M, int64_t D, int64_t L, int64_t P,
              const int64_t* shapes, const int64_t* starts, int threads) {
  const int64_t stride = M * D;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t bm = 0; bm < B * M; ++bm) {
    const int64_t b = bm / M, m = bm % M;
    const V* vbase = value + b * S * stride + m * D;
    T* gvbase = grad_value + b * S * stride + m * D;
    for (int64_t q = 0; q < Q; ++q) {
      const int64_t n = (b * Q + q) * M + m;
      const T* ln = loc + n * L * P * 2;
      const T* an = attn + n * L * P;
      const T* __restrict g = grad_out + n * D;
      T* gl = grad_loc + n * L * P * 2;
      T* ga = grad_attn + n * L * P;
      for (int64_t l = 0; l < L; ++l) {
        const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
        const V* vlevel = vbase + starts[l] * stride;
        T* gvlevel = gvbase + starts[l] * stride;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t k = l * P + p;
          const Corner<T> cn = locate(ln[2 * k], ln[2 * k + 1], h, w);
          const T a = an[k];
          T dots[2][2] = {{0, 0}, {0, 0}};
          for_each_neighbour(cn, h, w, a, [&](int dy, int dx, int64_t token, T weight) {
            const V* __restrict v = vlevel + token * stride;
            T* __restrict gv = gvlevel + token * stride;
            T dot = 0;
            for (int64_t c = 0; c < D; ++c) {
              dot += widen(v[c]) * g[c];
              gv[c] += weight * g[c];
            }
            dots[dy][dx] = dot;
          });
          ga[k] = cn.wy[0] * (cn.wx[0] * dots[0][0] + cn.wx[1] * dots[0][1]) +
                  cn.wy[1] * (cn.wx[0] * dots[1][0] + cn.wx[1] * dots[1][1]);
          const T grad_x = a * (cn.wy[0] * (dots[0][1] - dots[0][0]) + cn.wy[1] * (dots[1][1] - dots[1][0]));
          const T grad_y = a * (cn.wx[0] * (dots[1][0] - dots[0][0]) + cn.wx[1] * (dots[1][1] - dots[0][1]));
          gl[2 * k] = grad_x * static_cast<T>(w);
          gl[2 * k + 1] = grad_y * static_cast<T>(h);
        }
      }
    }
  }
}

}  // namespace

#define SHAPE_ARGS int64_t B, int64_t S, int64_t Q, int64_t M, int64_t D, int64_t L, int64_t P, \
                   const int64_t *shapes, const int64_t *starts, int threads
#define SHAPE_NAMES B, S, Q, M, D, L, P, shapes, starts, threads

extern "C" {

int ms_deform_attn_cpu_abi_version() { return 2; }

// suffix: f32 and f64 (everything in that type), bf16 (a bf16 value; the rest, and the value gradient, float32)
void msda_forward_f32(const float* value, const float* loc, const float* attn, float* out, SHAPE_ARGS) {
  forward<float, float>(value, loc, attn, out, SHAPE_NAMES);
}
void msda_forward_f64(const double* value, const double* loc, const double* attn, double* out, SHAPE_ARGS) {
  forward<double, double>(value, loc, attn, out, SHAPE_NAMES);
}
void msda_forward_bf16(const BFloat16* value, const float* loc, const float* attn, float* out, SHAPE_ARGS) {
  forward<BFloat16, float>(value, loc, attn, out, SHAPE_NAMES);
}
void msda_backward_f32(const float* value, const float* loc, const float* attn, const float* grad_out,
                       float* grad_value, float* grad_loc, float* grad_attn, SHAPE_ARGS) {
  backward<float, float>(value, loc, attn, grad_out, grad_value, grad_loc, grad_attn, SHAPE_NAMES);
}
void msda_backward_f64(const double* value, const double* loc, const double* attn, const double* grad_out,
                       double* grad_value, double* grad_loc, double* grad_attn, SHAPE_ARGS) {
  backward<double, double>(value, loc, attn, grad_out, grad_value, grad_loc, grad_attn, SHAPE_NAMES);
}
void msda_backward_bf16(const BFloat16* value, const float* loc, const float* attn, const float* grad_out,
                        float* grad_value, float* grad_loc, float* grad_attn, SHAPE_ARGS) {
  backward<BFloat16, float>(value, loc, attn, grad_out, grad_value, grad_loc, grad_attn, SHAPE_NAMES);
}

}  // extern "C"
