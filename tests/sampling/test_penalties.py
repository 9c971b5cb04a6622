import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from gpt2.sampling import penalties
import reference
import sample
from support import restore


def tf_penalised(logits, sequences, knobs, fed=False):
    """penalties.apply after penalties.start with sequences (the same length) as the context."""
    with tf.Graph().as_default(), tf.Session() as sess:
        values = knobs
        feed = {}
        if fed:
            values = {}
            for name, value in knobs.items():
                values[name] = tf.placeholder(tf.int32 if name == 'no_repeat_ngram' else tf.float32, [])
                feed[values[name]] = value
        rules = penalties.Penalties(**values)
        context = tf.constant(sequences, tf.int32)
        state = penalties.start(rules, context, tf.ones(context.shape, tf.bool), len(sequences[0]) + 3,
                                logits.shape[-1])
        out = penalties.apply(rules, tf.constant(logits, tf.float32), state, len(sequences[0]))
        return sess.run(out, feed)


KNOBS = [{'repetition': 1.3}, {'repetition': 0.7}, {'presence': 0.5}, {'frequency': 0.4},
         {'presence': 0.2, 'frequency': 0.3, 'repetition': 1.2}, {'no_repeat_ngram': 1}, {'no_repeat_ngram': 2},
         {'no_repeat_ngram': 3}, {'no_repeat_ngram': 9}]


@pytest.mark.parametrize('fed', [False, True])
@pytest.mark.parametrize('knobs', KNOBS)
def test_each_penalty_follows_its_definition_on_known_logits(knobs, fed):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((3, 12)).astype(np.float32) * 3
    sequences = [[1, 2, 3, 1, 2, 5, 1, 2], [4, 4, 4, 4, 4, 4, 4, 4], [0, 1, 2, 3, 4, 5, 6, 7]]
    got = tf_penalised(logits, sequences, knobs, fed)
    for row, seq in enumerate(sequences):
        expected = reference.penalised(logits[row], seq, **knobs)
        banned = np.isinf(expected)
        assert (got[row] <= penalties.BANNED).tolist() == banned.tolist()
        np.testing.assert_allclose(got[row][~banned], expected[~banned], rtol=1e-6, atol=1e-6)


def test_fed_penalties_that_are_off_change_nothing():
    logits = np.random.default_rng(4).standard_normal((2, 10)).astype(np.float32)
    got = tf_penalised(logits, [[1, 2, 1], [3, 3, 3]],
                       {'repetition': 1.0, 'presence': 0.0, 'frequency': 0.0, 'no_repeat_ngram': 0}, fed=True)
    np.testing.assert_array_equal(got, logits)


# ---------------------------------------------------------------------------------------------------------------
# Greedy samples under each penalty, against the NumPy model
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('knobs', [{'repetition': 1.5}, {'presence': 2.0, 'frequency': 1.0},
                                   {'no_repeat_ngram': 2}])
def test_greedy_under_each_penalty_equals_the_numpy_model(tiny_model, knobs):
    """Prompts of their own and one prompt for every row (its shared-prefix path); the sample would repeat
    itself without the penalty."""
    prompts = [[5, 6, 5, 6], [9, 9, 1, 2]]
    hparams = tiny_model.hparams_object()
    with tf.Graph().as_default():
        rules = penalties.Penalties(**knobs)
        own = sample.sample_sequence(hparams=hparams, context=tf.constant(prompts), length=14, temperature=0,
                                     penalties=rules)
        shared = sample.sample_sequence(hparams=hparams, context=tf.constant(prompts[:1]), batch_size=2,
                                        length=14, temperature=0, penalties=rules)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            got_own, got_shared = sess.run([own, shared])
    expected = [reference.penalised_greedy(tiny_model.params, tiny_model.hparams, p, 14, **knobs) for p in prompts]
    assert got_own.tolist() == expected
    assert got_shared.tolist() == [expected[0]] * 2
    assert expected != [reference.greedy(tiny_model.params, tiny_model.hparams, p, 14) for p in prompts]


def test_no_repeat_ngram_sample_holds_no_ngram_twice(tiny_model):
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=tf.constant([[3, 4, 3]] * 4),
                                     length=25, top_k=3, penalties=penalties.Penalties(no_repeat_ngram=2))
        with tf.Session() as sess:
            restore(sess, tiny_model)
            rows = sess.run(out).tolist()
    for row in rows:
        grams = list(zip(row, row[1:]))  # the prompt's (3, 4), (4, 3) included
        assert len(grams) == len(set(grams))


def test_penalties_skip_the_padding_of_shorter_prompts(tiny_model):
    """Left padding (token 0 here, which row 1's prompt also holds) is neither counted nor part of an n-gram."""
    prompts = [[5, 6, 5, 6, 0, 0], [0, 3]]
    knobs = {'repetition': 1.5, 'no_repeat_ngram': 2}
    padded, lengths = sample.left_pad(prompts)
    with tf.Graph().as_default():
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=tf.constant(padded),
                                     context_lengths=tf.constant(lengths), length=10, temperature=0,
                                     penalties=penalties.Penalties(**knobs))
        with tf.Session() as sess:
            restore(sess, tiny_model)
            got = sess.run(out)
    for row, prompt in enumerate(prompts):
        assert got[row, 6 - len(prompt):].tolist() == reference.penalised_greedy(tiny_model.params, tiny_model.hparams, prompt, 10, **knobs)
