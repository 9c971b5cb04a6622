"""A small GPT-2 trained here on real text, so that quantization error can be measured: random weights give
near-flat distributions and say nothing about it, and no released weights can be downloaded on this machine.

    python bench/quality_model.py                  # build it (once): 10 to 25 min on 2 cores
    python bench/quality_model.py --steps=50 --out=bench/.cache/quality-trial   # a look at the training speed
    python bench/quality_model.py --help

The text is Vim's documentation (/usr/share/vim/vim*/doc/*.txt: 151 files, 9.5 million characters of English
prose about an editor), which Debian's vim-runtime ships; --sources takes other globs. The files are sorted by
name; every --heldout_every-th of them is held out, never trained on, and the held-out text's first
--heldout_chars characters, cut at a file boundary, are written to heldout.txt for scoring.

Everything goes to bench/.cache/quality/ (git-ignored), as a user would do it: the vocabulary of the released
models (tests/data/gpt2_vocab/), a model folder of freshly initialised weights (N(0, 0.02), layer-norm gains 1,
as GPT-2 starts), src/encode.py for the .npz files, and src/train.py from that folder (Adam, warmup then cosine
decay, validated on the held-out text). The trained model is the run folder, a model folder:

    --models_dir bench/.cache/quality/runs --model_name trained
"""
import glob
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fire

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_sample  # noqa: E402  (it puts this checkout's src/ on the path)

from gpt2.base import checkpoint  # noqa: E402

REPO = bench_sample.REPO
OUT = BENCH / '.cache' / 'quality'
VOCABULARY = REPO / 'tests' / 'data' / 'gpt2_vocab'
SOURCES = ('/usr/share/vim/vim*/doc/*.txt',)
RUN_NAME = 'trained'


# ---------------------------------------------------------------------------------------------------------------
# The text
# ---------------------------------------------------------------------------------------------------------------

def source_files(sources):
    """The files the globs match, sorted by path, so the split is the same on every machine that has them."""
    files = sorted({path for pattern in sources for path in glob.glob(pattern, recursive=True)})
    if not files:
        sys.exit(f'error: no files match {", ".join(sources)}; give --sources GLOB,GLOB')
    return [Path(path) for path in files]


def split_text(out, sources, heldout_every, heldout_chars):
    """Copy the files into out/text/train/ and out/text/heldout/ (every heldout_every-th file), and write the
    first heldout_chars characters of the held-out files, whole files only, to out/heldout.txt -> a summary."""
    text_dir = out / 'text'
    shutil.rmtree(text_dir, ignore_errors=True)
    counts = {'train': [0, 0], 'heldout': [0, 0]}
    scored = []
    for number, path in enumerate(source_files(sources)):
        part = 'heldout' if number % heldout_every == heldout_every - 1 else 'train'
        text = path.read_text(encoding='utf-8', errors='replace')
        target = text_dir / part / f'{number:04d}-{path.name}'
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding='utf-8')
        counts[part][0] += 1
        counts[part][1] += len(text)
        if part == 'heldout' and sum(len(t) for t in scored) < heldout_chars:
            scored.append(text)
    (out / 'heldout.txt').write_text('\n'.join(scored), encoding='utf-8')
    return {part: {'files': n, 'chars': chars} for part, (n, chars) in counts.items()} | {
        'scored_chars': sum(len(t) for t in scored) + len(scored) - 1, 'sources': list(sources)}


def encode(text_dir, npz, models_dir, model_name):
    """src/encode.py, as a user runs it: a folder of text -> a .npz of token ids."""
    run([sys.executable, str(REPO / 'src' / 'encode.py'), str(text_dir), str(npz),
         '--models_dir', str(models_dir), '--model_name', model_name])


def run(args):
    """Run a script, its output passed through; a failure ends this one."""
    print('$', ' '.join(args), flush=True)
    if subprocess.run(args, cwd=REPO).returncode:
        sys.exit(f'error: {Path(args[1]).name} failed')


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------

def write_initial_model(model_dir, hparams, seed):
    """A model folder in the released layout: the released vocabulary, weights as GPT-2 initialises them."""
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    for name in ('encoder.json', 'vocab.bpe'):
        shutil.copy(VOCABULARY / name, model_dir / name)
    checkpoint.save_checkpoint(model_dir, hparams, bench_sample.random_params(hparams, seed=seed))


def train(out, models_dir, steps, batch_size, learning_rate, warmup_steps, seq_len, seed, val_every):
    """src/train.py from the initial model, as a user runs it -> the run folder (a model folder)."""
    run([sys.executable, str(REPO / 'src' / 'train.py'), '--dataset', str(out / 'train.npz'),
         '--models_dir', str(models_dir), '--model_name', 'initial', '--checkpoint_dir', str(out / 'runs'),
         '--run_name', RUN_NAME, '--restore_from', 'fresh', '--overwrite', '--steps', str(steps),
         '--batch_size', str(batch_size), '--seq_len', str(seq_len), '--learning_rate', str(learning_rate),
         '--lr_schedule', 'cosine', '--warmup_steps', str(warmup_steps), '--total_steps', str(steps),
         '--seed', str(seed), '--save_every', str(steps), '--max_checkpoints', '1', '--sample_every', '0',
         '--val_dataset', str(out / 'heldout.npz'), '--val_every', str(val_every), '--val_batch_size', '8',
         '--val_batch_count', '10'])
    return out / 'runs' / RUN_NAME


def build(out=str(OUT), sources=SOURCES, heldout_every=10, heldout_chars=400_000, n_layer=6, n_embd=256,
          n_head=4, n_ctx=256, steps=400, batch_size=8, learning_rate=2e-3, warmup_steps=50, seed=1,
          val_every=100):
    """Build the quality model in OUT (default bench/.cache/quality): split the text, encode it, write the
    initial model, train it, and write OUT/build.json (the settings, the text's sizes, the minutes taken).
    sources: globs of text files (comma-separated); heldout_every: every N-th file is held out; heldout_chars:
    about how much held-out text heldout.txt gets (whole files). n_layer, n_embd, n_head, n_ctx: the shape
    (the released vocabulary of 50,257 tokens). steps, batch_size (windows of n_ctx tokens), learning_rate,
    warmup_steps, seed, val_every: src/train.py's flags."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sources = tuple(sources.split(',')) if isinstance(sources, str) else tuple(sources)
    start = time.time()
    summary = {'text': split_text(out, sources, heldout_every, heldout_chars)}
    hparams = {'n_vocab': 50257, 'n_ctx': n_ctx, 'n_embd': n_embd, 'n_head': n_head, 'n_layer': n_layer}
    models_dir = out / 'models'
    write_initial_model(models_dir / 'initial', hparams, seed)
    encode(out / 'text' / 'train', out / 'train.npz', models_dir, 'initial')
    encode(out / 'text' / 'heldout', out / 'heldout.npz', models_dir, 'initial')
    prepared = time.time()
    run_dir = train(out, models_dir, steps, batch_size, learning_rate, warmup_steps, n_ctx, seed, val_every)
    summary |= {'hparams': hparams, 'steps': steps, 'batch_size': batch_size, 'learning_rate': learning_rate,
                'warmup_steps': warmup_steps, 'seed': seed, 'tokens_trained': steps * batch_size * n_ctx,
                'prepare_minutes': round((prepared - start) / 60, 1),
                'train_minutes': round((time.time() - prepared) / 60, 1), 'model_dir': str(run_dir)}
    (out / 'build.json').write_text(json.dumps(summary, indent=2) + '\n', encoding='utf-8')
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    fire.Fire(build)
