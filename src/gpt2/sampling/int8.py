"""int8 matrix products for CPU sampling: weights per output column, activations per row, TensorFlow's kernel.

The weights w [k, n] are quantized once per run, outside the sampling loop, symmetrically per output column:

    w_scale[j] = max_i |w[i, j]| * (1 / 127)  wq[i, j] = round(w[i, j] / w_scale[j])   (qint8, -127 .. 127)

The activations x [rows, k] at every product, per row, from the row's own minimum and maximum (each widened to
take in zero, so that zero is a code):

    x_scale[r] = (max - min) * (1 / 255)      zero[r] = round(-min / x_scale[r])
    xq[r, i] = clip(round(x[r, i] / x_scale[r]) + zero[r], 0, 255)                    (quint8)

TensorFlow's QuantizedMatMulWithBias (oneDNN; VNNI where the CPU has it) gives the exact integer product xq @ wq
in int32. Since x ~ x_scale * (xq - zero), the zero point's term zero[r] * sum_i wq[i, j] is subtracted in int32
(exactly), then the float rescale and the bias:

    x @ w + b ~ float32(xq @ wq - zero[r] * colsum[j]) * (x_scale[r] * w_scale[j]) + b[j]

Kept weights: oneDNN first copies ("reorders") the int8 weights into a blocked layout of its own, on every call,
which costs more than the product itself. Its kernel, the op that TensorFlow's graph rewrite makes
(_MklQuantizedMatMulWithBias), can keep the reordered copy from its first call instead (is_weight_const), as
cpu_matmul.py's packed products do: right only while the weights do not change (sample_sequence's
frozen_weights), for one more int8 copy of the weights in memory. Calls of other row counts stay right.
bench/bench_sample.py --configs=.,.+precision=int8 compares the two precisions.

Row-wise activations and column-wise weights ("vector-wise", LLM.int8(), Dettmers et al. 2022) keep the
perplexity of models of GPT-2's sizes. tests/sampling/test_int8.py models the same arithmetic in NumPy.
"""
import dataclasses
import functools
import sys

import numpy as np
import tensorflow.compat.v1 as tf

# oneDNN's quantized product, and the kernel label that TensorFlow's rewrite gives it.
KEPT_OP = '_MklQuantizedMatMulWithBias'
KEPT_LABEL = 'QuantizedMklOp'
# A scale for an all-zero row or column, where any scale is right: it keeps the divisions finite.
TINY = 1e-30


@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """A weight [k, n] quantized per output column, in `parts` column slices (one op each, side by side)."""
    parts: tuple  # of qint8 [k, n_part]
    scale: object  # [n] float32: w_scale
    colsum: object  # [n] int32: each column's sum of wq


# ---------------------------------------------------------------------------------------------------------------
# Quantizing
# ---------------------------------------------------------------------------------------------------------------

def quantize_columns(w):
    """w [k, n] float32 -> (wq [k, n] int8, scale [n] float32), symmetric per column."""
    # Times the reciprocal, not divided: the rounding stays the same whether or not TensorFlow's graph optimizer
    # turns a division by a constant into that product.
    scale = tf.reduce_max(tf.abs(w), axis=0) * (1 / 127)
    q = tf.clip_by_value(tf.round(w / tf.maximum(scale, TINY)), -127, 127)
    return tf.cast(q, tf.int8), scale


def quantize_weight(w, parts=1):
    """w [k, n] float32 -> its QuantizedWeight, the columns in `parts` near-equal slices."""
    q, scale = quantize_columns(w)
    n = w.shape.as_list()[1]
    sizes = [n // parts + (i < n % parts) for i in range(parts)]
    slices = tf.split(q, sizes, axis=1) if parts > 1 else [q]
    return QuantizedWeight(parts=tuple(tf.bitcast(s, tf.qint8) for s in slices), scale=scale,
                  colsum=tf.reduce_sum(tf.cast(q, tf.int32), axis=0))


def quantize_rows(x):
    """x [rows, k] float32 -> (xq [rows, k] quint8, scale [rows] float32, zero [rows] int32), per row."""
    lo = tf.minimum(tf.reduce_min(x, axis=1), 0)
    hi = tf.maximum(tf.reduce_max(x, axis=1), 0)
    scale = tf.maximum((hi - lo) * (1 / 255), TINY)  # times the reciprocal, as in quantize_columns
    zero = tf.round(-lo / scale)
    q = tf.clip_by_value(tf.round(x / scale[:, tf.newaxis]) + zero[:, tf.newaxis], 0, 255)
    return tf.bitcast(tf.cast(q, tf.uint8), tf.quint8), scale, tf.cast(zero, tf.int32)


# ---------------------------------------------------------------------------------------------------------------
# The product
# ---------------------------------------------------------------------------------------------------------------

def integer_matmul(xq, wq, kept=False):
    """xq [rows, k] quint8 @ wq [k, n] qint8 -> [rows, n] int32, exact: oneDNN's kernel. The min and max inputs
    only scale its float outputs, which are not used; an int32 bias of zeros leaves the product as it is.
    kept: the kernel keeps its reordered weights from its first call (see "Kept weights")."""
    n = wq.shape.as_list()[1]
    inputs = dict(a=xq, b=wq, bias=tf.zeros([n], tf.qint32), min_a=0., max_a=1., min_b=-1., max_b=1.)
    if not kept:
        return tf.bitcast(tf.raw_ops.QuantizedMatMulWithBias(**inputs, Toutput=tf.qint32).out, tf.int32)
    types = dict(T1=tf.quint8, T2=tf.qint8, Tbias=tf.qint32, Toutput=tf.qint32)
    attrs = {name: tf.AttrValue(type=t.as_datatype_enum) for name, t in types.items()}
    attrs.update({'transpose_a': tf.AttrValue(b=False), 'transpose_b': tf.AttrValue(b=False),
                  'input_quant_mode': tf.AttrValue(s=b'MIN_FIRST'),
                  'is_weight_const': tf.AttrValue(b=True),  # keep the reordered weights after the first call
                  'is_bias_const': tf.AttrValue(b=True), '_kernel': tf.AttrValue(s=KEPT_LABEL.encode())})
    args = [tf.convert_to_tensor(inputs[name]) for name in ('a', 'b', 'bias', 'min_a', 'max_a', 'min_b', 'max_b')]
    op = tf.get_default_graph().create_op(KEPT_OP, args, [tf.qint32, tf.float32, tf.float32], name='kept_matmul',
                                          attrs=attrs)
    return tf.bitcast(op.outputs[0], tf.int32)


def matmul(x, weight, b=None, *, kept=False):
    """x [rows, k] float32 @ the quantized weight [k, n] (+ b [n]) -> [rows, n] float32. kept: see
    integer_matmul."""
    xq, x_scale, zero = quantize_rows(x)
    acc = [integer_matmul(xq, part, kept) for part in weight.parts]
    acc = acc[0] if len(acc) == 1 else tf.concat(acc, axis=1)
    acc = acc - zero[:, tf.newaxis] * weight.colsum[tf.newaxis, :]  # the zero point's term, in int32
    y = tf.cast(acc, tf.float32) * (x_scale[:, tf.newaxis] * weight.scale[tf.newaxis, :])
    return y if b is None else y + b


@functools.lru_cache(maxsize=None)
def kernel_works(kept=False):
    """Whether TensorFlow's quantized product (kept: the kernel that keeps its weights, internal to TensorFlow,
    which a later release could change) runs on this CPU and gives the exact integer product, checked once per
    process on a small product against NumPy. Where it does not, int8 products are float32 (or not kept)."""
    rng = np.random.default_rng(0)
    xq = rng.integers(0, 256, [3, 70]).astype(np.uint8)
    wq = rng.integers(-127, 128, [70, 5]).astype(np.int8)
    try:
        cpu_only = tf.ConfigProto(device_count={'GPU': 0})
        with tf.Graph().as_default(), tf.device('/CPU:0'), tf.Session(config=cpu_only) as sess:
            got = sess.run(integer_matmul(tf.bitcast(tf.constant(xq), tf.quint8),
                                          tf.bitcast(tf.constant(wq), tf.qint8), kept))
        return bool((got == xq.astype(np.int64) @ wq.astype(np.int64)).all())
    except Exception:  # noqa: BLE001 - no kernel, or a wrong one: the float32 products are right
        return False


# ---------------------------------------------------------------------------------------------------------------
# Weights read once
# ---------------------------------------------------------------------------------------------------------------

class Weights:
    """The quantized weights of one graph, each made once from the tensor that decoding.read_once_scope read,
    outside any loop (tf.init_scope): quantized once per run of the graph, however many steps and products use
    it. They live for the run; the float32 variables stay, so memory does not fall yet."""

    def __init__(self, parts, kept=False):
        self.parts = parts  # column slices per weight: side by side, one op each
        self.kept = kept  # through the kernel that keeps its reordered weights (the weights do not change)
        self.made = {}  # the float32 tensor's name -> its QuantizedWeight

    def get(self, w, transpose=False):
        """w [k, n] (or [n, k] with transpose): a read weight, or a reshape of one, or either as it enters a
        tf.while_loop -> its QuantizedWeight [k, n]."""
        source = w
        while source.op.type in ('Reshape', 'Enter', 'Switch'):  # back to the read, before conv1d's reshape,
            # the loop and any tf.cond
            source = source.op.inputs[0]
        key = (source.name, transpose)
        if key not in self.made:
            with tf.init_scope():
                float_w = tf.reshape(source, w.shape)
                self.made[key] = quantize_weight(tf.transpose(float_w) if transpose else float_w, self.parts)
        return self.made[key]


def weights_if_kernel_works(parts, task, frozen_weights=False):
    """A Weights for one graph's int8 products (parts: column slices per weight), or None, said on stderr, where
    TensorFlow's quantized kernel does not work on this CPU: then `task` ('sampling', 'scoring') is float32.
    frozen_weights: the weights keep their values in the session, so the kernel may keep them too."""
    if kernel_works():
        return Weights(parts, kept=frozen_weights and kernel_works(kept=True))
    print(f'note: {task} in float32: TensorFlow has no working int8 product on this CPU', file=sys.stderr,
          flush=True)
    return None
