// The x-sized passes of the cpu kernels as TensorFlow CPU ops, for any input shape.
//
// Compiled once per machine (`evonorm_tf.kernels.native`), they run wherever
// the cpu kernels are not inside an XLA-compiled caller: at static shapes
// (faster than the XLA kernels compiled per shape) and at shapes that change
// from call to call (detection, multi-resolution evaluation, a `tf.function`
// with `None` dimensions). Each op is one pass over x (and dy): the
// per-(sample, channel) sums, or the elementwise output y or dx. The small
// per-(sample, channel) arithmetic between them stays in TensorFlow.
//
// Layout: x and dy are `[N, S, C]` (channels_last, spatial positions
// flattened), in float32, float16 or bfloat16; every statistic is float32,
// `[N, C]` per (sample, channel) or `[C]` per channel; y and dx have x's
// dtype. Sums accumulate in double, per thread-pool shard, then per
// (sample, channel) in a fixed order (results do not depend on the number of
// threads). The elementwise formulas are those of the XLA kernels, in float32
// (σ by `SigmoidValues`).

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "unsupported/Eigen/CXX11/Tensor"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

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

// Arrays of scratch space for a block, each aligned to 64 bytes (a vectorised loop then needs no scalar
// prologue, and AVX-512 loads split no cache line). The storage is the calling thread's own, kept from block to block and
// op to op (allocating and zeroing it per block cost a tenth of a pass): one Scratch per thread at a
// time, split by `From`.
class Scratch {
 public:
  Scratch(int arrays, int64_t length) : stride_((length + 15) / 16 * 16) {
    thread_local std::vector<float, Eigen::aligned_allocator<float>> storage;
    const size_t size = static_cast<size_t>(arrays * stride_);
    if (storage.size() < size) storage.resize(size);
    data_ = storage.data();
  }
  float* operator[](int i) { return data_ + i * stride_; }
  // The arrays from `first` on.
  Scratch From(int first) const { return Scratch(data_ + first * stride_, stride_); }

 private:
  Scratch(float* data, int64_t stride) : stride_(stride), data_(data) {}

  int64_t stride_;
  float* data_;
};

// 2⁻⁸⁰: the scale of the twin sums of squares (evonorm_tf.statistics.DOWNSCALE).
constexpr double kDownscale = 8.271806125530277e-25;
// Work per shard of a parallel pass, in elements: of a pass that writes, and of one that sums (larger:
// each shard's partial sums, k·C doubles, are zeroed, written and added up after the pass).
constexpr int64_t kShardElements = 1 << 15;
constexpr int64_t kSumShardElements = 1 << 17;

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
  Shards(int64_t batch, int64_t spatial, int64_t channels, int64_t elements = kShardElements)
      : batch(batch), spatial(spatial) {
    const int64_t rows = std::max<int64_t>(1, elements / std::max<int64_t>(channels, 1));
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

// The shape function of y and dx: x's shape.
absl::Status ShapeOfX(InferenceContext* c) {
  c->set_output(0, c->input(0));
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
  Shards shards(batch, spatial, channels, kSumShardElements);
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
  Shards shards(batch, spatial, channels, kSumShardElements);
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

// The inputs of a pass, checked as they are read: x `[N, S, C]` (input 0), dy of x's shape (input 1,
// where `with_dy`), statistics `[N, C]` and vectors `[C]` by index. The first failed check fails the
// op with its one-line message; the op returns where `ok()` is false.
template <typename T>
class Pass {
 public:
  Pass(OpKernelContext* context, bool with_dy) : context_(context), x_(context->input(0)), with_dy_(with_dy) {
    Check(CheckActivations(x_, "x"));
    if (ok() && with_dy) Check(CheckLike(context->input(1), x_));
    if (ok()) {
      batch = x_.dim_size(0);
      spatial = x_.dim_size(1);
      channels = x_.dim_size(2);
    }
  }

  bool ok() const { return context_->status().ok(); }
  const T* x() const { return x_.flat<T>().data(); }
  const T* dy() const { return context_->input(1).flat<T>().data(); }

  const float* Stat(int index, const char* name) {
    if (ok()) Check(CheckStat(context_->input(index), batch, channels, name));
    return ok() ? context_->input(index).flat<float>().data() : nullptr;
  }
  const float* Vector(int index, const char* name) {
    if (ok()) Check(CheckVector(context_->input(index), channels, name));
    return ok() ? context_->input(index).flat<float>().data() : nullptr;
  }
  // Requires spatial positions (a statistic over none has no value).
  void RequireSpatial() {
    if (ok() && spatial == 0) {
      Check(errors::InvalidArgument("x must have spatial positions, received shape ", x_.shape().DebugString()));
    }
  }
  // The x-shaped output (y or dx).
  T* Output() {
    Tensor* out = nullptr;
    if (ok()) Check(context_->allocate_output(0, x_.shape(), &out));
    return ok() ? out->flat<T>().data() : nullptr;
  }
  // Output `i`, a `[N, C]` statistic.
  float* StatOutput(int i) {
    Tensor* out = nullptr;
    if (ok()) Check(context_->allocate_output(i, TensorShape({batch, channels}), &out));
    return ok() ? out->flat<float>().data() : nullptr;
  }

  // Runs `fn(n, rows, x, dy, scratch, out)` over blocks of whole rows of sample n: x and dy (null without
  // one) widened to float32, `arrays` scratch arrays, and `out`, where the float32 results for `output`
  // go (rounded into `output` after each block).
  template <typename F>
  void Write(T* output, int arrays, F fn) const {
    ForBlocks(context_, batch, spatial, channels, [&](int64_t n, int64_t offset, int64_t rows) {
      const int64_t count = rows * channels;
      Scratch inputs(3 + arrays, count), scratch = inputs.From(3);
      const float* xb = Widened(x() + offset, count, inputs[0]);
      const float* dyb = with_dy_ ? Widened(dy() + offset, count, inputs[1]) : nullptr;
      float* out = Target(output + offset, inputs[2]);
      fn(n, rows, xb, dyb, scratch, out);
      Narrowed(out, count, output + offset);
    });
  }

  // The same for a pass that sums: `fn(n, rows, x, dy, scratch, sums)` adds to `sums` (`[k, C]`);
  // writes the `k` sums per (sample, channel) as the op's outputs.
  template <typename F>
  void Sum(int k, int arrays, F fn) const {
    auto sums = SumBlocks(context_, batch, spatial, channels, k,
                          [&](int64_t n, int64_t offset, int64_t rows, double* sums) {
      const int64_t count = rows * channels;
      Scratch inputs(2 + arrays, count), scratch = inputs.From(2);
      const float* xb = Widened(x() + offset, count, inputs[0]);
      const float* dyb = Widened(dy() + offset, count, inputs[1]);
      fn(n, rows, xb, dyb, scratch, sums);
    });
    WriteSums(context_, sums, batch, channels, k);
  }

  int64_t batch = 0, spatial = 0, channels = 0;

 private:
  void Check(const absl::Status& status) {
    if (!status.ok()) context_->SetStatus(status);
  }

  OpKernelContext* context_;
  const Tensor& x_;
  bool with_dy_;
};

// An op with nothing to read when it is built (`using PassOp::PassOp` gives each op its constructor).
class PassOp : public OpKernel {
 public:
  explicit PassOp(OpKernelConstruction* context) : OpKernel(context) {}
};

// -- statistics --------------------------------------------------------------------

// (shift, mean_delta, m2, m2_small) per (sample, channel), as cpu_sums.channel_moments:
// shift = x at the first spatial position, mean = shift + mean_delta, m2 = Σ(x − mean)²
// (inf beyond float32), m2_small the same of the values times 2⁻⁸⁰.
template <typename T>
class ChannelMomentsOp : public PassOp {
 public:
  using PassOp::PassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, false);
    pass.RequireSpatial();
    float* out[4];
    for (int i = 0; i < 4; ++i) out[i] = pass.StatOutput(i);
    if (!pass.ok()) return;
    const int64_t spatial = pass.spatial, channels = pass.channels, step = spatial * channels;
    const T* data = pass.x();
    auto sums = ChannelSums(context, pass.batch, spatial, channels, 2, [&](int64_t n, int64_t r, double* s) {
      const T* first = data + n * step;
      const T* row = first + r * channels;
      for (int64_t c = 0; c < channels; ++c) {
        const double d = static_cast<double>(static_cast<float>(row[c])) -
                         static_cast<double>(static_cast<float>(first[c]));
        s[c] += d;
        s[channels + c] += d * d;
      }
    });
    for (int64_t n = 0; n < pass.batch; ++n) {
      for (int64_t c = 0; c < channels; ++c) {
        const double sum_d = sums[(n * 2) * channels + c], sum_d2 = sums[(n * 2 + 1) * channels + c];
        const double delta = sum_d / spatial;
        const double centred = std::max(sum_d2 - sum_d * delta, 0.0);
        const int64_t i = n * channels + c;
        out[0][i] = static_cast<float>(data[n * step + c]);
        out[1][i] = static_cast<float>(delta);
        out[2][i] = ToFloat32(centred);
        out[3][i] = static_cast<float>((centred * kDownscale) * kDownscale);
      }
    }
  }
};

// (mean of x², mean of (x·2⁻⁸⁰)²) per (sample, channel), as cpu_sums.mean_square.
template <typename T>
class MeanSquareOp : public PassOp {
 public:
  using PassOp::PassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, false);
    pass.RequireSpatial();
    float* out[2] = {pass.StatOutput(0), pass.StatOutput(1)};
    if (!pass.ok()) return;
    const int64_t spatial = pass.spatial, channels = pass.channels;
    const T* data = pass.x();
    auto sums = ChannelSums(context, pass.batch, spatial, channels, 1, [&](int64_t n, int64_t r, double* s) {
      const T* row = data + (n * spatial + r) * channels;
      for (int64_t c = 0; c < channels; ++c) {
        const double value = static_cast<float>(row[c]);
        s[c] += value * value;
      }
    });
    for (int64_t i = 0; i < pass.batch * channels; ++i) {
      const double mean = sums[i] / static_cast<double>(spatial);
      out[0][i] = ToFloat32(mean);
      out[1][i] = static_cast<float>((mean * kDownscale) * kDownscale);
    }
  }
};

// -- S-series ----------------------------------------------------------------------

// σ(z) = 1 / (1 + e⁻ᶻ), written so that the compiler vectorises it (with Eigen's logistic, TensorFlow's
// own, the S-series output pass took 1.8× the B-series' one). e⁻ᶻ = 2ⁿ·eʳ, n = round(−z/ln 2), r = −z − n·ln 2
// in two parts (Cody–Waite), eʳ by Cephes' expf polynomial (within 1 ulp on |r| ≤ ln 2 / 2); 2ⁿ
// from n's exponent bits. −z is clamped to [−87, 88.5]: σ is then 1 within rounding, or below
// 3.7e−39 (it is below float32's normal range beyond). Within 3 ulp of σ in float64.
inline float Sigmoid(float z) {
  const float t = std::min(std::max(-z, -87.0f), 88.5f);
  const float n = std::floor(t * 1.44269504088896341f + 0.5f);
  const float r = (t - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float exp_r = p * (r * r) + r + 1.0f;
  // n ∈ [−126, 128]: 2ⁿ as exponent bits (n = 128, the largest t only, is split as 2·2¹²⁷).
  const int32_t bits = (static_cast<int32_t>(n) + 126) << 23;
  const float half_power = __builtin_bit_cast(float, bits);
  return 1.0f / (1.0f + (exp_r * half_power) * 2.0f);
}

// σ of `count` values. With AVX-512, 16 at a time: the same steps, 2ⁿ by `scalef`, and 1 / (1 + e⁻ᶻ)
// by the reciprocal estimate refined by one Newton step (within 1 ulp more; a division took as long
// as a pass over memory). NaN stays NaN.
void SigmoidValues(const float* __restrict z, int64_t count, float* __restrict out) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 low = _mm512_set1_ps(-87.0f), high = _mm512_set1_ps(88.5f), zero = _mm512_setzero_ps();
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  for (; i < count; i += 16) {
    const __mmask16 lanes = count - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (count - i)) - 1);
    // max(low, ·) and min(high, ·) return their second operand where it is NaN.
    const __m512 t = _mm512_min_ps(high, _mm512_max_ps(low, _mm512_sub_ps(zero, _mm512_maskz_loadu_ps(lanes, z + i))));
    const __m512 n = _mm512_roundscale_ps(_mm512_fmadd_ps(t, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                                          _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), t);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 exp_r = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, one));
    const __m512 d = _mm512_add_ps(one, _mm512_scalef_ps(exp_r, n));
    const __m512 estimate = _mm512_rcp14_ps(d);
    _mm512_mask_storeu_ps(out + i, lanes, _mm512_mul_ps(estimate, _mm512_fnmadd_ps(d, estimate, two)));
  }
#endif
  for (; i < count; ++i) out[i] = Sigmoid(z[i]);
}

// z = v·x and σ(z) over a block.
void Sigmoid(const float* __restrict x, const float* __restrict v, int64_t rows, int64_t channels,
             float* __restrict z, float* __restrict sigmoid) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) z[r * channels + c] = v[c] * x[r * channels + c];
  }
  SigmoidValues(z, rows * channels, sigmoid);
}

// The loops of the S-series passes over a block (functions of their own, see BSumRows).
void SOutputBlock(const float* __restrict x, const float* __restrict sigmoid, const float* __restrict scale,
                  const float* __restrict beta, int64_t rows, int64_t channels, float* __restrict out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = r * channels + c;
      out[i] = x[i] * sigmoid[i] * scale[c] + beta[c];
    }
  }
}

// Adds a block's Σ dy, Σ f and Σ g to `sums` ([3, C], double), f = dy·x·σ, g = f·x·(1 − σ) (x·(1 − σ)
// first: x² alone overflows float32 where σ' is 0). Terms added as they are computed, row by row (the
// order of AddRows, without writing them out: at 1024 channels those arrays and the sums overflowed L1).
void SSumRows(const float* __restrict x, const float* __restrict dy, const float* __restrict sigmoid, int64_t rows,
              int64_t channels, double* __restrict sums) {
  double *__restrict sum_dy = sums, *__restrict sum_f = sums + channels, *__restrict sum_g = sums + 2 * channels;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = r * channels + c;
      const float f = dy[i] * x[i] * sigmoid[i];
      const float g = f * (x[i] * (1.0f - sigmoid[i]));
      sum_dy[c] += dy[i];
      sum_f[c] += f;
      sum_g[c] += g;
    }
  }
}

// `stats`: scale, coefficient, unit, origin, offset.
void SDxBlock(const float* __restrict x, const float* __restrict dy, const float* __restrict z,
              const float* __restrict sigmoid, const float* const* stats, int64_t rows, int64_t channels,
              float* __restrict out) {
  const float *__restrict scale = stats[0], *__restrict coefficient = stats[1], *__restrict unit = stats[2],
              *__restrict origin = stats[3], *__restrict shift = stats[4];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = r * channels + c;
      out[i] = dy[i] * scale[c] * sigmoid[i] * (1.0f + z[i] * (1.0f - sigmoid[i])) +
               coefficient[c] * ((x[i] * unit[c] - origin[c] * unit[c]) - shift[c] * unit[c]);
    }
  }
}

// y = x·σ(v·x)·scale + β; scale [N, C], v and β [C].
template <typename T>
class SOutputOp : public PassOp {
 public:
  using PassOp::PassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, false);
    const float *v = pass.Vector(1, "v"), *scale = pass.Stat(2, "scale"), *beta = pass.Vector(3, "beta");
    T* y = pass.Output();
    if (!pass.ok()) return;
    const int64_t channels = pass.channels;
    pass.Write(y, 2, [&](int64_t n, int64_t rows, const float* x, const float*, Scratch& scratch, float* out) {
      Sigmoid(x, v, rows, channels, scratch[0], scratch[1]);
      SOutputBlock(x, scratch[1], scale + n * channels, beta, rows, channels, out);
    });
  }
};

// Per (sample, channel): Σ dy, Σ dy·f, Σ dy·f·x·(1 − σ), f = x·σ(v·x).
template <typename T>
class SBackwardSumsOp : public PassOp {
 public:
  using PassOp::PassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, true);
    const float* v = pass.Vector(2, "v");
    if (!pass.ok()) return;
    const int64_t channels = pass.channels;
    pass.Sum(3, 2, [&](int64_t, int64_t rows, const float* x, const float* dy, Scratch& scratch, double* sums) {
      Sigmoid(x, v, rows, channels, scratch[0], scratch[1]);
      SSumRows(x, dy, scratch[1], rows, channels, sums);
    });
  }
};

// dx = dy·scale·σ·(1 + z·(1 − σ)) + coefficient·((x·unit − origin·unit) − offset·unit), z = v·x.
template <typename T>
class SBackwardDxOp : public PassOp {
 public:
  using PassOp::PassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, true);
    const float* v = pass.Vector(2, "v");
    const char* names[] = {"scale", "coefficient", "unit", "origin", "offset"};
    const float* stats[5];
    for (int i = 0; i < 5; ++i) stats[i] = pass.Stat(3 + i, names[i]);
    T* dx = pass.Output();
    if (!pass.ok()) return;
    const int64_t channels = pass.channels;
    pass.Write(dx, 2, [&](int64_t n, int64_t rows, const float* x, const float* dy, Scratch& scratch, float* out) {
      Sigmoid(x, v, rows, channels, scratch[0], scratch[1]);
      const int64_t at = n * channels;
      const float* block_stats[] = {stats[0] + at, stats[1] + at, stats[2] + at, stats[3] + at, stats[4] + at};
      SDxBlock(x, dy, scratch[0], scratch[1], block_stats, rows, channels, out);
    });
  }
};

// The loops of the GroupNorm and FRN passes over a block (functions of their own, see BSumRows).
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
class AffineOp : public PassOp {
 public:
  using PassOp::PassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, false);
    const float *origin = pass.Stat(1, "origin"), *shift = pass.Stat(2, "offset"), *scale = pass.Stat(3, "scale"),
                *beta = pass.Vector(4, "beta");
    T* y = pass.Output();
    if (!pass.ok()) return;
    const int64_t channels = pass.channels;
    pass.Write(y, 0, [&](int64_t n, int64_t rows, const float* x, const float*, Scratch&, float* out) {
      const int64_t at = n * channels;
      AffineBlock(x, origin + at, shift + at, scale + at, beta, rows, channels, out);
    });
  }
};

// Per (sample, channel): Σ dy, Σ dy·(x − origin); origin [N, C].
template <typename T>
class AffineBackwardSumsOp : public PassOp {
 public:
  using PassOp::PassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, true);
    const float* origin = pass.Stat(2, "origin");
    if (!pass.ok()) return;
    const int64_t channels = pass.channels;
    pass.Sum(2, 1, [&](int64_t n, int64_t rows, const float* x, const float* dy, Scratch& scratch, double* sums) {
      CentredProducts(x, dy, origin + n * channels, rows, channels, scratch[0]);
      AddRows(dy, rows, channels, sums);
      AddRows(scratch[0], rows, channels, sums + channels);
    });
  }
};

// dx = dy·scale + coefficient·((x·unit − origin·unit) − offset·unit) − shift; every coefficient [N, C].
template <typename T>
class AffineBackwardDxOp : public PassOp {
 public:
  using PassOp::PassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, true);
    const char* names[] = {"scale", "coefficient", "unit", "origin", "offset", "shift"};
    const float* stats[6];
    for (int i = 0; i < 6; ++i) stats[i] = pass.Stat(2 + i, names[i]);
    T* dx = pass.Output();
    if (!pass.ok()) return;
    const int64_t channels = pass.channels;
    pass.Write(dx, 0, [&](int64_t n, int64_t rows, const float* x, const float* dy, Scratch&, float* out) {
      const int64_t at = n * channels;
      const float* block_stats[] = {stats[0] + at, stats[1] + at, stats[2] + at,
                                    stats[3] + at, stats[4] + at, stats[5] + at};
      AffineDxBlock(x, dy, block_stats, rows, channels, out);
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

// Adds a block's B-series backward sums to `sums` ([4, C], double): Σ dy, Σ P, then B0: Σ R·P·x/den,
// Σ R·P/den; B1: Σ R·P, 0; B2: Σ R·P, Σ R·P/den. Terms added as they are computed (see SSumRows).
// (Functions of their own: inside the ops' nested lambdas GCC did not vectorise these loops.)
template <int kKind>
void BSumRows(const float* __restrict x, const float* __restrict dy, const float* __restrict v,
              const float* __restrict instance, const float* __restrict batch_std, int64_t rows, int64_t channels,
              double* __restrict sums) {
  double *__restrict sum_dy = sums, *__restrict sum_p = sums + channels, *__restrict sum_a = sums + 2 * channels,
         *__restrict sum_q = sums + 3 * channels;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = r * channels + c;
      const float right = Right<kKind>(x[i], v[c], instance[c]);
      const bool on_right = right > batch_std[c];
      const float inverse = 1.0f / (on_right ? right : batch_std[c]);  // one division per element
      const float p = dy[i] * x[i] * inverse;
      const float p_den = p * inverse;  // computed everywhere, kept where R: a select, vectorised
      const float p_right_den = on_right ? p_den : 0.0f;
      float a, q;
      if (kKind == 0) {
        a = p_right_den * x[i];
        q = p_right_den;
      } else {
        a = on_right ? p : 0.0f;
        q = kKind == 2 ? p_right_den : 0.0f;
      }
      sum_dy[c] += dy[i];
      sum_p[c] += p;
      sum_a[c] += a;
      sum_q[c] += q;
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
      const float inverse = 1.0f / (on_right ? right : batch_std[c]);  // one division per element
      const float factor = on_right ? in[c] * inverse : 1.0f;
      out[i] = gamma[c] * dy[i] * inverse * factor + s_i[c] * (x[i] * u_i[c] - origin[c] * u_i[c]) +
               s_b[c] * (x[i] * u_b[c] - origin[c] * u_b[c]) - shift[c];
    }
  }
}

// y of a block (see BSumRows).
template <int kKind>
void BOutputBlock(const float* __restrict x, const float* __restrict v, const float* __restrict instance,
                  const float* __restrict batch_std, const float* __restrict gamma, const float* __restrict beta,
                  int64_t rows, int64_t channels, float* __restrict out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = r * channels + c;
      const float right = Right<kKind>(x[i], v[c], instance[c]);
      const float den = right > batch_std[c] ? right : batch_std[c];
      out[i] = x[i] / den * gamma[c] + beta[c];
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

// The B-series ops: `kind` ("b0", "b1", "b2") read once, when the op is built.
class BPassOp : public OpKernel {
 public:
  explicit BPassOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, KindAttr(context, &kind_));
  }

 protected:
  int kind_;
};

// y = (x/den)·γ + β, den = max(σ_b, r); instance [N, C], v, σ_b, γ, β [C].
template <typename T>
class BOutputOp : public BPassOp {
 public:
  using BPassOp::BPassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, false);
    const float *v = pass.Vector(1, "v"), *instance = pass.Stat(2, "instance"),
                *batch_std = pass.Vector(3, "batch_std"), *gamma = pass.Vector(4, "gamma"),
                *beta = pass.Vector(5, "beta");
    T* y = pass.Output();
    if (!pass.ok()) return;
    const int64_t channels = pass.channels;
    Dispatch(kind_, [&](auto kind) {
      pass.Write(y, 0, [&](int64_t n, int64_t rows, const float* x, const float*, Scratch&, float* out) {
        BOutputBlock<decltype(kind)::value>(x, v, instance + n * channels, batch_std, gamma, beta, rows,
                                            channels, out);
      });
    });
  }
};

// Per (sample, channel), P = dy·x/den, R = [r > σ_b]: Σ dy, Σ P, then B0: Σ R·P·x/den, Σ R·P/den;
// B1: Σ R·P, 0; B2: Σ R·P, Σ R·P/den.
template <typename T>
class BBackwardSumsOp : public BPassOp {
 public:
  using BPassOp::BPassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, true);
    const float *v = pass.Vector(2, "v"), *instance = pass.Stat(3, "instance"),
                *batch_std = pass.Vector(4, "batch_std");
    if (!pass.ok()) return;
    const int64_t channels = pass.channels;
    Dispatch(kind_, [&](auto kind) {
      pass.Sum(4, 0, [&](int64_t n, int64_t rows, const float* x, const float* dy, Scratch&, double* sums) {
        BSumRows<decltype(kind)::value>(x, dy, v, instance + n * channels, batch_std, rows, channels, sums);
      });
    });
  }
};

// dx = γ·dy/den·(R ? instance/den : 1) + slope_i·(x·unit_i − origin·unit_i)
//      + slope_b·(x·unit_b − origin·unit_b) − offset; every coefficient [N, C].
template <typename T>
class BBackwardDxOp : public BPassOp {
 public:
  using BPassOp::BPassOp;

  void Compute(OpKernelContext* context) override {
    Pass<T> pass(context, true);
    const float *v = pass.Vector(2, "v"), *instance = pass.Stat(3, "instance"),
                *batch_std = pass.Vector(4, "batch_std"), *gamma = pass.Vector(5, "gamma");
    const char* names[] = {"instance_slope", "batch_slope", "instance_unit", "batch_unit", "origin", "offset"};
    const float* stats[6];
    for (int i = 0; i < 6; ++i) stats[i] = pass.Stat(6 + i, names[i]);
    T* dx = pass.Output();
    if (!pass.ok()) return;
    const int64_t channels = pass.channels;
    Dispatch(kind_, [&](auto kind) {
      pass.Write(dx, 0, [&](int64_t n, int64_t rows, const float* x, const float* dy, Scratch&, float* out) {
        const int64_t at = n * channels;
        const float* block_stats[] = {instance + at, stats[0] + at, stats[1] + at, stats[2] + at,
                                      stats[3] + at, stats[4] + at, stats[5] + at};
        BDxBlock<decltype(kind)::value>(x, dy, v, batch_std, gamma, block_stats, rows, channels, out);
      });
    });
  }
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
    .SetShapeFn(ShapeOfX);

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
    .SetShapeFn(ShapeOfX);

REGISTER_OP("EvonormAffine")
    .Input("x: T")
    .Input("origin: float")
    .Input("offset: float")
    .Input("scale: float")
    .Input("beta: float")
    .Output("y: T")
    .Attr(EVONORM_TYPES)
    .SetShapeFn(ShapeOfX);

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
    .SetShapeFn(ShapeOfX);

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
    .SetShapeFn(ShapeOfX);

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
    .SetShapeFn(ShapeOfX);

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
