"""int8 sampling (src/gpt2/sampling/int8.py) against a NumPy model of the same arithmetic, and end to end."""
import json

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import reference
from support import INTERACTIVE, UNCONDITIONAL, assert_clean_error, decode, run_script as run, tiny_flags

import sample
from gpt2 import loading
from gpt2.sampling import cpu_matmul
from gpt2.sampling import decoding
from gpt2.sampling import int8


# ---------------------------------------------------------------------------------------------------------------
# The arithmetic, in NumPy, from the docstring's formulas
# ---------------------------------------------------------------------------------------------------------------

def np_columns(w):
    """w [k, n] -> (wq int64, scale float32 [n])."""
    scale = np.abs(w).max(axis=0) * np.float32(1 / 127)
    return np.clip(np.round(w / np.maximum(scale, np.float32(1e-30))), -127, 127).astype(np.int64), scale


def np_rows(x):
    """x [rows, k] -> (xq int64, scale float32 [rows], zero int64 [rows])."""
    lo, hi = np.minimum(x.min(axis=1), 0), np.maximum(x.max(axis=1), 0)
    scale = np.maximum((hi - lo) * np.float32(1 / 255), np.float32(1e-30))
    zero = np.round(-lo / scale)
    xq = np.clip(np.round(x / scale[:, None]) + zero[:, None], 0, 255)
    return xq.astype(np.int64), scale, zero.astype(np.int64)


def np_int8_matmul(x, w, b=None):
    """The int8 product in exact integers, then the float32 rescale (and the bias)."""
    x, w = x.astype(np.float32), w.astype(np.float32)
    xq, x_scale, zero = np_rows(x)
    wq, w_scale = np_columns(w)
    acc = xq @ wq - zero[:, None] * wq.sum(axis=0)[None, :]
    assert np.abs(acc).max() < 2**31  # fits the kernel's int32
    y = acc.astype(np.float32) * (x_scale[:, None] * w_scale[None, :])
    return y if b is None else y + b.astype(np.float32)


def run_graph(fn, *arrays):
    with tf.Graph().as_default(), tf.Session() as sess:
        return sess.run(fn(*(tf.constant(a) for a in arrays)))


def operands(rows, k, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, k)).astype(np.float32) + 0.3  # the rows' minimum and maximum differ
    return x, rng.standard_normal((k, n)).astype(np.float32), rng.standard_normal(n).astype(np.float32)


@pytest.mark.parametrize('kept', [False, True])
def test_the_kernels_run_here(kept):
    """TensorFlow's quantized products run on this CPU: the int8 tests below test them, not the fallback."""
    assert int8.kernel_works(kept)


@pytest.mark.parametrize('kept', [False, True])
@pytest.mark.parametrize('rows, k, n, parts', [(1, 768, 96, 1), (8, 3072, 64, 2), (3, 7, 5, 3)])
def test_product_is_the_exact_integer_product_then_the_float32_rescale(rows, k, n, parts, kept):
    x, w, b = operands(rows, k, n)
    got = run_graph(lambda x, w, b: int8.matmul(x, int8.quantize_weight(w, parts), b, kept=kept), x, w, b)
    np.testing.assert_array_equal(got, np_int8_matmul(x, w, b))


def test_the_kept_kernel_multiplies_any_rows_after_its_first_call():
    """Its first call keeps the weights; calls of other row counts (a prompt, then one token a step; none) after
    it stay exact."""
    x, w, _ = operands(9, 64, 48)
    with tf.Graph().as_default(), tf.Session() as sess:
        rows = tf.placeholder(tf.float32, [None, 64])
        y = int8.matmul(rows, int8.quantize_weight(tf.Variable(w).value()), kept=True)
        sess.run(tf.global_variables_initializer())
        for part in (x[:5], x[5:6], x[:0], x[6:9]):
            expected = np_int8_matmul(part, w) if len(part) else np.zeros([0, 48], np.float32)
            np.testing.assert_array_equal(sess.run(y, {rows: part}), expected)


def test_frozen_weights_choose_the_kept_kernel():
    plan = lambda frozen: sample.products_for('/CPU:0', batch=1, frozen_weights=frozen, hparams=None,
                                              precision='int8')
    assert plan(True).int8.kept and not plan(False).int8.kept


def test_zero_rows_and_columns_multiply_to_the_bias():
    x, w, b = operands(3, 16, 4)
    x[1] = 0
    w[:, 2] = 0
    got = run_graph(lambda x, w, b: int8.matmul(x, int8.quantize_weight(w), b), x, w, b)
    np.testing.assert_array_equal(got[1], b)
    np.testing.assert_array_equal(got[:, 2], np.full(3, b[2]))


def test_weights_changed_between_runs_are_quantized_again():
    """Quantized on every run, from the variable's value then: no kernel keeps an old copy."""
    x, w, _ = operands(8, 64, 32)
    with tf.Graph().as_default(), tf.Session() as sess:
        variable = tf.Variable(w)
        y = int8.matmul(tf.constant(x), int8.quantize_weight(variable.value()))
        sess.run(variable.initializer)
        sess.run(y)
        sess.run(variable.assign(2 * w + 1))
        np.testing.assert_array_equal(sess.run(y), np_int8_matmul(x, 2 * w + 1))


def quantization_bound(x, w):
    """|x @ w - x~ @ w~| <= sum_i |x_i| * w_step_j / 2 + x_step / 2 * sum_i |w~_ij| (rounding to the nearest
    step, the zero point included), with a float32 slack."""
    _, x_scale, _ = np_rows(x)
    wq, w_scale = np_columns(w)
    bound = np.abs(x).sum(axis=1)[:, None] * w_scale[None, :] / 2
    bound += x_scale[:, None] / 2 * (np.abs(wq) * w_scale[None, :]).sum(axis=0)[None, :]
    return bound * 1.001 + 1e-5


@pytest.mark.parametrize('one_token', [True, False])
def test_linear_and_logits_within_the_quantization_step(one_token):
    """Products(int8) as decoding uses them: a layer, and the logits with the tied weights [n_vocab, n_embd]."""
    x, w, b = operands(4, 64, 48)
    plan = cpu_matmul.Products(splits=2, int8=int8.Weights(2))
    layer = run_graph(lambda x, w, b: plan.linear(one_token)(x, w, b), x, w, b)
    assert (np.abs(layer - (x @ w + b)) <= quantization_bound(x, w)).all()
    logits = run_graph(lambda h, wte: plan.logits(h, wte), x, w.T.copy())
    np.testing.assert_array_equal(logits, np_int8_matmul(x, w))
    assert (np.abs(logits - x @ w) <= quantization_bound(x, w)).all()


# ---------------------------------------------------------------------------------------------------------------
# The quantized model: the NumPy reference with every product quantized
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture()
def quantized_reference(monkeypatch):
    """reference.py's GPT-2 with its linear layers and logits through np_int8_matmul, and its token embeddings
    the rows of wte dequantized (wte's int8 copy, per token, is the only one kept)."""
    monkeypatch.setattr(reference, 'linear', lambda x, p, name: np_int8_matmul(x, p[name + '/w'][0], p[name + '/b']))
    monkeypatch.setattr(reference, 'logits', lambda p, hparams, tokens: np_int8_matmul(
        reference.hidden_states(p, hparams, tokens)[-1], p['model/wte'].T))
    monkeypatch.setattr(reference, 'embed', lambda p, tokens: np_dequantized_rows(p['model/wte'])[tokens].astype(
        np.float64) + p['model/wpe'][np.arange(len(tokens))])
    return reference


def np_dequantized_rows(wte):
    """wte [n_vocab, n_embd] -> its rows as the int8 copy gives them back, in float32."""
    wq, scale = np_columns(wte.T)
    return (wq.astype(np.float32) * scale[None, :]).T


def int8_logits(tiny_model, tokens):
    """The decoder's logits [seq, n_vocab] for tokens [seq] with int8 products, on the tiny model's weights."""
    hparams = tiny_model.hparams_object()
    plan = sample.products_for('/CPU:0', batch=1, frozen_weights=False, hparams=hparams, precision='int8')
    with tf.Graph().as_default(), tf.Session() as sess:
        cache = decoding.empty_cache(hparams, 1, len(tokens))
        h, _, wte = decoding.decode_hidden(hparams, [tokens], cache, 0, scope=decoding.read_once_scope(),
                                           products=plan)
        logits = plan.logits(h[0], wte)
        kernels = [op for op in sess.graph.get_operations() if op.type == 'QuantizedMatMulWithBias']
        assert len(kernels) == 2 * (4 * hparams.n_layer + 1)  # every product, in two column slices
        tf.train.Saver().restore(sess, tf.train.latest_checkpoint(str(tiny_model.dir)))
        return sess.run(logits)


def test_model_logits_equal_the_quantized_reference_and_stay_near_float32(tiny_model, quantized_reference):
    tokens = [tiny_model.endoftext, 258, 32, 257, 263]
    got = int8_logits(tiny_model, tokens)
    expected = quantized_reference.logits(tiny_model.params, tiny_model.hparams, np.array(tokens))
    # float64 activations in the reference, float32 here: a rounding may fall on the other side of a step.
    spread = np.ptp(expected, axis=1, keepdims=True)
    assert (np.abs(got - expected) <= 0.01 * spread).all()
    float_logits = reference.hidden_states(tiny_model.params, tiny_model.hparams, np.array(tokens))[-1] @ \
        tiny_model.params['model/wte'].T
    assert (np.abs(got - float_logits) <= 0.05 * spread).all()
    assert (got.argmax(axis=1) == float_logits.argmax(axis=1)).all()


# ---------------------------------------------------------------------------------------------------------------
# The scripts, as a user runs them
# ---------------------------------------------------------------------------------------------------------------

def test_unconditional_int8_greedy_is_the_quantized_references(tiny_model, quantized_reference):
    done = run(UNCONDITIONAL, *tiny_flags(tiny_model, nsamples=2, batch_size=2, length=10, top_k=1,
                                          precision='int8'))
    assert done.returncode == 0 and done.err == ''
    tokens = quantized_reference.greedy(tiny_model.params, tiny_model.hparams, [tiny_model.endoftext], 10)[1:]
    sample_text = '=' * 40 + ' SAMPLE {} ' + '=' * 40 + '\n' + decode(tiny_model, tokens) + '\n'
    assert done.out == sample_text.format(1) + sample_text.format(2)


def test_interactive_int8_greedy_is_the_quantized_references(tiny_model, quantized_reference):
    """One prompt for both rows: run once at batch 1, then the rows' own steps."""
    done = run(INTERACTIVE, *tiny_flags(tiny_model, length=7, top_k=1, nsamples=2, batch_size=2,
                                        precision='int8'), stdin=b' the hello\n')
    prompt = [258, ord(' '), 257, 263, ord('o')]
    tokens = quantized_reference.greedy(tiny_model.params, tiny_model.hparams, prompt, 7)[len(prompt):]
    assert done.out.count(f'{"=" * 40}\n{decode(tiny_model, tokens)}\n') == 2, done.out + done.err


@pytest.mark.parametrize('script', [UNCONDITIONAL, INTERACTIVE])
def test_an_unknown_precision_is_one_line_naming_the_choices(tiny_model, script):
    done = run(script, *tiny_flags(tiny_model, precision='int4'))
    assert_clean_error(done, '--precision', 'float32', 'int8')
    assert done.returncode == 2 and done.out == ''


def test_int8_on_a_gpu_is_a_value_error():
    with pytest.raises(ValueError, match='int8 is for a CPU'):
        sample.products_for('/GPU:0', batch=1, frozen_weights=False, hparams=None, precision='int8')


@pytest.mark.parametrize('precision, device, words', [('int4', None, 'float32, int8'),
                                                      ('int8', '/GPU:0', 'CPU only')])
def test_generator_refuses_a_bad_precision_with_a_value_error(tiny_model, precision, device, words):
    from gpt2.sampling import generator
    with pytest.raises(ValueError, match=words):
        generator.Generator(tiny_model.name, tiny_model.models_dir, precision=precision, device=device)


def test_generator_int8_greedy_is_the_quantized_references(tiny_model, quantized_reference):
    from gpt2.sampling import generator
    prompt = [258, ord(' '), 257, 263, ord('o')]
    tokens = quantized_reference.greedy(tiny_model.params, tiny_model.hparams, prompt, 6)[len(prompt):]
    with generator.Generator(tiny_model.name, tiny_model.models_dir, precision='int8') as gen:
        assert gen.generate(' the hello', length=6, temperature=0).tokens == tokens


def test_each_weight_is_quantized_once_outside_the_loop(tiny_model):
    """A shared prompt runs before the loop and in it the rows' steps: both use one quantized copy, made
    outside the loop (each weight's max |w| is one Abs op)."""
    hparams = tiny_model.hparams_object()
    with tf.Graph().as_default():
        sample.sample_sequence(hparams=hparams, length=3, context=[[1, 2]], batch_size=2, precision='int8',
                               device='/CPU:0')
        quantized = [op.name for op in tf.get_default_graph().get_operations() if op.type == 'Abs']
    assert len(quantized) == 4 * hparams.n_layer + 1
    assert not [name for name in quantized if '/while/' in name]


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_score_int8_logprobs_are_the_quantized_references(tiny_model, quantized_reference, tmp_path):
    """score.py --precision int8: the blocks' products and the chunked logits' product with wte."""
    (tmp_path / 'text.txt').write_text('the hello and the world', encoding='utf-8')
    out = tmp_path / 'tokens.jsonl'
    done = run('score.py', tmp_path / 'text.txt', f'--models_dir={tiny_model.models_dir}',
               f'--model_name={tiny_model.name}', f'--per_token={out}', '--precision=int8')
    assert done.returncode == 0, done.err
    scored = json.loads(out.read_text(encoding='utf-8'))
    tokens = [tiny_model.endoftext] + scored['ids']
    z = quantized_reference.logits(tiny_model.params, tiny_model.hparams, np.array(tokens[:-1]))
    expected = log_softmax(z)[np.arange(len(tokens) - 1), tokens[1:]]
    np.testing.assert_allclose(scored['logprobs'], expected, atol=1e-3)
    float32 = log_softmax(reference.hidden_states(tiny_model.params, tiny_model.hparams, np.array(tokens[:-1]))[-1]
                          @ tiny_model.params['model/wte'].T)[np.arange(len(tokens) - 1), tokens[1:]]
    assert np.abs(np.array(scored['logprobs']) - float32).max() > 5e-3  # int8 indeed, not float32


def test_score_refuses_an_unknown_precision(tiny_model, tmp_path):
    (tmp_path / 'text.txt').write_text('the hello', encoding='utf-8')
    done = run('score.py', tmp_path / 'text.txt', f'--models_dir={tiny_model.models_dir}',
               f'--model_name={tiny_model.name}', '--precision=bfloat16')
    assert_clean_error(done, '--precision', 'float32', 'int8')
    assert done.returncode == 2


def test_load_fills_only_int8_copies_of_the_product_weights(tiny_model):
    """start_restore(precision='int8'): the products' float32 variables stay empty (no memory), everything else
    is restored, and the sampling graph quantizes nothing: its weights are the int8 copies made at load."""
    hparams = tiny_model.hparams_object()
    with tf.Graph().as_default(), tf.Session() as sess:
        loading.start_restore(sess, tiny_model.dir, hparams, 'int8')()
        sample.sample_sequence(hparams=hparams, length=3, context=[[1, 2]], batch_size=2, precision='int8',
                               device='/CPU:0')
        empty = sorted(name.decode() for name in sess.run(tf.report_uninitialized_variables()))
        abs_ops = [op.name for op in sess.graph.get_operations() if op.type == 'Abs']
    products = [name for name in tiny_model.params if name.endswith('/w')] + ['model/wte']
    assert empty == sorted(products)
    assert abs_ops and all(name.startswith('int8_fill') for name in abs_ops)


def test_generator_int8_hidden_states_are_the_quantized_references(tiny_model, quantized_reference):
    """An int8 Generator keeps only the int8 copies, so its hidden states and embeddings are the int8 model's."""
    from gpt2.sampling import generator
    tokens = [tiny_model.endoftext, 258, 32, 257, 263]
    expected = quantized_reference.hidden_states(tiny_model.params, tiny_model.hparams, np.array(tokens))
    with generator.Generator(tiny_model.name, tiny_model.models_dir, precision='int8') as gen:
        got = gen.hidden_states(tokens)
        pooled = gen.embed([tokens])[0]
    spread = np.ptp(expected, axis=(1, 2), keepdims=True)
    assert (np.abs(got - expected) <= 0.01 * spread).all()
    np.testing.assert_allclose(pooled, got[-1].mean(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('from_file', [True, False])
def test_the_stored_wte_is_its_columns_quantized_in_the_graph(tiny_model, monkeypatch, from_file):
    """wte's int8 copy, filled from the checkpoint's file in NumPy (or, where bundle.py cannot read the file,
    by TensorFlow), equals quantize_weight of wte's transpose in the graph, slice by slice."""
    from gpt2.base import bundle
    if not from_file:
        monkeypatch.setattr(bundle.Reader, '__init__', lambda self, prefix: (_ for _ in ()).throw(
            bundle.BundleError('not this one')))
    hparams = tiny_model.hparams_object()
    wte = tiny_model.params['model/wte']
    with tf.Graph().as_default(), tf.Session() as sess:
        loading.start_restore(sess, tiny_model.dir, hparams, 'int8')()
        store, = sess.graph.get_collection(int8.Store.STORE_KEY)
        got = sess.run([[v.read_value() for v in part] for part in store.variables['model/wte']])
        expected = int8.quantize_weight(tf.constant(wte.T.copy()), len(got))
        parts, scale, colsum = sess.run([[tf.bitcast(p, tf.int8) for p in expected.parts], expected.scale,
                                         expected.colsum])
    np.testing.assert_array_equal(np.concatenate([q for q, _, _ in got], axis=1), np.concatenate(parts, axis=1))
    np.testing.assert_array_equal(np.concatenate([s for _, s, _ in got]), scale)
    np.testing.assert_array_equal(np.concatenate([c for _, _, c in got]), colsum)
