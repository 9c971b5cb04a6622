"""Sampling from GPT-2 inside the TensorFlow graph: one tf.while_loop, one new token per step.

Each step feeds tokens to the model with the cache of those before (gpt2/sampling/decoding.py), takes the logits
of the last position, applies the penalties (gpt2/sampling/penalties.py), then temperature, top-k and top-p and
draws (gpt2/sampling/filters.py), checks the stops (gpt2/sampling/stops.py) and hands the tokens to the host.
"""
import dataclasses
import functools
import os

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

import model

from gpt2.base import checkpoint
from gpt2.sampling import cpu_matmul
from gpt2.sampling import decoding
from gpt2.sampling import filters
from gpt2.sampling import half
from gpt2.sampling import int8
from gpt2.sampling import penalties as penalties_lib
from gpt2.sampling import rules
from gpt2.sampling import stops as stops_lib
# The original sample.py's filters, and the draw export.py's serving loop shares, importable from here as ever.
from gpt2.sampling.filters import MASKED, draw, filter_logits, top_k_logits, top_p_logits  # noqa: F401


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


def products_for(device, *, batch, frozen_weights, hparams, precision='float32'):
    """How the sampling loop multiplies on device: see gpt2/sampling/cpu_matmul.py. The split and packed
    products are for a CPU; a GPU gets one plain product per layer. precision 'int8' (a CPU only) multiplies
    in int8 where TensorFlow's quantized kernel runs, and says on stderr when it does not; 'float16' and
    'bfloat16' (for a GPU; built for a CPU too, where they are slower) in half precision (gpt2/sampling/half.py)."""
    if precision not in rules.PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(rules.PRECISIONS)}; got {precision!r}')
    if precision in half.PRECISIONS:
        return half.products(precision, splits=cpu_matmul.CPU_SPLITS if on_cpu(device) else 1)
    if not on_cpu(device):
        if precision == 'int8':
            raise ValueError(f'precision int8 is for a CPU; the device is {device}')
        return cpu_matmul.Products()
    weights = (int8.weights_if_kernel_works(cpu_matmul.CPU_SPLITS, 'sampling', frozen_weights)
               if precision == 'int8' else None)
    if weights is not None:
        return cpu_matmul.Products(splits=cpu_matmul.CPU_SPLITS, int8=weights)
    # At one row, oneDNN multiplies without reordering the weights anyway: packing would only cost memory.
    packed = (frozen_weights and isinstance(batch, int) and batch > 1 and cpu_matmul.packed_kernel_works()
              and cpu_matmul.room_for_packed_copy(weight_bytes(hparams)))
    return cpu_matmul.Products(splits=cpu_matmul.CPU_SPLITS, packed=packed)


# ---------------------------------------------------------------------------------------------------------------
# The sampling loop
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    """What every step of the loop uses, fixed when the graph is built (sample_sequence says what each is)."""
    hparams: object
    length: object  # tokens to draw: an int or a scalar int tensor
    scope: object  # the model's variables, read once per run (decoding.read_once_scope)
    products: cpu_matmul.Products  # how to multiply on the device (products_for)
    knobs: dict  # temperature, top_k, top_p: Python numbers or scalar tensors
    seed: object  # None (the stateful generator) or a [2] int tensor (the stateless one)
    penalties: penalties_lib.Penalties
    stop_token: object
    stops: object  # [n_stops, width] int32 tensor on the host, or None
    token_bytes: object  # [n_vocab, width] int32 tensor on the host, or None
    on_token: object
    context_keep: object = None  # past the window, the tokens the model goes on from; None: no sliding
    pads: object = None  # [batch] int32: each row's left padding, or None
    prefix: object = None  # a shared prompt's cache at batch 1, or None


def sample_sequence(*, hparams, length, start_token=None, batch_size=None, context=None, temperature=1, top_k=0,
                    top_p=1, stop_token=None, on_token=None, frozen_weights=False, device=None, seed=None, stops=None,
                    token_bytes=None, penalties=None, context_lengths=None, context_keep=None, precision='float32'):
    """Tokens [batch, context_len + length]: the context followed by `length` sampled tokens (an int, or a scalar
    int tensor fed per run).

    Give exactly one of start_token (an unconditional sample starts from it) or context [batch, context_len]. A
    context of one row with batch_size above 1 is one prompt for every row: the prompt goes through the model once,
    and the rows share its cache (see gpt2/sampling/decoding.py, "A shared prefix"), which is faster than repeating
    it. temperature 0 is greedy decoding. With stop_token, the loop ends early once every row has produced it, and
    the result is shorter. on_token(tokens), if given, is called with each step's new tokens (a [batch] array) as
    they are drawn.

    frozen_weights=True promises that the model's variables keep their values for the rest of the session (as in the
    sampling scripts, which restore once). On a CPU at a batch size above 1 that lets the matrix products keep the
    weights in oneDNN's layout between steps, for one more copy of the weights in memory (see
    gpt2/sampling/cpu_matmul.py, "Packed"); with precision int8, at every batch size, the int8 kernel keeps its
    own copy (gpt2/sampling/int8.py, "Kept weights"). Leave it False when the weights change between runs, as when sampling
    while training: the packed copy would go on using the first values.

    device: the device the sampling graph is built for; None: '/GPU:0' when TensorFlow lists a GPU, else
    '/CPU:0'. Run the graph in a session with soft placement (session_config()).

    temperature, top_k and top_p may be Python numbers or scalar tensors (placeholders fed per run); seed None
    draws with TensorFlow's stateful generator (tf.set_random_seed), or a [2] int tensor draws with the stateless
    one, so that feeding the same seed gives the same samples on every run of one graph. Without on_token and
    with frozen_weights False the graph holds only TensorFlow's public ops (no Python, no oneDNN internals), so
    it can be saved and served.

    stops: stop strings, as stops.stop_array() makes them (an array, or a tensor [n_stops, width]), with
    token_bytes, the table of each token's bytes (stops.token_bytes()): a row is done once its sampled text
    contains one of them (see gpt2/sampling/stops.py), and the loop ends once every row is done, like stop_token.
    The result still holds the tokens through the one that completes the string; cut the text with stops.cut().

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

    precision: 'float32', or 'int8' on a CPU: every product of the blocks and the logits in int8, the weights
    quantized per output column once (at load where loading.start_restore stored them in int8, else once per
    run), the activations per row (see gpt2/sampling/int8.py); or
    'float16' or 'bfloat16', for a GPU: the weights and the cache in half precision, the layer norms, softmax
    and the logits in float32 (see gpt2/sampling/half.py).
    """
    check_arguments(start_token=start_token, context=context, length=length, context_keep=context_keep,
                    context_lengths=context_lengths)
    device = device or default_device()
    with tf.name_scope('sample_sequence'), tf.device(device):
        context, context_len, batch, shared = prompt_rows(context, start_token, batch_size,
                                                          sliding=context_keep is not None,
                                                          padded=context_lengths is not None)
        pads, valid = padding(context_lengths, batch, context_len)
        plan = products_for(device, batch=batch, frozen_weights=frozen_weights, hparams=hparams,
                            precision=precision)
        if stops is not None:
            with tf.device(decoding.HOST):
                stops = tf.convert_to_tensor(stops, tf.int32)
                token_bytes = tf.convert_to_tensor(token_bytes, tf.int32)
        step = Step(hparams=hparams, length=length, scope=decoding.read_once_scope(), products=plan,
                    knobs=dict(temperature=temperature, top_k=top_k, top_p=top_p), seed=seed,
                    penalties=penalties or penalties_lib.Penalties(), stop_token=stop_token, stops=stops,
                    token_bytes=token_bytes, on_token=on_token, context_keep=context_keep, pads=pads)
        if shared:
            step, loop_vars, context = start_shared(step, context, context_len, batch)
        else:
            loop_vars = start_apart(step, context, context_len, batch, valid)
        return run_loop(step, loop_vars, context, context_len, shared=shared, device=device)


def check_arguments(*, start_token, context, length, context_keep, context_lengths):
    """The ValueErrors of sample_sequence's arguments that do not go together."""
    if (start_token is None) == (context is None):
        raise ValueError('give exactly one of start_token and context')
    if not tf.is_tensor(length) and length < 1:
        raise ValueError(f'length must be at least 1, got {length}')
    if context_keep is not None and context_lengths is not None:
        raise ValueError('context_keep and context_lengths do not go together: rows would slide apart')


def prompt_rows(context, start_token, batch_size, *, sliding, padded):
    """The prompt as sample_sequence was given it -> (context [rows, context_len] int32, context_len, the loop's
    batch, shared: whether one prompt row goes through the model once for every row)."""
    if context is None:
        context = tf.fill([batch_size, 1], start_token)
    context = tf.convert_to_tensor(context, dtype=tf.int32)
    rows, context_len = model.shape_list(context)
    fixed_batch = isinstance(batch_size, int)
    if sliding and fixed_batch and batch_size > 1 and rows == 1:
        context = tf.tile(context, [batch_size, 1])  # each row its own window
        rows = batch_size
    shared = fixed_batch and batch_size > 1 and rows == 1 and not padded
    if fixed_batch and isinstance(rows, int) and rows not in (1, batch_size):
        raise ValueError(f'context has {rows} rows and batch_size is {batch_size}; give one row, or '
                         f'batch_size rows')
    return context, context_len, batch_size if shared else rows, shared


def padding(context_lengths, batch, context_len):
    """-> (pads [batch] int32: each row's left padding, or None; valid [batch, context_len] bool: which prompt
    tokens are real)."""
    if context_lengths is None:
        return None, tf.ones([batch, context_len], tf.bool)
    with tf.device(decoding.HOST):
        pads = context_len - tf.cast(context_lengths, tf.int32)  # [batch]
        return pads, tf.range(context_len)[tf.newaxis, :] >= pads[:, tf.newaxis]  # [batch, context_len]


def empty_state(step, batch):
    """The loop's state before any token: the token array (on the host), no row done, and the extras: the
    stop strings' window of recent bytes, when there are stop strings."""
    with tf.device(decoding.HOST):
        output = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None])
    not_done = tf.zeros([batch], tf.bool)
    extras = {}
    if step.stops is not None:
        with tf.device(decoding.HOST):
            extras['window'] = stops_lib.empty_window(batch, step.stops)
    return output, not_done, extras


def start_shared(step, context, context_len, batch):
    """One prompt row for a batch of rows: the prompt once, at batch 1 (never packed: the packed products are for
    the loop's batch of rows); every row draws its first token from its logits, then goes on alone with its own
    cache. -> (the step, with the prompt's cache as its prefix; the loop variables after that first token;
    the context tiled to the batch)."""
    output, not_done, extras = empty_state(step, batch)
    hparams, length = step.hparams, step.length
    cache_dtype = half.cache_dtype(step.products)
    prompt_cache = decoding.empty_cache(hparams, 1, context_len, cache_dtype)
    logits, prefix = decoding.decode_last(hparams, context, prompt_cache, 0, scope=step.scope,
                                          products=dataclasses.replace(step.products, packed=False))
    extras.update(penalties_lib.start(step.penalties, tf.tile(context, [batch, 1]),
                                      tf.ones([batch, context_len], tf.bool), context_len + length, hparams.n_vocab))
    token, extras = choose(step, tf.tile(logits, [batch, 1]), 0, context_len, extras)
    # The rows' own cache: every drawn token but the last (at least one slot, so the shapes are valid).
    cache = decoding.empty_cache(hparams, batch, tf.maximum(length - 1, 1) if tf.is_tensor(length)
                                 else max(length - 1, 1), cache_dtype)
    done, extras = finished(step, not_done, token, extras)
    loop_vars = [tf.constant(1), token[:, tf.newaxis], context_len, cache, done,
                 record(output, 0, token, step.on_token), extras]
    return dataclasses.replace(step, prefix=prefix), loop_vars, tf.tile(context, [batch, 1])


def start_apart(step, context, context_len, batch, valid):
    """Each row its own prompt -> the loop variables before step 0. Step 0 feeds the whole prompt at positions
    0 .. context_len - 1; each later step feeds the token drawn before it at the next position. One loop body
    for both keeps the graph half the size, and so start-up. Every position but the last drawn token's goes
    through the model: the cache's length (past the window, the window's)."""
    output, not_done, extras = empty_state(step, batch)
    hparams, length, sliding = step.hparams, step.length, step.context_keep is not None
    cache = decoding.empty_cache(hparams, batch, hparams.n_ctx if sliding else context_len + length - 1,
                                 half.cache_dtype(step.products))
    extras.update(penalties_lib.start(step.penalties, context, valid, context_len + length, hparams.n_vocab))
    if sliding:
        with tf.device(decoding.HOST):
            extras['sequence'] = tf.pad(context, [[0, 0], [0, length]])
            extras['start'] = tf.zeros([batch], tf.int32)  # where each row's window starts (all alike)
    return [tf.constant(0), context, tf.constant(0), cache, not_done, output, extras]


def run_loop(step, loop_vars, context, context_len, *, shared, device):
    """The while loop from loop_vars until every token is drawn or every row is done -> tokens
    [batch, context_len + drawn]: the context, then the drawn tokens."""
    sliding = step.context_keep is not None
    cache, extras = loop_vars[3], loop_vars[6]
    # Only the tokens fed change shape: [batch, context_len] at step 0, [batch, 1] after; with a prompt of one
    # token (as unconditional samples have), or a shared prompt, the shape is fixed, and so are the shapes in
    # the loop body.
    fed = 1 if not sliding and (shared or (isinstance(context_len, int) and context_len == 1)) else None
    invariants = [tf.TensorShape([]), tf.TensorShape([context.shape[0], fed]), tf.TensorShape([]),
                  [(k.shape, v.shape) for k, v in cache], tf.TensorShape([context.shape[0]]),
                  tf.TensorShape(None), {name: extra_shape(t) for name, t in extras.items()}]
    # On a CPU the step keeps every core busy: one step at a time. On a GPU the next step may start while the
    # host still hands the last one's tokens to the callback.
    output = tf.while_loop(functools.partial(keep_going, step), functools.partial(loop_step, step), loop_vars,
                           shape_invariants=invariants, back_prop=False,
                           parallel_iterations=1 if on_cpu(device) else 2)[5]
    with tf.device(decoding.HOST):
        return tf.concat([context, tf.transpose(output.stack())], axis=1)


def keep_going(step, i, tokens, position, cache, done, output, extras):
    """Whether the loop goes on: tokens left to draw, and a row not done."""
    return tf.logical_and(i < step.length, tf.logical_not(tf.reduce_all(done)))


def loop_step(step, i, tokens, position, cache, done, output, extras):
    """Step i of the loop: tokens [batch, seq] fed at window position `position`, after the cache of those before
    -> the loop variables of step i + 1, which feeds the token drawn here [batch, 1]."""
    # Past the window: feed the sequence's last context_keep tokens instead, at position 0 (slide()).
    start = 0
    if step.context_keep is not None:
        tokens, position, extras = slide(tokens, position, extras, n_ctx=step.hparams.n_ctx, keep=step.context_keep)
        with tf.name_scope('slide'), tf.device(decoding.HOST):
            start = extras['start'][0]
    # The model on the fed tokens: the logits of the last position [batch, vocab], and the cache with them.
    logits, cache = decoding.decode_last(step.hparams, tokens, cache, position, scope=step.scope,
                                         products=step.products, prefix=step.prefix, pads=step.pads)
    filled = start + position + tf.shape(tokens)[1]  # tokens of the sequence so far
    # Penalties, temperature, top-k, top-p, and the draw: the next token of each row.
    token, extras = choose(step, logits, i, filled, extras)
    # A row that drew the stop token or completed a stop string is done; the loop ends once all are.
    done, extras = finished(step, done, token, extras)
    if step.context_keep is not None:  # the sequence the window slides over
        with tf.name_scope('slide'), tf.device(decoding.HOST):
            extras['sequence'] = write_column(extras['sequence'], filled, token)
    # The token goes to the host (record), and is fed at the next position.
    return (i + 1, token[:, tf.newaxis], position + tf.shape(tokens)[1], cache, done,
            record(output, i, token, step.on_token), extras)


def choose(step, logits, i, filled, extras):
    """The logits of the last position [batch, vocab] at step i, after `filled` tokens of the sequence -> the
    token drawn [batch], and the extras with it counted."""
    # Penalties on the raw logits, before temperature and the filters, as transformers orders them.
    logits = penalties_lib.apply(step.penalties, logits, extras, filled)
    # A fed seed [2] gives every step its own stateless seed, the same on every run.
    step_seed = None if step.seed is None else tf.cast(step.seed, tf.int64) + tf.cast(tf.stack([0, i]), tf.int64)
    token = filters.draw(logits, **step.knobs, seed=step_seed)
    return token, penalties_lib.update(extras, token, filled)


def finished(step, done, token, extras):
    """-> done [batch], with the rows that stop at token, and the extras after it."""
    if step.stop_token is not None:
        done = tf.logical_or(done, tf.equal(token, step.stop_token))
    if step.stops is not None:
        with tf.name_scope('stop_strings'), tf.device(decoding.HOST):
            window, hit = stops_lib.advance(extras['window'], step.token_bytes, token, step.stops)
            extras = dict(extras, window=window)
            done = tf.logical_or(done, hit)
    return done, extras


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
    products running side by side use every core once (see gpt2/sampling/cpu_matmul.py): TensorFlow's default
    decodes slower at batch 1. Grappler, TensorFlow's graph optimizer, makes one pass instead of two: the first
    token comes sooner and decoding is as fast within the noise (bench/bench_sample.py). Turning grappler off
    altogether starts sooner still but decodes slower and peaks higher.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    config = tf.ConfigProto(intra_op_parallelism_threads=max(1, cores // cpu_matmul.CPU_SPLITS),
                            allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    config.graph_options.rewrite_options.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    return config
