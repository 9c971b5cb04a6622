"""Half precision (float16, bfloat16) for sampling and scoring on a GPU: the weights and the cache in half.

What is in half precision:
- the matrices of every product (c_attn, c_proj, c_fc, the MLP's c_proj, and wte for the logits), cast from the
  float32 variables once per run, outside the sampling loop (tf.init_scope, as decoding.read_once_scope reads
  them), and each product's input, rounded at the product;
- the cache of keys and values (decoding.empty_cache's dtype), and the queries and attention weights at the two
  products of attention that read it.

What stays float32: the residual stream between products, the layer norms (their statistics and their scale),
GELU, the attention scores' mask and softmax (the scores are widened before, the weights rounded after), and the
logits, so the penalties, the filters and the draw see float32 as ever.

Why this split: a sampling step at a few rows reads every weight and the whole cache once, so their bytes set a
step's pace, and half of them is half the memory traffic (and a GPU's tensor cores multiply half precision). A
step's activations are a few rows: in float32 they cost next to nothing, and the sums of the residual stream,
softmax's exponentials and the layer norms' variance keep float32's range and precision. On a CPU, bfloat16
samples slower than float32 (docs/performance.md; bench/gpu_check.py --on_cpu), so the scripts refuse half precision there (rules.check_precision); the library builds it for any
device, as the tests run it on a CPU.

tests/sampling/test_half.py checks the graph against the NumPy GPT-2 with its weights rounded to the half type.
"""
import dataclasses

import tensorflow.compat.v1 as tf

from gpt2.sampling import cpu_matmul, int8

# The half precisions (--precision) and their TensorFlow types.
DTYPES = {'float16': tf.float16, 'bfloat16': tf.bfloat16}
PRECISIONS = tuple(DTYPES)


def matmul(x, w, *, transpose_b=False):
    """x [rows, k] float32 @ w [k, n] in half precision (w [n, k] with transpose_b) -> [rows, n] float32: x
    rounded to w's type, the product in it (on a GPU it accumulates in float32, TensorFlow's default for half
    products, and rounds its result once), then widened."""
    return tf.cast(tf.matmul(tf.cast(x, w.dtype), w, transpose_b=transpose_b), tf.float32)


def scores(q, k):
    """q [..., dst, head_dim] float32, k [..., src, head_dim] in the cache's type -> q . k [..., dst, src]
    float32, for the mask and softmax. Where the cache is float32, the plain product."""
    return tf.cast(tf.matmul(tf.cast(q, k.dtype), k, transpose_b=True), tf.float32)


def weighted(w, v):
    """Attention weights w [..., dst, src] float32, v [..., src, head_dim] in the cache's type -> w @ v
    [..., dst, head_dim] float32. Where the cache is float32, the plain product."""
    return tf.cast(tf.matmul(tf.cast(w, v.dtype), v), tf.float32)


class Weights:
    """The half-precision copies of one graph's weights, each cast once from the tensor read outside any loop
    (tf.init_scope): once per run of the graph, however many steps and products use it. The float32 variables
    stay beside them, so memory does not fall yet."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.made = {}  # (the read tensor's name, the shape used) -> its copy in self.dtype

    def get(self, w):
        """w [k, n]: a read weight, a reshape of one, or either as it enters a loop -> the same in self.dtype."""
        source = int8.read_weight(w)
        key = (source.name, tuple(w.shape.as_list()))
        if key not in self.made:
            with tf.init_scope():
                self.made[key] = tf.cast(tf.reshape(source, w.shape), self.dtype)
        return self.made[key]


@dataclasses.dataclass(frozen=True)
class Products(cpu_matmul.Products):
    """cpu_matmul.Products whose products multiply in half precision: float32 in and out, the weights and the
    product in weights.dtype (never split nor packed: both are for float32 on a CPU; splits still groups
    attention's heads)."""
    weights: Weights = None

    def linear(self, one_token):
        return lambda x, w, b: matmul(x, self.weights.get(w)) + b

    def logits(self, h, wte):
        """h [rows, n_embd] -> float32 logits [rows, n_vocab] (tied weights)."""
        return matmul(h, self.weights.get(wte), transpose_b=True)


def products(precision, splits=1):
    """The Products of a half precision ('float16', 'bfloat16'), with attention in `splits` groups of heads."""
    return Products(splits=splits, weights=Weights(DTYPES[precision]))


def cache_dtype(plan):
    """The dtype of the cache of keys and values that a step multiplying with plan (a cpu_matmul.Products)
    writes: float32, or the half type of a half.Products."""
    return plan.weights.dtype if isinstance(plan, Products) else tf.float32
