"""Incremental decoding, for sampling: model.py's blocks over a cache of fixed size, written in place.

The same embeddings, blocks, layer norm and weights as model.model(), with the cache kept differently. Per layer
there is a key buffer and a value buffer, allocated once at the full length of the sample (total_len slots):

    [head * batch * total_len, head_dim]        row (h * batch + b) * total_len + slot

that is, one layer's k or v with the heads first and all axes but head_dim flattened into rows. A step writes its
positions' rows with InplaceUpdate, which (unlike tensor_scatter_nd_update, which copies the whole buffer when it
runs inside a tf.while_loop) changes the buffer itself, then attends over a [head * batch, total_len, head_dim]
view of it, the slots not yet written masked out. So no step copies the cache. The price: a buffer belongs to one
chain of steps; a cache passed to decode_step must not be used again except through the cache it returns.
Heads first, so that a group of heads is a run of consecutive rows: the split attention's groups are views.

A shared prefix: when every row continues the same prompt (as in the interactive script), the prompt can be run
once, at batch 1, and its cache (prefix_len slots per head: [head * prefix_len, head_dim]) shared by all rows.
The rows' own cache then holds only the positions after it, slot = position - prefix_len. Attention reads the
prompt's keys and values once per step for all rows (one product of [batch, head_dim] by [head_dim, prefix_len]
per head) instead of once per row: at batch 8 after a 512-token prompt, 38 MB a step instead of 302 MB.

How the products are computed (plain, split, packed) is the `cpu_matmul.Products` value handed to each function.
"""
import functools

import numpy as np
import tensorflow.compat.v1 as tf

import model

from gpt2.sampling import cpu_matmul
from gpt2.sampling import half

PLAIN = cpu_matmul.Products()
# The host, where the decoder's index arithmetic runs (positions, slots, rows, the mask): it is int32, which
# TensorFlow keeps on the host even when the graph runs on a GPU (and has no GPU kernel for int32 tf.range), so it
# is placed there on purpose; a few hundred bytes a step cross. Sampling's host work runs there too (sample.py).
HOST = '/CPU:0'


def empty_cache(hparams, batch_size, total_len, dtype=tf.float32):
    """n_layer pairs (k, v) of zeroed buffers [head * batch * total_len, head_dim]; dtype: float32, or a half
    type (gpt2/sampling/half.py: half.cache_dtype of the step's products)."""
    shape = tf.stack([hparams.n_head * batch_size * total_len, hparams.n_embd // hparams.n_head])
    # Empty, unlike tf.zeros, is never constant-folded, so every buffer is its own memory, fresh on each run.
    # Zeroed (init) because a masked score is w * 0 - 1e10, which stays NaN if w is NaN from garbage memory.
    return [tuple(tf.raw_ops.Empty(shape=shape, dtype=dtype, init=True) for _ in 'kv')
            for _ in range(hparams.n_layer)]


def read_once_scope(scope='model'):
    """A variable scope whose variables are read once and reused as those tensors after.

    The reads are made outside any tf.while_loop (init_scope leaves the loop's context, and keeps the device),
    so a loop built in this scope takes the weights as loop constants instead of reading every variable again on
    every step.
    """
    reads = {}

    def read_once(getter, name, *args, **kwargs):
        if name not in reads:
            with tf.init_scope():
                reads[name] = tf.identity(getter(name, *args, **kwargs))
        return reads[name]

    with tf.variable_scope(scope, reuse=tf.AUTO_REUSE, custom_getter=read_once) as vs:
        return vs


# ---------------------------------------------------------------------------------------------------------------
# Heads first and back
# ---------------------------------------------------------------------------------------------------------------

def transpose_rows(x, perm, shape):
    """tf.transpose(tf.reshape(x, shape), perm), for perm that keeps the last axis last and a static shape: as a
    gather of whole rows of the last axis. For the few rows of a decoding step that is faster than oneDNN's
    transpose (bench/bench_sample.py --profile, batch 8), and free where nothing moves."""
    order = np.arange(np.prod(shape[:-1])).reshape(shape[:-1]).transpose(perm[:-1]).reshape(-1)
    rows = tf.reshape(x, [-1, shape[-1]])
    return tf.reshape(rows if (order == np.arange(order.size)).all() else tf.gather(rows, order),
                      [shape[i] for i in perm])


def heads_first(x, n_head):
    """[batch, seq, n_embd] -> [head, batch, seq, head_dim]"""
    batch_size, seq, n_embd = model.shape_list(x)
    if isinstance(batch_size, int) and isinstance(seq, int):
        return transpose_rows(x, [2, 0, 1, 3], [batch_size, seq, n_head, n_embd // n_head])
    return tf.transpose(model.split_states(x, n_head), [2, 0, 1, 3])


def merge_heads_first(x):
    """[head, batch, seq, head_dim] -> [batch, seq, n_embd]"""
    n_head, batch_size, seq, head_dim = model.shape_list(x)
    if isinstance(batch_size, int) and isinstance(seq, int):
        return model.merge_states(transpose_rows(x, [1, 2, 0, 3], [n_head, batch_size, seq, head_dim]))
    return model.merge_states(tf.transpose(x, [1, 2, 0, 3]))


# ---------------------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------------------

def cache_rows(n_head, batch_size, total_len, slots):
    """[head * batch * seq] rows of the buffers for the slots [seq], in the order (head, batch, seq)."""
    first = tf.range(n_head * batch_size) * total_len  # [head * batch]: row of slot 0 of each (h, b)
    return tf.reshape(first[:, tf.newaxis] + slots[tf.newaxis, :], [-1])


def cache_mask(start, seq, total_len):
    """[seq, total_len]: model.attention_mask for the slots start .. start + seq - 1, the slots after them (not
    yet written) masked out."""
    used = start + seq
    mask = tf.pad(model.attention_mask(seq, used, dtype=tf.float32), [[0, 0], [0, total_len - used]])
    return model.reshape(mask, [seq, total_len])


def write_cache(buf, rows, new):
    """buf [head * batch * total_len, head_dim], new [head, batch, seq, head_dim] -> buf, with new at rows (in
    buf's type: a half-precision cache rounds them)."""
    new = tf.cast(tf.reshape(new, [-1, model.shape_list(new)[-1]]), buf.dtype)
    return tf.raw_ops.InplaceUpdate(x=buf, i=rows, v=new)


def split_rows(x, sizes, axis=0):
    """tf.split, for sizes that may be tensors."""
    return tf.split(x, tf.stack(sizes), num=len(sizes), axis=axis)


# ---------------------------------------------------------------------------------------------------------------
# Attention over the cache
# ---------------------------------------------------------------------------------------------------------------

def group_attn(q, k, v, mask, prefix):
    """q [heads, batch, seq, head_dim], k and v [heads * batch * total_len, head_dim], prefix None or (k, v)
    [heads * prefix_len, head_dim] -> like q: model.multihead_attn, with the prefix's positions first. With a
    half-precision cache, the two products in its type, the mask and softmax in float32 (half.scores, weighted)."""
    heads, batch_size, seq, head_dim = model.shape_list(q)
    blocks = [heads * batch_size, -1, head_dim]
    q, k, v = (tf.reshape(t, blocks) for t in (q, k, v))
    if mask.shape.rank == 3:  # a mask per row [batch, seq, total_len]: the blocks' rows are (head, row)
        mask = tf.tile(mask, [heads, 1, 1])
    if prefix is None:
        w = model.attn_weights(half.scores(model.scale_queries(q), k), mask)
        return model.reshape(half.weighted(w, v), [heads, batch_size, seq, head_dim])
    # The prefix's scores: per head, every row's queries at once against the one copy of its keys.
    q = model.scale_queries(q)
    per_head = [heads, -1, head_dim]
    pk, pv = (tf.reshape(t, per_head) for t in prefix)
    prefix_len = model.shape_list(pk)[1]
    w_prefix = tf.reshape(half.scores(tf.reshape(q, per_head), pk), [heads * batch_size, seq, -1])
    w = tf.concat([w_prefix, half.scores(q, k)], axis=-1)  # [heads * batch, seq, prefix + total]
    w = model.attn_weights(w, tf.pad(mask, [[0, 0], [prefix_len, 0]], constant_values=1))
    w_prefix, w_own = split_rows(w, [prefix_len, -1], axis=-1)
    a = tf.reshape(half.weighted(tf.reshape(w_prefix, [heads, -1, prefix_len]), pv), blocks)
    a = a + half.weighted(w_own, v)
    return model.reshape(a, [heads, batch_size, seq, head_dim])


def grouped_attn(q, k_buf, v_buf, mask, prefix, groups):
    """q [head, batch, seq, head_dim], the buffers [head * batch * total_len, head_dim], mask [seq, total_len],
    prefix None or the shared prompt's buffers (k, v) [head * prefix_len, head_dim] -> like q.

    Attention in `groups` groups of heads side by side, each op on one thread (see sample.session_config):
    reading the cache is most of the work of a long sample's step, so two cores read it at once
    (bench/bench_sample.py --profile). A group's rows are consecutive in the buffers: its views are not copies."""
    n_head = model.shape_list(q)[0]
    sizes = [g for g in cpu_matmul.sizes(n_head, groups) if g]
    per_head = model.shape_list(k_buf)[0] // n_head  # batch * total_len
    views = [split_rows(buf, [g * per_head for g in sizes]) for buf in (k_buf, v_buf)]
    if prefix is None:
        prefixes = [None] * len(sizes)
    else:
        prefix_len = model.shape_list(prefix[0])[0] // n_head
        prefixes = zip(*(split_rows(buf, [g * prefix_len for g in sizes]) for buf in prefix))
    a = [group_attn(qg, kg, vg, mask, pg) for qg, kg, vg, pg in zip(tf.split(q, sizes), *views, prefixes)]
    return a[0] if len(a) == 1 else tf.concat(a, axis=0)


def cached_attn(x, scope, n_state, *, past, hparams, linear, rows, mask, prefix, groups):
    """model.attn over the buffers: x [batch, seq, n_embd] at the slots of rows, past this layer's buffers (k, v)
    -> a [batch, seq, n_embd], present: the buffers with the step's keys and values written in."""
    with tf.variable_scope(scope):
        c = model.conv1d(x, 'c_attn', n_state * 3, linear=linear)
        q, k, v = [heads_first(t, hparams.n_head) for t in tf.split(c, 3, axis=2)]
        present = tuple(write_cache(buf, rows, new) for buf, new in zip(past, (k, v)))
        a = grouped_attn(q, *present, mask, prefix, groups)
        return model.conv1d(merge_heads_first(a), 'c_proj', n_state, linear=linear), present


# ---------------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------------

def decode_hidden(hparams, X, cache, position, scope='model', *, products=PLAIN, prefix=None, pads=None):
    """X [batch, seq] tokens at positions position .. position + seq - 1, cache from empty_cache() or the last
    step -> the final hidden states [batch, seq, n_embd] (after ln_f), the updated cache, and wte.

    products: how to multiply (see gpt2/sampling/cpu_matmul.py); packed ones take only the steps of one token per row, and need
    weights that do not change between the runs of this graph in one session.
    prefix: the cache of a prompt run at batch 1, shared by every row, which then continue it: position counts
    from the prompt's start, and the cache holds the positions after the prompt.
    pads: [batch] int, or None: row b's first pads[b] slots are left padding (prompts of different lengths in
    one batch). Its positions count from its first real token, and no query attends to its padding, so each row
    computes what it would alone. `position` is then the slot, the same for every row."""
    with tf.variable_scope(scope):
        wpe, wte = model.embeddings(hparams)
        X = tf.convert_to_tensor(X, dtype=tf.int32)
        batch_size, seq = model.shape_list(X)
        prefix_len = 0 if prefix is None else model.shape_list(prefix[0][0])[0] // hparams.n_head
        total_len = model.shape_list(cache[0][0])[0] // (batch_size * hparams.n_head)
        with tf.name_scope('cache_index'), tf.device(HOST):
            positions = position + tf.range(seq)
            slots = positions - prefix_len
            mask = cache_mask(position - prefix_len, seq, total_len)
            if pads is not None:
                real = tf.range(total_len)[tf.newaxis, tf.newaxis, :] >= pads[:, tf.newaxis, tf.newaxis]
                mask = mask * tf.cast(real, mask.dtype)  # [batch, seq, total_len]
                positions = tf.maximum(positions[tf.newaxis, :] - pads[:, tf.newaxis], 0)  # [batch, seq]
            rows = cache_rows(hparams.n_head, batch_size, total_len, slots)
            one_token = seq == 1 if isinstance(seq, int) else tf.equal(seq, 1)
        h = products.embed(X, positions, wpe, wte)
        linear = products.linear(one_token)

        new_cache = []
        for layer, layer_cache in enumerate(cache):
            attention = functools.partial(cached_attn, rows=rows, mask=mask, groups=products.splits,
                                          prefix=None if prefix is None else prefix[layer])
            h, layer_cache = model.block(h, f'h{layer}', past=layer_cache, hparams=hparams, attention=attention,
                                         linear=linear)
            new_cache.append(layer_cache)
        return model.norm(h, 'ln_f'), new_cache, wte


def decode_step(hparams, X, cache, position, scope='model', *, products=PLAIN, prefix=None, pads=None):
    """Like decode_hidden -> logits [batch, seq, n_vocab], the updated cache."""
    h, cache, wte = decode_hidden(hparams, X, cache, position, scope, products=products, prefix=prefix, pads=pads)
    return model.unembed(h, wte), cache


def decode_last(hparams, X, cache, position, scope='model', *, products=PLAIN, prefix=None, pads=None):
    """Like decode_step, but only the last position's logits [batch, n_vocab], which is all sampling needs:
    after a prompt of 512 tokens, the logits of all positions would cost 512 times the work and memory."""
    h, cache, wte = decode_hidden(hparams, X, cache, position, scope, products=products, prefix=prefix, pads=pads)
    return products.logits(h[:, -1], wte), cache
