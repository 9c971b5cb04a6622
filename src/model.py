"""GPT-2, the transformer of "Language Models are Unsupervised Multitask Learners" (Radford et al., 2019), in
TensorFlow 1 graph style (tf.compat.v1), with the released checkpoints' variable names.

Functions go from the smallest piece to the whole model. Shapes are written [batch, seq, n_embd] and so on.
The cache of keys and values, `past` going in and `present` coming out, has one layout:

    [batch, n_layer, 2 (k, v), n_head, sequence, head_dim]      head_dim = n_embd // n_head

This file is the model as the original computes it, for training and for checking. Sampling runs the same
pieces (embed, block, norm, unembed) over a cache of fixed size in gpt2/sampling/decoding.py.
"""
import dataclasses

import numpy as np
import tensorflow.compat.v1 as tf


@dataclasses.dataclass
class HParams:
    n_vocab: int = 0  # tokens in the vocabulary; 0 until read from hparams.json
    n_ctx: int = 1024  # positions in the window
    n_embd: int = 768  # width of the residual stream
    n_head: int = 12  # attention heads per layer
    n_layer: int = 12  # transformer blocks

    def override_from_dict(self, values):
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f'unknown hyperparameters {unknown}; known: {[f.name for f in dataclasses.fields(self)]}')
        for key, value in values.items():
            setattr(self, key, value)
        return self


def default_hparams():
    return HParams()


# ---------------------------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------------------------

def shape_list(x):
    """The static dimensions where known, dynamic ones elsewhere."""
    static = x.shape.as_list()
    dynamic = tf.shape(x)
    return [dynamic[i] if s is None else s for i, s in enumerate(static)]


def reshape(x, shape):
    """tf.reshape to shape, whose dimensions are ints or scalar tensors. One unknown dimension is given as -1,
    which saves building the shape at run time (a few hundred small ops per decoding step)."""
    shape = [tf.compat.dimension_value(d) for d in shape]
    unknown = [i for i, d in enumerate(shape) if not isinstance(d, int)]
    if len(unknown) == 1:
        shape = [-1 if i == unknown[0] else d for i, d in enumerate(shape)]
    return tf.reshape(x, shape)


@tf.custom_gradient
def gelu(x):
    """The tanh approximation of GELU, as GPT-2 was trained with: 0.5 x (1 + tanh(c (x + a x^3))).

    Its gradient is written out, from x and the tanh only: the composite's own would keep every step's output
    for the backward pass, four more tensors of [batch * seq, 4 * n_embd] a layer (bench/bench_train.py)."""
    c, a = np.sqrt(2 / np.pi), 0.044715
    t = tf.tanh(c * (x + a * tf.pow(x, 3)))

    def grad(dy):
        # d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (c * (1 + 3 * a * x * x)))
    return 0.5 * x * (1 + t), grad


def standardize(x, axis, epsilon):
    """(x - mean) / sqrt(biased variance + epsilon) along axis.

    Its gradient is written out, from the result and 1 / sqrt(variance + epsilon): the composite's own would keep
    three more tensors of x's size for the backward pass (bench/bench_train.py)."""
    @tf.custom_gradient
    def forward(x):
        u = tf.reduce_mean(x, axis=axis, keepdims=True)
        s = tf.reduce_mean(tf.square(x - u), axis=axis, keepdims=True)
        r = tf.rsqrt(s + epsilon)
        y = (x - u) * r

        def grad(dy):
            mean = lambda t: tf.reduce_mean(t, axis=axis, keepdims=True)
            return r * (dy - mean(dy) - y * mean(dy * y))
        return y, grad
    return forward(x)


def norm(x, scope, *, axis=-1, epsilon=1e-5):
    """Layer norm over the last axis (biased variance), then a diagonal affine transform with g and b.
    Computed in float32 whatever x's dtype (a half-precision sum of squares loses the statistics); the result
    has x's dtype."""
    with tf.variable_scope(scope):
        n_state = x.shape[-1]
        g = tf.get_variable('g', [n_state], initializer=tf.constant_initializer(1))
        b = tf.get_variable('b', [n_state], initializer=tf.constant_initializer(0))
        return tf.cast(standardize(tf.cast(x, g.dtype), axis, epsilon) * g + b, x.dtype)


def split_states(x, n):
    """[..., m] -> [..., n, m // n]"""
    *start, m = shape_list(x)
    return reshape(x, start + [n, m // n])


def merge_states(x):
    """[..., a, b] -> [..., a * b]"""
    *start, a, b = shape_list(x)
    return reshape(x, start + [a * b])


def linear(x, w, b):
    """x [rows, k] @ w [k, n] + b [n] -> [rows, n], in x's dtype (the weights are cast to it: float32 weights
    make half-precision products when the activations are half, see model's dtype)."""
    return tf.matmul(x, tf.cast(w, x.dtype)) + tf.cast(b, x.dtype)


def conv1d(x, scope, nf, *, w_init_stdev=0.02, linear=linear):
    """A position-wise linear layer, stored as a width-1 convolution: [..., nx] -> [..., nf].
    linear: the product; sampling hands down faster ones for the same maths (see gpt2/sampling/cpu_matmul.py)."""
    with tf.variable_scope(scope):
        *start, nx = shape_list(x)
        w = tf.get_variable('w', [1, nx, nf], initializer=tf.random_normal_initializer(stddev=w_init_stdev))
        b = tf.get_variable('b', [nf], initializer=tf.constant_initializer(0))
        return reshape(linear(tf.reshape(x, [-1, nx]), tf.reshape(w, [-1, nf]), b), start + [nf])


def attention_mask(nd, ns, *, dtype):
    """[nd, ns]: 1 where destination i (of the nd newest positions) may attend to source j (of all ns positions),
    else 0. The destinations are the last nd of the ns positions, so each sees every cached position and itself."""
    i = tf.range(nd)[:, None]
    j = tf.range(ns)
    m = i >= j - ns + nd
    return tf.cast(m, dtype)


# ---------------------------------------------------------------------------------------------------------------
# Attention, MLP, block
# ---------------------------------------------------------------------------------------------------------------

def split_heads(x, n_head):
    """[batch, seq, n_embd] -> [batch, head, seq, head_dim]"""
    return tf.transpose(split_states(x, n_head), [0, 2, 1, 3])


def merge_heads(x):
    """[batch, head, seq, head_dim] -> [batch, seq, n_embd]"""
    return merge_states(tf.transpose(x, [0, 2, 1, 3]))


def mask_attn_weights(w, b):
    """Masked-out scores are pushed down by 1e10 (the original sets them to -1e10): far below any real score,
    finite in float32, so softmax gives them exactly zero weight without producing NaN, and the others the
    original's weights. An addition, not the original's w * b - 1e10 * (1 - b): a training step then keeps no
    [head, dst, src] products for the backward pass, where an addition's gradient passes through."""
    return w + tf.cast(-1e10, w.dtype) * (1 - tf.cast(b, w.dtype))


def scale_queries(q):
    """q [..., head_dim] / sqrt(head_dim): the scores' scale, applied to the queries, 1/16 the size of the
    scores at 1024 positions of 64 dimensions (and exact there: the scale is a power of two)."""
    return q * tf.rsqrt(tf.cast(shape_list(q)[-1], q.dtype))


def softmax_to(x, dtype):
    """softmax of float32 x over its last axis, computed in float32 and returned in dtype (half precision).
    Its gradient is written out from that result, y (dy - sum(dy y)), so that the backward pass keeps only the
    half-precision copy of the attention weights, not the float32 one too (bench/bench_train.py --profile)."""
    @tf.custom_gradient
    def forward(x):
        y = tf.cast(tf.nn.softmax(x, axis=-1), dtype)

        def grad(dy):
            with tf.control_dependencies([dy]):  # not before: a float32 copy made early would be held as long
                y32 = tf.cast(y, tf.float32)
            dy32 = tf.cast(dy, tf.float32)
            return y32 * (dy32 - tf.reduce_sum(dy32 * y32, axis=-1, keepdims=True))
        return y, grad
    return forward(x)


def attn_weights(w, mask):
    """Scores of scaled queries . keys [..., dst, src] -> attention weights: masked, softmax over src. Masked and
    normalised in float32 whatever the scores' dtype (float16 cannot hold the mask's -1e10), returned in the
    scores' dtype."""
    if w.dtype == tf.float32:
        # TensorFlow's own op: its gradient needs only its output
        return tf.nn.softmax(mask_attn_weights(w, mask), axis=-1)
    return softmax_to(mask_attn_weights(tf.cast(w, tf.float32), mask), w.dtype)


def multihead_attn(q, k, v, mask):
    """q [..., dst, head_dim], k and v [..., src, head_dim], mask [dst, src] -> like q"""
    w = attn_weights(tf.matmul(scale_queries(q), k, transpose_b=True), mask)
    return tf.matmul(w, v)


def attn(x, scope, n_state, *, past, hparams, linear=linear):
    """x [batch, seq, n_embd], past [batch, 2, head, past_seq, head_dim] or None
    -> a [batch, seq, n_embd], present [batch, 2, head, seq, head_dim]"""
    assert x.shape.ndims == 3
    assert n_state % hparams.n_head == 0
    if past is not None:
        assert past.shape.ndims == 5
    with tf.variable_scope(scope):
        c = conv1d(x, 'c_attn', n_state * 3, linear=linear)
        q, k, v = [split_heads(t, hparams.n_head) for t in tf.split(c, 3, axis=2)]
        present = tf.stack([k, v], axis=1)
        if past is not None:
            pk, pv = tf.unstack(past, axis=1)
            k = tf.concat([pk, k], axis=-2)
            v = tf.concat([pv, v], axis=-2)
        _, _, nd, _ = shape_list(q)
        _, _, ns, _ = shape_list(k)
        a = multihead_attn(q, k, v, attention_mask(nd, ns, dtype=q.dtype))
        return conv1d(merge_heads(a), 'c_proj', n_state, linear=linear), present


def mlp(x, scope, n_state, *, linear=linear):
    """[batch, seq, n_embd] -> [batch, seq, n_embd], through a hidden layer of n_state = 4 * n_embd."""
    with tf.variable_scope(scope):
        nx = x.shape[-1]
        h = gelu(conv1d(x, 'c_fc', n_state, linear=linear))
        return conv1d(h, 'c_proj', nx, linear=linear)


def block(x, scope, *, past, hparams, attention=attn, linear=linear):
    """One pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)).
    x [batch, seq, n_embd] -> x of the same shape, present [batch, 2, head, seq, head_dim].
    attention and linear: attn and linear here; the incremental decoder hands down its cached attention (whose
    past and present are its buffers) and its products."""
    with tf.variable_scope(scope):
        nx = x.shape[-1]
        a, present = attention(norm(x, 'ln_1'), 'attn', nx, past=past, hparams=hparams, linear=linear)
        x = x + a
        m = mlp(norm(x, 'ln_2'), 'mlp', nx * 4, linear=linear)
        x = x + m
        return x, present


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------

def past_shape(*, hparams, batch_size=None, sequence=None):
    return [batch_size, hparams.n_layer, 2, hparams.n_head, sequence, hparams.n_embd // hparams.n_head]


def expand_tile(value, size):
    """Stack size copies of value along a new first axis."""
    value = tf.convert_to_tensor(value, name='value')
    ndims = value.shape.ndims
    return tf.tile(tf.expand_dims(value, axis=0), [size] + [1] * ndims)


def positions_for(tokens, past_length):
    """[batch, seq] token ids -> [batch, seq] positions, counted on from the cached ones."""
    batch_size = tf.shape(tokens)[0]
    nsteps = tf.shape(tokens)[1]
    return expand_tile(past_length + tf.range(nsteps), batch_size)


def embeddings(hparams):
    """The position embeddings wpe [n_ctx, n_embd] and the token embeddings wte [n_vocab, n_embd]."""
    wpe = tf.get_variable('wpe', [hparams.n_ctx, hparams.n_embd],
                          initializer=tf.random_normal_initializer(stddev=0.01))
    wte = tf.get_variable('wte', [hparams.n_vocab, hparams.n_embd],
                          initializer=tf.random_normal_initializer(stddev=0.02))
    return wpe, wte


def embed(X, positions, wpe, wte):
    """X [batch, seq] token ids at positions [batch, seq] (or [seq], the same for every row) -> [batch, seq, n_embd]"""
    return tf.gather(wte, X) + tf.gather(wpe, positions)


def unembed(h, wte):
    """[..., n_embd] -> logits [..., n_vocab], with the token embeddings (tied weights)."""
    *start, n_embd = shape_list(h)
    logits = tf.matmul(tf.reshape(h, [-1, n_embd]), tf.cast(wte, h.dtype), transpose_b=True)
    return reshape(logits, start + [shape_list(wte)[0]])


def recomputed_block(x, scope, *, hparams):
    """block() without past, keeping none of its activations for the backward pass, which runs it again once the
    gradient from above has arrived. (tf.recompute_grad would order that with `t == t`, which v1 graphs make a
    Python True: it recomputes during the forward pass and saves nothing.) -> (h, None): no present, which
    training does not use (as an output it would be kept, with a gradient of zeros, for every layer until its
    backward pass: 0.75 GB at 774M)."""
    outer = tf.get_variable_scope()

    # In half precision every read of a weight makes a cast copy: made only once the block's input is there, and
    # in the backward pass only once the gradient is, or every block's copies are made at once, ahead.
    half = x.dtype != tf.float32

    @tf.custom_gradient
    def run(x):
        with tf.control_dependencies([x] if half else []):
            h, _ = block(x, scope, past=None, hparams=hparams)

        def grad(dh, variables=None):
            with tf.control_dependencies([dh]):
                x_again = tf.identity(x)
            with tf.control_dependencies([dh] if half else []):
                with tf.variable_scope(outer, reuse=True):
                    again, _ = block(x_again, scope, past=None, hparams=hparams)
            grads = tf.gradients(again, [x_again] + variables, grad_ys=dh)
            return grads[0], grads[1:]
        return h, grad
    return run(x), None


def model(hparams, X, past=None, scope='model', reuse=False, *, recompute=False, dtype=tf.float32, linear=linear):
    """X [batch, seq] token ids, past [batch, n_layer, 2, head, past_seq, head_dim] or None
    -> {'logits': [batch, seq, n_vocab], 'present': [batch, n_layer, 2, head, seq, head_dim] (None with
    recompute), 'h': the last hidden state after ln_f [batch, seq, n_embd], from which the logits are made}

    recompute: for training, keep only each block's input for the backward pass and compute the rest again there
    (less memory, one more forward pass of the blocks); needs resource variables and no past.
    dtype: of the activations and the products (the weights stay float32 and are cast where they are read):
    tf.bfloat16 or tf.float16 for mixed-precision training; the layer norms and the softmax compute in float32,
    and the logits come in dtype. linear: the blocks' product (linear above, or training's, which casts the
    weights again for the backward pass instead of holding the forward pass's copies)."""
    with tf.variable_scope(scope, reuse=reuse):
        wpe, wte = embeddings(hparams)
        past_length = 0 if past is None else tf.shape(past)[-2]
        h = tf.cast(embed(X, positions_for(X, past_length), wpe, wte), dtype)

        presents = []
        pasts = tf.unstack(past, axis=1) if past is not None else [None] * hparams.n_layer
        assert len(pasts) == hparams.n_layer
        for layer, layer_past in enumerate(pasts):
            if recompute:
                h, present = recomputed_block(h, f'h{layer}', hparams=hparams)
            else:
                h, present = block(h, f'h{layer}', past=layer_past, hparams=hparams, linear=linear)
            presents.append(present)
        h = norm(h, 'ln_f')
        return {'logits': unembed(h, wte), 'present': None if recompute else tf.stack(presents, axis=1), 'h': h}
