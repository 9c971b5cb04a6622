"""The incremental decoder (src/gpt2/sampling/decoding.py) against the straightforward model and the NumPy reference."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from gpt2.sampling import decoding
import model
from gpt2.sampling import cpu_matmul
import reference
from support import restore


@pytest.mark.parametrize('splits', [1, 2, 3])
@pytest.mark.parametrize('prompt_len, steps', [(1, 5), (4, 3), (31, 1)])
def test_decode_step_logits_equal_straightforward_model(tiny_model, prompt_len, steps, splits):
    """The buffers, from the first step to the last position of the window; products and attention split in
    uneven parts too."""
    plan = cpu_matmul.Products(splits=splits)
    total = prompt_len + steps
    tokens = np.random.default_rng(total).integers(0, tiny_model.hparams['n_vocab'], size=(2, total))
    with tf.Graph().as_default():
        hparams = tiny_model.hparams_object()
        whole = model.model(hparams, tf.constant(tokens, tf.int32))['logits']
        scope = decoding.read_once_scope()
        cache = decoding.empty_cache(hparams, 2, total)
        logits, cache = decoding.decode_step(hparams, tokens[:, :prompt_len], cache, position=0, scope=scope,
                                             products=plan)
        pieces = [logits]
        for t in range(prompt_len, total):
            logits, cache = decoding.decode_step(hparams, tokens[:, t:t + 1], cache, position=t, scope=scope,
                                                 products=plan)
            pieces.append(logits)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            expected, got = sess.run([whole, tf.concat(pieces, axis=1)])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_decode_step_with_a_cache_longer_than_used_and_rows_at_batch_three(tiny_model):
    """Positions beyond those written are masked out, and each (batch, head) row block gets its own keys."""
    tokens = np.random.default_rng(7).integers(0, tiny_model.hparams['n_vocab'], size=(3, 6))
    with tf.Graph().as_default():
        hparams = tiny_model.hparams_object()
        whole = model.model(hparams, tf.constant(tokens, tf.int32))['logits']
        scope = decoding.read_once_scope()
        cache = decoding.empty_cache(hparams, 3, tiny_model.hparams['n_ctx'])
        logits, cache = decoding.decode_step(hparams, tokens[:, :4], cache, position=0, scope=scope)
        pieces = [logits]
        for t in (4, 5):
            logits, cache = decoding.decode_step(hparams, tokens[:, t:t + 1], cache, position=t, scope=scope)
            pieces.append(logits)
        last = decoding.decode_last(hparams, tokens[:, :6], decoding.empty_cache(hparams, 3, 8), position=0,
                                    scope=scope, products=cpu_matmul.Products(splits=2))[0]
        with tf.Session() as sess:
            restore(sess, tiny_model)
            expected, got, got_last = sess.run([whole, tf.concat(pieces, axis=1), last])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got_last, expected[:, -1], atol=1e-5, rtol=1e-5)


def test_cache_buffers_are_fresh_on_every_run(tiny_model):
    """The buffers are written in place; a second run, with other tokens, must not see the first run's."""
    rng = np.random.default_rng(8)
    with tf.Graph().as_default():
        hparams = tiny_model.hparams_object()
        X = tf.placeholder(tf.int32, [2, None])
        whole = model.model(hparams, X)['logits']
        cache = decoding.empty_cache(hparams, 2, 5)
        logits, cache = decoding.decode_step(hparams, X[:, :3], cache, position=0, scope=decoding.read_once_scope())
        with tf.Session() as sess:
            restore(sess, tiny_model)
            for _ in range(3):
                tokens = rng.integers(0, tiny_model.hparams['n_vocab'], size=(2, 3))
                expected, got = sess.run([whole, logits], {X: tokens})
                np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('static_steps', [True, False])
def test_packed_decode_last_logits_equal_straightforward_model(tiny_model, static_steps):
    """Packed products: a prompt through the plain products, then steps of one token per row through the packed
    ones (the kernel that keeps its weights), the logits through them at every step; the steps' shapes known when
    the graph is built, or (as in the loop of rows with prompts of their own) only when it runs."""
    available = cpu_matmul.packed_kernel_works()
    plan = cpu_matmul.Products(splits=cpu_matmul.CPU_SPLITS, packed=available)
    tokens = np.random.default_rng(9).integers(0, tiny_model.hparams['n_vocab'], size=(3, 7))
    with tf.Graph().as_default() as graph:
        hparams = tiny_model.hparams_object()
        whole = model.model(hparams, tf.constant(tokens, tf.int32))['logits']
        X = tf.placeholder(tf.int32, [3, 1 if static_steps else None])
        scope = decoding.read_once_scope()
        cache = decoding.empty_cache(hparams, 3, 7)
        logits, cache = decoding.decode_last(hparams, tokens[:, :4], cache, position=0, scope=scope, products=plan)
        pieces = [logits]
        for t in (4, 5, 6):
            logits, cache = decoding.decode_last(hparams, X if t == 4 else tokens[:, t:t + 1], cache, position=t,
                                                 scope=scope, products=plan)
            pieces.append(logits)
        packed = [op for op in graph.get_operations() if op.type == cpu_matmul.PACKED_OP]
        with tf.Session() as sess:
            restore(sess, tiny_model)
            expected, got = sess.run([whole, tf.stack(pieces, axis=1)], {X: tokens[:, 4:5]})
    # The logits of every step and the 4 linear layers per block of the 3 one-token steps, each in CPU_SPLITS
    # parts; the prompt's layers are plain.
    expected_ops = (4 + 3 * 4 * hparams.n_layer) * cpu_matmul.CPU_SPLITS
    assert len(packed) == (expected_ops if available else 0)
    np.testing.assert_allclose(got, expected[:, 3:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('splits', [1, 2, 3])
def test_rows_continuing_a_shared_prefix_equal_the_numpy_reference(tiny_model, splits):
    """A prompt run once at batch 1, its cache shared by three rows that go on with different tokens: each row's
    logits at each step are those of the NumPy forward pass over prompt + that row's tokens."""
    plan = cpu_matmul.Products(splits=splits)
    rng = np.random.default_rng(10)
    prompt = rng.integers(0, tiny_model.hparams['n_vocab'], size=5)
    rows = rng.integers(0, tiny_model.hparams['n_vocab'], size=(3, 4))
    with tf.Graph().as_default():
        hparams = tiny_model.hparams_object()
        scope = decoding.read_once_scope()
        prompt_logits, prefix = decoding.decode_step(hparams, prompt[np.newaxis], decoding.empty_cache(hparams, 1, 5),
                                                     position=0, scope=scope, products=plan)
        cache = decoding.empty_cache(hparams, 3, 6)  # longer than used: the slots after each step's are masked
        pieces = []
        for t in range(rows.shape[1]):
            logits, cache = decoding.decode_step(hparams, rows[:, t:t + 1], cache, position=5 + t, scope=scope,
                                                 prefix=prefix, products=plan)
            pieces.append(logits)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            got_prompt, got = sess.run([prompt_logits, tf.concat(pieces, axis=1)])
    np.testing.assert_allclose(got_prompt[0], reference.logits(tiny_model.params, tiny_model.hparams, prompt),
                               atol=1e-5, rtol=1e-5)
    for row, tokens in enumerate(rows):
        expected = reference.logits(tiny_model.params, tiny_model.hparams, np.concatenate([prompt, tokens]))
        np.testing.assert_allclose(got[row], expected[5:], atol=1e-5, rtol=1e-5)
