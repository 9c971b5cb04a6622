"""Sampling from GPT-2 inside the TensorFlow graph: one tf.while_loop, one new token per step."""
import os

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

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


# Nucleus sampling needs the logits in order only as far as the nucleus reaches, for GPT-2 usually a few hundred
# tokens: sort the largest TOP_P_CANDIDATES first, and all 50257 only when some row's nucleus reaches beyond them.
TOP_P_CANDIDATES = 1024


def nucleus_threshold(logits, sorted_logits, p):
    """logits [batch, vocab], sorted_logits [batch, n]: the row's n largest logits in descending order ->
    (the smallest logit each row keeps [batch], whether the n cover more than p of the probability [batch])."""
    probs = tf.exp(sorted_logits - tf.reduce_logsumexp(logits, axis=-1, keepdims=True))
    cumulative_probs = tf.cumsum(probs, axis=-1)
    kept = tf.reduce_sum(tf.cast(cumulative_probs <= p, tf.int32), axis=-1)
    last_kept = tf.maximum(kept - 1, 0)
    return tf.gather(sorted_logits, last_kept, batch_dims=1), cumulative_probs[:, -1] > p


def top_p_logits(logits, p):
    """[batch, vocab] -> the same, keeping per row the most likely tokens whose cumulative probability stays
    within p (always at least the most likely one). p = 1 keeps everything."""
    if p == 1:
        return logits
    full_sort = lambda: nucleus_threshold(logits, tf.sort(logits, direction='DESCENDING', axis=-1), p)[0]
    candidates = min(TOP_P_CANDIDATES, model.shape_list(logits)[-1])
    head_threshold, covered = nucleus_threshold(logits, tf.nn.top_k(logits, k=candidates).values, p)
    min_values = tf.cond(tf.reduce_all(covered), lambda: head_threshold, full_sort)
    # One threshold per row, as a column: comparing against a [batch] vector would broadcast across the vocabulary.
    return mask_below(logits, min_values[:, tf.newaxis])


def draw(logits, *, temperature, top_k, top_p):
    """Logits of the last position [batch, vocab] -> one token per row [batch], int32."""
    if temperature == 0:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    logits = logits / tf.cast(temperature, logits.dtype)
    logits = top_k_logits(logits, k=top_k)
    logits = top_p_logits(logits, p=top_p)
    return tf.random.categorical(logits, num_samples=1, dtype=tf.int32)[:, 0]


def report(tokens, on_token):
    """Hand each step's tokens [batch] to a Python callback; the returned tokens wait until it has run, so the
    callbacks run in step order."""
    if on_token is None:
        return tokens
    done = tf.numpy_function(lambda t: (on_token(t), t)[1], [tokens], tf.int32, stateful=True)
    with tf.control_dependencies([done]):
        return tf.identity(tokens)


def sample_sequence(*, hparams, length, start_token=None, batch_size=None, context=None, temperature=1, top_k=0,
                    top_p=1, stop_token=None, on_token=None, frozen_weights=False):
    """Tokens [batch, context_len + length]: the context followed by `length` sampled tokens.

    Give exactly one of start_token (an unconditional sample starts from it) or context [batch, context_len].
    temperature 0 is greedy decoding. With stop_token, the loop ends early once every row has produced it, and
    the result is shorter. on_token(tokens), if given, is called with each step's new tokens (a [batch] array) as
    they are drawn.

    frozen_weights=True promises that the model's variables keep their values for the rest of the session (as in
    the sampling scripts, which restore once). At a batch size above 1 that lets the matrix products keep the
    weights in oneDNN's layout between steps: about 1.6 times the tokens/s at batch 8 (124M, 2 cores), for one
    more copy of the weights in memory (see model.py, "Packed weights"). Leave it False when the weights change
    between runs, as when sampling while training: the packed copy would go on using the first values.
    """
    if (start_token is None) == (context is None):
        raise ValueError('give exactly one of start_token and context')
    if context is None:
        context = tf.fill([batch_size, 1], start_token)
    context = tf.convert_to_tensor(context, dtype=tf.int32)
    if length < 1:
        raise ValueError(f'length must be at least 1, got {length}')
    choose = lambda logits: report(draw(logits, temperature=temperature, top_k=top_k, top_p=top_p), on_token)

    def finished(done, token):
        return done if stop_token is None else tf.logical_or(done, tf.equal(token, stop_token))

    with tf.name_scope('sample_sequence'):
        batch, context_len = model.shape_list(context)
        scope = model.read_once_scope()
        # At one row, oneDNN multiplies without reordering the weights anyway: packing would only cost memory.
        packed = (frozen_weights and isinstance(batch, int) and batch > 1 and model.packed_weights_available())

        # Step 0 feeds the whole prompt at positions 0 .. context_len - 1; each later step feeds the token drawn
        # before it at the next position. One loop body for both keeps the graph half the size, and so start-up.
        def body(i, tokens, position, cache, done, output):
            logits, cache = model.decode_last(hparams, tokens, cache, position, scope=scope, packed=packed)
            token = choose(logits)
            return (i + 1, token[:, tf.newaxis], position + tf.shape(tokens)[1], cache, finished(done, token),
                    output.write(i, token))

        def cond(i, tokens, position, cache, done, output):
            return tf.logical_and(i < length, tf.logical_not(tf.reduce_all(done)))

        # Every position but the last drawn token's goes through the model, so that is the cache's length.
        cache = model.empty_cache(hparams, batch, context_len + length - 1)
        output = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None])
        loop_vars = [tf.constant(0), context, tf.constant(0), cache, tf.zeros([batch], tf.bool), output]
        # Only the tokens fed change shape: [batch, context_len] at step 0, [batch, 1] after.
        invariants = [tf.TensorShape([]), tf.TensorShape([context.shape[0], None]), tf.TensorShape([]),
                      [(k.shape, v.shape) for k, v in cache], tf.TensorShape([context.shape[0]]),
                      tf.TensorShape(None)]
        output = tf.while_loop(cond, body, loop_vars, shape_invariants=invariants, back_prop=False,
                               parallel_iterations=1)[-1]
        return tf.concat([context, tf.transpose(output.stack())], axis=1)


def session_config():
    """Session settings for sampling; the scripts and the benchmark use the same.

    Each op gets cores / model.MATMUL_SPLITS threads, so that the split matrix products running side by side
    use every core once (see model.MATMUL_SPLITS); TensorFlow's default decodes 15% slower at batch 1. Grappler,
    TensorFlow's graph optimizer, makes one pass instead of two: the first token comes about 0.3 s sooner and
    decoding is as fast within the noise (bench/bench_sample.py, 2 cores). Turning grappler off altogether is
    0.1 s sooner still but decodes 5% slower and peaks 130 MB higher.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    config = tf.ConfigProto(intra_op_parallelism_threads=max(1, cores // model.MATMUL_SPLITS))
    config.graph_options.rewrite_options.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    return config
