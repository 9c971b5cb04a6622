"""src/distribute.py: K replicas at batch b make the updates of one device at batch K x b (train.build_training on
one device, which test_train.py checks against the NumPy reference), in one process on 2 CPU devices, and as two
worker processes on 127.0.0.1 with TF_CONFIG."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import distribute
import flags
import train

tf.disable_v2_behavior()

SEQ = 8


def ordinary_batches(tiny_model, count, rows=2, seed=0):
    """count batches of random tokens in rows of random lengths (2 to SEQ, padded with 0), at least one of them
    short: the mean over real targets then weighs the replicas' rows unequally."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        lengths = rng.integers(2, SEQ + 1, size=rows).astype(np.int32)
        lengths[rng.integers(rows)] = rng.integers(2, SEQ // 2)
        tokens = rng.integers(tiny_model.hparams['n_vocab'], size=(rows, lengths.max())).astype(np.int32)
        tokens[np.arange(lengths.max())[np.newaxis, :] >= lengths[:, np.newaxis]] = 0
        batches.append((tokens, lengths))
    return batches


def train_on(tiny_model, batches, cluster, **options):
    """Train from the tiny model on batches (accumulate_gradients of them a step), on one device (cluster None,
    at the batches' size) or on cluster's replicas (each its share) -> (losses, every variable's copies by name)."""
    accumulate = options.get('accumulate_gradients', 1)
    rows = len(batches[0][1]) // (cluster.replicas if cluster else 1)
    with tf.Graph().as_default():
        def build(**replica):
            return train.build_training(tiny_model.hparams_object(), batch_size=rows, seq_len=SEQ, **options,
                                        **replica)
        training = cluster.build(build, rows) if cluster else build()
        with cluster.session() if cluster else tf.Session() as sess:
            if cluster:
                training.restore(sess, str(tiny_model.dir / 'model.ckpt'))
            else:
                train.restore(sess, training, str(tiny_model.dir / 'model.ckpt'))
            losses = [training.run_step(sess, batches[i:i + accumulate]) for i in range(0, len(batches), accumulate)]
            copies = {v.op.name: sess.run(list(getattr(v, 'values', [v]))) for v in training.saved_vars}
    return losses, copies


# Adam divides each update by the root of its squared gradients: where a gradient is mathematically zero, the
# rounding noise of two ways of summing it becomes a step of up to lr. The key part of c_attn/b is such a case:
# the softmax over keys ignores a bias added to every key.
def comparable(name, value, n_embd):
    return np.delete(value, np.s_[n_embd:2 * n_embd], axis=-1) if name.endswith('c_attn/b') else value


@pytest.mark.parametrize('options, steps', [
    (dict(optimizer='sgd', learning_rate=0.1), 1),
    (dict(optimizer='adam', learning_rate=3e-4), 2),
    (dict(optimizer='adam', learning_rate=3e-4, accumulate_gradients=2, noise=0.2), 2),
], ids=['sgd', 'adam', 'adam-accumulated-noise'])
def test_two_devices_at_batch_1_make_the_updates_of_one_device_at_batch_2(tiny_model, options, steps):
    batches = ordinary_batches(tiny_model, steps * options.get('accumulate_gradients', 1))
    one_losses, one = train_on(tiny_model, batches, None, **options)
    two_losses, two = train_on(tiny_model, batches, distribute.choose(2), **options)
    assert two_losses == pytest.approx(one_losses, rel=1e-6)
    assert sorted(two) == sorted(one)
    for name, (want,) in one.items():
        assert len(two[name]) == 2, name  # a copy on each device, all equal
        for copy in two[name]:
            np.testing.assert_allclose(comparable(name, copy, tiny_model.hparams['n_embd']),
                                       comparable(name, want, tiny_model.hparams['n_embd']),
                                       rtol=0, atol=1e-6, err_msg=name)
    assert one['global_step'][0] == steps


@pytest.mark.parametrize('devices', [None, 1])
def test_one_device_is_built_without_tf_distribute(devices):
    assert distribute.choose(devices) is None


def test_devices_names_cpus_when_there_is_no_gpu():
    devices = distribute.choose(3).strategy.extended.worker_devices
    assert [d.rsplit('/', 1)[1] for d in devices] == ['device:CPU:0', 'device:CPU:1', 'device:CPU:2']
    assert distribute.choose('/cpu:0,/cpu:1').replicas == 2


@pytest.mark.parametrize('devices, tf_config, message', [
    (0, None, '--devices must be'),
    ('/tpu:0,/cpu:0', None, '--devices must be'),
    ('/cpu:0,/cpu:0', None, 'names a device twice'),
    (2, '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}', 'do not go together'),
    (None, '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', 'TF_CONFIG must'),
    (None, 'not json', 'TF_CONFIG must'),
])
def test_bad_devices_or_tf_config_is_a_usage_error(devices, tf_config, message):
    with pytest.raises(flags.UsageError, match=message):
        distribute.choose(devices, tf_config)


def test_collective_timeout_must_be_positive():
    with pytest.raises(flags.UsageError, match='--collective_timeout'):
        distribute.choose(2, None, 0)
