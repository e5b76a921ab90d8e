// The x-sized passes of the cpu kernels as TensorFlow CPU ops, for any input shape.
//
// XLA compiles the cpu kernels per static shape; a stream of new shapes
// (detection, multi-resolution evaluation, a `tf.function` with `None`
// dimensions) runs these ops instead, compiled once per machine
// (`evonorm_tf.kernels.native`). Each op is one pass over x (and dy): the
// per-(sample, channel) sums, or the elementwise output y or dx. The small
// per-(sample, channel) arithmetic between them stays in TensorFlow.
//
// Layout: x and dy are `[N, S, C]` (channels_last, spatial positions
// flattened), in float32, float16 or bfloat16; every statistic is float32,
// `[N, C]` per (sample, channel) or `[C]` per channel; y and dx have x's
// dtype. Sums accumulate in double, per thread-pool shard, then per
// (sample, channel) in a fixed order (results do not depend on the number of
// threads). The elementwise formulas are those of the XLA kernels, in float32.

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace evonorm_tf {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
namespace errors = ::tensorflow::errors;

using Row = Eigen::Array<float, Eigen::Dynamic, 1>;
using RowMap = Eigen::Map<Row>;
using ConstRowMap = Eigen::Map<const Row>;

// Arrays of scratch space, each aligned to 64 bytes (Eigen then needs no
// scalar prologue before its vectorised loop).
class Scratch {
 public:
  Scratch(int arrays, int64_t length) : stride_((length + 15) / 16 * 16), data_(arrays * stride_) {}
  float* operator[](int i) { return data_.data() + i * stride_; }

 private:
  int64_t stride_;
  std::vector<float, Eigen::aligned_allocator<float>> data_;
};

// 2⁻⁸⁰: the scale of the twin sums of squares (evonorm_tf.statistics.DOWNSCALE).
constexpr double kDownscale = 8.271806125530277e-25;
// Work per shard of a parallel pass, in elements.
constexpr int64_t kShardElements = 1 << 15;

float ToFloat32(double value) {
  // Beyond float32: inf of its sign, as a float32 sum would give.
  if (value > FLT_MAX) return std::numeric_limits<float>::infinity();
  if (value < -FLT_MAX) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(value);
}

// `count` values as float32: the data itself, or widened into `buffer`.
template <typename T>
const float* Widened(const T* data, int64_t count, float* buffer) {
  for (int64_t i = 0; i < count; ++i) buffer[i] = static_cast<float>(data[i]);
  return buffer;
}
template <>
const float* Widened<float>(const float* data, int64_t, float*) {
  return data;
}

// Where float32 results for `out` are written: `out` itself, or `buffer` (then `Narrowed`).
template <typename T>
float* Target(T* out, float* buffer) {
  return buffer;
}
template <>
float* Target<float>(float* out, float*) {
  return out;
}

// float32 `values` into `out` in its dtype, rounded to nearest even (TensorFlow's cast); float32 is in place.
template <typename T>
void Narrowed(const float* values, int64_t count, T* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<T>(values[i]);
}
template <>
void Narrowed<float>(const float*, int64_t, float*) {}

// Splits the N·S rows into shards of whole rows within one sample; `fn(n, row_begin, row_end, shard)`.
struct Shards {
  Shards(int64_t batch, int64_t spatial, int64_t channels) : batch(batch), spatial(spatial) {
    const int64_t rows = std::max<int64_t>(1, kShardElements / std::max<int64_t>(channels, 1));
    per_sample = std::max<int64_t>(1, (spatial + rows - 1) / rows);
    rows_per_shard = std::max<int64_t>(1, (spatial + per_sample - 1) / per_sample);
  }
  int64_t count() const { return batch * per_sample; }
  template <typename F>
  void Run(OpKernelContext* context, int64_t channels, F fn) const {
    auto* pool = context->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t cost = rows_per_shard * channels * 8;
    pool->ParallelFor(count(), cost, [&](int64_t begin, int64_t end) {
      for (int64_t shard = begin; shard < end; ++shard) {
        const int64_t n = shard / per_sample;
        const int64_t first = (shard % per_sample) * rows_per_shard;
        const int64_t last = std::min(spatial, first + rows_per_shard);
        if (first < last) fn(n, first, last, shard);
      }
    });
  }
  int64_t batch, spatial, per_sample, rows_per_shard;
};

absl::Status CheckActivations(const Tensor& x, const char* name) {
  if (x.dims() != 3) {
    return errors::InvalidArgument(name, " must be [N, S, C], received shape ", x.shape().DebugString());
  }
  return absl::OkStatus();
}

absl::Status CheckStat(const Tensor& t, int64_t batch, int64_t channels, const char* name) {
  if (t.dims() != 2 || t.dim_size(0) != batch || t.dim_size(1) != channels) {
    return errors::InvalidArgument(name, " must be [", batch, ", ", channels, "], received shape ",
                                   t.shape().DebugString());
  }
  return absl::OkStatus();
}

absl::Status CheckVector(const Tensor& t, int64_t channels, const char* name) {
  if (t.dims() != 1 || t.dim_size(0) != channels) {
    return errors::InvalidArgument(name, " must be [", channels, "], received shape ", t.shape().DebugString());
  }
  return absl::OkStatus();
}

absl::Status StatShape(InferenceContext* c, int outputs) {
  ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
  for (int i = 0; i < outputs; ++i) c->set_output(i, c->Matrix(c->Dim(x, 0), c->Dim(x, 2)));
  return absl::OkStatus();
}

// Per-(sample, channel) double sums of `terms` functions of one row, summed over shards in order.
// `row_terms(n, r, sums)` adds its row's terms to `sums` ([k, C]).
template <typename F>
std::vector<double> ChannelSums(OpKernelContext* context, int64_t batch, int64_t spatial, int64_t channels, int k,
                                F row_terms) {
  Shards shards(batch, spatial, channels);
  std::vector<double> partial(shards.count() * k * channels, 0.0);
  shards.Run(context, channels, [&](int64_t n, int64_t first, int64_t last, int64_t shard) {
    double* sums = partial.data() + shard * k * channels;
    for (int64_t r = first; r < last; ++r) row_terms(n, r, sums);
  });
  std::vector<double> total(batch * k * channels, 0.0);
  for (int64_t shard = 0; shard < shards.count(); ++shard) {
    const int64_t n = shard / shards.per_sample;
    const double* sums = partial.data() + shard * k * channels;
    double* out = total.data() + n * k * channels;
    for (int64_t i = 0; i < k * channels; ++i) out[i] += sums[i];
  }
  return total;
}

// -- statistics --------------------------------------------------------------------

// (shift, mean_delta, m2, m2_small) per (sample, channel), as cpu_sums.channel_moments:
// shift = x at the first spatial position, mean = shift + mean_delta, m2 = Σ(x − mean)²
// (inf beyond float32), m2_small the same of the values times 2⁻⁸⁰.
template <typename T>
class ChannelMomentsOp : public OpKernel {
 public:
  explicit ChannelMomentsOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    OP_REQUIRES(context, spatial > 0, errors::InvalidArgument("x must have spatial positions, received shape ",
                                                              x.shape().DebugString()));
    Tensor* out[4];
    for (int i = 0; i < 4; ++i) {
      OP_REQUIRES_OK(context, context->allocate_output(i, TensorShape({batch, channels}), &out[i]));
    }
    const T* data = x.flat<T>().data();
    const int64_t step = spatial * channels;
    auto sums = ChannelSums(context, batch, spatial, channels, 2, [&](int64_t n, int64_t r, double* s) {
      const T* first = data + n * step;
      const T* row = first + r * channels;
      double* s1 = s;
      double* s2 = s + channels;
      for (int64_t c = 0; c < channels; ++c) {
        const double d = static_cast<double>(static_cast<float>(row[c])) -
                         static_cast<double>(static_cast<float>(first[c]));
        s1[c] += d;
        s2[c] += d * d;
      }
    });
    float* shift = out[0]->flat<float>().data();
    float* mean_delta = out[1]->flat<float>().data();
    float* m2 = out[2]->flat<float>().data();
    float* m2_small = out[3]->flat<float>().data();
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t c = 0; c < channels; ++c) {
        const double sum_d = sums[(n * 2) * channels + c], sum_d2 = sums[(n * 2 + 1) * channels + c];
        const double delta = sum_d / spatial;
        const double centred = std::max(sum_d2 - sum_d * delta, 0.0);
        const int64_t i = n * channels + c;
        shift[i] = static_cast<float>(data[n * step + c]);
        mean_delta[i] = static_cast<float>(delta);
        m2[i] = ToFloat32(centred);
        m2_small[i] = static_cast<float>((centred * kDownscale) * kDownscale);
      }
    }
  }
};

// (mean of x², mean of (x·2⁻⁸⁰)²) per (sample, channel), as cpu_sums.mean_square.
template <typename T>
class MeanSquareOp : public OpKernel {
 public:
  explicit MeanSquareOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    Tensor* out[2];
    for (int i = 0; i < 2; ++i) {
      OP_REQUIRES_OK(context, context->allocate_output(i, TensorShape({batch, channels}), &out[i]));
    }
    const T* data = x.flat<T>().data();
    auto sums = ChannelSums(context, batch, spatial, channels, 1, [&](int64_t n, int64_t r, double* s) {
      const T* row = data + (n * spatial + r) * channels;
      for (int64_t c = 0; c < channels; ++c) {
        const double value = static_cast<float>(row[c]);
        s[c] += value * value;
      }
    });
    for (int64_t i = 0; i < batch * channels; ++i) {
      const double mean = sums[i] / static_cast<double>(spatial);
      out[0]->flat<float>()(i) = ToFloat32(mean);
      out[1]->flat<float>()(i) = static_cast<float>((mean * kDownscale) * kDownscale);
    }
  }
};

// -- elementwise passes --------------------------------------------------------------

// Elements per block: the pass runs block by block (each a few arrays of L1 cache), whole rows each.
constexpr int64_t kBlockElements = 1024;

// Runs `fn(n, offset, rows)` over blocks of whole rows of x: sample n, first element `offset`.
template <typename F>
void ForBlocks(OpKernelContext* context, int64_t batch, int64_t spatial, int64_t channels, F fn) {
  const int64_t block_rows = std::max<int64_t>(1, kBlockElements / std::max<int64_t>(channels, 1));
  Shards(batch, spatial, channels).Run(context, channels, [&](int64_t n, int64_t first, int64_t last, int64_t) {
    for (int64_t r = first; r < last; r += block_rows) {
      fn(n, (n * spatial + r) * channels, std::min(block_rows, last - r));
    }
  });
}

// The same, for passes that sum: `fn(n, offset, rows, sums)` adds to `sums` (`[k, C]`, double);
// returns the sums per (sample, channel) `[N, k, C]`, added over the shards in a fixed order.
template <typename F>
std::vector<double> SumBlocks(OpKernelContext* context, int64_t batch, int64_t spatial, int64_t channels, int k,
                              F fn) {
  const int64_t block_rows = std::max<int64_t>(1, kBlockElements / std::max<int64_t>(channels, 1));
  Shards shards(batch, spatial, channels);
  std::vector<double> partial(shards.count() * k * channels, 0.0);
  shards.Run(context, channels, [&](int64_t n, int64_t first, int64_t last, int64_t shard) {
    double* sums = partial.data() + shard * k * channels;
    for (int64_t r = first; r < last; r += block_rows) {
      fn(n, (n * spatial + r) * channels, std::min(block_rows, last - r), sums);
    }
  });
  std::vector<double> total(batch * k * channels, 0.0);
  for (int64_t shard = 0; shard < shards.count(); ++shard) {
    const int64_t n = shard / shards.per_sample;
    for (int64_t i = 0; i < k * channels; ++i) total[n * k * channels + i] += partial[shard * k * channels + i];
  }
  return total;
}

// Adds `rows` rows of `term` (`[rows, C]`) to `sums` (`[C]`, double).
inline void AddRows(const float* __restrict term, int64_t rows, int64_t channels, double* __restrict sums) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) sums[c] += term[r * channels + c];
  }
}

void WriteSums(OpKernelContext* context, const std::vector<double>& sums, int64_t batch, int64_t channels, int k) {
  for (int i = 0; i < k; ++i) {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(i, TensorShape({batch, channels}), &out));
    float* values = out->flat<float>().data();
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t c = 0; c < channels; ++c) values[n * channels + c] = ToFloat32(sums[(n * k + i) * channels + c]);
    }
  }
}

absl::Status CheckLike(const Tensor& dy, const Tensor& x) {
  if (dy.shape() != x.shape()) {
    return errors::InvalidArgument("dy must have x's shape ", x.shape().DebugString(), ", received ",
                                   dy.shape().DebugString());
  }
  return absl::OkStatus();
}

// -- S-series ----------------------------------------------------------------------

// z = v·x and σ(z) over a block (TensorFlow's own sigmoid: Eigen's logistic, vectorised).
void Sigmoid(const float* __restrict x, const float* __restrict v, int64_t rows, int64_t channels,
             float* __restrict z, float* __restrict sigmoid) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) z[r * channels + c] = v[c] * x[r * channels + c];
  }
  const int64_t count = rows * channels;
  RowMap(sigmoid, count) = ConstRowMap(z, count).unaryExpr(Eigen::internal::scalar_logistic_op<float>());
}

// y = x·σ(v·x)·scale + β; scale [N, C], v and β [C].
template <typename T>
class SOutputOp : public OpKernel {
 public:
  explicit SOutputOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor &x = context->input(0), &v = context->input(1), &scale = context->input(2),
                 &beta = context->input(3);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    OP_REQUIRES_OK(context, CheckVector(v, channels, "v"));
    OP_REQUIRES_OK(context, CheckStat(scale, batch, channels, "scale"));
    OP_REQUIRES_OK(context, CheckVector(beta, channels, "beta"));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &y));
    const T* xs = x.flat<T>().data();
    T* ys = y->flat<T>().data();
    const float *vs = v.flat<float>().data(), *scales = scale.flat<float>().data(), *b = beta.flat<float>().data();
    ForBlocks(context, batch, spatial, channels, [&](int64_t n, int64_t offset, int64_t rows) {
      Scratch buffer(4, rows * channels);
      const float* __restrict xb = Widened(xs + offset, rows * channels, buffer[0]);
      float *z = buffer[1], *s = buffer[2];
      Sigmoid(xb, vs, rows, channels, z, s);
      const float* __restrict sc = scales + n * channels;
      float* __restrict out = Target(ys + offset, buffer[3]);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < channels; ++c) {
          const int64_t i = r * channels + c;
          out[i] = xb[i] * s[i] * sc[c] + b[c];
        }
      }
      Narrowed(out, rows * channels, ys + offset);
    });
  }
};

// Per (sample, channel): Σ dy, Σ dy·f, Σ dy·f·x·(1 − σ), f = x·σ(v·x).
template <typename T>
class SBackwardSumsOp : public OpKernel {
 public:
  explicit SBackwardSumsOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor &x = context->input(0), &dy = context->input(1), &v = context->input(2);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    OP_REQUIRES_OK(context, CheckLike(dy, x));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    OP_REQUIRES_OK(context, CheckVector(v, channels, "v"));
    const T *xs = x.flat<T>().data(), *dys = dy.flat<T>().data();
    const float* vs = v.flat<float>().data();
    auto sums = SumBlocks(context, batch, spatial, channels, 3,
                          [&](int64_t n, int64_t offset, int64_t rows, double* sums) {
      const int64_t count = rows * channels;
      Scratch buffer(6, count);
      const float* __restrict xb = Widened(xs + offset, count, buffer[0]);
      const float* __restrict dyb = Widened(dys + offset, count, buffer[1]);
      float *z = buffer[2], *s = buffer[3];
      float *__restrict f = buffer[4], *__restrict g = buffer[5];
      Sigmoid(xb, vs, rows, channels, z, s);
      for (int64_t i = 0; i < count; ++i) {
        f[i] = dyb[i] * xb[i] * s[i];
        // x·(1 − σ) before the product: x² alone overflows float32 where σ' is 0.
        g[i] = f[i] * (xb[i] * (1.0f - s[i]));
      }
      AddRows(dyb, rows, channels, sums);
      AddRows(f, rows, channels, sums + channels);
      AddRows(g, rows, channels, sums + 2 * channels);
    });
    WriteSums(context, sums, batch, channels, 3);
  }
};

// dx = dy·scale·σ·(1 + z·(1 − σ)) + coefficient·((x·unit − origin·unit) − offset·unit), z = v·x.
template <typename T>
class SBackwardDxOp : public OpKernel {
 public:
  explicit SBackwardDxOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor &x = context->input(0), &dy = context->input(1), &v = context->input(2);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    OP_REQUIRES_OK(context, CheckLike(dy, x));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    OP_REQUIRES_OK(context, CheckVector(v, channels, "v"));
    const char* names[] = {"scale", "coefficient", "unit", "origin", "offset"};
    const float* stats[5];
    for (int i = 0; i < 5; ++i) {
      OP_REQUIRES_OK(context, CheckStat(context->input(3 + i), batch, channels, names[i]));
      stats[i] = context->input(3 + i).flat<float>().data();
    }
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &dx));
    const T *xs = x.flat<T>().data(), *dys = dy.flat<T>().data();
    const float* vs = v.flat<float>().data();
    T* dxs = dx->flat<T>().data();
    ForBlocks(context, batch, spatial, channels, [&](int64_t n, int64_t offset, int64_t rows) {
      const int64_t count = rows * channels;
      Scratch buffer(5, count);
      const float* __restrict xb = Widened(xs + offset, count, buffer[0]);
      const float* __restrict dyb = Widened(dys + offset, count, buffer[1]);
      float *z = buffer[2], *s = buffer[3];
      Sigmoid(xb, vs, rows, channels, z, s);
      const int64_t at = n * channels;
      const float *__restrict scale = stats[0] + at, *__restrict coefficient = stats[1] + at,
                  *__restrict unit = stats[2] + at, *__restrict origin = stats[3] + at,
                  *__restrict shift = stats[4] + at;
      float* __restrict out = Target(dxs + offset, buffer[4]);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < channels; ++c) {
          const int64_t i = r * channels + c;
          out[i] = dyb[i] * scale[c] * s[i] * (1.0f + z[i] * (1.0f - s[i])) +
                   coefficient[c] * ((xb[i] * unit[c] - origin[c] * unit[c]) - shift[c] * unit[c]);
        }
      }
      Narrowed(out, count, dxs + offset);
    });
  }
};

// The loops of the GroupNorm and FRN passes over a block (functions of their own, see BSumTerms).
void AffineBlock(const float* __restrict x, const float* __restrict origin, const float* __restrict offset,
                 const float* __restrict scale, const float* __restrict beta, int64_t rows, int64_t channels,
                 float* __restrict out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = r * channels + c;
      out[i] = ((x[i] - origin[c]) - offset[c]) * scale[c] + beta[c];
    }
  }
}

void CentredProducts(const float* __restrict x, const float* __restrict dy, const float* __restrict origin,
                     int64_t rows, int64_t channels, float* __restrict out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = r * channels + c;
      out[i] = dy[i] * (x[i] - origin[c]);
    }
  }
}

// `stats`: scale, coefficient, unit, origin, offset, shift.
void AffineDxBlock(const float* __restrict x, const float* __restrict dy, const float* const* stats, int64_t rows,
                   int64_t channels, float* __restrict out) {
  const float *__restrict scale = stats[0], *__restrict coefficient = stats[1], *__restrict unit = stats[2],
              *__restrict origin = stats[3], *__restrict offset = stats[4], *__restrict shift = stats[5];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = r * channels + c;
      out[i] = dy[i] * scale[c] + coefficient[c] * ((x[i] * unit[c] - origin[c] * unit[c]) - offset[c] * unit[c]) -
               shift[c];
    }
  }
}

// -- GroupNorm and FRN: x̂·γ + β, x̂ = ((x − origin) − offset)·ρ⁻¹ ----------------------------

// y = ((x − origin) − offset)·scale + β; origin, offset, scale [N, C], β [C].
template <typename T>
class AffineOp : public OpKernel {
 public:
  explicit AffineOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    const char* names[] = {"origin", "offset", "scale"};
    const float* stats[3];
    for (int i = 0; i < 3; ++i) {
      OP_REQUIRES_OK(context, CheckStat(context->input(1 + i), batch, channels, names[i]));
      stats[i] = context->input(1 + i).flat<float>().data();
    }
    OP_REQUIRES_OK(context, CheckVector(context->input(4), channels, "beta"));
    const float* beta = context->input(4).flat<float>().data();
    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &y));
    const T* xs = x.flat<T>().data();
    T* ys = y->flat<T>().data();
    ForBlocks(context, batch, spatial, channels, [&](int64_t n, int64_t offset, int64_t rows) {
      Scratch buffer(2, rows * channels);
      const float* xb = Widened(xs + offset, rows * channels, buffer[0]);
      const int64_t at = n * channels;
      float* out = Target(ys + offset, buffer[1]);
      AffineBlock(xb, stats[0] + at, stats[1] + at, stats[2] + at, beta, rows, channels, out);
      Narrowed(out, rows * channels, ys + offset);
    });
  }
};

// Per (sample, channel): Σ dy, Σ dy·(x − origin); origin [N, C].
template <typename T>
class AffineBackwardSumsOp : public OpKernel {
 public:
  explicit AffineBackwardSumsOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor &x = context->input(0), &dy = context->input(1), &origin = context->input(2);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    OP_REQUIRES_OK(context, CheckLike(dy, x));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    OP_REQUIRES_OK(context, CheckStat(origin, batch, channels, "origin"));
    const T *xs = x.flat<T>().data(), *dys = dy.flat<T>().data();
    const float* origins = origin.flat<float>().data();
    auto sums = SumBlocks(context, batch, spatial, channels, 2,
                          [&](int64_t n, int64_t offset, int64_t rows, double* sums) {
      const int64_t count = rows * channels;
      Scratch buffer(3, count);
      const float* xb = Widened(xs + offset, count, buffer[0]);
      const float* dyb = Widened(dys + offset, count, buffer[1]);
      CentredProducts(xb, dyb, origins + n * channels, rows, channels, buffer[2]);
      AddRows(dyb, rows, channels, sums);
      AddRows(buffer[2], rows, channels, sums + channels);
    });
    WriteSums(context, sums, batch, channels, 2);
  }
};

// dx = dy·scale + coefficient·((x·unit − origin·unit) − offset·unit) − shift; every coefficient [N, C].
template <typename T>
class AffineBackwardDxOp : public OpKernel {
 public:
  explicit AffineBackwardDxOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor &x = context->input(0), &dy = context->input(1);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    OP_REQUIRES_OK(context, CheckLike(dy, x));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    const char* names[] = {"scale", "coefficient", "unit", "origin", "offset", "shift"};
    const float* stats[6];
    for (int i = 0; i < 6; ++i) {
      OP_REQUIRES_OK(context, CheckStat(context->input(2 + i), batch, channels, names[i]));
      stats[i] = context->input(2 + i).flat<float>().data();
    }
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &dx));
    const T *xs = x.flat<T>().data(), *dys = dy.flat<T>().data();
    T* dxs = dx->flat<T>().data();
    ForBlocks(context, batch, spatial, channels, [&](int64_t n, int64_t offset, int64_t rows) {
      const int64_t count = rows * channels;
      Scratch buffer(3, count);
      const float* xb = Widened(xs + offset, count, buffer[0]);
      const float* dyb = Widened(dys + offset, count, buffer[1]);
      const int64_t at = n * channels;
      const float* block_stats[] = {stats[0] + at, stats[1] + at, stats[2] + at,
                                    stats[3] + at, stats[4] + at, stats[5] + at};
      float* out = Target(dxs + offset, buffer[2]);
      AffineDxBlock(xb, dyb, block_stats, rows, channels, out);
      Narrowed(out, count, dxs + offset);
    });
  }
};

// -- B-series ----------------------------------------------------------------------

// r of one element: B0 v·x + σ_i, B1 (x + 1)·ρ, B2 ρ − x.
template <int kKind>
inline float Right(float x, float v, float instance) {
  if (kKind == 0) return v * x + instance;
  if (kKind == 1) return (x + 1.0f) * instance;
  return instance - x;
}

// The B-series backward terms of a block: P, then B0: R·P·x/den, R·P/den; B1: R·P, 0; B2: R·P, R·P/den.
// (Functions of their own: inside the ops' nested lambdas GCC did not vectorise these loops.)
template <int kKind>
void BSumTerms(const float* __restrict x, const float* __restrict dy, const float* __restrict v,
               const float* __restrict instance, const float* __restrict batch_std, int64_t rows, int64_t channels,
               float* __restrict p, float* __restrict a, float* __restrict q) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = r * channels + c;
      const float right = Right<kKind>(x[i], v[c], instance[c]);
      const bool on_right = right > batch_std[c];
      const float den = on_right ? right : batch_std[c];
      p[i] = dy[i] * x[i] / den;
      const float p_den = p[i] / den;  // computed everywhere, kept where R: a select, vectorised
      const float p_right_den = on_right ? p_den : 0.0f;
      if (kKind == 0) {
        a[i] = p_right_den * x[i];
        q[i] = p_right_den;
      } else {
        a[i] = on_right ? p[i] : 0.0f;
        q[i] = kKind == 2 ? p_right_den : 0.0f;
      }
    }
  }
}

// The B-series dx of a block; `stats`: instance, slope_i, slope_b, unit_i, unit_b, origin, offset.
template <int kKind>
void BDxBlock(const float* __restrict x, const float* __restrict dy, const float* __restrict v,
              const float* __restrict batch_std, const float* __restrict gamma, const float* const* stats,
              int64_t rows, int64_t channels, float* __restrict out) {
  const float *__restrict in = stats[0], *__restrict s_i = stats[1], *__restrict s_b = stats[2],
              *__restrict u_i = stats[3], *__restrict u_b = stats[4], *__restrict origin = stats[5],
              *__restrict shift = stats[6];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = r * channels + c;
      const float right = Right<kKind>(x[i], v[c], in[c]);
      const bool on_right = right > batch_std[c];
      const float den = on_right ? right : batch_std[c];
      const float ratio = in[c] / den;
      const float factor = on_right ? ratio : 1.0f;
      out[i] = gamma[c] * dy[i] / den * factor + s_i[c] * (x[i] * u_i[c] - origin[c] * u_i[c]) +
               s_b[c] * (x[i] * u_b[c] - origin[c] * u_b[c]) - shift[c];
    }
  }
}

// Runs `fn(std::integral_constant<int, kind>())`: the kind as a compile-time constant.
template <typename F>
void Dispatch(int kind, F fn) {
  if (kind == 0) {
    fn(std::integral_constant<int, 0>());
  } else if (kind == 1) {
    fn(std::integral_constant<int, 1>());
  } else {
    fn(std::integral_constant<int, 2>());
  }
}

absl::Status KindAttr(OpKernelConstruction* context, int* kind) {
  std::string name;
  TF_RETURN_IF_ERROR(context->GetAttr("kind", &name));
  if (name == "b0") {
    *kind = 0;
  } else if (name == "b1") {
    *kind = 1;
  } else if (name == "b2") {
    *kind = 2;
  } else {
    return errors::InvalidArgument("kind must be one of b0, b1, b2, received ", name);
  }
  return absl::OkStatus();
}

// y = (x/den)·γ + β, den = max(σ_b, r); instance [N, C], v, σ_b, γ, β [C].
template <typename T>
class BOutputOp : public OpKernel {
 public:
  explicit BOutputOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, KindAttr(context, &kind_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor &x = context->input(0), &v = context->input(1), &instance = context->input(2),
                 &batch_std = context->input(3), &gamma = context->input(4), &beta = context->input(5);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    OP_REQUIRES_OK(context, CheckVector(v, channels, "v"));
    OP_REQUIRES_OK(context, CheckStat(instance, batch, channels, "instance"));
    OP_REQUIRES_OK(context, CheckVector(batch_std, channels, "batch_std"));
    OP_REQUIRES_OK(context, CheckVector(gamma, channels, "gamma"));
    OP_REQUIRES_OK(context, CheckVector(beta, channels, "beta"));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &y));
    const T* xs = x.flat<T>().data();
    T* ys = y->flat<T>().data();
    const float *__restrict vs = v.flat<float>().data(), *inst = instance.flat<float>().data(),
                *__restrict bs = batch_std.flat<float>().data(), *__restrict g = gamma.flat<float>().data(),
                *__restrict b = beta.flat<float>().data();
    Dispatch(kind_, [&](auto kind) {
      ForBlocks(context, batch, spatial, channels, [&](int64_t n, int64_t offset, int64_t rows) {
        Scratch buffer(2, rows * channels);
        const float* __restrict xb = Widened(xs + offset, rows * channels, buffer[0]);
        const float* __restrict in = inst + n * channels;
        float* __restrict out = Target(ys + offset, buffer[1]);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < channels; ++c) {
            const int64_t i = r * channels + c;
            const float right = Right<decltype(kind)::value>(xb[i], vs[c], in[c]);
            const float den = right > bs[c] ? right : bs[c];
            out[i] = xb[i] / den * g[c] + b[c];
          }
        }
        Narrowed(out, rows * channels, ys + offset);
      });
    });
  }

 private:
  int kind_;
};

// Per (sample, channel), P = dy·x/den, R = [r > σ_b]: Σ dy, Σ P, then B0: Σ R·P·x/den, Σ R·P/den;
// B1: Σ R·P, 0; B2: Σ R·P, Σ R·P/den.
template <typename T>
class BBackwardSumsOp : public OpKernel {
 public:
  explicit BBackwardSumsOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, KindAttr(context, &kind_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor &x = context->input(0), &dy = context->input(1), &v = context->input(2),
                 &instance = context->input(3), &batch_std = context->input(4);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    OP_REQUIRES_OK(context, CheckLike(dy, x));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    OP_REQUIRES_OK(context, CheckVector(v, channels, "v"));
    OP_REQUIRES_OK(context, CheckStat(instance, batch, channels, "instance"));
    OP_REQUIRES_OK(context, CheckVector(batch_std, channels, "batch_std"));
    const T *xs = x.flat<T>().data(), *dys = dy.flat<T>().data();
    const float *__restrict vs = v.flat<float>().data(), *inst = instance.flat<float>().data(),
                *__restrict bs = batch_std.flat<float>().data();
    std::vector<double> sums;
    Dispatch(kind_, [&](auto kind) {
      sums = SumBlocks(context, batch, spatial, channels, 4, [&](int64_t n, int64_t offset, int64_t rows,
                                                                  double* sums) {
        const int64_t count = rows * channels;
        Scratch buffer(5, count);
        const float* __restrict xb = Widened(xs + offset, count, buffer[0]);
        const float* __restrict dyb = Widened(dys + offset, count, buffer[1]);
        float *__restrict p = buffer[2], *__restrict a = buffer[3], *__restrict q = buffer[4];
        BSumTerms<decltype(kind)::value>(xb, dyb, vs, inst + n * channels, bs, rows, channels, p, a, q);
        AddRows(dyb, rows, channels, sums);
        AddRows(p, rows, channels, sums + channels);
        AddRows(a, rows, channels, sums + 2 * channels);
        AddRows(q, rows, channels, sums + 3 * channels);
      });
    });
    WriteSums(context, sums, batch, channels, 4);
  }

 private:
  int kind_;
};

// dx = γ·dy/den·(R ? instance/den : 1) + slope_i·(x·unit_i − origin·unit_i)
//      + slope_b·(x·unit_b − origin·unit_b) − offset; every coefficient [N, C].
template <typename T>
class BBackwardDxOp : public OpKernel {
 public:
  explicit BBackwardDxOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, KindAttr(context, &kind_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor &x = context->input(0), &dy = context->input(1), &v = context->input(2),
                 &instance = context->input(3), &batch_std = context->input(4), &gamma = context->input(5);
    OP_REQUIRES_OK(context, CheckActivations(x, "x"));
    OP_REQUIRES_OK(context, CheckLike(dy, x));
    const int64_t batch = x.dim_size(0), spatial = x.dim_size(1), channels = x.dim_size(2);
    OP_REQUIRES_OK(context, CheckVector(v, channels, "v"));
    OP_REQUIRES_OK(context, CheckStat(instance, batch, channels, "instance"));
    OP_REQUIRES_OK(context, CheckVector(batch_std, channels, "batch_std"));
    OP_REQUIRES_OK(context, CheckVector(gamma, channels, "gamma"));
    const char* names[] = {"instance_slope", "batch_slope", "instance_unit", "batch_unit", "origin", "offset"};
    const float* stats[6];
    for (int i = 0; i < 6; ++i) {
      OP_REQUIRES_OK(context, CheckStat(context->input(6 + i), batch, channels, names[i]));
      stats[i] = context->input(6 + i).flat<float>().data();
    }
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &dx));
    const T *xs = x.flat<T>().data(), *dys = dy.flat<T>().data();
    T* dxs = dx->flat<T>().data();
    const float *__restrict vs = v.flat<float>().data(), *inst = instance.flat<float>().data(),
                *__restrict bs = batch_std.flat<float>().data(), *__restrict g = gamma.flat<float>().data();
    Dispatch(kind_, [&](auto kind) {
      ForBlocks(context, batch, spatial, channels, [&](int64_t n, int64_t offset, int64_t rows) {
        const int64_t count = rows * channels;
        Scratch buffer(3, count);
        const float* __restrict xb = Widened(xs + offset, count, buffer[0]);
        const float* __restrict dyb = Widened(dys + offset, count, buffer[1]);
        const int64_t at = n * channels;
        const float* block_stats[] = {inst + at, stats[0] + at, stats[1] + at, stats[2] + at, stats[3] + at,
                                      stats[4] + at, stats[5] + at};
        float* out = Target(dxs + offset, buffer[2]);
        BDxBlock<decltype(kind)::value>(xb, dyb, vs, bs, g, block_stats, rows, channels, out);
        Narrowed(out, count, dxs + offset);
      });
    });
  }

 private:
  int kind_;
};

}  // namespace

#define EVONORM_TYPES "T: {float, half, bfloat16}"

REGISTER_OP("EvonormChannelMoments")
    .Input("x: T")
    .Output("shift: float")
    .Output("mean_delta: float")
    .Output("m2: float")
    .Output("m2_small: float")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) { return StatShape(c, 4); });

REGISTER_OP("EvonormMeanSquare")
    .Input("x: T")
    .Output("mean_square: float")
    .Output("mean_square_small: float")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) { return StatShape(c, 2); });

REGISTER_OP("EvonormSOutput")
    .Input("x: T")
    .Input("v: float")
    .Input("scale: float")
    .Input("beta: float")
    .Output("y: T")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("EvonormSBackwardSums")
    .Input("x: T")
    .Input("dy: T")
    .Input("v: float")
    .Output("sum_dy: float")
    .Output("sum_dy_f: float")
    .Output("sum_dy_f_x_dsigmoid: float")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) { return StatShape(c, 3); });

REGISTER_OP("EvonormSBackwardDx")
    .Input("x: T")
    .Input("dy: T")
    .Input("v: float")
    .Input("scale: float")
    .Input("coefficient: float")
    .Input("unit: float")
    .Input("origin: float")
    .Input("offset: float")
    .Output("dx: T")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("EvonormAffine")
    .Input("x: T")
    .Input("origin: float")
    .Input("offset: float")
    .Input("scale: float")
    .Input("beta: float")
    .Output("y: T")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("EvonormAffineBackwardSums")
    .Input("x: T")
    .Input("dy: T")
    .Input("origin: float")
    .Output("sum_dy: float")
    .Output("sum_dy_x: float")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) { return StatShape(c, 2); });

REGISTER_OP("EvonormAffineBackwardDx")
    .Input("x: T")
    .Input("dy: T")
    .Input("scale: float")
    .Input("coefficient: float")
    .Input("unit: float")
    .Input("origin: float")
    .Input("offset: float")
    .Input("shift: float")
    .Output("dx: T")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("EvonormBOutput")
    .Input("x: T")
    .Input("v: float")
    .Input("instance: float")
    .Input("batch_std: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: T")
    .Attr("kind: {'b0', 'b1', 'b2'}")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("EvonormBBackwardSums")
    .Input("x: T")
    .Input("dy: T")
    .Input("v: float")
    .Input("instance: float")
    .Input("batch_std: float")
    .Output("sum_dy: float")
    .Output("sum_p: float")
    .Output("sum_right_a: float")
    .Output("sum_right_b: float")
    .Attr("kind: {'b0', 'b1', 'b2'}")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) { return StatShape(c, 4); });

REGISTER_OP("EvonormBBackwardDx")
    .Input("x: T")
    .Input("dy: T")
    .Input("v: float")
    .Input("instance: float")
    .Input("batch_std: float")
    .Input("gamma: float")
    .Input("instance_slope: float")
    .Input("batch_slope: float")
    .Input("instance_unit: float")
    .Input("batch_unit: float")
    .Input("origin: float")
    .Input("offset: float")
    .Output("dx: T")
    .Attr("kind: {'b0', 'b1', 'b2'}")
    .Attr(EVONORM_TYPES)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

#define EVONORM_REGISTER(op_name, Op, T) \
  REGISTER_KERNEL_BUILDER(Name(op_name).Device(DEVICE_CPU).TypeConstraint<T>("T"), Op<T>)

#define EVONORM_REGISTER_ALL(T)                                        \
  EVONORM_REGISTER("EvonormChannelMoments", ChannelMomentsOp, T);      \
  EVONORM_REGISTER("EvonormMeanSquare", MeanSquareOp, T);              \
  EVONORM_REGISTER("EvonormSOutput", SOutputOp, T);                    \
  EVONORM_REGISTER("EvonormSBackwardSums", SBackwardSumsOp, T);        \
  EVONORM_REGISTER("EvonormSBackwardDx", SBackwardDxOp, T);            \
  EVONORM_REGISTER("EvonormAffine", AffineOp, T);                      \
  EVONORM_REGISTER("EvonormAffineBackwardSums", AffineBackwardSumsOp, T); \
  EVONORM_REGISTER("EvonormAffineBackwardDx", AffineBackwardDxOp, T);  \
  EVONORM_REGISTER("EvonormBOutput", BOutputOp, T);                    \
  EVONORM_REGISTER("EvonormBBackwardSums", BBackwardSumsOp, T);        \
  EVONORM_REGISTER("EvonormBBackwardDx", BBackwardDxOp, T)

EVONORM_REGISTER_ALL(float);
EVONORM_REGISTER_ALL(Eigen::half);
EVONORM_REGISTER_ALL(Eigen::bfloat16);

}  // namespace evonorm_tf
