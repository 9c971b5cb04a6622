"""One token per row, each row with knobs of its own: the draw of a batch whose rows are separate requests (the
server's continuous batching, gpt2/serving/slots.py), where filters.draw takes one value of each knob for all.

The same rules as the scripts' loop, in the same order (gpt2/sampling/penalties.py, then filters.py): the
penalties on the logits of seen tokens, then greedy (temperature 0: the most likely token) or temperature, top-k,
top-p and a draw. Every knob is a [rows] tensor, and each is off in a row by its off value (repetition 1,
presence and frequency 0, no_repeat_ngram 0, top_k 0, top_p 1).

The draw is by the inverse of the distribution function: one number u in [0, 1) per row, and the first token
whose running total of probability passes u. Each row's u is a hash of its own key (two int32: the request's
seed and choice, and the row's step), so what a row draws depends on its logits and its key only, never on the
other rows of the batch: a seeded request draws the same tokens alone or among others. (TensorFlow's stateless
generators take one seed per call: a call per row cost a fifth of a step at batch 8.)
"""
import tensorflow.compat.v1 as tf

from gpt2.sampling import filters
from gpt2.sampling import penalties as penalties_lib


def column(x, dtype):
    """[rows] -> [rows, 1], to scale or compare against [rows, vocab]."""
    return tf.cast(x, dtype)[:, tf.newaxis]


def penalise(logits, knobs, counts, history, filled):
    """logits [rows, vocab] -> the penalised logits. counts() -> [rows, vocab], each row's seen tokens counted,
    history() -> [rows, total_len], its tokens so far, and filled [rows] how many: functions, so that their ops
    run only where some row needs them."""
    dtype = logits.dtype
    repetition, presence, frequency = (knobs[k] for k in ('repetition', 'presence', 'frequency'))
    counted = tf.reduce_any(tf.logical_or(tf.not_equal(repetition, 1), tf.logical_or(
        tf.not_equal(presence, 0), tf.not_equal(frequency, 0))))

    def by_counts():
        seen = counts()
        out = penalties_lib.repetition(logits, seen, column(repetition, dtype))  # 1 divides by 1: unchanged
        return penalties_lib.presence_frequency(out, seen, column(presence, dtype), column(frequency, dtype))

    logits = tf.cond(counted, by_counts, lambda: logits)
    n = tf.cast(knobs['no_repeat_ngram'], tf.int32)
    return tf.cond(tf.reduce_any(n > 0), lambda: ban_ngrams(logits, history(), filled, n), lambda: logits)


def ban_ngrams(logits, history, filled, n):
    """penalties.ngram_bans row by row, each with its own n and length (n 0: nothing banned)."""
    vocab = logits.shape.as_list()[-1] or tf.shape(logits)[-1]

    def one_row(args):
        row, row_filled, row_n = args
        return tf.cond(row_n > 0,
                       lambda: penalties_lib.ngram_bans(row[tf.newaxis], row_filled, row_n, vocab)[0],
                       lambda: tf.zeros([vocab], tf.bool))

    bans = tf.map_fn(one_row, (history, tf.cast(filled, tf.int32), n), fn_output_signature=tf.bool)
    return tf.where(bans, tf.fill(tf.shape(logits), tf.cast(penalties_lib.BANNED, logits.dtype)), logits)


def filter_rows(logits, top_k, top_p):
    """Top-k, then top-p, each row with its own k (0: off) and p (1: off) -> logits, the ruled-out masked."""
    top_k = tf.cast(top_k, tf.int32)
    vocab = tf.shape(logits)[-1]
    below = tf.fill(tf.shape(top_k), tf.cast(float('-inf'), logits.dtype))

    def by_k():
        values = tf.nn.top_k(logits, k=tf.minimum(tf.reduce_max(top_k), vocab)).values  # [rows, max k]
        kth = tf.gather(values, tf.maximum(tf.minimum(top_k, vocab) - 1, 0), batch_dims=1)
        return filters.mask_below(logits, tf.where(top_k > 0, kth, below)[:, tf.newaxis])

    logits = tf.cond(tf.reduce_any(top_k > 0), by_k, lambda: logits)
    top_p = tf.cast(top_p, logits.dtype)

    def by_p():
        threshold = filters.nucleus_threshold(logits, top_p[:, tf.newaxis])[:, 0]
        return filters.mask_below(logits, tf.where(top_p < 1, threshold, below)[:, tf.newaxis])

    return tf.cond(tf.reduce_any(top_p < 1), by_p, lambda: logits)


def mix(x):
    """MurmurHash3's finaliser: a bijection of uint32 that spreads every input bit over the output."""
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35), (16, None)):
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(shift, tf.uint32)))
        if factor is not None:
            x = x * tf.constant(factor, tf.uint32)
    return x


def uniform_rows(keys):
    """keys [rows, 2] int32 -> [rows] float32 uniform in [0, 1), row r a hash of keys[r] alone."""
    k = tf.bitcast(tf.cast(keys, tf.int32), tf.uint32)
    h = mix(tf.bitwise.bitwise_xor(k[:, 0], mix(k[:, 1] + tf.constant(0x9E3779B9, tf.uint32))))
    return tf.cast(tf.bitwise.right_shift(h, tf.constant(8, tf.uint32)), tf.float32) / 2.0**24


# The draw's running totals are taken in blocks of this many tokens: over the blocks' sums, then within the one
# block where u falls. A running total over the whole vocabulary is a sequential scan, a tenth of a step at batch 8.
DRAW_BLOCK = 256


def inverse_cdf(logits, u, block=DRAW_BLOCK):
    """One token per row, drawn from softmax(logits) [rows, vocab] by u [rows] in [0, 1): the first token whose
    running total of probability passes u times the total. Tokens of probability 0 add nothing to the total, so
    they are never drawn."""
    rows, vocab = tf.shape(logits)[0], tf.shape(logits)[1]
    probs = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True))
    blocks = -(-vocab // block)
    probs = tf.reshape(tf.pad(probs, [[0, 0], [0, blocks * block - vocab]]), [rows, blocks, block])
    through = tf.cumsum(tf.reduce_sum(probs, axis=-1), axis=-1)  # [rows, blocks]: the total up to each block's end
    target = u * through[:, -1]
    at = tf.minimum(tf.reduce_sum(tf.cast(through <= target[:, tf.newaxis], tf.int32), axis=-1), blocks - 1)
    before = tf.gather(tf.pad(through, [[0, 0], [1, 0]]), at, batch_dims=1)  # [rows]: the total before it
    inside = tf.gather(probs, at, batch_dims=1)  # [rows, block]
    passed = tf.reduce_sum(tf.cast(before[:, tf.newaxis] + tf.cumsum(inside, axis=-1) <= target[:, tf.newaxis],
                                   tf.int32), axis=-1)
    # Rounding may put the block's own total a hair below target: then take its last token that can be drawn.
    last = block - 1 - tf.argmax(tf.reverse(tf.cast(inside > 0, tf.int32), [-1]), axis=-1, output_type=tf.int32)
    return at * block + tf.minimum(passed, last)


def draw(logits, knobs, keys):
    """Penalised logits [rows, vocab] -> [rows] int32: greedy where temperature is 0, else temperature, the
    filters and a draw with the row's key."""
    temperature = tf.cast(knobs['temperature'], logits.dtype)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)

    def drawn():
        scaled = logits / column(tf.where(temperature > 0, temperature, tf.ones_like(temperature)), logits.dtype)
        kept = filter_rows(scaled, knobs['top_k'], knobs['top_p'])
        return inverse_cdf(kept, uniform_rows(keys))

    return tf.where(temperature > 0, tf.cond(tf.reduce_any(temperature > 0), drawn, lambda: greedy), greedy)


def model_logprobs(logits, tokens, top):
    """The model's own log-probabilities (before penalties and temperature, as the server reports them):
    logits [rows, vocab], the drawn tokens [rows] -> (their log-probabilities [rows], the `top` largest [rows,
    top] and their tokens [rows, top])."""
    logp = tf.nn.log_softmax(logits, axis=-1)
    best = tf.nn.top_k(logp, k=top)
    return tf.gather(logp, tokens, batch_dims=1), best.values, best.indices
