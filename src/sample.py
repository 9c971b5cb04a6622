"""Sampling from GPT-2 inside the TensorFlow graph: one tf.while_loop, one new token per step."""
import dataclasses
import os

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

import model

from gpt2.base import checkpoint
from gpt2.sampling import cpu_matmul
from gpt2.sampling import decoding
from gpt2.sampling import penalties as penalties_lib
from gpt2.sampling import stops as stops_lib

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
# costs a large part of a step (bench/bench_sample.py --top_p 0.9 --profile; figures in the README). Instead each
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
        if temperature == 0:
            return tf.argmax(logits, axis=-1, output_type=tf.int32)
        logits = filter_logits(logits / tf.cast(temperature, logits.dtype), top_k=top_k, top_p=top_p)
        return categorical(logits, seed)
    temperature = tf.cast(temperature, logits.dtype)
    greedy = lambda: tf.argmax(logits, axis=-1, output_type=tf.int32)
    drawn = lambda: categorical(fed_filter(logits / temperature, top_k=top_k, top_p=top_p), seed)
    return tf.cond(tf.equal(temperature, 0), greedy, drawn)


def record(output, step, tokens, on_token):
    """Hand one step's tokens [batch] to the host: to on_token, if given, then into the token array output
    -> the array. Host work, off the model's path: the next step's model does not depend on it (so on a GPU,
    where two steps may be in flight, it need not wait for Python), only the next record does, through the
    array, so the callbacks run in step order."""
    with tf.name_scope('record'), tf.device(decoding.HOST):
        if on_token is not None:
            with tf.control_dependencies([output.flow]):
                tokens = tf.numpy_function(lambda t: (on_token(t), t)[1], [tokens], tf.int32, stateful=True)
        return output.write(step, tokens)


# ---------------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------------

def default_device():
    """'/GPU:0' when TensorFlow lists a GPU, else '/CPU:0'."""
    return '/GPU:0' if tf.config.list_physical_devices('GPU') else '/CPU:0'


def on_cpu(device):
    return tf.DeviceSpec.from_string(device).device_type == 'CPU'


def weight_bytes(hparams):
    """Bytes of the model's float32 weights."""
    return 4 * sum(int(np.prod(shape)) for shape in checkpoint.variable_shapes(hparams).values())


def products_for(device, *, batch, frozen_weights, hparams):
    """How the sampling loop multiplies on device: see gpt2/sampling/cpu_matmul.py. The split and packed products are for a CPU;
    a GPU gets one plain product per layer."""
    if not on_cpu(device):
        return cpu_matmul.Products()
    # At one row, oneDNN multiplies without reordering the weights anyway: packing would only cost memory.
    packed = (frozen_weights and isinstance(batch, int) and batch > 1 and cpu_matmul.packed_kernel_works()
              and cpu_matmul.room_for_packed_copy(weight_bytes(hparams)))
    return cpu_matmul.Products(splits=cpu_matmul.CPU_SPLITS, packed=packed)


# ---------------------------------------------------------------------------------------------------------------
# The sampling loop
# ---------------------------------------------------------------------------------------------------------------

def sample_sequence(*, hparams, length, start_token=None, batch_size=None, context=None, temperature=1, top_k=0,
                    top_p=1, stop_token=None, on_token=None, frozen_weights=False, device=None, seed=None, stops=None,
                    token_bytes=None, penalties=None, context_lengths=None, context_keep=None):
    """Tokens [batch, context_len + length]: the context followed by `length` sampled tokens (an int, or a scalar
    int tensor fed per run).

    Give exactly one of start_token (an unconditional sample starts from it) or context [batch, context_len].
    A context of one row with batch_size above 1 is one prompt for every row: the prompt goes through the model
    once, and the rows share its cache (see gpt2/sampling/decoding.py, "A shared prefix"), which is faster than repeating it.
    temperature 0 is greedy decoding. With stop_token, the loop ends early once every row has produced it, and
    the result is shorter. on_token(tokens), if given, is called with each step's new tokens (a [batch] array) as
    they are drawn.

    frozen_weights=True promises that the model's variables keep their values for the rest of the session (as in
    the sampling scripts, which restore once). On a CPU at a batch size above 1 that lets the matrix products keep
    the weights in oneDNN's layout between steps, for one more copy of the weights in memory (see gpt2/sampling/cpu_matmul.py,
    "Packed"). Leave it False when the weights change between runs, as when sampling while training: the packed
    copy would go on using the first values.

    device: the device the sampling graph is built for; None: '/GPU:0' when TensorFlow lists a GPU, else
    '/CPU:0'. Run the graph in a session with soft placement (session_config()).

    temperature, top_k and top_p may be Python numbers or scalar tensors (placeholders fed per run); seed None
    draws with TensorFlow's stateful generator (tf.set_random_seed), or a [2] int tensor draws with the stateless
    one, so that feeding the same seed gives the same samples on every run of one graph. Without on_token and
    with frozen_weights False the graph holds only TensorFlow's public ops (no Python, no oneDNN internals), so
    it can be saved and served.

    stops: stop strings, as stops.stop_array() makes them (an array, or a tensor [n_stops, width]), with
    token_bytes, the table of each token's bytes (stops.token_bytes()): a row is done once its sampled text
    contains one of them (see gpt2/sampling/stops.py), and the loop ends once every row is done, like stop_token. The result
    still holds the tokens through the one that completes the string; cut the text with stops.cut().

    penalties: a penalties.Penalties (repetition, presence, frequency, no_repeat_ngram) on the logits of tokens
    seen in the prompt and the sample, before temperature and the filters.

    context_lengths: [batch] int, for prompts of different lengths in one batch: context is then left-padded
    (left_pad()), row b's prompt its last context_lengths[b] tokens. Each row is sampled as its prompt alone would
    be (its own positions, its padding masked out: decoding.decode_hidden's pads); the result keeps the padding.

    context_keep: for samples past the model's window (context_len + length - 1 > n_ctx), an int or a scalar
    tensor in 1 .. n_ctx. Each token is predicted from the tokens before it; when those are more than n_ctx,
    they are cut to their last context_keep, run through the model in one pass, and grow again, with the cache,
    until they are more than n_ctx again (see slide()). A prompt longer than n_ctx is cut so too. Rows share no
    prompt and have no padding then.
    """
    if (start_token is None) == (context is None):
        raise ValueError('give exactly one of start_token and context')
    if not tf.is_tensor(length) and length < 1:
        raise ValueError(f'length must be at least 1, got {length}')
    device = device or default_device()
    with tf.name_scope('sample_sequence'), tf.device(device):
        if context is None:
            context = tf.fill([batch_size, 1], start_token)
        context = tf.convert_to_tensor(context, dtype=tf.int32)
        rows, context_len = model.shape_list(context)
        if context_keep is not None and context_lengths is not None:
            raise ValueError('context_keep and context_lengths do not go together: rows would slide apart')
        sliding = context_keep is not None
        if sliding and isinstance(batch_size, int) and batch_size > 1 and rows == 1:
            context = tf.tile(context, [batch_size, 1])  # each row its own window
            rows = batch_size
        shared = (isinstance(batch_size, int) and batch_size > 1 and rows == 1 and context_lengths is None)
        if isinstance(batch_size, int) and isinstance(rows, int) and rows not in (1, batch_size):
            raise ValueError(f'context has {rows} rows and batch_size is {batch_size}; give one row, or '
                             f'batch_size rows')
        batch = batch_size if shared else rows
        if context_lengths is None:
            pads, valid = None, tf.ones([batch, context_len], tf.bool)
        else:
            with tf.device(decoding.HOST):
                pads = context_len - tf.cast(context_lengths, tf.int32)  # [batch]
                valid = tf.range(context_len)[tf.newaxis, :] >= pads[:, tf.newaxis]  # [batch, context_len]
        plan = products_for(device, batch=batch, frozen_weights=frozen_weights, hparams=hparams)

        def choose(logits, step):
            step_seed = None if seed is None else tf.cast(seed, tf.int64) + tf.cast(tf.stack([0, step]), tf.int64)
            return draw(logits, temperature=temperature, top_k=top_k, top_p=top_p, seed=step_seed)

        if stops is not None:
            with tf.device(decoding.HOST):
                stops = tf.convert_to_tensor(stops, tf.int32)
                token_bytes = tf.convert_to_tensor(token_bytes, tf.int32)

        penalties = penalties or penalties_lib.Penalties()

        def choose_penalised(logits, step, filled, extras):
            """-> the token drawn after `filled` tokens, and the extras with it counted."""
            logits = penalties_lib.apply(penalties, logits, extras, filled)
            token = choose(logits, step)
            return token, penalties_lib.update(extras, token, filled)

        def finished(done, token, extras):
            """-> done, with the rows that stop at token, and the extras after it."""
            if stop_token is not None:
                done = tf.logical_or(done, tf.equal(token, stop_token))
            if stops is not None:
                with tf.name_scope('stop_strings'), tf.device(decoding.HOST):
                    window, hit = stops_lib.advance(extras['window'], token_bytes, token, stops)
                    extras = dict(extras, window=window)
                    done = tf.logical_or(done, hit)
            return done, extras

        scope = decoding.read_once_scope()
        with tf.device(decoding.HOST):
            output = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None])
        not_done = tf.zeros([batch], tf.bool)
        extras = {}
        if stops is not None:
            with tf.device(decoding.HOST):
                extras['window'] = stops_lib.empty_window(batch, stops)
        if shared:
            # The prompt once, at batch 1 (never packed: the packed products are for the loop's batch of rows);
            # every row draws its first token from its logits, then goes on alone.
            logits, prefix = decoding.decode_last(hparams, context, decoding.empty_cache(hparams, 1, context_len),
                                                  0, scope=scope, products=dataclasses.replace(plan, packed=False))
            extras.update(penalties_lib.start(penalties, tf.tile(context, [batch, 1]),
                                              tf.ones([batch, context_len], tf.bool), context_len + length,
                                              hparams.n_vocab))
            token, extras = choose_penalised(tf.tile(logits, [batch, 1]), 0, context_len, extras)
            # The rows' own cache: every drawn token but the last (at least one slot, so the shapes are valid).
            cache = decoding.empty_cache(hparams, batch, tf.maximum(length - 1, 1) if tf.is_tensor(length)
                                         else max(length - 1, 1))
            done, extras = finished(not_done, token, extras)
            loop_vars = [tf.constant(1), token[:, tf.newaxis], context_len, cache, done,
                         record(output, 0, token, on_token), extras]
            context = tf.tile(context, [batch, 1])
        else:
            # Step 0 feeds the whole prompt at positions 0 .. context_len - 1; each later step feeds the token drawn
            # before it at the next position. One loop body for both keeps the graph half the size, and so
            # start-up. Every position but the last drawn token's goes through the model: the cache's length.
            prefix = None
            cache = decoding.empty_cache(hparams, batch, hparams.n_ctx if sliding else context_len + length - 1)
            extras.update(penalties_lib.start(penalties, context, valid, context_len + length, hparams.n_vocab))
            if sliding:
                with tf.device(decoding.HOST):
                    extras['sequence'] = tf.pad(context, [[0, 0], [0, length]])
                    extras['start'] = tf.zeros([batch], tf.int32)  # where each row's window starts (all alike)
            loop_vars = [tf.constant(0), context, tf.constant(0), cache, not_done, output, extras]

        def body(i, tokens, position, cache, done, output, extras):
            start = 0
            if sliding:
                tokens, position, extras = slide(tokens, position, extras, n_ctx=hparams.n_ctx, keep=context_keep)
                with tf.name_scope('slide'), tf.device(decoding.HOST):
                    start = extras['start'][0]
            logits, cache = decoding.decode_last(hparams, tokens, cache, position, scope=scope, products=plan,
                                                 prefix=prefix, pads=pads)
            filled = start + position + tf.shape(tokens)[1]  # tokens of the sequence so far
            token, extras = choose_penalised(logits, i, filled, extras)
            done, extras = finished(done, token, extras)
            if sliding:
                with tf.name_scope('slide'), tf.device(decoding.HOST):
                    extras['sequence'] = write_column(extras['sequence'], filled, token)
            return (i + 1, token[:, tf.newaxis], position + tf.shape(tokens)[1], cache, done,
                    record(output, i, token, on_token), extras)

        def cond(i, tokens, position, cache, done, output, extras):
            return tf.logical_and(i < length, tf.logical_not(tf.reduce_all(done)))

        # Only the tokens fed change shape: [batch, context_len] at step 0, [batch, 1] after; with a prompt of one
        # token (as unconditional samples have), or a shared prompt, the shape is fixed, and so are the shapes in
        # the loop body.
        fed = 1 if not sliding and (shared or (isinstance(context_len, int) and context_len == 1)) else None
        invariants = [tf.TensorShape([]), tf.TensorShape([context.shape[0], fed]), tf.TensorShape([]),
                      [(k.shape, v.shape) for k, v in cache], tf.TensorShape([context.shape[0]]),
                      tf.TensorShape(None), {name: extra_shape(t) for name, t in extras.items()}]
        # On a CPU the step keeps every core busy: one step at a time. On a GPU the next step may start while the
        # host still hands the last one's tokens to the callback.
        output = tf.while_loop(cond, body, loop_vars, shape_invariants=invariants, back_prop=False,
                               parallel_iterations=1 if on_cpu(device) else 2)[5]
        with tf.device(decoding.HOST):
            return tf.concat([context, tf.transpose(output.stack())], axis=1)


def slide(tokens, position, extras, *, n_ctx, keep):
    """Before a step of the sliding window: tokens [batch, seq] to feed at window position `position`, after the
    window that starts at extras['start'] in extras['sequence'] -> what to feed, where, and the extras.

    Fed as they are, the window would hold position + seq tokens. When that is more than n_ctx, the window moves
    to the last `keep` tokens of the sequence, and they are fed at position 0 in one pass: the cache's slots
    after them are masked out (decoding.cache_mask), so nothing older is seen."""
    with tf.name_scope('slide'), tf.device(decoding.HOST):
        seq = tf.shape(tokens)[1]
        start = extras['start'][0]
        filled = start + position + seq
        full = position + seq > n_ctx
        keep = tf.cast(keep, tf.int32)
        recent = lambda: extras['sequence'][:, filled - keep:filled]
        tokens = tf.cond(full, recent, lambda: tokens)
        extras = dict(extras, start=tf.where(full, filled - keep, start) + tf.zeros_like(extras['start']))
        return tokens, tf.where(full, 0, position), extras


def write_column(sequence, column, token):
    """sequence [batch, total] with token [batch] written at column."""
    rows = tf.range(tf.shape(token)[0])
    return tf.tensor_scatter_nd_update(sequence, tf.stack([rows, tf.fill(tf.shape(rows), column)], axis=1), token)


def left_pad(prompts, pad=0):
    """Token lists of different lengths -> (context [batch, longest] with each row's tokens at its end, after
    `pad`s, lengths [batch]), for sample_sequence's context and context_lengths."""
    lengths = np.array([len(p) for p in prompts], np.int32)
    context = np.full([len(prompts), max(lengths)], pad, np.int32)
    for row, prompt in enumerate(prompts):
        context[row, context.shape[1] - len(prompt):] = prompt
    return context, lengths


def extra_shape(t):
    """The shape invariant of a per-row loop variable: its rows fixed, the rest free to vary between runs."""
    return tf.TensorShape([t.shape[0]] + [None] * (t.shape.rank - 1))


def session_config():
    """Session settings for sampling, on a CPU or a GPU; the scripts and the benchmark use the same.

    Ops that a GPU has no kernel for run on the host (soft placement), and TensorFlow takes GPU memory as it needs
    it rather than all at once. On a CPU, each op gets cores / cpu_matmul.CPU_SPLITS threads, so that the split
    products running side by side use every core once (see gpt2/sampling/cpu_matmul.py): TensorFlow's default decodes slower at
    batch 1. Grappler, TensorFlow's graph optimizer, makes one pass instead of two: the first token comes sooner
    and decoding is as fast within the noise (bench/bench_sample.py). Turning grappler off altogether starts
    sooner still but decodes slower and peaks higher.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    config = tf.ConfigProto(intra_op_parallelism_threads=max(1, cores // cpu_matmul.CPU_SPLITS),
                            allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    config.graph_options.rewrite_options.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    return config
