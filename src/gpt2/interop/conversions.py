"""The three conversions of src/convert.py, each writing a complete folder (atomic.atomic_folder):

- from_hf: a Hugging Face GPT-2 folder -> a model folder in the released layout;
- to_hf: a checkpoint of a model folder or a training run -> a Hugging Face GPT-2 folder;
- weights_only: a checkpoint of a training run -> a model folder in the released layout, without the optimizer's
  state, the step or the seed.

The folders' layouts and the names of the weights in each: hf.py.
"""
import json
import shutil
from pathlib import Path

import tensorflow.compat.v1 as tf

import encoder
import model

from gpt2 import loading
from gpt2.base import atomic
from gpt2.base import checkpoint
from gpt2.base import flags
from gpt2.interop import hf


def chosen_checkpoint(folder, step):
    """-> (the checkpoint's file name prefix, hparams dict), after checking the folder: its current checkpoint, or
    the run's model-STEP."""
    if step is None:
        return checkpoint.current_checkpoint(folder), checkpoint.check_model_dir(folder)
    flags.whole_number('step', step, 0)
    name = checkpoint.checkpoint_name(step)
    kept = checkpoint.run_checkpoints(folder)
    if name not in kept:
        listed = ', '.join(n.removeprefix('model-') for n in kept) or 'none'
        raise checkpoint.ModelError(f'{folder} has no checkpoint of step {step} (its steps: {listed})')
    hparams = checkpoint.read_hparams(folder)
    checkpoint.check_checkpoint_index(folder, hparams, folder.name, name)
    return name, hparams


def read_weights(prefix, hparams):
    """The model's weights from the checkpoint at prefix (a run's also holds the optimizer's, the step and the
    seed, which are left out) -> released name -> float32 array."""
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        names = checkpoint.variable_shapes(model.default_hparams().override_from_dict(hparams))
        return {n: reader.get_tensor(n) for n in hf.progress(names, Path(prefix).name)}
    except (tf.errors.OpError, ValueError) as err:
        raise checkpoint.ModelError(f'cannot read the checkpoint {prefix} ({loading.error_reason(err)})') from None


def read_vocabulary(folder):
    """encoder.json's vocabulary and vocab.bpe's merges of a model folder, after checking them."""
    encoder.read_vocabulary(folder)
    vocab = json.loads((folder / 'encoder.json').read_text(encoding='utf-8'))
    merges = encoder.read_merges((folder / 'vocab.bpe').read_text(encoding='utf-8'))
    return vocab, merges


def write_vocabulary(folder, vocab, merges):
    (folder / 'encoder.json').write_text(json.dumps(vocab), encoding='utf-8')
    (folder / 'vocab.bpe').write_text(hf.merges_text(merges), encoding='utf-8')


def from_hf(source, out, overwrite):
    """The Hugging Face folder source -> the model folder out. Everything is read and checked before out's
    temporary folder is made."""
    hparams, config = hf.read_config(source)
    vocab, merges = hf.read_tokenizer(source)
    checkpoint.check_vocabulary_fits(vocab.values(), hparams['n_vocab'], source)
    tensors = hf.read_tensors(source)
    params = hf.from_hf_tensors(tensors, hparams, source)
    hf.check_head(tensors, config, source)
    del tensors  # not needed while the checkpoint is written
    with atomic.atomic_folder(out, overwrite) as folder:
        checkpoint.save_checkpoint(folder, hparams, params)
        write_vocabulary(folder, vocab, merges)


def to_hf(source, name, hparams, out, overwrite):
    """The checkpoint name (a file name prefix) of the model folder source, of hparams -> the Hugging Face
    folder out."""
    vocab, merges = read_vocabulary(source)
    params = read_weights(source / name, hparams)
    with atomic.atomic_folder(out, overwrite) as folder:
        config = hf.config_json(hparams, vocab[checkpoint.ENDOFTEXT])
        (folder / hf.CONFIG_FILE).write_text(json.dumps(config, indent=2) + '\n', encoding='utf-8')
        hf.write_safetensors(folder / hf.SAFETENSORS_FILE, hf.to_hf_tensors(params))
        hf.write_tokenizer(folder, vocab, merges, hparams['n_ctx'])


def weights_only(source, name, hparams, out, overwrite):
    """The checkpoint name of the run folder source, of hparams -> the model folder out, its weights only."""
    encoder.read_vocabulary(source)
    params = read_weights(source / name, hparams)
    with atomic.atomic_folder(out, overwrite) as folder:
        checkpoint.save_checkpoint(folder, hparams, params)
        for info in ('encoder.json', 'vocab.bpe'):
            shutil.copyfile(source / info, folder / info)
