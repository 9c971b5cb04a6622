#!/usr/bin/env python3
"""Models in and out: a Hugging Face GPT-2 folder to the released layout and back, and a training run's weights
without its optimizer state.

    python src/convert.py from_hf HF_FOLDER OUT_FOLDER        # Hugging Face -> hparams.json, model.ckpt.*, ...
    python src/convert.py to_hf MODEL_OR_RUN_FOLDER OUT_FOLDER  # -> config.json, model.safetensors, vocab.json ...
    python src/convert.py weights RUN_FOLDER OUT_FOLDER [--step N]

Each writes a complete folder under a temporary name beside OUT_FOLDER and renames it at the end, so a
half-written model never appears under its real name. A relative OUT_FOLDER is taken from the working directory.
The conversions: gpt2/interop/conversions.py; the layouts and the names of the weights: gpt2/interop/hf.py.
"""
import signal
import sys

import fire

from gpt2.base import flags, runtime

if __name__ == '__main__':
    flags.check_script_early(__file__)  # a misspelled flag is refused before TensorFlow's seconds of loading
tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
from gpt2.base import atomic  # noqa: E402
from gpt2.interop import conversions  # noqa: E402

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
    out_folder='the folder to write; a relative path is taken from the working directory. It must not exist, '
               'unless --overwrite.',
    step='convert the run\'s checkpoint of this step (model-STEP) instead of its latest.',
    overwrite='replace out_folder if it exists (only once the new folder is complete).',
)


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
    flags.switch('overwrite', overwrite)
    conversions.from_hf(source, out, overwrite)
    done(out, f'sample from it with --models_dir {out.parent} --model_name {out.name}')


@flags.script('Convert a model folder or a training run to a Hugging Face GPT-2 folder (config.json, '
              'model.safetensors, vocab.json, merges.txt, tokenizer_config.json) that transformers loads. Weights '
              'only: no optimizer state.', **FLAGS)
def to_hf(model_folder, out_folder, step=None, overwrite=False):
    source = atomic.existing_folder('model_folder', model_folder)
    out = atomic.out_path(out_folder)
    flags.switch('overwrite', overwrite)
    name, hparams = conversions.chosen_checkpoint(source, step)
    conversions.to_hf(source, name, hparams, out, overwrite)
    done(out, f'the weights of {source / name}; load it with transformers.GPT2LMHeadModel.from_pretrained')


@flags.script('Write a training run\'s weights, without the optimizer state, step or seed, as a model folder in '
              'the released layout (a third of the size).', **FLAGS)
def weights(run_folder, out_folder, step=None, overwrite=False):
    source = atomic.existing_folder('run_folder', run_folder)
    out = atomic.out_path(out_folder)
    flags.switch('overwrite', overwrite)
    name, hparams = conversions.chosen_checkpoint(source, step)
    conversions.weights_only(source, name, hparams, out, overwrite)
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
