import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from gpt2.base import checkpoint
import model
import reference
from support import restore


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


# gelu and layer norm carry hand-written gradients (they keep less for the backward pass); each must equal the
# central finite difference of the forward function, computed in float64 by NumPy from the reference's formulas.
def numeric_gradient(f, x, dy, eps=1e-6):
    """d(sum(f(x) * dy)) / dx, by central differences, element by element."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = ((f(x + step) - f(x - step)) * dy).sum() / (2 * eps)
    return grad


def tf_gradient(f, x, dy):
    with tf.Graph().as_default(), tf.Session() as sess:
        xt = tf.constant(x)
        return sess.run(tf.gradients(f(xt), xt, grad_ys=tf.constant(dy))[0])


@pytest.mark.parametrize('piece', ['gelu', 'standardize'])
def test_hand_written_gradients_equal_finite_differences(piece):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5)) * 2
    dy = rng.standard_normal((3, 5))
    if piece == 'gelu':
        tf_f, np_f = model.gelu, reference.gelu
    else:
        tf_f = lambda t: model.standardize(t, axis=-1, epsilon=1e-5)
        np_f = lambda a: reference.layer_norm(a, 1.0, 0.0)
    got = tf_gradient(tf_f, x, dy)
    np.testing.assert_allclose(got, numeric_gradient(np_f, x, dy), rtol=1e-6, atol=1e-8)
