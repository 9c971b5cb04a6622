#!/usr/bin/env python3
"""Models in and out: a Hugging Face GPT-2 folder to the released layout and back, and a training run's weights
without its optimizer state.

    python src/convert.py from_hf HF_FOLDER OUT_FOLDER        # Hugging Face -> hparams.json, model.ckpt.*, ...
    python src/convert.py to_hf MODEL_OR_RUN_FOLDER OUT_FOLDER  # -> config.json, model.safetensors, vocab.json ...
    python src/convert.py weights RUN_FOLDER OUT_FOLDER [--step N]

Each writes a complete folder under a temporary name beside OUT_FOLDER and renames it at the end, so a
half-written model never appears under its real name. The layouts and the names of the weights: gpt2/interop/hf.py.
"""
import json
import shutil
import signal
import sys
from pathlib import Path

import fire
import train

from gpt2.base import runtime

tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
import encoder  # noqa: E402
from gpt2 import loading  # noqa: E402
from gpt2.base import atomic  # noqa: E402
from gpt2.base import checkpoint  # noqa: E402
from gpt2.base import flags  # noqa: E402
from gpt2.interop import hf  # noqa: E402

if __name__ == '__main__':
    # Ctrl-C while TensorFlow loads (seconds) ends the process at once and quietly; main() then lets it raise
    # KeyboardInterrupt, so that the folder being written is removed.
    signal.signal(signal.SIGINT, signal.SIG_DFL)





FLAGS = dict(
    hf_folder='a Hugging Face GPT-2 folder: config.json, model.safetensors (or its index and parts, or '
              'pytorch_model.bin, which needs PyTorch), and vocab.json + merges.txt or tokenizer.json.',
    model_folder='a model folder in the released layout (as download_model.py writes), or a training run\'s '
                 'folder (CHECKPOINT_DIR/RUN_NAME).',
    run_folder='a training run\'s folder (CHECKPOINT_DIR/RUN_NAME), or any model folder in the released layout.',
    out_folder='the folder to write; it must not exist, unless --overwrite.',
    step='convert the run\'s checkpoint of this step (model-STEP) instead of its latest.',
    overwrite='replace out_folder if it exists (only once the new folder is complete).',
)


# ---------------------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------------------

def chosen_checkpoint(folder, step):
    """-> (the checkpoint's file name prefix, hparams dict), after checking the folder: its current checkpoint, or
    the run's model-STEP."""
    if step is None:
        return checkpoint.current_checkpoint(folder), checkpoint.check_model_dir(folder)
    flags.whole_number('step', step, 0)
    name = train.checkpoint_name(step)
    kept = train.RunFolder(folder).checkpoints()
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
        names = checkpoint.variable_shapes(hparams_object(hparams))
        return {n: reader.get_tensor(n) for n in hf.progress(names, Path(prefix).name)}
    except (tf.errors.OpError, ValueError) as err:
        raise checkpoint.ModelError(f'cannot read the checkpoint {prefix} ({loading.error_reason(err)})') from None


def hparams_object(hparams):
    import model
    return model.default_hparams().override_from_dict(hparams)


def read_vocabulary(folder):
    """encoder.json's vocabulary and vocab.bpe's merges of a model folder, after checking them."""
    encoder.read_vocabulary(folder)
    vocab = json.loads((folder / 'encoder.json').read_text(encoding='utf-8'))
    merges = encoder.read_merges((folder / 'vocab.bpe').read_text(encoding='utf-8'))
    return vocab, merges


def write_vocabulary(folder, vocab, merges):
    (folder / 'encoder.json').write_text(json.dumps(vocab), encoding='utf-8')
    (folder / 'vocab.bpe').write_text(hf.merges_text(merges), encoding='utf-8')


def check_vocabulary_fits(vocab, hparams, source):
    if max(vocab.values()) >= hparams['n_vocab'] or min(vocab.values()) < 0:
        raise checkpoint.ModelError(f'{source}: the tokenizer has ids up to {max(vocab.values())}, the model only '
                                    f'{hparams["n_vocab"]} embeddings')


def done(out, what):
    print(f'Wrote {out}: {what}')


# ---------------------------------------------------------------------------------------------------------------
# The three directions
# ---------------------------------------------------------------------------------------------------------------

@flags.script('Convert a Hugging Face GPT-2 folder to a model folder in the released layout (hparams.json, '
              'encoder.json, vocab.bpe, checkpoint, model.ckpt.*), which every script of the project loads.',
              **FLAGS)
def from_hf(hf_folder, out_folder, overwrite=False):
    source = atomic.existing_folder('hf_folder', hf_folder)
    out = atomic.out_path(out_folder)
    atomic.check_overwrite(overwrite)
    hparams, config = hf.read_config(source)
    vocab, merges = hf.read_tokenizer(source)
    check_vocabulary_fits(vocab, hparams, source)
    tensors = hf.read_tensors(source)
    params = hf.from_hf_tensors(tensors, hparams, source)
    hf.check_head(tensors, config, source)
    del tensors
    with atomic.atomic_folder(out, overwrite) as folder:
        checkpoint.save_checkpoint(folder, hparams, params)
        write_vocabulary(folder, vocab, merges)
    done(out, f'sample from it with --models_dir {out.parent} --model_name {out.name}')


@flags.script('Convert a model folder or a training run to a Hugging Face GPT-2 folder (config.json, '
              'model.safetensors, vocab.json, merges.txt, tokenizer_config.json) that transformers loads. Weights '
              'only: no optimizer state.', **FLAGS)
def to_hf(model_folder, out_folder, step=None, overwrite=False):
    source = atomic.existing_folder('model_folder', model_folder)
    out = atomic.out_path(out_folder)
    atomic.check_overwrite(overwrite)
    name, hparams = chosen_checkpoint(source, step)
    vocab, merges = read_vocabulary(source)
    params = read_weights(source / name, hparams)
    with atomic.atomic_folder(out, overwrite) as folder:
        config = hf.config_json(hparams, vocab[checkpoint.ENDOFTEXT])
        (folder / hf.CONFIG_FILE).write_text(json.dumps(config, indent=2) + '\n', encoding='utf-8')
        hf.write_safetensors(folder / hf.SAFETENSORS_FILE, hf.to_hf_tensors(params))
        hf.write_tokenizer(folder, vocab, merges, hparams['n_ctx'])
    done(out, f'the weights of {source / name}; load it with transformers.GPT2LMHeadModel.from_pretrained')


@flags.script('Write a training run\'s weights, without the optimizer state, step or seed, as a model folder in '
              'the released layout (a third of the size).', **FLAGS)
def weights(run_folder, out_folder, step=None, overwrite=False):
    source = atomic.existing_folder('run_folder', run_folder)
    out = atomic.out_path(out_folder)
    atomic.check_overwrite(overwrite)
    name, hparams = chosen_checkpoint(source, step)
    encoder.read_vocabulary(source)
    params = read_weights(source / name, hparams)
    with atomic.atomic_folder(out, overwrite) as folder:
        checkpoint.save_checkpoint(folder, hparams, params)
        for info in ('encoder.json', 'vocab.bpe'):
            shutil.copyfile(source / info, folder / info)
    done(out, f'the weights of {source / name}')


COMMANDS = {'from_hf': from_hf, 'to_hf': to_hf, 'weights': weights}


def main():
    tf.disable_v2_behavior()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        fire.Fire(COMMANDS)
    except KeyboardInterrupt:  # the folder being written is removed already (atomic_folder)
        sys.exit(130)


if __name__ == '__main__':
    sys.argv[1:] = flags.check_argv(COMMANDS)  # main() hands sys.argv to fire
    main()
