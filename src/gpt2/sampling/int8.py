"""int8 matrix products for CPU sampling: weights per output column, activations per row, TensorFlow's kernel.

The weights w [k, n] are quantized symmetrically per output column, once: at load (Store: the scripts, the
Generator and score.py restore them into int8 variables and never fill their float32 ones), or else once per run
of the graph, outside its loops (the server, which keeps the float32 weights for its other work):

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

The embeddings: wte's int8 copy (per token: wte's transpose, per column) is the only one kept, so the tokens'
embeddings are its rows dequantized (embed).

Row-wise activations and column-wise weights ("vector-wise", LLM.int8(), Dettmers et al. 2022) keep the
perplexity of models of GPT-2's sizes. tests/sampling/test_int8.py models the same arithmetic in NumPy.
"""
import dataclasses
import functools
import sys

import numpy as np
import tensorflow.compat.v1 as tf

from gpt2.base import bundle, checkpoint

# oneDNN's quantized product, and the kernel label that TensorFlow's rewrite gives it.
KEPT_OP = '_MklQuantizedMatMulWithBias'
KEPT_LABEL = 'QuantizedMklOp'
# wte's rows quantized at load this many at a time (12 MB of float32 temporaries for 124M).
FILL_ROWS = 4096
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

def quantize_columns(w, axis=0):
    """w [k, n] float32 -> (wq [k, n] int8, scale [n] float32), symmetric per column (axis=1: per row, w [n, k]
    -> wq [n, k], scale [n]: the same numbers as the columns of w's transpose)."""
    # Times the reciprocal, not divided: the rounding stays the same whether or not TensorFlow's graph optimizer
    # turns a division by a constant into that product.
    scale = tf.reduce_max(tf.abs(w), axis=axis) * (1 / 127)
    step = tf.expand_dims(tf.maximum(scale, TINY), axis)
    q = tf.clip_by_value(tf.round(w / step), -127, 127)
    return tf.cast(q, tf.int8), scale


def part_sizes(n, parts):
    """The widths of `parts` near-equal column slices of n columns."""
    return [n // parts + (i < n % parts) for i in range(parts)]


def quantize_weight(w, parts=1):
    """w [k, n] float32 -> its QuantizedWeight, the columns in `parts` near-equal slices."""
    q, scale = quantize_columns(w)
    sizes = part_sizes(w.shape.as_list()[1], parts)
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

def read_weight(w):
    """A weight as a product sees it (a reshape of the read, as conv1d makes it, entering a tf.while_loop or a
    tf.cond) -> the read itself, outside them."""
    while w.op.type in ('Reshape', 'Enter', 'Switch'):
        w = w.op.inputs[0]
    return w


class Weights:
    """The quantized weights of one graph's products, each made once, outside any loop (tf.init_scope), however
    many steps and products use it: read from the int8 variables that a Store filled as the checkpoint was
    restored, where the graph has them, or else quantized once per run of the graph from the float32 tensor that
    decoding.read_once_scope read."""

    def __init__(self, parts, kept=False):
        self.parts = parts  # column slices per weight quantized in the graph: side by side, one op each
        self.kept = kept  # through the kernel that keeps its reordered weights (the weights do not change)
        self.made = {}  # (the float32 tensor's name, transpose) -> its QuantizedWeight

    def get(self, w, transpose=False):
        """w [k, n] (or [n, k] with transpose): a read weight, or a reshape of one, or either as it enters a
        tf.while_loop -> its QuantizedWeight [k, n]."""
        source = read_weight(w)
        key = (source.name, transpose)
        if key not in self.made:
            with tf.init_scope():
                stored = Store.of(source)
                float_w = tf.reshape(source, w.shape) if stored is None else None
                self.made[key] = stored or quantize_weight(tf.transpose(float_w) if transpose else float_w,
                                                           self.parts)
        return self.made[key]


# ---------------------------------------------------------------------------------------------------------------
# Quantized at load
# ---------------------------------------------------------------------------------------------------------------

def product_weights(hparams):
    """The weights that int8 multiplies by: name -> (k, n, transposed). Each block's four conv1d weights
    [1, k, n]; wte [n_vocab, n_embd] for the logits, as its transpose [n_embd, n_vocab], quantized per token."""
    shapes = checkpoint.variable_shapes(hparams)
    weights = {name: (shape[1], shape[2], False) for name, shape in shapes.items() if name.endswith('/w')}
    weights['model/wte'] = (hparams.n_embd, hparams.n_vocab, True)
    return weights


class Store:
    """int8 variables for the product weights of one graph, filled from the checkpoint as it is restored: each
    float32 weight read, quantized and dropped in turn, so that the float32 variables of those weights (created
    for the graph, which names them) are never filled and take no memory. Found by the graph's products through
    the graph's collection STORE_KEY.

    Per weight [k, n], in `parts` column slices (as sampling multiplies them; any split gives the same exact
    integer products): int8 [k, n_part], its scale [n_part] float32 and colsum [n_part] int32. fill_steps says in
    what order and how they are filled."""

    STORE_KEY = 'gpt2_int8_store'

    def __init__(self, hparams, parts):
        self.weights = product_weights(hparams)
        self.variables = {}  # name -> [(int8, scale, colsum) variables of each slice]
        for name, (k, n, _) in self.weights.items():
            with tf.name_scope(None):  # the names are the float32 weight's, whatever scope builds the graph
                new = lambda suffix, shape, dtype: tf.Variable(tf.zeros(shape, dtype), name=f'{name}/{suffix}',
                                                               trainable=False, collections=[], use_resource=True)
                self.variables[name] = [(new(f"int8_{i}", [k, size], tf.int8),
                                         new(f"int8_scale_{i}", [size], tf.float32),
                                         new(f'int8_colsum_{i}', [size], tf.int32))
                                        for i, size in enumerate(part_sizes(n, parts))]
        tf.add_to_collection(self.STORE_KEY, self)

    @classmethod
    def of(cls, read):
        """A read float32 weight (through identities and its ReadVariableOp) -> its QuantizedWeight of read int8
        variables, if the graph stores that weight, else None. Call under tf.init_scope: the reads run once."""
        op = read.op
        while op.type in ('Identity', 'ReadVariableOp') and op.inputs:
            op = op.inputs[0].op
        for store in op.graph.get_collection(cls.STORE_KEY):
            if op.type in ('VarHandleOp', 'VariableV2') and op.name in store.weights:
                q, scale, colsum = zip(*store.variables[op.name])
                return QuantizedWeight(parts=tuple(tf.bitcast(v.read_value(), tf.qint8) for v in q),
                                       scale=tf.concat([v.read_value() for v in scale], axis=0),
                                       colsum=tf.concat([v.read_value() for v in colsum], axis=0))
        return None

    def fill_steps(self, sess, path):
        """sess, path (a string tensor, the checkpoint's prefix) -> functions of the prefix, to call one after the
        other, that fill the int8 variables: wte's, then one per layer, its four weights side by side. Each
        restores its weights alone and quantizes them: TensorFlow keeps the memory it frees for its later tensors,
        so wte (the largest) is read from the file in blocks of rows, in NumPy (gpt2/base/bundle.py), where the
        file allows; the layers' weights, a few MB each, through TensorFlow."""
        fills = {}  # 'wte', 'h0', ... -> the assignments of its weights' variables
        for name, (k, n, transposed) in self.weights.items():
            with tf.name_scope('int8_fill'):
                w = tf.raw_ops.RestoreV2(prefix=path, tensor_names=[name], shape_and_slices=[''],
                                         dtypes=[tf.float32])[0]
                if transposed:  # wte [n_vocab, n_embd]: per row, one block after the other
                    q, scale, colsum = quantize_row_blocks(tf.reshape(w, [n, k]))
                    q = tf.transpose(q)  # [k, n], in int8
                else:
                    q, scale = quantize_columns(tf.reshape(w, [k, n]))
                    colsum = tf.reduce_sum(tf.cast(q, tf.int32), axis=0)
                fills.setdefault(name.split('/')[1], []).extend(self.assignments(name, q, scale, colsum))
        steps = {key: sess.make_callable(tf.group(*ops), [path]) for key, ops in fills.items()}
        wte_from_file = self.file_filler(sess, 'model/wte', steps.pop('wte'))
        return [wte_from_file] + list(steps.values())

    def assignments(self, name, q, scale, colsum):
        """The ops that put a weight's q [k, n], scale [n], colsum [n] into its variables, slice by slice."""
        sizes = part_sizes(q.shape.as_list()[1], len(self.variables[name]))
        return [v.assign(t, read_value=False) for part, values in zip(self.variables[name], zip(
            tf.split(q, sizes, axis=1), tf.split(scale, sizes), tf.split(colsum, sizes))) for v, t in zip(part, values)]

    def file_filler(self, sess, name, fallback):
        """A function of the prefix that fills the transposed weight `name` [n, k] from the checkpoint's file in
        blocks of FILL_ROWS rows, quantized in NumPy as quantize_row_blocks does; fallback(prefix) where the file
        is of a kind gpt2/base/bundle.py does not read."""
        k, n, _ = self.weights[name]
        sizes = part_sizes(n, len(self.variables[name]))
        with tf.name_scope('int8_fill'):  # each slice's q [k, size], scale [size], colsum [size], fed as they are
            fed = [tf.placeholder(v.dtype.base_dtype, v.shape) for part in self.variables[name] for v in part]
            assign = sess.make_callable(tf.group(*[v.assign(t, read_value=False) for v, t in zip(
                [v for part in self.variables[name] for v in part], fed)]), fed)

        def fill(prefix):
            try:
                reader = bundle.Reader(prefix)
                blocks = [np_quantize_rows(reader.rows(name, start, min(start + FILL_ROWS, n)))
                          for start in range(0, n, FILL_ROWS)]
            except (bundle.BundleError, OSError):
                return fallback(prefix)
            q, scale, colsum = (np.concatenate(parts) for parts in zip(*blocks))
            del blocks
            values, start = [], 0
            for size in sizes:  # the rows of wte [n, k] are the columns of the transposed slices [k, size]
                rows = slice(start, start + size)
                values += [np.ascontiguousarray(q[rows].T), scale[rows], colsum[rows]]
                start += size
            assign(*values)
        return fill


def np_quantize_rows(w):
    """quantize_columns(w, axis=1) in NumPy, with the same float32 arithmetic (rounding half to even, as
    tf.round), and each row's sum of codes: w [rows, k] -> (q [rows, k] int8, scale [rows], sums [rows] int32)."""
    scale = np.abs(w).max(axis=1) * np.float32(1 / 127)
    q = np.clip(np.round(w / np.maximum(scale, np.float32(TINY))[:, None]), -127, 127).astype(np.int8)
    return q, scale, q.sum(axis=1, dtype=np.int32)


def quantize_row_blocks(w, rows=FILL_ROWS):
    """quantize_columns(w, axis=1) for w [n, k], `rows` rows at a time in turn, and each row's sum of its codes
    -> (wq [n, k] int8, scale [n], sums [n] int32): the temporaries are a block's, not the whole matrix's."""
    blocks, last = [], []
    for start in range(0, w.shape.as_list()[0], rows):
        with tf.control_dependencies(last):  # one block after the other
            q, scale = quantize_columns(w[start:start + rows], axis=1)
            blocks.append((q, scale, tf.reduce_sum(tf.cast(q, tf.int32), axis=1)))
        last = [blocks[-1][2]]
    return tuple(tf.concat(parts, axis=0) for parts in zip(*blocks))


def embed(tokens, positions, wpe, weight):
    """The embeddings of int8 weights: tokens [...] int32 at positions [...] -> [..., n_embd] float32, each token's
    row of wte dequantized from its transposed QuantizedWeight [n_embd, n_vocab] (its scale is the token's),
    plus wpe's rows, as model.embed."""
    rows, start = [], 0
    for part in weight.parts:  # each token is in one slice of the vocabulary
        size = part.shape.as_list()[1]
        local = tokens - start
        inside = tf.cast((local >= 0) & (local < size), tf.float32)
        columns = tf.gather(tf.bitcast(part, tf.int8), tf.clip_by_value(local, 0, size - 1), axis=1)  # [k, ...]
        columns = tf.transpose(columns, list(range(1, columns.shape.ndims)) + [0])  # [..., k]
        rows.append(tf.cast(columns, tf.float32) * inside[..., tf.newaxis])
        start += size
    scale = tf.gather(weight.scale, tokens)[..., tf.newaxis]
    return tf.add_n(rows) * scale + tf.gather(wpe, positions)


def weights_if_kernel_works(parts, task, frozen_weights=False):
    """A Weights for one graph's int8 products (parts: column slices per weight), or None, said on stderr, where
    TensorFlow's quantized kernel does not work on this CPU: then `task` ('sampling', 'scoring') is float32.
    frozen_weights: the weights keep their values in the session, so the kernel may keep them too."""
    if kernel_works():
        return Weights(parts, kept=frozen_weights and kernel_works(kept=True))
    print(f'note: {task} in float32: TensorFlow has no working int8 product on this CPU', file=sys.stderr,
          flush=True)
    return None
