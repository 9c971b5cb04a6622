"""The training graph (gpt2/training/graph.py's build_training, and losses.py) against the NumPy reference and
finite differences, on the tiny model. The command line and the run folder are in test_train_script.py."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import reference
from gpt2.training import graph
from gpt2.training import losses
from gpt2.training import start

tf.disable_v2_behavior()

SEQ = 8


def batch(tiny_model, rows, seed=0):
    """rows windows of SEQ random tokens, the last one padded after 5 -> (tokens [rows, SEQ], lengths [rows])."""
    tokens = np.random.default_rng(seed).integers(tiny_model.hparams['n_vocab'], size=(rows, SEQ)).astype(np.int32)
    lengths = np.full(rows, SEQ, np.int32)
    lengths[-1] = 5
    tokens[-1, 5:] = 0
    return tokens, lengths


def real_rows(tokens, lengths):
    return [row[:n] for row, n in zip(tokens, lengths)]


class Session:
    """A training graph on the tiny model's weights, in its own graph and session."""

    def __init__(self, tiny_model, **options):
        options = {'batch_size': 2, 'seq_len': SEQ, **options}
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.training = graph.build_training(tiny_model.hparams_object(), **options)
            self.sess = tf.Session(graph=self.graph)
            self.sess.run(tf.global_variables_initializer())
            start.restore(self.sess, self.training, str(tiny_model.dir / 'model.ckpt'))

    def weights(self):
        return {v.op.name: v for v in self.training.model_vars}

    def values(self):
        return self.sess.run({name: v for name, v in self.weights().items()})

    def gradients(self, tokens, lengths):
        with self.graph.as_default():
            names = list(self.weights())
            grads = tf.gradients(self.training.loss, [self.weights()[n] for n in names])
            grads = [tf.convert_to_tensor(g) for g in grads]
        values = self.sess.run(grads, self.feed(tokens, lengths))
        return dict(zip(names, values))

    def feed(self, tokens, lengths):
        return {self.training.tokens: tokens, self.training.lengths: lengths}

    def loss(self, tokens, lengths):
        return self.sess.run(self.training.loss, self.feed(tokens, lengths))


def test_loss_is_the_mean_next_token_cross_entropy_over_real_targets(tiny_model):
    tokens, lengths = batch(tiny_model, 2)
    got = Session(tiny_model).loss(tokens, lengths)
    want = reference.loss(tiny_model.params, tiny_model.hparams, real_rows(tokens, lengths))
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize('memory_saving_gradients', [False, True])
def test_gradients_match_finite_differences_of_the_reference_loss(tiny_model, memory_saving_gradients):
    tokens, lengths = batch(tiny_model, 2)
    grads = Session(tiny_model, memory_saving_gradients=memory_saving_gradients).gradients(tokens, lengths)
    rows = real_rows(tokens, lengths)
    rng = np.random.default_rng(1)
    for name in ('model/wte', 'model/wpe', 'model/h0/attn/c_attn/w', 'model/h1/mlp/c_proj/b', 'model/h0/ln_1/g',
                 'model/ln_f/b'):
        for _ in range(3):
            index = tuple(rng.integers(n) for n in tiny_model.params[name].shape)
            if name == 'model/wte':
                index = (int(tokens[0, 2]),) + index[1:]  # a token in the batch: a gradient that is not zero
            expected = reference.finite_difference(tiny_model.params, tiny_model.hparams, rows, name, index)
            assert grads[name][index] == pytest.approx(expected, abs=1e-4, rel=1e-3), (name, index)



def test_recomputed_gradients_equal_the_plain_ones(tiny_model):
    tokens, lengths = batch(tiny_model, 2)
    plain = Session(tiny_model).gradients(tokens, lengths)
    recomputed = Session(tiny_model, memory_saving_gradients=True).gradients(tokens, lengths)
    for name in plain:
        np.testing.assert_allclose(recomputed[name], plain[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize('memory_saving_gradients', [False, True])
def test_one_sgd_step_moves_every_weight_by_minus_lr_times_its_gradient(tiny_model, memory_saving_gradients):
    lr = 0.1
    s = Session(tiny_model, optimizer='sgd', learning_rate=lr, memory_saving_gradients=memory_saving_gradients)
    tokens, lengths = batch(tiny_model, 2)
    before, grads = s.values(), s.gradients(tokens, lengths)
    loss = s.training.run_step(s.sess, [(tokens, lengths)])
    after = s.values()
    assert loss == pytest.approx(reference.loss(tiny_model.params, tiny_model.hparams, real_rows(tokens, lengths)),
                                 rel=1e-5)
    assert s.sess.run(s.training.global_step) == 1
    for name in before:
        np.testing.assert_allclose(after[name] - before[name], -lr * grads[name], rtol=1e-4, atol=1e-7,
                                   err_msg=name)


def test_accumulating_micro_batches_equals_one_batch_of_all_their_rows(tiny_model):
    """Two micro-batches of 2 rows, one of them padded, make the same updates as one batch of the 4 rows."""
    (t1, l1), (t2, l2) = batch(tiny_model, 2, seed=1), batch(tiny_model, 2, seed=2)
    whole = Session(tiny_model, batch_size=4, optimizer='sgd', learning_rate=0.1)
    parts = Session(tiny_model, batch_size=2, optimizer='sgd', learning_rate=0.1, accumulate_gradients=2)
    for _ in range(2):
        loss_whole = whole.training.run_step(whole.sess, [(np.concatenate([t1, t2]), np.concatenate([l1, l2]))])
        loss_parts = parts.training.run_step(parts.sess, [(t1, l1), (t2, l2)])
        assert loss_parts == pytest.approx(loss_whole, rel=1e-5)
    a, b = whole.values(), parts.values()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert parts.sess.run(parts.training.global_step) == 2


def test_only_transformer_layers_leaves_embeddings_and_ln_f_bit_identical(tiny_model):
    s = Session(tiny_model, only_train_transformer_layers=True, learning_rate=1e-2)
    before = s.values()
    for seed in range(2):
        s.training.run_step(s.sess, [batch(tiny_model, 2, seed)])
    after = s.values()
    for name in before:
        frozen = name in ('model/wte', 'model/wpe', 'model/ln_f/g', 'model/ln_f/b')
        assert np.array_equal(after[name], before[name]) == frozen, name


def test_loss_falls_on_a_tiny_repeated_corpus(tiny_model):
    s = Session(tiny_model, learning_rate=1e-2)
    corpus = np.tile([5, 9, 70, 3, 200, 11], 10)
    windows = np.array([corpus[i:i + SEQ] for i in (0, 3)], np.int32)
    lengths = np.full(2, SEQ, np.int32)
    first = s.loss(windows, lengths)
    for _ in range(30):
        s.training.run_step(s.sess, [(windows, lengths)])
    assert s.loss(windows, lengths) < first / 4


def test_noise_replaces_inputs_at_the_given_rate_and_is_keyed():
    tokens = tf.zeros([100, 100], tf.int32)
    with tf.Session() as sess:
        a, b, c = sess.run([graph.with_noise(tokens, 0.3, 50, tf.constant([1, 2], tf.int64)),
                            graph.with_noise(tokens, 0.3, 50, tf.constant([1, 2], tf.int64)),
                            graph.with_noise(tokens, 0.3, 50, tf.constant([1, 3], tf.int64))])
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.25 < np.mean(a != 0) < 0.32  # 0.3, less the random tokens that happen to be 0
    assert a.min() >= 0 and a.max() < 50


def test_variables_are_resource_variables_with_the_released_names(tiny_model):
    s = Session(tiny_model)
    assert set(s.weights()) == set(tiny_model.params)
    assert {type(v).__name__ for v in s.training.saved_vars} == {'ResourceVariable'}


def test_seq_len_beyond_the_window_is_refused(tiny_model):
    with tf.Graph().as_default(), pytest.raises(ValueError, match='seq_len'):
        graph.build_training(tiny_model.hparams_object(), batch_size=1, seq_len=33)


def ancestors(op):
    """Every op that must run before op, through data and control inputs."""
    seen, stack = set(), [op]
    while stack:
        current = stack.pop()
        for parent in [t.op for t in current.inputs] + list(current.control_inputs):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def test_recomputation_waits_for_the_gradient_from_above(tiny_model):
    """Memory is saved only if the backward pass's products (recomputed ones included) run after the forward pass
    is over, not alongside it while its activations are alive: each must have the loss among its ancestors."""
    s = Session(tiny_model, memory_saving_gradients=True)
    products = [op for op in s.graph.get_operations()
                if op.name.startswith('gradients') and op.type in ('MatMul', 'BatchMatMulV2')]
    assert products
    loss = s.training.loss_sum.op
    for op in products:
        assert loss in ancestors(op), op.name


def test_sgd_under_a_warmup_schedule_moves_by_the_scheduled_rate(tiny_model):
    """Linear warmup over 4 updates: the first update's rate is 0, the second's a quarter of the base."""
    lr = 0.1
    s = Session(tiny_model, optimizer='sgd', learning_rate=lr, lr_schedule='linear', warmup_steps=4, total_steps=8)
    tokens, lengths = batch(tiny_model, 2)
    before = s.values()
    s.training.run_step(s.sess, [(tokens, lengths)])
    after_first = s.values()
    grads = s.gradients(tokens, lengths)
    s.training.run_step(s.sess, [(tokens, lengths)])
    after_second = s.values()
    for name in before:
        assert np.array_equal(after_first[name], before[name]), name
        np.testing.assert_allclose(after_second[name] - after_first[name], -lr / 4 * grads[name], rtol=1e-4,
                                   atol=1e-7, err_msg=name)


def test_adafactor_is_chosen_by_name_and_keeps_little_state(tiny_model):
    s = Session(tiny_model, optimizer='adafactor', learning_rate=1e-3)
    state = [v for v in s.training.saved_vars if 'Adafactor' in v.op.name]
    weights = sum(int(np.prod(v.shape)) for v in s.training.model_vars)
    assert state and sum(int(np.prod(v.shape)) for v in state) < weights / 4


def test_chunked_cross_entropy_equals_numpy_losses_and_gradients_over_uneven_chunks():
    """5 chunks of 3 tokens, the last of 1 (13 tokens): losses and both gradients against NumPy's softmax."""
    rng = np.random.default_rng(3)
    h = rng.standard_normal((1, 14, 6)).astype(np.float32)
    wte = rng.standard_normal((11, 6)).astype(np.float32)
    tokens = rng.integers(11, size=(1, 14)).astype(np.int32)
    weights = rng.uniform(0.5, 2, 13)  # d total / d loss of each token, unequal
    with tf.Graph().as_default(), tf.Session() as sess:
        h_t, wte_t = tf.constant(h), tf.constant(wte)
        per_token, real = losses.chunked_token_losses(h_t, wte_t, tf.constant(tokens), tf.constant([14]), chunk=3)
        total = tf.reduce_sum(per_token * tf.constant(weights[None].astype(np.float32)))
        got_losses, got_real, (dh, dwte) = sess.run([per_token, real, tf.gradients(total, [h_t, wte_t])])
    logits = h[0, :-1] @ wte.T  # [13, 11]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    targets = tokens[0, 1:]
    np.testing.assert_allclose(got_losses[0], -np.log(p[np.arange(13), targets]), rtol=1e-5)
    assert np.array_equal(got_real, np.ones((1, 13)))
    d = (p - np.eye(11)[targets]) * weights[:, None]  # d total / d logits
    np.testing.assert_allclose(dh[0, :-1], d @ wte, rtol=1e-4, atol=1e-6)
    assert np.array_equal(dh[0, -1], np.zeros(6))  # the last position predicts nothing
    np.testing.assert_allclose(dwte, d.T @ h[0, :-1], rtol=1e-4, atol=1e-6)


def test_the_lean_step_moves_every_weight_as_today_s_gradients_say(tiny_model):
    """memory_saving_gradients (recomputed blocks, chunked cross-entropy, gradients applied block by block): one
    SGD step moves each weight by -lr times the gradient of the plain graph, which keeps everything."""
    lr = 0.1
    tokens, lengths = batch(tiny_model, 2)
    plain = Session(tiny_model).gradients(tokens, lengths)
    lean = Session(tiny_model, optimizer='sgd', learning_rate=lr, memory_saving_gradients=True)
    before = lean.values()
    lean.training.run_step(lean.sess, [(tokens, lengths)])
    after = lean.values()
    for name in before:
        np.testing.assert_allclose(after[name] - before[name], -lr * plain[name], rtol=1e-4, atol=1e-7,
                                   err_msg=name)
