"""Mixed-precision training (train.py --mixed_precision, gpt2/training/precision.py) on the tiny model: a bfloat16
step against the float64 NumPy reference within bounds derived from bfloat16's 8-bit significand, the graph's
dtypes, float16's loss scaling (run on this CPU through the library: train.py allows float16 on a GPU only),
N + N resumed equal to 2N, and the flag's errors as a user meets them."""
import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import reference
from gpt2.base import flags
from gpt2.training import checks
from gpt2.training import graph
from gpt2.training import loop
from gpt2.training import precision
from gpt2.training import start
from support import ONE_THREAD, assert_clean_error, losses, run_cli, run_train, tensors

SEQ = 8
U = 2.0 ** -8  # bfloat16's unit roundoff: 8 significant bits, round to nearest
# Results rounded to bfloat16 on the way from a weight to the loss and back, per block: the layer norms' results,
# each product's inputs and result, its bias sum, the queries' scale, the scores, the attention weights, GELU,
# the residual sums; forward and backward, about 20. Their errors, each within U relative, add up at random: a
# gradient is within a few sqrt(ROUNDINGS) U of the exact one, relative to its size.
ROUNDINGS_PER_BLOCK = 20
CHECKED = ('model/wte', 'model/wpe', 'model/h0/attn/c_attn/w', 'model/h1/attn/c_proj/w', 'model/h0/mlp/c_fc/w',
           'model/h1/mlp/c_proj/b', 'model/h0/ln_1/g', 'model/ln_f/b')


def batch(tiny_model, seed=0):
    """2 windows of SEQ random tokens, the second padded after 5 -> (tokens [2, SEQ], lengths [2])."""
    tokens = np.random.default_rng(seed).integers(tiny_model.hparams['n_vocab'], size=(2, SEQ)).astype(np.int32)
    tokens[1, 5:] = 0
    return tokens, np.array([SEQ, 5], np.int32)


def build(tiny_model, **options):
    """build_training on the tiny model's weights, in a graph of its own -> (Training, session)."""
    with tf.Graph().as_default() as g:
        training = graph.build_training(tiny_model.hparams_object(), batch_size=2, seq_len=SEQ, **options)
        sess = tf.Session(graph=g)
        start.restore(sess, training, str(tiny_model.dir / 'model.ckpt'))
    return training, sess


def values(training, sess, variables=None):
    return dict(zip([v.op.name for v in variables or training.saved_vars],
                    sess.run(variables or training.saved_vars)))



# ---------------------------------------------------------------------------------------------------------------
# bfloat16: the step
# ---------------------------------------------------------------------------------------------------------------

def test_bfloat16_multiplies_in_bfloat16_and_keeps_float32_variables_with_the_float32_names(tiny_model):
    training, _ = build(tiny_model, mixed_precision='bfloat16')
    ops = training.loss.graph.get_operations()
    products = [op for op in ops if op.type in ('MatMul', 'BatchMatMulV2', 'BatchMatMulV3')]
    assert products and all(op.get_attr('T') == tf.bfloat16 for op in products), products
    softmaxes = [op for op in ops if op.type in ('Softmax', 'SparseSoftmaxCrossEntropyWithLogits')]
    assert softmaxes and all(op.get_attr('T') == tf.float32 for op in softmaxes)
    assert all(v.dtype.base_dtype in (tf.float32, tf.int64) for v in tf.global_variables(training.loss.graph))
    plain, _ = build(tiny_model)
    assert sorted(v.op.name for v in training.saved_vars) == sorted(v.op.name for v in plain.saved_vars)
    assert training.skipped is None  # no loss scaling: nothing added to the checkpoints


def test_a_bfloat16_sgd_step_is_the_float64_step_within_bfloat16_rounding(tiny_model):
    """The loss against the NumPy model with the same results rounded to bfloat16, and the gradients against
    finite differences of the float64 model, within the bounds of the roundings; the update is -lr times the
    gradient in float32 (the master weights), though far below a bfloat16 weight's resolution."""
    lr = 1e-3
    training, sess = build(tiny_model, mixed_precision='bfloat16', optimizer='sgd', learning_rate=lr)
    tokens, lengths = batch(tiny_model)
    rows = [row[:n] for row, n in zip(tokens, lengths)]
    feed = {training.tokens: tokens, training.lengths: lengths}
    with training.loss.graph.as_default():
        grads = [tf.convert_to_tensor(g) for g in tf.gradients(training.loss, training.model_vars)]
    grads = dict(zip([v.op.name for v in training.model_vars], sess.run(grads, feed)))
    before = values(training, sess, training.model_vars)
    loss = training.run_step(sess, [(tokens, lengths)])
    after = values(training, sess, training.model_vars)

    roundings = ROUNDINGS_PER_BLOCK * tiny_model.hparams['n_layer'] + 4  # and the embeddings, ln_f, the logits
    logits = np.concatenate([reference.logits(tiny_model.params, tiny_model.hparams, r) for r in rows])
    # The mean loss moves with the logits' errors, each within sqrt(roundings) U of their scale.
    rounded = reference.loss(tiny_model.params, tiny_model.hparams, rows, rounded=reference.bfloat16)
    assert abs(loss - rounded) <= math.sqrt(roundings) * U * np.sqrt(np.mean(logits ** 2))
    rng = np.random.default_rng(1)
    for name in CHECKED:
        grad = grads[name]
        scale = np.sqrt(np.mean(grad[grad != 0] ** 2))
        for _ in range(4):
            index = tuple(int(rng.integers(n)) for n in tiny_model.params[name].shape)
            if name == 'model/wte':
                index = (int(tokens[0, 2]),) + index[1:]  # a token of the batch: a gradient that is not zero
            want = reference.finite_difference(tiny_model.params, tiny_model.hparams, rows, name, index)
            assert abs(grad[index] - want) <= 4 * math.sqrt(roundings) * U * (abs(want) + scale), (name, index)
        # Within the float32 rounding of the new weights.
        np.testing.assert_allclose(after[name] - before[name], -lr * grad, rtol=1e-3,
                                   atol=np.spacing(np.abs(before[name]).max()), err_msg=name)
        # Most updates are below half a bfloat16 weight's spacing (2**-9 |w|), where a bfloat16 master weight
        # would not move; these float32 ones do (those above float32's spacing).
        step = np.abs(lr * grad)
        small = (step < 2.0 ** -9 * np.abs(before[name])) & (step > np.spacing(np.abs(before[name])))
        assert small.sum() > 0.5 * (grad != 0).sum(), name
        assert np.all(after[name][small] != before[name][small]), name


@pytest.mark.parametrize('options', [dict(memory_saving_gradients=True),
                                     dict(accumulate_gradients=2, batch_size=1)])
def test_bfloat16_recomputed_or_accumulated_makes_the_plain_bfloat16_update(tiny_model, options):
    """The lean step (recompute, gradients applied layer by layer) and accumulation make the plain bfloat16 step's
    update, up to the rounding of the sums that differ (a batch of 2 against 2 of 1)."""
    tokens, lengths = batch(tiny_model)
    plain, plain_sess = build(tiny_model, mixed_precision='bfloat16', optimizer='sgd', learning_rate=0.1)
    with tf.Graph().as_default() as g:
        other = graph.build_training(tiny_model.hparams_object(), seq_len=SEQ, mixed_precision='bfloat16',
                                     optimizer='sgd', learning_rate=0.1, **{'batch_size': 2, **options})
        sess = tf.Session(graph=g)
        start.restore(sess, other, str(tiny_model.dir / 'model.ckpt'))
    parts = [(tokens, lengths)] if other.accumulate_gradients == 1 else [(tokens[:1], lengths[:1]),
                                                                          (tokens[1:], lengths[1:])]
    loss = plain.run_step(plain_sess, [(tokens, lengths)])
    assert other.run_step(sess, parts) == pytest.approx(loss, rel=8 * U)
    want, got = values(plain, plain_sess, plain.model_vars), values(other, sess, other.model_vars)
    for name in want:
        moved = np.abs(want[name] - tiny_model.params[name]).max()
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=8 * U * moved + 1e-7, err_msg=name)


# ---------------------------------------------------------------------------------------------------------------
# float16: loss scaling
# ---------------------------------------------------------------------------------------------------------------

def test_loss_scaling_skips_a_non_finite_step_entirely_and_applies_the_next():
    """precision.LossScale.apply with Adam, the gradient fed: an infinite one changes no variable, slot or step
    and halves the scale; a finite one is divided by the scale and applied, as Adam applies it unscaled."""
    with tf.Graph().as_default(), tf.Session() as sess:
        with tf.variable_scope('', use_resource=True):
            w = tf.get_variable('w', [3], initializer=tf.constant_initializer([1.0, 2.0, 3.0]))
            step = tf.train.get_or_create_global_step()
            scaling = precision.LossScale.build(growth_steps=2, initial=8.0)
        grad = tf.placeholder(tf.float32, [3])
        opt = tf.train.AdamOptimizer(0.1)
        train_op = scaling.apply(lambda g: opt.apply_gradients(g, global_step=step), [(grad, w)])
        sess.run(tf.global_variables_initializer())
        everything = tf.global_variables()
        start_values = sess.run(everything)
        sess.run(train_op, {grad: [8.0, np.inf, 0.0]})
        after = dict(zip([v.op.name for v in everything], sess.run(everything)))
        for v, value in zip(everything, start_values):
            if v.op.name not in ('loss_scale', 'skipped_steps'):
                np.testing.assert_array_equal(after[v.op.name], value, err_msg=v.op.name)
        assert (after['loss_scale'], after['skipped_steps']) == (4.0, 1)
        sess.run(train_op, {grad: [4.0, -4.0, 0.0]})  # the gradient (1, -1, 0) at scale 4
        # Adam's first step moves each weight by the rate times the sign of its gradient.
        np.testing.assert_allclose(sess.run(w), [0.9, 2.1, 3.0], rtol=1e-5)
        assert sess.run([step, scaling.skipped, scaling.good_steps, scaling.scale]) == [1, 1, 1, 4.0]
        sess.run(train_op, {grad: [4.0, -4.0, 0.0]})
        assert sess.run([step, scaling.good_steps, scaling.scale]) == [2, 0, 8.0]  # 2 good steps: doubled


def test_float16_training_skips_an_overflowing_step_and_proceeds_at_half_the_scale(tiny_model):
    """float16 through build_training (on a CPU here): at a scale of 2**40 the gradients overflow float16, the
    step is skipped (weights, Adam's slots and global_step unchanged; skipped counted); at 2**10 it trains."""
    training, sess = build(tiny_model, mixed_precision='float16', learning_rate=1e-2)
    scale = [v for v in training.saved_vars if v.op.name == 'loss_scale'][0]
    tokens, lengths = batch(tiny_model)
    with training.loss.graph.as_default():
        sess.run(scale.assign(2.0 ** 40))
    before = values(training, sess)
    training.run_step(sess, [(tokens, lengths)])
    after = values(training, sess)
    for name in before:
        if name not in ('loss_scale', 'skipped_steps', 'loss_scale_good_steps'):
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert (after['loss_scale'], after['skipped_steps'], after['global_step']) == (2.0 ** 39, 1, 0)
    assert loop.steps_done(sess, training) == 1
    with training.loss.graph.as_default():
        sess.run(scale.assign(2.0 ** 10))
    first = training.run_step(sess, [(tokens, lengths)])
    assert training.run_step(sess, [(tokens, lengths)]) < first
    after = values(training, sess)
    assert (after['global_step'], after['skipped_steps'], after['loss_scale']) == (2, 1, 2.0 ** 10)
    assert first == pytest.approx(reference.loss(tiny_model.params, tiny_model.hparams,
                                                 [r[:n] for r, n in zip(tokens, lengths)]), rel=2 ** -5)


def test_float16_n_steps_then_n_more_equal_2n_with_the_scale_and_its_counts_saved(tiny_model, tmp_path):
    """A skipped step, then good ones with the scale doubling after 2 (loss_scale_growth): 2 steps, saved,
    restored into a new graph and 2 more, equal 4 straight bit for bit, the scale and its counts included."""
    one_thread = tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    options = dict(mixed_precision='float16', learning_rate=1e-2, loss_scale_growth=2)
    batches = [batch(tiny_model, seed) for seed in range(4)]

    def run(prefix, steps, first):
        with tf.Graph().as_default():
            training = graph.build_training(tiny_model.hparams_object(), batch_size=2, seq_len=SEQ, **options)
            scale = [v for v in training.saved_vars if v.op.name == 'loss_scale'][0]
            overflow, settle = scale.assign(2.0 ** 40), scale.assign(2.0 ** 10)
            with tf.Session(config=one_thread) as sess:
                start.restore(sess, training, prefix)
                assert loop.steps_done(sess, training) == first
                for step in range(first, first + steps):
                    sess.run(overflow if step == 0 else settle if step == 1 else [])
                    training.run_step(sess, [batches[step]])
                saved = tf.train.Saver({v.op.name: v for v in training.saved_vars}).save(sess, str(tmp_path / 'x'))
                return saved, values(training, sess)

    base = str(tiny_model.dir / 'model.ckpt')
    middle, _ = run(base, 2, 0)
    _, resumed = run(middle, 2, 2)
    _, straight = run(base, 4, 0)
    assert (straight['skipped_steps'], straight['global_step'], straight['loss_scale']) == (1, 3, 2.0 ** 11)
    assert sorted(resumed) == sorted(straight)
    for name in straight:
        assert np.array_equal(resumed[name], straight[name]), name


def test_the_step_line_reports_the_skipped_steps(capsys):
    progress = loop.Progress()
    progress.step(3, 2.5, 100, 1.0, skipped=2)
    progress.step(4, 2.5, 100, 1.0)
    first, second = capsys.readouterr().out.splitlines()
    assert first.endswith('tokens/s=100.0 skipped=2') and second.endswith('tokens/s=100.0')


# ---------------------------------------------------------------------------------------------------------------
# train.py
# ---------------------------------------------------------------------------------------------------------------

def test_bfloat16_n_steps_then_n_more_equal_2n_straight_bit_for_bit(setup):
    """Adam with the lean step and accumulation, in bfloat16: the checkpoints hold float32 weights and state, so a
    resumed run goes on exactly."""
    options = dict(mixed_precision='bfloat16', accumulate_gradients=2, memory_saving_gradients=True, noise=0.1)
    first = run_train(setup(run_name='a', steps=2, **options), env=ONE_THREAD)
    second = run_train(setup(run_name='a', steps=2, **options), env=ONE_THREAD)
    straight = run_train(setup(run_name='b', steps=4, **options), env=ONE_THREAD)
    assert {**losses(first.stdout), **losses(second.stdout)} == losses(straight.stdout)
    resumed, whole = tensors(setup.run_dir('a') / 'model-4'), tensors(setup.run_dir('b') / 'model-4')
    assert sorted(resumed) == sorted(whole) and whole['global_step'] == 4
    assert all(value.dtype in (np.float32, np.int64) for value in whole.values())
    for name in whole:
        assert np.array_equal(resumed[name], whole[name]), name


@pytest.mark.parametrize('value, words', [('float16', ['float16', 'GPU']), ('float8', ['bfloat16, float16']),
                                          ('True', ['--mixed_precision'])])
def test_a_mixed_precision_this_machine_cannot_run_is_one_error_line(setup, value, words):
    done = run_cli(setup(mixed_precision=value))
    assert_clean_error(done, '--mixed_precision', *words)
    assert done.returncode == 2 and not (setup.tmp / 'ck').exists()


@pytest.mark.parametrize('value, machine, devices, words', [
    ('bfloat16', dict(gpu=False, cpu_bfloat16=False), 1, ['AVX512_BF16']),
    ('float16', dict(gpu=True, cpu_bfloat16=False), 2, ['one device']),
    ('float16', dict(gpu=True, cpu_bfloat16=False, tf_config='{}'), 1, ['TF_CONFIG']),
])
def test_mixed_precision_is_refused_where_it_cannot_run(setup, value, machine, devices, words):
    config = type('Config', (), dict(mixed_precision=value, devices=devices))
    with pytest.raises(flags.UsageError) as error:
        checks.check_mixed_precision(config, **machine)
    assert all(word in str(error.value) for word in words), error.value


@pytest.mark.parametrize('value, machine', [('bfloat16', dict(gpu=True, cpu_bfloat16=False)),
                                            ('bfloat16', dict(gpu=False, cpu_bfloat16=True)),
                                            ('float16', dict(gpu=True, cpu_bfloat16=False))])
def test_mixed_precision_is_allowed_where_it_runs_fast(value, machine):
    config = type('Config', (), dict(mixed_precision=value, devices=1))
    checks.check_mixed_precision(config, tf_config='', **machine)
