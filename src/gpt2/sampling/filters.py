"""Logits of the last position -> one token per row: temperature, top-k, top-p (nucleus sampling), the draw.

One step of the sampling loop (sample.sample_sequence) ends here, and so does export.py's serving loop. Knobs
that are Python numbers build only the ops their values need, as the original sample.py did, so a seed gives the
same samples as ever; knobs that are tensors (fed per run) build every path and choose per run.
"""
import numpy as np
import tensorflow.compat.v1 as tf

import model

# Logits of tokens ruled out by top-k or top-p, as in the original: exp(-1e10 - max) is exactly 0 in float32.
MASKED = -1e10


def mask_below(logits, min_values):
    """[batch, vocab] logits, min_values [batch, 1] -> the logits below their row's min_value set to MASKED."""
    return tf.where(logits < min_values, tf.fill(tf.shape(logits), tf.cast(MASKED, logits.dtype)), logits)


def top_k_logits(logits, k):
    """[batch, vocab] -> the same, with all but each row's k largest logits masked. k = 0 keeps everything."""
    if k == 0:
        return logits
    values, _ = tf.nn.top_k(logits, k=k)
    return mask_below(logits, values[:, -1, tf.newaxis])


# Nucleus sampling needs the logits in order only as far as the nucleus reaches. Sorting all 50257 every step
# costs a large part of a step (bench/bench_sample.py --top_p 0.9 --profile; figures in docs/performance.md). Instead each
# row's probabilities are summed into `bins` bins of equal width between its largest and smallest logit, so the
# running total over whole bins tells which bin the cut falls in; only that bin's logits are sorted, wide or
# narrow nucleus alike.
NUCLEUS_BINS = 1024


def nucleus_threshold(logits, p, bins=NUCLEUS_BINS):
    """[batch, vocab] -> [batch, 1]: the smallest logit each row keeps under top_p (see top_p_logits).

    In the original's terms: sort the probabilities in descending order, count the running totals that stay
    within p, and take the logit at that count - 1 (at 0 if none)."""
    batch = model.shape_list(logits)[0]
    unmasked = logits > MASKED / 2  # top-k may have masked some already; they have probability 0
    top = tf.reduce_max(logits, axis=-1, keepdims=True)
    bottom = tf.reduce_min(tf.where(unmasked, logits, tf.broadcast_to(top, tf.shape(logits))), axis=-1,
                           keepdims=True)
    log_total = tf.reduce_logsumexp(logits, axis=-1, keepdims=True)
    probs = tf.exp(logits - log_total)

    # Bin 0 holds the largest logits; equal logits share a bin, so a cut inside a bin is a cut in sorted order.
    # Counts and bins of [batch, vocab] are int64 or float: TensorFlow keeps int32 on the host next to a GPU.
    scale = bins / tf.maximum(top - bottom, 1e-30)
    in_bin = tf.cast(tf.minimum((top - logits) * scale, bins - 1), tf.int64)  # clip first: masked ones overflow
    row_bins = in_bin + tf.range(batch, dtype=tf.int64)[:, tf.newaxis] * bins
    mass = tf.reshape(tf.math.unsorted_segment_sum(probs, row_bins, batch * bins), [batch, bins])
    through = tf.cumsum(mass, axis=-1)  # probability of the bins up to and including each
    cut = tf.minimum(tf.reduce_sum(tf.cast(through <= p, tf.int64), axis=-1, keepdims=True), bins - 1)
    before_cut = tf.gather(tf.pad(through, [[0, 0], [1, 0]]), cut, batch_dims=1)  # [batch, 1]

    # The bins before the cut are kept whole. Sort the cut bin's logits and keep those whose running total,
    # counted on from before_cut, stays within p.
    in_cut = tf.equal(in_bin, cut)
    size = tf.reduce_sum(tf.cast(in_cut, tf.int64), axis=-1)
    masked = tf.fill(tf.shape(logits), tf.cast(-np.inf, logits.dtype))
    members = tf.nn.top_k(tf.where(in_cut, logits, masked), k=tf.cast(tf.reduce_max(size), tf.int32)).values
    running = before_cut + tf.cumsum(tf.exp(members - log_total), axis=-1)
    real = tf.range(tf.shape(members, out_type=tf.int64)[1])[tf.newaxis, :] < size[:, tf.newaxis]
    kept_in_cut = tf.reduce_sum(tf.cast(tf.logical_and(real, running <= p), tf.int64), axis=-1)

    last_in_cut = tf.gather(members, tf.maximum(kept_in_cut - 1, 0), batch_dims=1)
    before = in_bin < cut
    last_before = tf.reduce_min(tf.where(before, logits, -masked), axis=-1)
    # Nothing kept in the cut bin: the last kept is the smallest logit before it, or, if there is none either,
    # the largest logit (always keep one), which is the cut bin's first.
    use_cut = tf.logical_or(kept_in_cut > 0, tf.logical_not(tf.reduce_any(before, axis=-1)))
    return tf.where(use_cut, last_in_cut, last_before)[:, tf.newaxis]


def top_k_nucleus_threshold(logits, values, p):
    """The smallest logit kept by top-k then top-p, from values [batch, k], the k largest logits of each row in
    descending order -> [batch, 1]. Only the tokens tied with the k-th may lie outside values; they come after
    it in sorted order, so they can only add to the total that the probabilities are divided by."""
    kth = values[:, -1, tf.newaxis]
    at_least_kth = tf.reduce_sum(tf.cast(logits >= kth, values.dtype), axis=-1, keepdims=True)
    tied_beyond = at_least_kth - model.shape_list(values)[-1]
    scaled = tf.exp(values - values[:, :1])
    total = tf.reduce_sum(scaled, axis=-1, keepdims=True) + tied_beyond * scaled[:, -1:]
    running = tf.cumsum(scaled / total, axis=-1)
    kept = tf.reduce_sum(tf.cast(running <= p, tf.int64), axis=-1)
    return tf.gather(values, tf.maximum(kept - 1, 0), batch_dims=1)[:, tf.newaxis]


def top_p_logits(logits, p, *, bins=NUCLEUS_BINS):
    """[batch, vocab] -> the same, keeping per row the most likely tokens whose cumulative probability stays
    within p (always at least the most likely one), and any tokens tied with the last one kept. p = 1 keeps
    everything."""
    if p == 1:
        return logits
    return mask_below(logits, nucleus_threshold(logits, p, bins))


def filter_logits(logits, *, top_k, top_p):
    """top_k_logits, then top_p_logits."""
    if top_k and top_p != 1:
        # top-k's values come sorted, so the nucleus is found among them without sorting again; its threshold is
        # one of them, so it masks everything top-k would.
        values = tf.nn.top_k(logits, k=top_k).values
        return mask_below(logits, top_k_nucleus_threshold(logits, values, top_p))
    return top_p_logits(top_k_logits(logits, k=top_k), p=top_p)


def is_fixed(*knobs):
    """Whether every knob is a Python number, fixed when the graph is built (not a tensor fed per run)."""
    return not any(tf.is_tensor(k) for k in knobs)


def categorical(logits, seed):
    """One token per row [batch] drawn from logits [batch, vocab]; seed None: TensorFlow's stateful generator
    (the graph's seed), else a [2] int tensor for the stateless one, which gives the same draws for the same seed
    on every run of the graph."""
    if seed is None:
        return tf.random.categorical(logits, num_samples=1, dtype=tf.int32)[:, 0]
    return tf.random.stateless_categorical(logits, num_samples=1, seed=seed, dtype=tf.int32)[:, 0]


def fed_filter(logits, *, top_k, top_p):
    """filter_logits for knobs that may be tensors (top_k 0 and top_p 1 are off): each filter runs only when on,
    decided per run by tf.cond, not when the graph is built."""
    top_k = tf.cast(top_k, tf.int32)
    top_p = tf.cast(top_p, logits.dtype)
    vocab = model.shape_list(logits)[-1]
    logits = tf.cond(top_k > 0, lambda: mask_below(logits, tf.nn.top_k(logits, k=tf.minimum(top_k, vocab))
                                                   .values[:, -1, tf.newaxis]), lambda: logits)
    return tf.cond(top_p < 1, lambda: mask_below(logits, nucleus_threshold(logits, top_p)), lambda: logits)


def draw(logits, *, temperature, top_k, top_p, seed=None):
    """Logits of the last position [batch, vocab] -> one token per row [batch], int32.

    The knobs are Python numbers or scalar tensors (fed per run, as by generator.Generator). Python numbers build
    only the ops their values need, as the original did, so a seed gives the same samples as before; tensors
    build every path and choose per run (temperature 0 greedy, top_k 0 and top_p 1 off)."""
    if is_fixed(temperature, top_k, top_p):
        if temperature == 0:  # greedy: the most likely token, no draw
            return tf.argmax(logits, axis=-1, output_type=tf.int32)
        # Temperature: dividing the logits sharpens the distribution below 1 and flattens it above.
        logits = logits / tf.cast(temperature, logits.dtype)
        # Top-k, then top-p: the tokens ruled out get MASKED, which exp() turns into probability 0.
        logits = filter_logits(logits, top_k=top_k, top_p=top_p)
        # The draw, from what is left.
        return categorical(logits, seed)
    # The same steps, each chosen per run by the fed values.
    temperature = tf.cast(temperature, logits.dtype)
    greedy = lambda: tf.argmax(logits, axis=-1, output_type=tf.int32)
    drawn = lambda: categorical(fed_filter(logits / temperature, top_k=top_k, top_p=top_p), seed)
    return tf.cond(tf.equal(temperature, 0), greedy, drawn)
