"""The matrix products of CPU sampling: split and packed. The same maths as model.linear, faster on a CPU.

A `Products` value says which to use. sample.py chooses it once, for the device the graph is built for, and
gpt2/sampling/decoding.py hands it down to every product of a step: nothing here is global state.

Split: each product is computed as `splits` products over slices of the shared dimension, summed, each an op of
its own running on one thread. At one or eight rows TensorFlow's products run faster as two single-threaded ops
side by side than as one op on two threads (sample.session_config gives each op cores / CPU_SPLITS threads).
The weight slices are along the first axis: views, not copies.

Packed: TensorFlow's x86 builds multiply with oneDNN, which first copies ("reorders") the weights into a blocked
layout of its own. At one row it skips that; at a few rows it does it on every call, and at eight rows that copy
is half the time of a step. oneDNN's fused MatMul+BiasAdd kernel, an internal TensorFlow op that TensorFlow's own
graph rewrites make when the weights are constants, can instead keep the reordered weights from its first call.
The kept copy costs memory (one more copy of the weights) and is right only while the weights do not change and
every call has the same number of rows (other counts fall back to a reorder per call, slow but correct). So
sampling uses it only when asked (sample_sequence(frozen_weights=True)), at batch > 1, on a CPU, for the steps
of one new token per row, and only where the machine has room for the copy.

Int8: with an int8.Weights value, every product goes through gpt2/sampling/int8.py instead: weights quantized
once (at load, or once per run), activations at each product, TensorFlow's quantized kernel (sample.products_for chooses it).

bench/bench_sample.py shows what each is worth (with --profile, per op); the figures are in docs/performance.md.
"""
import dataclasses
import functools
import sys

import numpy as np
import tensorflow.compat.v1 as tf

import model

# The one reader of free memory (a container's limit included); named here so that tests can fake it.
from gpt2.base.system import available_memory
from gpt2.sampling import int8 as int8_lib

# Products (and attention, in gpt2/sampling/decoding.py) in this many parts on a CPU: one per core of the 2-core machines it
# was measured on; sample.session_config gives each op cores / CPU_SPLITS threads to match.
CPU_SPLITS = 2
# oneDNN's fused MatMul op, and the kernel label that TensorFlow's rewrite gives it.
PACKED_OP = '_MklNativeFusedMatMul'
PACKED_LABEL = 'MklNameChangeOp'


@dataclasses.dataclass(frozen=True)
class Products:
    """How a decoding step multiplies. The default is one plain product per linear layer, as in model.py."""
    splits: int = 1  # each product, and attention, in this many parts side by side
    packed: bool = False  # steps of one token per row through the kernel that keeps its weights (frozen weights)
    int8: object = None  # an int8_lib.Weights: every product in int8 (gpt2/sampling/int8.py); None: float32

    def linear(self, one_token):
        """-> a linear(x [rows, k], w [k, n], b [n]) -> [rows, n] for one step's layers. one_token: whether the
        step feeds one token per row (True, False, or a scalar bool tensor); only those steps are packed."""
        if self.int8 is not None:
            return lambda x, w, b: int8_lib.matmul(x, self.int8.get(w), b, kept=self.int8.kept)
        plain = lambda x, w, b: split_matmul(x, w, self.splits) + b
        packed = lambda x, w, b: split_packed_matmul(x, w, b, self.splits)
        if not self.packed or one_token is False:
            return plain
        if one_token is True:
            return packed

        def either(x, w, b):
            # All rows go one way or the other: the split puts none in one of the parts.
            rows = tf.shape(x)[0]
            n_packed = tf.where(one_token, rows, 0)
            x_plain, x_packed = tf.split(x, tf.stack([rows - n_packed, n_packed]), num=2)
            return tf.concat([plain(x_plain, w, b), packed(x_packed, w, b)], axis=0)
        return either

    def embed(self, X, positions, wpe, wte):
        """model.embed: X [batch, seq] at positions -> [batch, seq, n_embd]; with int8, from wte's int8 copy."""
        if self.int8 is not None:
            return int8_lib.embed(X, positions, wpe, self.int8.get(wte, transpose=True))
        return model.embed(X, positions, wpe, wte)

    def logits(self, h, wte):
        """h [rows, n_embd] -> logits [rows, n_vocab] (tied weights), in `splits` slices of the vocabulary; packed
        when self.packed, as sampling calls it with the batch's rows at every step."""
        if self.int8 is not None:
            return int8_lib.matmul(h, self.int8.get(wte, transpose=True), kept=self.int8.kept)
        parts = tf.split(wte, sizes(wte.shape.as_list()[0], self.splits)) if self.splits > 1 else [wte]
        if self.packed:
            logits = [packed_matmul(h, part, tf.zeros(part.shape.as_list()[:1], h.dtype), transpose_b=True)
                      for part in parts]
        else:
            logits = [tf.matmul(h, part, transpose_b=True) for part in parts]
        return logits[0] if len(logits) == 1 else tf.concat(logits, axis=1)


def sizes(n, parts):
    """Sizes of `parts` near-equal parts of n."""
    return [n // parts + (i < n % parts) for i in range(parts)]


def k_slices(x, w, splits):
    """x [rows, k], w [k, n] -> `splits` pairs (x slice, w slice) along k."""
    parts = sizes(w.shape.as_list()[0], splits)
    return zip(tf.split(x, parts, axis=1), tf.split(w, parts, axis=0))


def split_matmul(x, w, splits):
    """x [rows, k] @ w [k, n] -> [rows, n], as a sum over `splits` slices of k."""
    if splits == 1:
        return tf.matmul(x, w)
    return tf.add_n([tf.matmul(xp, wp) for xp, wp in k_slices(x, w, splits)])


def packed_matmul(x, w, b, *, transpose_b=False, op=PACKED_OP):
    """x [rows, k] @ w [k, n] (w [n, k] with transpose_b) + b [n], through the kernel that keeps its weights."""
    attrs = {
        'T': tf.AttrValue(type=x.dtype.as_datatype_enum),
        'is_filter_const': tf.AttrValue(b=True),  # keep the reordered weights after the first call
        'transpose_a': tf.AttrValue(b=False),
        'transpose_b': tf.AttrValue(b=transpose_b),
        'num_args': tf.AttrValue(i=1),
        'fused_ops': tf.AttrValue(list=tf.AttrValue.ListValue(s=[b'BiasAdd'])),
        '_kernel': tf.AttrValue(s=PACKED_LABEL.encode()),
    }
    return tf.get_default_graph().create_op(op, [x, w, b], [x.dtype], name='packed_matmul', attrs=attrs).outputs[0]


def split_packed_matmul(x, w, b, splits):
    """split_matmul(x, w, splits) + b, through packed_matmul (the bias added by the first part)."""
    return tf.add_n([packed_matmul(xp, wp, b if i == 0 else tf.zeros_like(b))
                     for i, (xp, wp) in enumerate(k_slices(x, w, splits))])


@functools.lru_cache(maxsize=None)
def packed_kernel_works(op=PACKED_OP):
    """Whether this TensorFlow has oneDNN's fused MatMul kernel `op` on the CPU (x86 builds do) and it multiplies
    right. The kernel is internal to TensorFlow and could change in a later release: a small product is checked
    against NumPy once per process, and anything unexpected means plain products."""
    from tensorflow.python.framework import kernels  # TensorFlow's registry of kernels: not a public API
    try:
        registered = kernels.get_registered_kernels_for_op(op).kernel
        if not any(k.device_type == 'CPU' and k.label == PACKED_LABEL for k in registered):
            return False
        x, w, b = (np.arange(n, dtype=np.float32).reshape(shape) / 7
                   for n, shape in ((6, [2, 3]), (12, [3, 4]), (4, [4])))
        cpu_only = tf.ConfigProto(device_count={'GPU': 0})  # a GPU's memory stays untouched
        with tf.Graph().as_default(), tf.device('/CPU:0'), tf.Session(config=cpu_only) as sess:
            got = sess.run([packed_matmul(tf.constant(x), tf.constant(w), tf.constant(b), op=op),
                            packed_matmul(tf.constant(x), tf.constant(w.T), tf.constant(b), transpose_b=True,
                                          op=op)])
        return all(np.allclose(g, x @ w + b, rtol=1e-5) for g in got)
    except Exception:  # noqa: BLE001 - whatever went wrong, the plain products are right
        return False


# ---------------------------------------------------------------------------------------------------------------
# Room for the packed copy
# ---------------------------------------------------------------------------------------------------------------

# The packed path keeps a second copy of the weights. Counted with the weights themselves, which the scripts
# restore while the graph is built and so may not be in memory yet, and a tenth more for oneDNN's blocks and the
# step's activations: a random-weight 1558M at batch 8 peaked at 13.8 GB, 2.2 times its 6.2 GB of weights.
PACKED_MEMORY_FACTOR = 2.2


def room_for_packed_copy(weight_bytes):
    """Whether memory has room for the weights and their packed copy; if not, says so on stderr."""
    available = available_memory()
    needed = PACKED_MEMORY_FACTOR * weight_bytes
    if available is None or available >= needed:
        return True
    print(f'note: sampling with plain matrix products, since the packed copy of the weights does not fit: '
          f'{needed / 1e9:.1f} GB needed, {available / 1e9:.1f} GB available', file=sys.stderr, flush=True)
    return False
