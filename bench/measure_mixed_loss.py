"""The loss curve of mixed-precision training against float32's: the same random-init GPT-2 (124M's shape by
default), the same windows of real English and Python text, the same Adam steps, once per precision; prints
each step's losses and the largest gap between the curves.

    python bench/measure_mixed_loss.py                            # 124M shape, 200 steps of 1 x 256 tokens
    python bench/measure_mixed_loss.py --steps=5 --n_layer=2      # a smoke run
    python bench/measure_mixed_loss.py --dataset=some/folder --precisions=float32,bfloat16

The text: by default Python's own standard library sources (a real corpus on any machine with Python) and this
repository's docs, encoded with GPT-2's vocabulary (tests/data/gpt2_vocab). The model is written once to
bench/.cache/models/ (git-ignored). Each precision trains in a fresh process, so one's threads and memory do not
touch the other's; both draw the same windows (corpus.Sampler with the same seed).
"""
import json
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import fire
import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / 'src'))

from gpt2.base import checkpoint  # noqa: E402

VOCAB = REPO / 'tests' / 'data' / 'gpt2_vocab'  # GPT-2's encoder.json and vocab.bpe
N_VOCAB = 50257
CACHE = BENCH / '.cache'


def ensure_model(n_layer, n_embd, n_head):
    """A model folder of GPT-2's vocabulary and random weights (a fresh GPT-2's initialisation), written once."""
    import bench_sample  # noqa: E402  (bench/, on the path as the script's folder)

    model_dir = CACHE / 'models' / f'gpt2-vocab-{n_layer}x{n_embd}x{n_head}'
    if not (model_dir / '.complete').exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        hparams = {'n_vocab': N_VOCAB, 'n_ctx': 1024, 'n_embd': n_embd, 'n_head': n_head, 'n_layer': n_layer}
        checkpoint.save_checkpoint(model_dir, hparams, bench_sample.random_params(hparams))
        for name in ('encoder.json', 'vocab.bpe'):
            shutil.copy(VOCAB / name, model_dir / name)
        (model_dir / '.complete').touch()
    return model_dir


TEXT_BYTES = 2_000_000  # of the default text: some 500k tokens, ten times what 200 steps of 256 tokens read


def default_dataset():
    """A folder of real text, gathered once: this repository's docs, then Python's standard library (its
    top-level .py files, in name order) up to TEXT_BYTES in all."""
    folder = CACHE / 'data' / 'real-text'
    if not (folder / '.complete').exists():
        folder.mkdir(parents=True, exist_ok=True)
        sources = [('docs', p) for p in sorted((REPO / 'docs').glob('*.md'))] + [
            ('stdlib', p) for p in sorted(Path(sysconfig.get_paths()['stdlib']).glob('*.py'))]
        total = 0
        for kind, path in sources:
            if total >= TEXT_BYTES:
                break
            shutil.copy(path, folder / f'{kind}-{path.name}.txt')  # .txt: text to train on, not this repo's code
            total += path.stat().st_size
        (folder / '.complete').touch()
    return folder


def train(settings):
    """One precision's run, in this process -> {'losses': [each step's loss, before its update], ...}."""
    from gpt2.base import runtime
    tf = runtime.import_tensorflow()
    tf.disable_v2_behavior()
    from gpt2 import loading
    from gpt2.data import corpus
    from gpt2.training import graph
    from gpt2.training import start

    model_dir, hparams, enc = loading.load_model(Path(settings['model_dir']).name, Path(settings['model_dir']).parent)
    chunks = corpus.load_dataset(enc, settings['dataset'])
    sampler = corpus.Sampler(chunks, settings['seq_len'], settings['seed'])
    mixed = None if settings['precision'] == 'float32' else settings['precision']
    with tf.Graph().as_default():
        tf.set_random_seed(settings['seed'])
        training = graph.build_training(hparams, batch_size=settings['batch_size'], seq_len=settings['seq_len'],
                                        learning_rate=settings['learning_rate'], mixed_precision=mixed,
                                        memory_saving_gradients=settings['memory_saving_gradients'])
        with tf.Session(config=graph.session_config()) as sess:
            start.restore(sess, training, str(model_dir / checkpoint.current_checkpoint(model_dir)))
            losses, began = [], time.time()
            for step in range(settings['steps']):
                losses.append(training.run_step(sess, [sampler.sample(settings['batch_size'])]))
                print(f'{settings["precision"]} step {step + 1}: loss {losses[-1]:.4f}', file=sys.stderr, flush=True)
    tokens = settings['steps'] * settings['batch_size'] * settings['seq_len']
    return {'losses': losses, 'tokens_per_s': tokens / (time.time() - began), 'chunks': len(chunks),
            'dataset_tokens': int(sum(len(c) for c in chunks))}


def main(precisions=('float32', 'bfloat16'), steps=200, batch_size=1, seq_len=256, learning_rate=1e-4,
         n_layer=12, n_embd=768, n_head=12, dataset=None, seed=1, memory_saving_gradients=False, window=20):
    """Train the same model on the same windows once per precision; print the curves and their largest gaps.

    precisions: float32 and train.py's --mixed_precision values, e.g. float32,bfloat16
    steps: Adam steps of each run
    batch_size: windows per step
    seq_len: tokens per window
    learning_rate: Adam's rate (from random weights: higher than fine-tuning's)
    n_layer: model depth (with n_embd and n_head; 12/768/12 is 124M's shape)
    n_embd: model width
    n_head: attention heads
    dataset: the text, any form train.py's --dataset takes; by default Python's stdlib sources and the docs
    seed: of the windows drawn
    memory_saving_gradients: train with recomputation (train.py's flag of that name)
    window: also compare the curves' moving averages over this many steps (the trend, less each step's noise)
    """
    precisions = precisions.split(',') if isinstance(precisions, str) else list(precisions)
    model_dir = ensure_model(n_layer, n_embd, n_head)
    settings = dict(model_dir=str(model_dir), dataset=str(dataset or default_dataset()), steps=steps,
                    batch_size=batch_size, seq_len=seq_len, learning_rate=learning_rate, seed=seed,
                    memory_saving_gradients=memory_saving_gradients)
    runs = {}
    for precision in precisions:
        done = subprocess.run([sys.executable, __file__, '--run', json.dumps({**settings, 'precision': precision})],
                              stdout=subprocess.PIPE, cwd=REPO)
        if done.returncode:
            sys.exit(f'error: the {precision} run failed')
        runs[precision] = json.loads(done.stdout.decode().strip().splitlines()[-1])
        print(json.dumps({'precision': precision, **runs[precision]}), flush=True)
    report(runs, settings, window)


def report(runs, settings, window):
    base, *others = runs
    print(f'\n{Path(settings["model_dir"]).name} random init, {settings["steps"]} Adam steps of '
          f'{settings["batch_size"]} x {settings["seq_len"]} tokens at {settings["learning_rate"]:g}, '
          f'{runs[base]["dataset_tokens"]} tokens of text ({settings["dataset"]})')
    curves = {name: np.array(run['losses']) for name, run in runs.items()}
    smooth = {name: np.convolve(c, np.ones(window) / window, mode='valid') for name, c in curves.items()}
    for name in runs:
        c = curves[name]
        print(f'{name:>9}: first {c[0]:.4f}, last {c[-1]:.4f}, mean of the last {window} {c[-window:].mean():.4f}, '
              f'{runs[name]["tokens_per_s"]:.0f} tokens/s')
    for name in others:
        gap = np.abs(curves[name] - curves[base])
        smooth_gap = np.abs(smooth[name] - smooth[base])
        print(f'{name} against {base}: largest gap {gap.max():.4f} (step {gap.argmax() + 1}), mean gap '
              f'{gap.mean():.4f}; of the {window}-step moving averages, largest {smooth_gap.max():.4f}')


if __name__ == '__main__':
    if sys.argv[1:2] == ['--run']:
        print(json.dumps(train(json.loads(sys.argv[2]))), flush=True)
    else:
        sys.path.insert(0, str(BENCH))
        fire.Fire(main)
