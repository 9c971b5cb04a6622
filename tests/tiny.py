"""The tiny test model: a hand-checkable vocabulary and random weights, in the released file layout."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import checkpoint

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
