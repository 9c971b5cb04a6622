"""The GPT-2 transformer, in TensorFlow 1 graph style (tf.compat.v1), with the released checkpoints' names.

Functions go from the smallest piece to the whole model. Shapes are written [batch, seq, n_embd] and so on.
The cache of keys and values ("past" going in, "present" coming out) has one layout throughout:

    [batch, n_layer, 2 (k, v), n_head, sequence, head_dim]      head_dim = n_embd // n_head

`model()` is the straightforward computation, faithful to the original. Sampling runs the same blocks through
`decode_last()` (and tests through `decode_step()`), which keep the cache in buffers of fixed length and write
each new position in place; see "Incremental decoding" below.
"""
import contextlib
import dataclasses
import functools

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
    """tf.reshape to shape, whose dimensions are ints or scalar tensors; one unknown one is given as -1, which
    saves building the shape at run time (a few hundred small ops per decoding step)."""
    shape = [tf.compat.dimension_value(d) for d in shape]  # ints, and dimensions of static shapes as ints
    unknown = [i for i, d in enumerate(shape) if not isinstance(d, int)]
    if len(unknown) == 1:
        shape = [-1 if i == unknown[0] else d for i, d in enumerate(shape)]
    return tf.reshape(x, shape)


def softmax(x, axis=-1):
    x = x - tf.reduce_max(x, axis=axis, keepdims=True)
    ex = tf.exp(x)
    return ex / tf.reduce_sum(ex, axis=axis, keepdims=True)


def gelu(x):
    # The tanh approximation of GELU, as GPT-2 was trained with.
    return 0.5 * x * (1 + tf.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * tf.pow(x, 3))))


def norm(x, scope, *, axis=-1, epsilon=1e-5):
    """Layer norm over the last axis (biased variance), then a diagonal affine transform with g and b."""
    with tf.variable_scope(scope):
        n_state = x.shape[-1]
        g = tf.get_variable('g', [n_state], initializer=tf.constant_initializer(1))
        b = tf.get_variable('b', [n_state], initializer=tf.constant_initializer(0))
        u = tf.reduce_mean(x, axis=axis, keepdims=True)
        s = tf.reduce_mean(tf.square(x - u), axis=axis, keepdims=True)
        x = (x - u) * tf.rsqrt(s + epsilon)
        return x * g + b


def split_states(x, n):
    """[..., m] -> [..., n, m // n]"""
    *start, m = shape_list(x)
    return reshape(x, start + [n, m // n])


def merge_states(x):
    """[..., a, b] -> [..., a * b]"""
    *start, a, b = shape_list(x)
    return reshape(x, start + [a * b])


# Each matrix product is computed as MATMUL_SPLITS products over slices of the shared dimension, summed (for the
# logits: over slices of the vocabulary, concatenated). The sum is the same maths; the reason is speed: at one or
# eight rows, TensorFlow's products run faster as two single-threaded ops side by side than as one op on two
# threads (bench/bench_sample.py on 2 cores: 33 -> 39 tokens/s at batch 1). sample.session_config() gives each op
# cores / MATMUL_SPLITS threads to match. The weight slices are along the first axis: views, not copies.
MATMUL_SPLITS = 2


def halves(n):
    """Sizes of MATMUL_SPLITS near-equal parts of n."""
    return [n // MATMUL_SPLITS + (i < n % MATMUL_SPLITS) for i in range(MATMUL_SPLITS)]


def k_slices(x, w):
    """x [rows, k], w [k, n] -> MATMUL_SPLITS pairs (x slice, w slice) along k."""
    parts = halves(shape_list(w)[0])
    return zip(tf.split(x, parts, axis=1), tf.split(w, parts, axis=0))


def split_matmul(x, w):
    """x [rows, k] @ w [k, n] -> [rows, n], as a sum over slices of k."""
    return tf.add_n([tf.matmul(xp, wp) for xp, wp in k_slices(x, w)])


# Packed weights, for sampling more than one row at a time.
#
# TensorFlow's x86 builds multiply matrices with oneDNN, which first copies ("reorders") the weight matrix into a
# blocked layout of its own. At one row it skips that; at a few rows it does it on every call, and at eight rows
# that copy is half the time of a step. oneDNN's fused MatMul+BiasAdd kernel (an internal TensorFlow op, made by
# TensorFlow's own graph rewrites when the weights are constants) can instead keep the reordered weights from its
# first call and reuse them: bench/bench_sample.py, 124M at batch 8, 56 -> 31 ms per step for the products alone.
# The kept copy costs memory (one more copy of the weights) and is right only while the weights do not change and
# every call has the same number of rows (the layout oneDNN picks depends on it; other counts fall back to a
# reorder per call, slow but correct). So sampling uses it only when asked (sample_sequence(frozen_weights=True),
# as the scripts do), at batch > 1, for the steps of one new token per row; prompts take the plain products.
PACKED_OP = '_MklNativeFusedMatMul'


@functools.lru_cache(maxsize=None)
def packed_weights_available():
    """Whether this TensorFlow has oneDNN's fused MatMul kernel (x86 builds do; others fall back to tf.matmul),
    and it multiplies right. The kernel is internal to TensorFlow and could change in a later release: a small
    product is checked against NumPy once per process, and anything unexpected means plain products."""
    from tensorflow.python.framework import kernels
    try:
        registered = kernels.get_registered_kernels_for_op(PACKED_OP).kernel
        if not any(k.device_type == 'CPU' and k.label == 'MklNameChangeOp' for k in registered):
            return False
        x, w, b = (np.arange(n, dtype=np.float32).reshape(shape) / 7 for n, shape in ((6, [2, 3]), (12, [3, 4]),
                                                                                      (4, [4])))
        with tf.Graph().as_default(), tf.Session() as sess:
            got = sess.run([packed_matmul(tf.constant(x), tf.constant(w), tf.constant(b)),
                            packed_matmul(tf.constant(x), tf.constant(w.T), tf.constant(b), transpose_b=True)])
        return all(np.allclose(g, x @ w + b, rtol=1e-5) for g in got)
    except Exception:  # noqa: BLE001 - whatever went wrong, the plain products are right
        return False


def packed_matmul(x, w, b, *, transpose_b=False):
    """x [rows, k] @ w [k, n] (w [n, k] with transpose_b) + b [n], through the kernel that keeps its weights."""
    attrs = {
        'T': tf.AttrValue(type=x.dtype.as_datatype_enum),
        'is_filter_const': tf.AttrValue(b=True),  # keep the reordered weights after the first call
        'transpose_a': tf.AttrValue(b=False),
        'transpose_b': tf.AttrValue(b=transpose_b),
        'num_args': tf.AttrValue(i=1),
        'fused_ops': tf.AttrValue(list=tf.AttrValue.ListValue(s=[b'BiasAdd'])),
        '_kernel': tf.AttrValue(s=b'MklNameChangeOp'),  # the kernel label TensorFlow's rewrite would set
    }
    return tf.get_default_graph().create_op(PACKED_OP, [x, w, b], [x.dtype], name='packed_matmul',
                                            attrs=attrs).outputs[0]


def split_packed_matmul(x, w, b):
    """split_matmul(x, w) + b, through packed_matmul (the bias added by the first part)."""
    return tf.add_n([packed_matmul(xp, wp, b if i == 0 else tf.zeros_like(b))
                     for i, (xp, wp) in enumerate(k_slices(x, w))])


# While decode_hidden builds with packed weights: how many of the rows [batch * seq] reaching each linear layer
# take the plain products (the rest take the packed ones): 0 when every step is of one token, else a tensor.
# None: all plain, as in model().
_plain_rows = None


@contextlib.contextmanager
def packed_products(plain_rows):
    global _plain_rows
    previous, _plain_rows = _plain_rows, plain_rows
    try:
        yield
    finally:
        _plain_rows = previous


def linear(x, w, b):
    """x [rows, k] @ w [k, n] + b [n]"""
    if _plain_rows is None:
        return split_matmul(x, w) + b
    if isinstance(_plain_rows, int):  # 0: every row packed
        return split_packed_matmul(x, w, b)
    plain, packed = tf.split(x, tf.stack([_plain_rows, tf.shape(x)[0] - _plain_rows]), axis=0)
    return tf.concat([split_matmul(plain, w) + b, split_packed_matmul(packed, w, b)], axis=0)


def conv1d(x, scope, nf, *, w_init_stdev=0.02):
    """A position-wise linear layer, stored as a width-1 convolution: [..., nx] -> [..., nf]."""
    with tf.variable_scope(scope):
        *start, nx = shape_list(x)
        w = tf.get_variable('w', [1, nx, nf], initializer=tf.random_normal_initializer(stddev=w_init_stdev))
        b = tf.get_variable('b', [nf], initializer=tf.constant_initializer(0))
        c = reshape(linear(tf.reshape(x, [-1, nx]), tf.reshape(w, [-1, nf]), b), start + [nf])
        return c


def attention_mask(nd, ns, *, dtype):
    """1 where destination i (of the nd newest positions) may attend to source j (of all ns positions), else 0.

    The destinations are the last nd of the ns positions, so each sees every cached position and itself.
    """
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
    """Masked-out scores become -1e10 (as in the original): far below any real score, finite in float32, so
    softmax gives them exactly zero weight without producing NaN."""
    b = tf.cast(b, w.dtype)
    return w * b - tf.cast(1e10, w.dtype) * (1 - b)


def attn_weights(w, mask, head_dim):
    """Scores q . k [..., dst, src] -> attention weights: scaled by 1 / sqrt(head_dim), masked, softmax over src."""
    w = w * tf.rsqrt(tf.cast(head_dim, w.dtype))
    w = mask_attn_weights(w, mask)
    return softmax(w)


def multihead_attn(q, k, v, mask):
    """q [batch, head, dst, head_dim], k and v [batch, head, src, head_dim], mask [dst, src] -> like q."""
    w = attn_weights(tf.matmul(q, k, transpose_b=True), mask, v.shape[-1])
    return tf.matmul(w, v)


def qkv(x, n_embd, n_head):
    """[batch, seq, n_embd] -> q, k, v, each [batch, head, seq, head_dim]"""
    c = conv1d(x, 'c_attn', n_embd * 3)
    return [split_heads(t, n_head) for t in tf.split(c, 3, axis=2)]


def attn(x, scope, n_state, *, past, hparams):
    """x [batch, seq, n_embd], past [batch, 2, head, past_seq, head_dim] or None
    -> a [batch, seq, n_embd], present [batch, 2, head, seq, head_dim]"""
    assert x.shape.ndims == 3
    assert n_state % hparams.n_head == 0
    if past is not None:
        assert past.shape.ndims == 5
    with tf.variable_scope(scope):
        q, k, v = qkv(x, n_state, hparams.n_head)
        present = tf.stack([k, v], axis=1)
        if past is not None:
            pk, pv = tf.unstack(past, axis=1)
            k = tf.concat([pk, k], axis=-2)
            v = tf.concat([pv, v], axis=-2)
        _, _, nd, _ = shape_list(q)
        _, _, ns, _ = shape_list(k)
        a = multihead_attn(q, k, v, attention_mask(nd, ns, dtype=q.dtype))
        return conv1d(merge_heads(a), 'c_proj', n_state), present


def mlp(x, scope, n_state):
    """[batch, seq, n_embd] -> [batch, seq, n_embd], through a hidden layer of n_state = 4 * n_embd."""
    with tf.variable_scope(scope):
        nx = x.shape[-1]
        h = gelu(conv1d(x, 'c_fc', n_state))
        return conv1d(h, 'c_proj', nx)


def residual_block(x, scope, attention):
    """One pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)).
    attention(h, scope, n_state) -> (a, state); the block returns (x, state)."""
    with tf.variable_scope(scope):
        nx = x.shape[-1]
        a, state = attention(norm(x, 'ln_1'), 'attn', nx)
        x = x + a
        x = x + mlp(norm(x, 'ln_2'), 'mlp', nx * 4)
        return x, state


def block(x, scope, *, past, hparams):
    """x [batch, seq, n_embd] -> x of the same shape, present [batch, 2, head, seq, head_dim]"""
    return residual_block(x, scope, lambda h, name, n: attn(h, name, n, past=past, hparams=hparams))


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
    wpe = tf.get_variable('wpe', [hparams.n_ctx, hparams.n_embd],
                          initializer=tf.random_normal_initializer(stddev=0.01))
    wte = tf.get_variable('wte', [hparams.n_vocab, hparams.n_embd],
                          initializer=tf.random_normal_initializer(stddev=0.02))
    return wpe, wte


def unembed(h, wte, *, packed=False):
    """[..., n_embd] -> logits [..., n_vocab], with the token embeddings (tied weights); packed: through
    packed_matmul, for calls that always have the same number of rows."""
    *start, n_embd = shape_list(h)
    h = tf.reshape(h, [-1, n_embd])
    parts = tf.split(wte, halves(shape_list(wte)[0]))  # slices of the vocabulary
    if packed:
        logits = [packed_matmul(h, part, tf.zeros(shape_list(part)[:1], h.dtype), transpose_b=True)
                  for part in parts]
    else:
        logits = [tf.matmul(h, part, transpose_b=True) for part in parts]
    return reshape(tf.concat(logits, axis=1), start + [shape_list(wte)[0]])


def recomputed_block(x, scope, *, hparams):
    """block() without past, keeping none of its activations for the backward pass, which runs it again once the
    gradient from above has arrived. (tf.recompute_grad would order that with `t == t`, which v1 graphs make a
    Python True: it recomputes during the forward pass and saves nothing.)"""
    outer = tf.get_variable_scope()

    @tf.custom_gradient
    def run(x):
        h, present = block(x, scope, past=None, hparams=hparams)

        def grad(dh, dpresent, variables=None):
            with tf.control_dependencies([dh]):
                x_again = tf.identity(x)
            with tf.variable_scope(outer, reuse=True):
                again = block(x_again, scope, past=None, hparams=hparams)
            grads = tf.gradients(again, [x_again] + variables, grad_ys=[dh, dpresent])
            return grads[0], grads[1:]
        return (h, present), grad
    return run(x)


def model(hparams, X, past=None, scope='model', reuse=False, *, recompute=False):
    """X [batch, seq] token ids, past [batch, n_layer, 2, head, past_seq, head_dim] or None
    -> {'logits': [batch, seq, n_vocab], 'present': [batch, n_layer, 2, head, seq, head_dim]}

    recompute: for training, keep only each block's input for the backward pass and compute the rest again there
    (less memory, one more forward pass of the blocks); needs resource variables and no past."""
    with tf.variable_scope(scope, reuse=reuse):
        wpe, wte = embeddings(hparams)
        past_length = 0 if past is None else tf.shape(past)[-2]
        h = tf.gather(wte, X) + tf.gather(wpe, positions_for(X, past_length))

        presents = []
        pasts = tf.unstack(past, axis=1) if past is not None else [None] * hparams.n_layer
        assert len(pasts) == hparams.n_layer
        for layer, layer_past in enumerate(pasts):
            if recompute:
                h, present = recomputed_block(h, f'h{layer}', hparams=hparams)
            else:
                h, present = block(h, f'h{layer}', past=layer_past, hparams=hparams)
            presents.append(present)
        h = norm(h, 'ln_f')
        return {'logits': unembed(h, wte), 'present': tf.stack(presents, axis=1)}


# ---------------------------------------------------------------------------------------------------------------
# Incremental decoding, for sampling
#
# The same blocks and weights as model(), with the cache kept differently: per layer, a key buffer and a value
# buffer allocated once at the full length of the sample. Each buffer holds one layer's k or v with the heads
# first, all axes but head_dim flattened into rows: [head * batch * total_len, head_dim], row
# (h * batch + b) * total_len + slot. A step writes its positions' rows with InplaceUpdate, which (unlike
# tensor_scatter_nd_update, which copies the whole buffer when it runs inside a tf.while_loop) changes the buffer
# itself, then attends over a [head * batch, total_len, head_dim] view of it, the slots not yet written masked
# out. So no step copies the cache. The price: a buffer belongs to one chain of steps; a cache passed to
# decode_step must not be used again except through the cache decode_step returns.
#
# A shared prefix: when every row continues the same prompt (as in the interactive script), the prompt can be run
# once, at batch 1, and its cache (prefix_len slots per head) shared by all rows: the rows' own cache then holds
# only the positions after it, slot = position - prefix_len. Attention reads the prompt's keys and values once
# per step for all rows (one product of [batch, head_dim] by [head_dim, prefix_len] per head) instead of once
# per row: at batch 8 after a 512-token prompt, 38 MB a step instead of 302 MB.
# ---------------------------------------------------------------------------------------------------------------

def empty_cache(hparams, batch_size, total_len):
    """n_layer pairs (k, v) of zeroed buffers [head * batch * total_len, head_dim]."""
    shape = tf.stack([hparams.n_head * batch_size * total_len, hparams.n_embd // hparams.n_head])
    # Empty, unlike tf.zeros, is never constant-folded, so every buffer is its own memory, fresh on each run.
    # Zeroed (init) because a masked score is w * 0 - 1e10, which stays NaN if w is NaN from garbage memory.
    return [tuple(tf.raw_ops.Empty(shape=shape, dtype=tf.float32, init=True) for _ in 'kv')
            for _ in range(hparams.n_layer)]


def read_once_scope(scope='model'):
    """A variable scope whose variables are read once and reused as those tensors after.

    The reads are made outside any tf.while_loop (init_scope leaves the loop's context), so a loop built in this
    scope takes the weights as loop constants instead of reading every variable again on every step.
    """
    reads = {}

    def read_once(getter, name, *args, **kwargs):
        if name not in reads:
            with tf.init_scope():
                reads[name] = tf.identity(getter(name, *args, **kwargs))
        return reads[name]

    with tf.variable_scope(scope, reuse=tf.AUTO_REUSE, custom_getter=read_once) as vs:
        return vs


def transpose_rows(x, perm, shape):
    """tf.transpose(tf.reshape(x, shape), perm), for perm that keeps the last axis last and a static shape: as a
    gather of whole rows of the last axis. For the few rows of a decoding step that is 70 us faster per call
    than oneDNN's transpose (bench/bench_sample.py --profile, batch 8), and free where nothing moves."""
    order = np.arange(np.prod(shape[:-1])).reshape(shape[:-1]).transpose(perm[:-1]).reshape(-1)
    rows = tf.reshape(x, [-1, shape[-1]])
    return tf.reshape(rows if (order == np.arange(order.size)).all() else tf.gather(rows, order),
                      [shape[i] for i in perm])


def heads_first(x, n_head):
    """[batch, seq, n_embd] -> [head, batch, seq, head_dim]"""
    batch_size, seq, n_embd = shape_list(x)
    if isinstance(batch_size, int) and isinstance(seq, int):
        return transpose_rows(x, [2, 0, 1, 3], [batch_size, seq, n_head, n_embd // n_head])
    return tf.transpose(split_states(x, n_head), [2, 0, 1, 3])


def merge_heads_first(x):
    """[head, batch, seq, head_dim] -> [batch, seq, n_embd]"""
    n_head, batch_size, seq, head_dim = shape_list(x)
    if isinstance(batch_size, int) and isinstance(seq, int):
        return merge_states(transpose_rows(x, [1, 2, 0, 3], [n_head, batch_size, seq, head_dim]))
    return merge_states(tf.transpose(x, [1, 2, 0, 3]))


def cache_rows(n_head, batch_size, total_len, slots):
    """[head * batch * seq] rows of the buffers for the slots [seq], in the order (head, batch, seq)."""
    first = tf.range(n_head * batch_size) * total_len  # [head * batch]: row of slot 0 of each (h, b)
    return tf.reshape(first[:, tf.newaxis] + slots[tf.newaxis, :], [-1])


def write_cache(buf, rows, new):
    """buf [head * batch * total_len, head_dim], new [head, batch, seq, head_dim] -> buf, with new at rows."""
    return tf.raw_ops.InplaceUpdate(x=buf, i=rows, v=tf.reshape(new, [-1, shape_list(new)[-1]]))


def cached_attn(x, scope, n_state, *, cache, rows, mask, prefix, hparams):
    """x [batch, seq, n_embd] at the slots of rows -> a [batch, seq, n_embd], the updated (k, v) buffers"""
    with tf.variable_scope(scope):
        c = conv1d(x, 'c_attn', n_state * 3)
        q, k, v = [heads_first(t, hparams.n_head) for t in tf.split(c, 3, axis=2)]
        k_buf, v_buf = (write_cache(buf, rows, new) for buf, new in zip(cache, (k, v)))
        a = split_attn(q, k_buf, v_buf, mask, prefix)
        return conv1d(merge_heads_first(a), 'c_proj', n_state), (k_buf, v_buf)


def split_rows(x, sizes, axis=0):
    """tf.split, for sizes that may be tensors."""
    return tf.split(x, tf.stack(sizes), num=len(sizes), axis=axis)


def split_attn(q, k_buf, v_buf, mask, prefix=None):
    """q [head, batch, seq, head_dim], the buffers [head * batch * total_len, head_dim], mask [seq, total_len],
    prefix None or the shared prompt's buffers (k, v) [head * prefix_len, head_dim] -> like q.

    Attention over MATMUL_SPLITS groups of heads, side by side. Each op runs on one thread (see
    sample.session_config), and reading the cache is most of the work: at batch 8 after 512 positions, 14 MB a
    product, 34 of 73 ms a step unsplit (bench/bench_sample.py --profile). A group's rows are consecutive in the
    buffers, so their views are not copies."""
    n_head, batch_size, seq, head_dim = shape_list(q)
    groups = [g for g in halves(n_head) if g]
    per_head = shape_list(k_buf)[0] // n_head  # batch * total_len
    views = [split_rows(buf, [g * per_head for g in groups]) for buf in (k_buf, v_buf)]
    if prefix is None:
        prefixes = [None] * len(groups)
    else:
        prefix_len = shape_list(prefix[0])[0] // n_head
        prefixes = zip(*(split_rows(buf, [g * prefix_len for g in groups]) for buf in prefix))
    a = [group_attn(qg, kg, vg, mask, pg)
         for qg, kg, vg, pg in zip(tf.split(q, groups), *views, prefixes)]
    return tf.concat(a, axis=0)


def group_attn(q, k, v, mask, prefix):
    """q [heads, batch, seq, head_dim], k and v [heads * batch * total_len, head_dim], prefix None or (k, v)
    [heads * prefix_len, head_dim] -> like q: multihead_attn, with the prefix's positions before the rows' own."""
    heads, batch_size, seq, head_dim = shape_list(q)
    blocks = [heads * batch_size, -1, head_dim]
    q, k, v = (tf.reshape(t, blocks) for t in (q, k, v))
    if prefix is None:
        return reshape(multihead_attn(q, k, v, mask), [heads, batch_size, seq, head_dim])
    # The prefix's scores: per head, every row's queries at once against the one copy of its keys.
    per_head = [heads, -1, head_dim]
    pk, pv = (tf.reshape(t, per_head) for t in prefix)
    prefix_len = shape_list(pk)[1]
    w_prefix = tf.reshape(tf.matmul(tf.reshape(q, per_head), pk, transpose_b=True), [heads * batch_size, seq, -1])
    w = tf.concat([w_prefix, tf.matmul(q, k, transpose_b=True)], axis=-1)  # [heads * batch, seq, prefix + total]
    w = attn_weights(w, tf.pad(tf.cast(mask, w.dtype), [[0, 0], [prefix_len, 0]], constant_values=1), head_dim)
    w_prefix, w_own = split_rows(w, [prefix_len, -1], axis=-1)
    a = tf.reshape(tf.matmul(tf.reshape(w_prefix, [heads, -1, prefix_len]), pv), blocks) + tf.matmul(w_own, v)
    return reshape(a, [heads, batch_size, seq, head_dim])


def decode_hidden(hparams, X, cache, position, scope='model', *, packed=False, prefix=None):
    """X [batch, seq] tokens at positions position .. position + seq - 1, cache from empty_cache() or the last
    step -> the final hidden states [batch, seq, n_embd] (after ln_f), the updated cache, and wte.

    packed: steps of one token per row use packed_matmul (see "Packed weights"); the weights must not change
    between the runs of this graph in one session.
    prefix: the cache of a prompt run at batch 1, shared by every row, which then continue it: position counts
    from the prompt's start, and the cache holds the positions after the prompt."""
    with tf.variable_scope(scope):
        wpe, wte = embeddings(hparams)
        X = tf.convert_to_tensor(X, dtype=tf.int32)
        batch_size, seq = shape_list(X)
        positions = position + tf.range(seq)
        h = tf.gather(wte, X) + tf.gather(wpe, positions)[tf.newaxis]
        prefix_len = 0 if prefix is None else shape_list(prefix[0][0])[0] // hparams.n_head
        slots = positions - prefix_len
        total_len = shape_list(cache[0][0])[0] // (batch_size * hparams.n_head)
        mask = tf.range(total_len)[tf.newaxis, :] <= slots[:, tf.newaxis]  # [seq, total_len]
        rows = cache_rows(hparams.n_head, batch_size, total_len, slots)

        # With packed weights, a step of one token per row takes the packed products, a prompt the plain ones.
        if not (packed and packed_weights_available()):
            plain_rows = None
        elif isinstance(seq, int) and seq == 1:
            plain_rows = 0
        else:
            plain_rows = tf.where(tf.equal(seq, 1), 0, batch_size * seq)
        new_cache = []
        with packed_products(plain_rows):
            for layer, layer_cache in enumerate(cache):
                layer_prefix = None if prefix is None else prefix[layer]
                attention = lambda h, name, n: cached_attn(h, name, n, cache=layer_cache, rows=rows, mask=mask,
                                                           prefix=layer_prefix, hparams=hparams)
                h, layer_cache = residual_block(h, f'h{layer}', attention)
                new_cache.append(layer_cache)
        return norm(h, 'ln_f'), new_cache, wte


def decode_step(hparams, X, cache, position, scope='model', *, prefix=None):
    """Like decode_hidden -> logits [batch, seq, n_vocab], the updated cache."""
    h, cache, wte = decode_hidden(hparams, X, cache, position, scope, prefix=prefix)
    return unembed(h, wte), cache


def decode_last(hparams, X, cache, position, scope='model', *, packed=False, prefix=None):
    """Like decode_step, but only the last position's logits [batch, n_vocab], which is all sampling needs:
    after a prompt of 512 tokens, the logits of all positions would cost 512 times the work and memory.
    packed: as in decode_hidden; the logits' product always has batch rows, so it is packed at every step."""
    packed = packed and packed_weights_available()
    h, cache, wte = decode_hidden(hparams, X, cache, position, scope, packed=packed, prefix=prefix)
    return unembed(h[:, -1], wte, packed=packed), cache
