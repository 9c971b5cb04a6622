"""src/gpt2/training/distribute.py: K replicas at batch b make the updates of one device at batch K x b (graph.build_training on
one device, which test_train.py checks against the NumPy reference): the step itself on 2 CPU devices, and
train.py as a user runs it, with --devices 2 (fresh and resumed) and as two worker processes on 127.0.0.1 with
TF_CONFIG."""
import json
import os
import threading
import subprocess
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from gpt2.base import checkpoint
from gpt2.training import distribute
from gpt2.base import flags
from gpt2.training import graph
from gpt2.training.start import restore
import support
from support import ONE_THREAD, losses, state, tensors, train_command, wait_for_step

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
            return graph.build_training(tiny_model.hparams_object(), batch_size=rows, seq_len=SEQ, **options,
                                        **replica)
        training = cluster.build(build, rows) if cluster else build()
        with cluster.session() if cluster else tf.Session() as sess:
            if cluster:
                training.restore(sess, str(tiny_model.dir / 'model.ckpt'))
            else:
                restore(sess, training, str(tiny_model.dir / 'model.ckpt'))
            losses = [training.run_step(sess, batches[i:i + accumulate]) for i in range(0, len(batches), accumulate)]
            copies = {v.op.name: sess.run(list(getattr(v, 'values', [v]))) for v in training.saved_vars}
    return losses, copies


# Adam divides each update by the root of its squared gradients: where a gradient is mathematically zero, the
# rounding noise of two ways of summing it becomes a step of up to lr. The key part of c_attn/b is such a case:
# the softmax over keys ignores a bias added to every key. Its optimizer slots (Adam's, Adafactor's: same shape)
# too, where they hold such steps (Adafactor's first moment).
def comparable(name, value, n_embd):
    key_bias = name.endswith('/c_attn/b') or '/c_attn/b/' in name
    return np.delete(value, np.s_[n_embd:2 * n_embd], axis=-1) if key_bias else value


# Adafactor clips each variable's update to RMS 1 over all its elements: for c_attn/b that RMS counts the key
# part's noisy steps (see comparable), which would then scale the rest of the vector too. So no clipping here (the
# clip itself is checked against NumPy in test_adafactor.py); the first moment, for its slot.
ADAFACTOR = {'beta1': 0.9, 'clip_threshold': float('inf')}


# SGD and Adam (with accumulation and noise) on 2 devices are checked through train.py below.
@pytest.mark.parametrize('options, steps', [
    (dict(optimizer='adafactor', learning_rate=1e-3, adafactor_options=ADAFACTOR), 2),
    (dict(optimizer='sgd', learning_rate=0.1, memory_saving_gradients=True), 1),
    (dict(optimizer='adafactor', learning_rate=1e-3, adafactor_options=ADAFACTOR, memory_saving_gradients=True), 2),
], ids=['adafactor', 'lean-sgd', 'lean-adafactor'])
def test_two_devices_at_batch_1_make_the_updates_of_one_device_at_batch_2(tiny_model, options, steps):
    """Adafactor's steps check the optimizer's state (its factored moments, its first moment, its step count).
    The lean step (memory_saving_gradients: recomputed blocks, chunked cross-entropy, each block's update applied
    once its gradients are made) makes the same updates through the all-reduce: SGD's single step checks its
    gradients exactly."""
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


def test_bfloat16_on_two_devices_makes_the_update_of_one_device_within_its_rounding(tiny_model):
    """--mixed_precision bfloat16 with the lean step on 2 replicas: each rounds its own rows' products and
    gradients to bfloat16 (unit roundoff 2**-8), so the updates agree to a few of those, of the update's size."""
    options = dict(optimizer='sgd', learning_rate=0.1, memory_saving_gradients=True, mixed_precision='bfloat16')
    batches = ordinary_batches(tiny_model, 1)
    one_losses, one = train_on(tiny_model, batches, None, **options)
    two_losses, two = train_on(tiny_model, batches, distribute.choose(2), **options)
    assert two_losses == pytest.approx(one_losses, rel=8 * 2.0 ** -8)
    assert sorted(two) == sorted(one) and one['global_step'][0] == 1
    for name, (want,) in one.items():
        moved = np.abs(want - tiny_model.params[name]).max() if name in tiny_model.params else 0
        assert moved > 0 or name not in tiny_model.params, name
        for copy in two[name]:
            np.testing.assert_allclose(copy, want, rtol=0, atol=8 * 2.0 ** -8 * moved + 1e-7, err_msg=name)


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


def test_the_watchdog_fires_only_when_a_step_outlasts_its_time():
    fired = threading.Event()
    with distribute.Watchdog(0.05, lambda message: fired.set()):
        time.sleep(0.01)
    time.sleep(0.1)
    assert not fired.is_set()
    with distribute.Watchdog(0.05, lambda message: fired.set()):
        assert fired.wait(5)


# ---------------------------------------------------------------------------------------------------------------
# train.py with --devices 2, and as two worker processes on 127.0.0.1
# ---------------------------------------------------------------------------------------------------------------

def tf_configs(count):
    """TF_CONFIG of each of count workers on free ports of 127.0.0.1."""
    hosts = [f'127.0.0.1:{port}' for port in support.free_ports(count)]
    return [json.dumps({'cluster': {'worker': hosts}, 'task': {'type': 'worker', 'index': i}}) for i in range(count)]


def start(args, tf_config=None):
    env = {**os.environ, **ONE_THREAD}
    env.pop('TF_CONFIG', None)
    if tf_config:
        env['TF_CONFIG'] = tf_config
    return subprocess.Popen(train_command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(processes, timeout=240):
    """Wait for every process (a hang fails the test) -> their (returncode, stdout, stderr)."""
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            results.append((process.returncode, out, err))
    finally:
        for process in processes:
            process.kill()
    return results


# How far a run on 2 replicas may be from one device at twice the batch (docs/distributed.md, measured with
# bench/measure_replica_drift.py and train.py itself): only by the rounding of the gradients' sums, which are
# added in another order. SGD moves a weight by lr x that rounding: 2e-7 to 4e-7 at lr 0.5 measured.
SGD_BOUND = 1e-6
# Adam moves it by about lr x the gradient's *relative* rounding, large where a gradient nearly cancels: up to
# 7e-6 at lr 0.01 measured outside the key bias (1.2e-6 for this test's run), 5e-5 reported (docs/distributed.md);
# windows, noise or an optimizer state that differed would move weights by about lr.
LEARNING_RATE = 0.01
ADAM_BOUND = LEARNING_RATE / 100


def documents_npz(path, tiny_model, lengths=(900, 20, 700, 45)):
    """A .npz of documents of random tokens of these lengths, as encode.py writes one (an array each) -> path."""
    rng = np.random.default_rng(0)
    np.savez(path, *[rng.integers(tiny_model.hparams['n_vocab'], size=n).astype(np.uint16) for n in lengths])
    return path


def progress_bars(err):
    """How many progress bars of the dataset's reading stderr shows (tqdm ends each with a line end)."""
    return sum(1 for line in err.splitlines() if line.rsplit('\r', 1)[-1].startswith('dataset: 100%'))


def assert_within(got, want, atol, n_embd=None):
    """Every variable of two checkpoints' tensors the same, within atol (outside the key bias, with n_embd)."""
    assert sorted(got) == sorted(want)
    for name in want:
        a, b = (comparable(name, x, n_embd) if n_embd else x for x in (got[name], want[name]))
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=name)


def test_devices_2_from_the_script_make_the_sgd_step_of_one_device_at_batch_2(setup, tiny_model):
    """SGD's update is the gradient itself: the two runs' weights differ only by the rounding of its sums (2e-7 to
    4e-7 measured at this rate, docs/distributed.md), key bias included. On a .npz of documents of unequal
    lengths, read once."""
    options = dict(dataset=documents_npz(setup.tmp / 'documents.npz', tiny_model), optimizer='sgd',
                   learning_rate=0.5, seq_len=32, steps=1)
    one = start(setup(**options, batch_size=2, checkpoint_dir=setup.tmp / 'one'))
    two = start(setup(**options, batch_size=1, devices=2, checkpoint_dir=setup.tmp / 'two'))
    (code, out, err), (two_code, two_out, two_err) = finish([one, two])
    assert code == 0 and two_code == 0, err + two_err
    assert 'batch 2: 1 on each of 2 replicas (2 devices)' in two_out
    assert losses(two_out) == losses(out) and list(losses(out)) == [1]
    assert progress_bars(two_err) == progress_bars(err) == 1, two_err
    want, got = tensors(setup.tmp / 'one' / 'run1' / 'model-1'), tensors(setup.tmp / 'two' / 'run1' / 'model-1')
    assert got['global_step'] == 1 and np.abs(want['model/wte'] - tiny_model.params['model/wte']).max() > 1e-3
    assert_within(got, want, SGD_BOUND)


def test_adam_on_2_devices_resumed_and_on_2_workers_follow_one_process_at_twice_the_batch(setup, tiny_model):
    """Adam with the lean step, accumulation and noise, 4 steps: on 2 devices as 2 + 2 resumed, and on 2 TF_CONFIG
    workers (worker 1 with another seed: the chief's is the job's; each with its own folders, as on two
    machines), against one process at batch 2, within ADAM_BOUND."""
    options = dict(optimizer='adam', learning_rate=LEARNING_RATE, batch_size=1, accumulate_gradients=2,
                   memory_saving_gradients=True, noise=0.1, seq_len=32, steps=4, save_every=2)
    reference = start(setup(**{**options, 'batch_size': 2}, run_name='one', checkpoint_dir=setup.tmp / 'one'))
    devices = dict(options, steps=2, devices=2, checkpoint_dir=setup.tmp / 'two')
    fresh = start(setup(**devices))
    workers = [start(setup(**options, seed=1 + i, checkpoint_dir=setup.tmp / f'w{i}', sample_every=4,
                           sample_length=4, sample_dir=setup.tmp / f'samples{i}'), config)
               for i, config in enumerate(tf_configs(2))]
    (code, out, err), *done = finish([reference, fresh, *workers])
    resumed = finish([start(setup(**devices))])
    for worker_code, _, worker_err in [*done, *resumed]:
        assert worker_code == 0, worker_err
    assert code == 0, err
    (_, fresh_out, _), (_, chief_out, _), (_, worker_out, _) = done
    [(_, resumed_out, _)] = resumed
    want = losses(out)
    assert sorted(want) == [1, 2, 3, 4]
    for got in (losses(chief_out), losses(worker_out), {**losses(fresh_out), **losses(resumed_out)}):
        assert got == pytest.approx(want, abs=0.011)  # printed to 2 decimals
    assert 'batch 2: 1 on each of 2 replicas (2 workers x 1 device)' in chief_out
    assert ' at step 2, batch 2: 1 on each of 2 replicas (2 devices)' in resumed_out
    chief_run, worker_run = setup.tmp / 'w0' / 'run1', setup.tmp / 'w1' / 'run1'
    assert state(chief_run) == ['model-2', 'model-4'] and not worker_run.exists()
    assert (setup.tmp / 'samples0' / 'run1' / 'samples-4').exists() and not (setup.tmp / 'samples1').exists()
    assert checkpoint.check_model_dir(chief_run) == tiny_model.hparams  # what the sampling scripts check
    one = tensors(setup.tmp / 'one' / 'one' / 'model-4')
    assert one['global_step'] == 4
    for run in (chief_run, setup.tmp / 'two' / 'run1'):
        assert_within(tensors(run / 'model-4'), one, ADAM_BOUND, n_embd=tiny_model.hparams['n_embd'])


def test_a_killed_worker_makes_the_other_exit_with_an_error_line_within_the_timeout(setup):
    """Its peer hears of it at once (its connections close); of a worker that hangs, only from the watchdog."""
    configs = tf_configs(2)
    workers = [start(setup(steps=0, sample_every=0, collective_timeout=5, checkpoint_dir=setup.tmp / f'w{i}'),
                     configs[i]) for i in range(2)]
    try:
        wait_for_step(workers[0], 2)
        workers[1].kill()
        killed = time.time()
        [(code, _, err)] = finish(workers[:1], timeout=60)
    finally:
        for process in workers:
            process.kill()
    assert time.time() - killed < 30
    assert code == 1 and err.strip().splitlines()[-1].startswith('error: ') and 'Traceback' not in err, err
