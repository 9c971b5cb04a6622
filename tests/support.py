"""What the tests share: the repository's paths, the tiny test model (a hand-checkable vocabulary and random
weights, in the released file layout), and small helpers (restoring its weights, decoding its tokens
independently of src/encoder.py, checking a one-line error, free ports). The fixtures are in conftest.py."""
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np


from gpt2.base import checkpoint

REPO = Path(__file__).resolve().parent.parent

TINY_HPARAMS = {'n_vocab': 0, 'n_ctx': 32, 'n_embd': 16, 'n_head': 2, 'n_layer': 2}
# Merges in rank order; each adds one token, so " the" is ['Ġ','t','h','e'] -> 'Ġt','h','e' -> 'Ġt','he' -> 'Ġthe'.
TINY_MERGES = [('Ġ', 't'), ('h', 'e'), ('Ġt', 'he'), ('i', 'n'), ('Ġ', 'a'), ('Ġa', 'n'), ('Ġan', 'd'), ('l', 'l'),
               ('e', 'll'), ('h', 'ell'), ('o', 'r'), ('Ġw', 'or')]


def byte_table():
    """GPT-2's byte -> character table, written out from its definition (independent of src/encoder.py)."""
    keep = [b for b in range(256) if 0x21 <= b <= 0x7e or 0xa1 <= b <= 0xac or 0xae <= b <= 0xff]
    moved = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + n) for n, b in enumerate(moved)}}


def tiny_vocabulary():
    """encoder.json contents: the 256 byte characters as ids 0..255 (in byte order), then one id per merge in
    rank order ('Ġw' is a byte pair that is never made, so 'Ġwor' is unreachable on purpose), then <|endoftext|>."""
    table = byte_table()
    vocab = {table[b]: b for b in range(256)}
    for a, b in TINY_MERGES:
        vocab[a + b] = len(vocab)
    vocab[checkpoint.ENDOFTEXT] = len(vocab)
    return vocab


def random_params(hparams, seed=0):
    """Weights large enough that logits differ clearly between tokens, so argmax has no near-ties."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in checkpoint.variable_shapes(SimpleNamespace(**hparams)).items():
        base = 1.0 if name.endswith('/g') else 0.0
        params[name] = (base + 0.3 * rng.standard_normal(shape)).astype(np.float32)
    return params


def write_tiny_model(model_dir, hparams, params, vocab):
    checkpoint.save_checkpoint(model_dir, hparams, params)
    (model_dir / 'encoder.json').write_text(json.dumps(vocab), encoding='utf-8')
    merges = '#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in TINY_MERGES)
    (model_dir / 'vocab.bpe').write_text(merges, encoding='utf-8')


class TinyModel:
    def __init__(self, models_dir, name, seed=0):
        self.models_dir = Path(models_dir)
        self.name = name
        self.dir = self.models_dir / name
        self.vocab = tiny_vocabulary()
        self.hparams = dict(TINY_HPARAMS, n_vocab=len(self.vocab))
        self.params = random_params(self.hparams, seed)
        self.endoftext = self.vocab[checkpoint.ENDOFTEXT]

    def hparams_object(self):
        import model
        return model.default_hparams().override_from_dict(self.hparams)


def write_tiny_run(models_dir, name, steps, best):
    """A training run's folder as train.py leaves it, without training: checkpoints model-STEP for each of steps
    (the last one the latest), each with its own random weights (seed STEP), and best.json naming model-BEST.
    -> {step: TinyModel with that checkpoint's weights}."""
    at = {step: TinyModel(models_dir, name, seed=step) for step in steps}
    run_dir = Path(models_dir) / name
    for step, tiny in at.items():
        write_tiny_model(run_dir, tiny.hparams, tiny.params, tiny.vocab)
        for old, new in zip(checkpoint.checkpoint_files(checkpoint.CHECKPOINT_PREFIX),
                            checkpoint.checkpoint_files(f'model-{step}')):
            (run_dir / old).rename(run_dir / new)
    for leftover in run_dir.glob(checkpoint.CHECKPOINT_PREFIX + '.*'):
        leftover.unlink()
    (run_dir / checkpoint.STATE_FILE).write_text(checkpoint.state_text([f'model-{s}' for s in steps]))
    (run_dir / checkpoint.BEST_FILE).write_text(checkpoint.best_text(checkpoint=f'model-{best}', loss=1.0,
                                                                     step=best, since=0, last=steps[-1]))
    return at


def restore(sess, tiny_model):
    """Load the tiny model's weights into the variables of sess's graph."""
    import tensorflow.compat.v1 as tf  # here: the benchmarks use this module's free_ports in a small process
    tf.train.Saver(var_list=tf.global_variables()).restore(sess, tf.train.latest_checkpoint(str(tiny_model.dir)))


def decode(tiny_model, tokens):
    """Token ids -> text through the test's own vocabulary and byte table, not src/encoder.py."""
    by_id = {i: s for s, i in tiny_model.vocab.items()}
    to_byte = {c: b for b, c in byte_table().items()}
    return bytes(to_byte[c] for t in tokens for c in by_id[t]).decode('utf-8', 'replace')


def reference_logprobs(tiny_model, tokens):
    """tokens [L + 1] -> log p(tokens[i + 1] | tokens[:i + 1]) [L] by the NumPy reference (on the L inputs)."""
    import reference
    z = reference.logits(tiny_model.params, tiny_model.hparams, np.asarray(tokens[:-1]))
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return log_probs[np.arange(len(tokens) - 1), tokens[1:]]


def brute_force(tiny_model, document, stride):
    """Each token x_i of the document (x_0 = <|endoftext|>) scored with the context the scoring rule gives it
    (gpt2/evaluation/scoring.py), by its own arithmetic: x_i for i <= n_ctx is scored by the first window, from
    x_0; a later one by window j = ceil((i - n_ctx) / stride), which ends at e = min(n_ctx + j * stride, N) and
    starts at e - n_ctx."""
    n_ctx = tiny_model.hparams['n_ctx']
    seq = [tiny_model.endoftext] + list(document)
    n = len(document)
    out = []
    for i in range(1, n + 1):
        if i <= n_ctx:
            low = 0
        else:
            end = min(n_ctx + math.ceil((i - n_ctx) / stride) * stride, n)
            low = end - n_ctx
        out.append(reference_logprobs(tiny_model, seq[low:i + 1])[-1])
    return np.array(out)


def assert_clean_error(done, *words):
    """done (a finished script) failed with one `error: ` line on stderr, naming each of words, no traceback."""
    assert done.returncode != 0
    assert 'Traceback' not in done.err
    lines = done.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), done.err
    for word in words:
        assert word in lines[0]


def free_ports(count):
    """count ports of 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


UNCONDITIONAL = 'generate_unconditional_samples.py'
INTERACTIVE = 'interactive_conditional_samples.py'


def tiny_flags(tiny_model, **flags):
    """The flags of a sampling script's run on the tiny model, with seed 1 unless flags say otherwise."""
    flags = {'models_dir': tiny_model.models_dir, 'model_name': tiny_model.name, 'seed': 1, **flags}
    return [f'--{k}={v}' for k, v in flags.items()]


# Runs a script as `python SCRIPT ARGS` does (its folder first on sys.path, as __main__), then prints whether
# TensorFlow was loaded: a misspelled flag must be refused before it is.
RUN_AND_REPORT_TENSORFLOW = '''
import runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, script.rsplit('/', 1)[0])
try:
    runpy.run_path(script, run_name='__main__')
finally:
    print('tensorflow loaded' if 'tensorflow' in sys.modules else 'tensorflow not loaded')
'''


def run_reporting_tensorflow(path, *args, cwd, stdin=''):
    """A script at path run with args in cwd -> the finished process (text), its stdout ending with whether
    TensorFlow was loaded."""
    return subprocess.run([sys.executable, '-c', RUN_AND_REPORT_TENSORFLOW, str(path), *args], cwd=cwd,
                          input=stdin, capture_output=True, text=True, timeout=120)


def run_script(script, *args, stdin=b'', cwd=REPO, env=None, from_src=False):
    path = f'src/{script}' if not from_src else script
    env = {**os.environ, 'PYTHONIOENCODING': 'utf-8', **(env or {})}
    done = subprocess.run([sys.executable, path, *map(str, args)], input=stdin, capture_output=True,
                          cwd=REPO / 'src' if from_src else cwd, env=env, timeout=120)
    done.out, done.err = done.stdout.decode('utf-8', 'replace'), done.stderr.decode('utf-8', 'replace')
    return done


# ---------------------------------------------------------------------------------------------------------------
# train.py runs, as subprocesses
# ---------------------------------------------------------------------------------------------------------------

PROGRESS = re.compile(r'^\[(\d+) \| [\d.]+\] loss=([\d.]+) avg=[\d.]+ tokens/s=[\d.]+$', re.M)
# One thread per op and one op at a time: the order of float additions is fixed, so results are bit-identical.
ONE_THREAD = {'TF_NUM_INTRAOP_THREADS': '1', 'TF_NUM_INTEROP_THREADS': '1'}
TEXT = 'the hello and the world in hell or the and world\n' * 40


def train_command(args):
    return [sys.executable, str(REPO / 'src' / 'train.py'), *map(str, args)]


def run_cli(args, env=None):
    done = subprocess.run(train_command(args), capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    done.out, done.err = done.stdout, done.stderr
    return done


def run_train(args, env=None):
    done = run_cli(args, env)
    assert done.returncode == 0, done.stderr
    return done


def start_train(args):
    return subprocess.Popen(train_command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(process, step):
    """Read the progress lines until step `step` is done."""
    for line in process.stdout:
        match = PROGRESS.match(line)
        if match and int(match.group(1)) >= step:
            return
    raise AssertionError(f'the run ended before step {step}: {process.stderr.read()}')


def losses(out):
    return {int(step): loss for step, loss in PROGRESS.findall(out)}


def state(run_dir):
    return checkpoint.read_state(run_dir)


def tensors(prefix):
    import tensorflow.compat.v1 as tf
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def checkpoint_files(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith('model-'))


def train_in_process(capsys, args):
    """train.py's main called here with args (--name=value), for a run that ends before it trains: -> (exit code,
    stderr)."""
    import pytest
    import train
    flags = {}
    for arg in args:
        name, value = arg[2:].split('=', 1)
        flags[name] = value
    for name, value in flags.items():
        for kind in (int, float):
            try:
                flags[name] = kind(value)
                break
            except ValueError:
                pass
    with pytest.raises(SystemExit) as exit_info:
        train.train_main(**flags)
    err = capsys.readouterr().err
    return exit_info.value.code, err


# ---------------------------------------------------------------------------------------------------------------
# src/server.py, as a subprocess
# ---------------------------------------------------------------------------------------------------------------

def write_tasks(folder, tasks):
    """Local lm_eval tasks into folder: {name: (YAML text with {data} for the data file's path, documents)}, each
    as NAME.yaml and its documents as NAME.jsonl. -> folder."""
    for name, (yaml_text, docs) in tasks.items():
        data = Path(folder) / f'{name}.jsonl'
        data.write_text(''.join(json.dumps(d) + '\n' for d in docs), encoding='utf-8')
        (Path(folder) / f'{name}.yaml').write_text(yaml_text.format(data=data), encoding='utf-8')
    return folder


def start_server(tiny_model, *flags, timeout=120):
    """src/server.py on the tiny model at a free port of 127.0.0.1, run as a user runs it, once GET /health
    answers 200 -> (the process, its base URL). Its stderr goes to a file, read by server_log."""
    import tempfile
    import time
    import urllib.request
    port = free_ports(1)[0]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, str(REPO / 'src' / 'server.py'), f'--model_name={tiny_model.name}',
                                f'--models_dir={tiny_model.models_dir}', f'--port={port}', *flags],
                               stdout=log, stderr=log)
    process.log = log
    url = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f'the server ended ({process.returncode}): {server_log(process)}')
        try:
            with urllib.request.urlopen(url + '/health', timeout=5) as answer:
                if answer.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f'the server was not ready in {timeout} s: {server_log(process)}')


def server_log(process):
    process.log.seek(0)
    return process.log.read().decode('utf-8', 'replace')


def stop_server(process, timeout=30):
    """SIGTERM, then wait -> the exit code."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
