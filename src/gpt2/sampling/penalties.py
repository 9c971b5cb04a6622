"""Penalties on tokens already seen, in the sampling loop, as Hugging Face transformers and OpenAI's API define them.

Seen tokens are the prompt's and the sample's so far, as in transformers. On the logits of each step, before
temperature, top-k and top-p (transformers' logits processors come before its warpers), in this order:

- repetition (CTRL, Keskar et al. 2019; transformers' repetition_penalty): a seen token's logit is divided by
  the penalty if positive, multiplied by it if negative. 1 is off.
- presence and frequency (OpenAI's API): minus `presence` for each seen token, minus `frequency` times the
  number of times it was seen. 0 is off.
- no_repeat_ngram (transformers' no_repeat_ngram_size N): a token that would complete an N-gram already in the
  sequence is ruled out. 0 is off.

Each knob is a Python number (off builds nothing, so the default graph is today's) or a scalar tensor fed per
run (then its ops are built and a tf.cond skips the work when it is off).

State per row, carried by the loop: counts [batch, n_vocab] (float) of each token seen, and, for n-grams, the
history [batch, total_len] of the sequence's tokens (NO_TOKEN where not yet written or before a shorter prompt).
"""
import dataclasses

import tensorflow.compat.v1 as tf

# Logit of a token ruled out, as filters.MASKED: exp(-1e10 - max) is exactly 0 in float32.
BANNED = -1e10
# history's entry for no token (left padding, or a step not yet taken).
NO_TOKEN = -1


@dataclasses.dataclass(frozen=True)
class Penalties:
    repetition: object = 1.0  # divides a seen token's positive logit, multiplies a negative one; 1: off
    presence: object = 0.0  # subtracted once from each seen token's logit; 0: off
    frequency: object = 0.0  # subtracted from a seen token's logit per time seen; 0: off
    no_repeat_ngram: object = 0  # no N-gram twice; 0: off

    def counts_needed(self):
        return on(self.repetition, 1) or on(self.presence, 0) or on(self.frequency, 0)

    def history_needed(self):
        return on(self.no_repeat_ngram, 0)


def on(knob, off):
    """Whether the graph needs the knob's ops: a tensor (its value comes per run), or a number other than off."""
    return tf.is_tensor(knob) or knob != off


# ---------------------------------------------------------------------------------------------------------------
# The state
# ---------------------------------------------------------------------------------------------------------------

def start(penalties, context, valid, total_len, n_vocab):
    """context [batch, context_len], valid [batch, context_len] bool (False for padding) -> the loop's state."""
    state = {}
    batch, context_len = tf.shape(context)[0], tf.shape(context)[1]
    if penalties.counts_needed():
        rows = tf.range(batch)[:, tf.newaxis] * n_vocab + context
        counts = tf.math.unsorted_segment_sum(tf.cast(valid, tf.float32), rows, batch * n_vocab)
        state['counts'] = tf.reshape(counts, [-1, n_vocab])
    if penalties.history_needed():
        written = tf.where(valid, context, tf.fill(tf.shape(context), NO_TOKEN))
        state['history'] = tf.pad(written, [[0, 0], [0, total_len - context_len]], constant_values=NO_TOKEN)
    return state


def update(state, token, filled):
    """-> the state after token [batch] is appended; filled: the tokens in the history before it."""
    state = dict(state)
    if 'counts' in state:
        state['counts'] = state['counts'] + tf.one_hot(token, tf.shape(state['counts'])[1], dtype=tf.float32)
    if 'history' in state:
        history = state['history']
        column = tf.fill(tf.shape(token), filled)
        state['history'] = tf.tensor_scatter_nd_update(history, tf.stack([tf.range(tf.shape(token)[0]), column], 1),
                                                       token)
    return state


# ---------------------------------------------------------------------------------------------------------------
# On the logits
# ---------------------------------------------------------------------------------------------------------------

def repetition(logits, counts, penalty):
    penalty = tf.cast(penalty, logits.dtype)
    penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(counts > 0, penalised, logits)


def presence_frequency(logits, counts, presence, frequency):
    seen = tf.cast(counts > 0, logits.dtype)
    return logits - tf.cast(presence, logits.dtype) * seen - tf.cast(frequency, logits.dtype) * counts


def ngram_bans(history, filled, n, n_vocab):
    """[batch, n_vocab] bool: the tokens that would complete, after the first `filled` tokens of history, an
    n-gram (n >= 1) that those tokens already hold."""
    n = tf.cast(n, tf.int32)
    grams = tf.maximum(filled - n + 1, 0)  # complete n-grams so far: they start at 0 .. grams - 1
    starts = tf.range(grams)[:, tf.newaxis]
    before = tf.gather(history, starts + tf.range(n - 1)[tf.newaxis, :], axis=1)  # [batch, grams, n - 1]
    last_columns = tf.minimum(tf.maximum(filled - n + 1, 0) + tf.range(n - 1), tf.shape(history)[1] - 1)
    last = tf.gather(history, last_columns, axis=1)  # [batch, n - 1]: the tokens an n-gram would go on from
    same = tf.reduce_all(tf.logical_and(tf.equal(before, last[:, tf.newaxis, :]), before >= 0), axis=-1)
    following = tf.gather(history, starts[:, 0] + n - 1, axis=1)  # [batch, grams]
    same = tf.logical_and(same, following >= 0)
    batch = tf.shape(history)[0]
    segment = tf.range(batch)[:, tf.newaxis] * n_vocab + tf.maximum(following, 0)
    # Float counts: TensorFlow keeps int32 on the host next to a GPU, and [batch, n_vocab] would cross every step.
    hits = tf.math.unsorted_segment_sum(tf.cast(same, tf.float32), segment, batch * n_vocab)
    return tf.reshape(hits, [batch, n_vocab]) > 0


def apply(penalties, logits, state, filled):
    """logits [batch, n_vocab] of the next token after `filled` tokens -> the penalised logits."""
    if 'counts' in state:
        counts = state['counts']
        if on(penalties.repetition, 1):
            logits = maybe(penalties.repetition, 1, lambda: repetition(logits, counts, penalties.repetition), logits)
        if on(penalties.presence, 0) or on(penalties.frequency, 0):
            logits = presence_frequency(logits, counts, penalties.presence, penalties.frequency)
    if 'history' in state:
        n_vocab = logits.shape.as_list()[-1] or tf.shape(logits)[-1]

        def banned():
            bans = ngram_bans(state['history'], filled, penalties.no_repeat_ngram, n_vocab)
            return tf.where(bans, tf.fill(tf.shape(logits), tf.cast(BANNED, logits.dtype)), logits)
        logits = maybe(penalties.no_repeat_ngram, 0, banned, logits)
    return logits


def maybe(knob, off, fn, unchanged):
    """fn() where the knob is on: built only then for a number, chosen per run by tf.cond for a tensor."""
    if not tf.is_tensor(knob):
        return fn() if knob != off else unchanged
    return tf.cond(tf.not_equal(knob, tf.cast(off, knob.dtype)), fn, lambda: unchanged)
