"""src/gpt2/training/memory.py: the arithmetic of the estimate (hand-checked), the run folder's disk check before a
save (with a fake free space: the previous checkpoints stay intact), and train.py's start-up report."""
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from gpt2.base import checkpoint
from gpt2.training import memory
import train
from gpt2.base import system
from gpt2.training import run_folder
from support import train_in_process

tf.disable_v2_behavior()

GPT2_124M = SimpleNamespace(n_vocab=50257, n_ctx=1024, n_embd=768, n_head=12, n_layer=12)


def test_the_124m_weights_and_adam_state_are_the_published_size():
    # 124,439,808 parameters (the released checkpoint's), 4 bytes each; Adam keeps two numbers per parameter.
    got = memory.estimate(GPT2_124M, batch_size=1, seq_len=1024, optimizer='adam')
    assert got.weights == 4 * 124_439_808
    assert got.optimizer_state == 8 * 124_439_808
    assert memory.estimate(GPT2_124M, batch_size=1, seq_len=1024, optimizer='sgd').optimizer_state == 0


def test_mixed_precision_keeps_half_precision_activations_and_copies_of_the_weights():
    """By hand, per token and layer at 124M: 14 x 768 numbers and 2 rows of 12 x 1024 scores kept, float32;
    with --mixed_precision the layer norms' 2 x 768 stay float32 and the rest is 2 bytes."""
    full = memory.estimate(GPT2_124M, batch_size=1, seq_len=1024)
    half = memory.estimate(GPT2_124M, batch_size=1, seq_len=1024, half=True)
    tokens, layers = 1024, 12
    saved = tokens * layers * ((14 * 768 + 2 * 12 * 1024) * 4 - (2 * 768 * 4 + (12 * 768 + 2 * 12 * 1024) * 2))
    assert full.activations - half.activations == saved
    assert half.weights == full.weights * 1.5  # and a bfloat16 copy as they are read
    assert (half.gradients, half.optimizer_state) == (full.gradients, full.optimizer_state)


def test_adafactor_state_is_a_row_and_a_column_per_matrix():
    hparams = SimpleNamespace(n_vocab=10, n_ctx=4, n_embd=2, n_head=1, n_layer=1)
    # By hand: wte [10, 2] -> 10 + 2; wpe [4, 2] -> 4 + 2; ln_f g, b -> 2 + 2; the block: ln_1, ln_2 (2 + 2 each),
    # c_attn w [1, 2, 6] -> 2 + 6, b 6; attn c_proj w [1, 2, 2] -> 2 + 2, b 2; c_fc w [1, 2, 8] -> 2 + 8, b 8;
    # mlp c_proj w [1, 8, 2] -> 8 + 2, b 2.
    numbers = 12 + 6 + 4 + 8 + 8 + 6 + 4 + 2 + 10 + 8 + 10 + 2
    got = memory.estimate(hparams, batch_size=1, seq_len=4, optimizer='adafactor')
    assert got.optimizer_state == 4 * numbers
    with_beta1 = memory.estimate(hparams, batch_size=1, seq_len=4, optimizer='adafactor', adafactor_beta1=0.9)
    assert with_beta1.optimizer_state == got.optimizer_state + got.weights
    frozen = memory.estimate(hparams, batch_size=1, seq_len=4, optimizer='adafactor',
                             only_train_transformer_layers=True)
    assert frozen.optimizer_state == 4 * (numbers - 12 - 6 - 4)


def test_the_warning_is_one_line_only_when_memory_is_short():
    assert memory.memory_warning(10e9, 20e9) is None
    line = memory.memory_warning(30e9, 20e9)
    assert line.startswith('warning: ') and '\n' not in line and '30.0 GB' in line and '20.0 GB' in line


def test_the_gpu_warning_names_each_gpu():
    line = memory.memory_warning(20e9, 16384 * 2**20, where='each GPU')
    assert 'each GPU has 17.2 GB available' in line


def saving_session(tmp_path, free):
    """A run folder with one saved checkpoint of a small variable, whose disk reports `free` bytes free."""
    graph = tf.Graph()
    with graph.as_default():
        v = tf.get_variable('model/v', initializer=np.arange(1000, dtype=np.float32), use_resource=True)
        saver = tf.train.Saver([v])
        sess = tf.Session(graph=graph)
        sess.run(v.initializer)
    run = run_folder.RunFolder(tmp_path / 'run', checkpoint_size=memory.checkpoint_bytes([v]), free_space=free)
    run.path.mkdir()
    return run, sess, saver


def test_a_save_the_disk_cannot_hold_fails_before_writing(tmp_path):
    space = {'free': 10**12}
    run, sess, saver = saving_session(tmp_path, lambda path: space['free'])
    assert run.checkpoint_size == 4000
    run.save(sess, saver, 1, max_checkpoints=1)
    before = {p.name: p.read_bytes() for p in run.path.iterdir()}
    space['free'] = 4000  # the checkpoint, but not its margin
    with pytest.raises(system.DiskSpaceError, match='not enough disk space'):
        run.save(sess, saver, 2, max_checkpoints=1)
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == before
    assert checkpoint.read_state(run.path) == ['model-1']


def test_train_script_reports_memory_and_fails_cleanly_on_a_full_disk(setup, capsys, monkeypatch):
    flags = dict(arg[2:].split('=', 1) for arg in setup(steps=1))
    train.train_main(**{**flags, 'steps': 1, 'seq_len': 16, 'seed': 1, 'learning_rate': 0.01, 'sample_every': 0})
    out = capsys.readouterr().out
    assert 'Memory: about ' in out and ' GB (weights ' in out and 'Checkpoints: ' in out
    files = sorted(p.name for p in setup.run_dir().iterdir())
    monkeypatch.setattr(system, 'free_space', lambda path: 0)
    code, err = train_in_process(capsys, setup(steps=1))
    assert code == 1
    lines = err.strip().split('\n')
    assert lines[-1].startswith('error: not enough disk space') and 'Traceback' not in err
    assert sorted(p.name for p in setup.run_dir().iterdir()) == files
    assert checkpoint.read_state(setup.run_dir()) == ['model-1']


def test_the_estimate_is_within_20_percent_of_the_measured_peak(tmp_path, tiny_model):
    """The tiny model widened (a vocabulary of 30000, 4 layers of 256, 512 tokens, 2 rows) so that the weights,
    Adam's state, the activations and the logits are half of the peak: train.py's printed estimate against the
    peak RSS of its process."""
    import json
    import re
    import subprocess
    import sys

    import support
    hparams = dict(n_vocab=30000, n_ctx=512, n_embd=256, n_head=4, n_layer=4)
    model_dir = tmp_path / 'models' / 'wide'
    model_dir.mkdir(parents=True)
    support.write_tiny_model(model_dir, hparams, support.random_params(hparams), tiny_model.vocab)
    assert json.loads((model_dir / 'hparams.json').read_text())['n_vocab'] == 30000
    (tmp_path / 'data.txt').write_text('the hello and the world in hell or the and world\n' * 400)
    # The child's own high-water mark, read as it exits: the rusage of a child forked from this (large) pytest
    # process counts the parent's pages it shared before exec, so os.wait4's ru_maxrss can be the parent's size.
    train = str(support.REPO / 'src' / 'train.py')
    args = [train, f'--dataset={tmp_path / "data.txt"}', f'--models_dir={tmp_path / "models"}', '--model_name=wide',
            f'--checkpoint_dir={tmp_path / "ck"}', '--steps=1', '--seq_len=512', '--batch_size=2', '--sample_every=0',
            '--seed=1']
    wrapper = ('import atexit, re, runpy, sys\n'
               'atexit.register(lambda: print("VmHWM", re.search(r"VmHWM:\\s+(\\d+) kB", '
               'open("/proc/self/status").read()).group(1), flush=True))\n'
               f'sys.path.insert(0, {str(support.REPO / "src")!r})\n'
               f'sys.argv = {args!r}\n'
               f'runpy.run_path({train!r}, run_name="__main__")\n')
    process = subprocess.run([sys.executable, '-c', wrapper], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    out = process.stdout
    assert process.returncode == 0, out
    estimate = float(re.search(r'^Memory: about ([\d.]+) GB', out, re.M).group(1)) * 1e9
    peak = int(re.search(r'^VmHWM (\d+)$', out, re.M).group(1)) * 1024
    assert 0.8 * peak <= estimate <= 1.2 * peak, (estimate, peak)
