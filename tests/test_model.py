import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import checkpoint
import model
import reference

tf.disable_v2_behavior()


def restore(sess, tiny_model):
    tf.train.Saver(var_list=tf.global_variables()).restore(sess, tf.train.latest_checkpoint(str(tiny_model.dir)))


def run_model(tiny_model, tokens, **feeds):
    with tf.Graph().as_default():
        hparams = tiny_model.hparams_object()
        X = tf.placeholder(tf.int32, [None, None])
        out = model.model(hparams, X)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            return sess.run(out, {X: tokens})


def test_variable_names_and_shapes_are_the_released_ones():
    hparams = model.default_hparams().override_from_dict({'n_vocab': 7, 'n_ctx': 5, 'n_embd': 6, 'n_head': 2,
                                                           'n_layer': 1})
    expected = {
        'model/wte': [7, 6], 'model/wpe': [5, 6], 'model/ln_f/g': [6], 'model/ln_f/b': [6],
        'model/h0/ln_1/g': [6], 'model/h0/ln_1/b': [6], 'model/h0/ln_2/g': [6], 'model/h0/ln_2/b': [6],
        'model/h0/attn/c_attn/w': [1, 6, 18], 'model/h0/attn/c_attn/b': [18],
        'model/h0/attn/c_proj/w': [1, 6, 6], 'model/h0/attn/c_proj/b': [6],
        'model/h0/mlp/c_fc/w': [1, 6, 24], 'model/h0/mlp/c_fc/b': [24],
        'model/h0/mlp/c_proj/w': [1, 24, 6], 'model/h0/mlp/c_proj/b': [6],
    }
    assert checkpoint.variable_shapes(hparams) == expected
    with tf.Graph().as_default():
        model.model(hparams, tf.placeholder(tf.int32, [None, None]))
        built = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
    assert built == expected


def test_checkpoint_restores_every_variable_and_nothing_else(tiny_model):
    reader = tf.train.load_checkpoint(str(tiny_model.dir / 'model.ckpt'))
    stored = reader.get_variable_to_shape_map()
    with tf.Graph().as_default():
        model.model(tiny_model.hparams_object(), tf.placeholder(tf.int32, [None, None]))
        built = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
        with tf.Session() as sess:
            restore(sess, tiny_model)
            values = sess.run({v.op.name: v for v in tf.global_variables()})
    assert built == {k: list(v) for k, v in stored.items()}
    for name, value in values.items():
        np.testing.assert_array_equal(value, tiny_model.params[name])


def test_hparams_reject_unknown_keys():
    with pytest.raises(ValueError, match='n_embed'):
        model.default_hparams().override_from_dict({'n_embed': 3})


def test_default_hparams_are_the_124M_shape():
    h = model.default_hparams()
    assert (h.n_ctx, h.n_embd, h.n_head, h.n_layer) == (1024, 768, 12, 12)


@pytest.mark.parametrize('batch', [1, 3])
def test_logits_match_numpy_reference(tiny_model, batch):
    rng = np.random.default_rng(batch)
    tokens = rng.integers(0, tiny_model.hparams['n_vocab'], size=(batch, 11))
    out = run_model(tiny_model, tokens)
    assert out['logits'].shape == (batch, 11, tiny_model.hparams['n_vocab'])
    assert out['logits'].dtype == np.float32
    assert out['present'].shape == (batch, 2, 2, 2, 11, 8)
    for row in range(batch):
        expected = reference.logits(tiny_model.params, tiny_model.hparams, tokens[row])
        np.testing.assert_allclose(out['logits'][row], expected, atol=1e-4, rtol=1e-4)


def test_full_window_matches_reference(tiny_model):
    tokens = np.arange(tiny_model.hparams['n_ctx'])[None] % tiny_model.hparams['n_vocab']
    out = run_model(tiny_model, tokens)
    np.testing.assert_allclose(out['logits'][0], reference.logits(tiny_model.params, tiny_model.hparams, tokens[0]),
                               atol=1e-4, rtol=1e-4)


def test_cached_model_equals_recomputing_the_whole_sequence(tiny_model):
    tokens = np.random.default_rng(5).integers(0, tiny_model.hparams['n_vocab'], size=(2, 9))
    with tf.Graph().as_default():
        hparams = tiny_model.hparams_object()
        X = tf.placeholder(tf.int32, [None, None])
        P = tf.placeholder(tf.float32, model.past_shape(hparams=hparams))
        whole = model.model(hparams, X)
        first = model.model(hparams, X, reuse=True)
        rest = model.model(hparams, X, past=P, reuse=True)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            full = sess.run(whole, {X: tokens})
            head = sess.run(first, {X: tokens[:, :6]})
            past, pieces = head['present'], [head['logits']]
            for t in range(6, 9):  # one token at a time, with the growing past
                step = sess.run(rest, {X: tokens[:, t:t + 1], P: past})
                pieces.append(step['logits'])
                past = np.concatenate([past, step['present']], axis=-2)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full['logits'], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(past, full['present'], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('splits', [2, 3])
@pytest.mark.parametrize('prompt_len, steps', [(1, 5), (4, 3), (31, 1)])
def test_decode_step_logits_equal_straightforward_model(tiny_model, monkeypatch, prompt_len, steps, splits):
    """The fast path's buffers, from its first step to the last position of the window; products and attention
    split in uneven parts too."""
    monkeypatch.setattr(model, 'MATMUL_SPLITS', splits)
    total = prompt_len + steps
    tokens = np.random.default_rng(total).integers(0, tiny_model.hparams['n_vocab'], size=(2, total))
    with tf.Graph().as_default():
        hparams = tiny_model.hparams_object()
        whole = model.model(hparams, tf.constant(tokens, tf.int32))['logits']
        scope = model.read_once_scope()
        cache = model.empty_cache(hparams, 2, total)
        logits, cache = model.decode_step(hparams, tokens[:, :prompt_len], cache, position=0, scope=scope)
        pieces = [logits]
        for t in range(prompt_len, total):
            logits, cache = model.decode_step(hparams, tokens[:, t:t + 1], cache, position=t, scope=scope)
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
        scope = model.read_once_scope()
        cache = model.empty_cache(hparams, 3, tiny_model.hparams['n_ctx'])
        logits, cache = model.decode_step(hparams, tokens[:, :4], cache, position=0, scope=scope)
        pieces = [logits]
        for t in (4, 5):
            logits, cache = model.decode_step(hparams, tokens[:, t:t + 1], cache, position=t, scope=scope)
            pieces.append(logits)
        last = model.decode_last(hparams, tokens[:, :6], model.empty_cache(hparams, 3, 8), position=0, scope=scope)[0]
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
        cache = model.empty_cache(hparams, 2, 5)
        logits, cache = model.decode_step(hparams, X[:, :3], cache, position=0, scope=model.read_once_scope())
        with tf.Session() as sess:
            restore(sess, tiny_model)
            for _ in range(3):
                tokens = rng.integers(0, tiny_model.hparams['n_vocab'], size=(2, 3))
                expected, got = sess.run([whole, logits], {X: tokens})
                np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_packed_decode_last_logits_equal_straightforward_model(tiny_model):
    """decode_last(packed=True): a prompt through the plain products, then steps of one token per row through the
    packed ones (the kernel that keeps its weights), the logits through them at every step."""
    tokens = np.random.default_rng(9).integers(0, tiny_model.hparams['n_vocab'], size=(3, 7))
    with tf.Graph().as_default() as graph:
        hparams = tiny_model.hparams_object()
        whole = model.model(hparams, tf.constant(tokens, tf.int32))['logits']
        scope = model.read_once_scope()
        cache = model.empty_cache(hparams, 3, 7)
        logits, cache = model.decode_last(hparams, tokens[:, :4], cache, position=0, scope=scope, packed=True)
        pieces = [logits]
        for t in (4, 5, 6):
            logits, cache = model.decode_last(hparams, tokens[:, t:t + 1], cache, position=t, scope=scope,
                                              packed=True)
            pieces.append(logits)
        packed = [op for op in graph.get_operations() if op.type == model.PACKED_OP]
        with tf.Session() as sess:
            restore(sess, tiny_model)
            expected, got = sess.run([whole, tf.stack(pieces, axis=1)])
    # Per step: 4 linear layers per block and the logits, each in model.MATMUL_SPLITS parts.
    expected_ops = 4 * (4 * hparams.n_layer + 1) * model.MATMUL_SPLITS if model.packed_weights_available() else 0
    assert len(packed) == expected_ops
    np.testing.assert_allclose(got, expected[:, 3:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('splits', [2, 3])
def test_rows_continuing_a_shared_prefix_equal_the_numpy_reference(tiny_model, monkeypatch, splits):
    """A prompt run once at batch 1, its cache shared by three rows that go on with different tokens: each row's
    logits at each step are those of the NumPy forward pass over prompt + that row's tokens."""
    monkeypatch.setattr(model, 'MATMUL_SPLITS', splits)
    rng = np.random.default_rng(10)
    prompt = rng.integers(0, tiny_model.hparams['n_vocab'], size=5)
    rows = rng.integers(0, tiny_model.hparams['n_vocab'], size=(3, 4))
    with tf.Graph().as_default():
        hparams = tiny_model.hparams_object()
        scope = model.read_once_scope()
        prompt_logits, prefix = model.decode_step(hparams, prompt[np.newaxis], model.empty_cache(hparams, 1, 5),
                                                  position=0, scope=scope)
        cache = model.empty_cache(hparams, 3, 6)  # longer than used: the slots after each step's are masked
        pieces = []
        for t in range(rows.shape[1]):
            logits, cache = model.decode_step(hparams, rows[:, t:t + 1], cache, position=5 + t, scope=scope,
                                              prefix=prefix)
            pieces.append(logits)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            got_prompt, got = sess.run([prompt_logits, tf.concat(pieces, axis=1)])
    np.testing.assert_allclose(got_prompt[0], reference.logits(tiny_model.params, tiny_model.hparams, prompt),
                               atol=1e-5, rtol=1e-5)
    for row, tokens in enumerate(rows):
        expected = reference.logits(tiny_model.params, tiny_model.hparams, np.concatenate([prompt, tokens]))
        np.testing.assert_allclose(got[row], expected[5:], atol=1e-5, rtol=1e-5)
