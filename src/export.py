#!/usr/bin/env python3
"""A SavedModel for serving: GPT-2's sampling loop with every knob an input, for TensorFlow Serving or
tf.saved_model.load.

    python src/export.py MODEL_FOLDER OUT_DIR [--max_length N]

The signature serving_default takes

    prompt       [batch, seq] int32   token ids, at least one per row (<|endoftext|> starts a sample from nothing)
    length       []  int32            tokens to draw per row; seq + length at most --max_length
    temperature  []  float32          0 is greedy
    top_k        []  int32            0 is off
    top_p        []  float32          1 is off
    seed         []  int64            the same seed, the same samples

and gives `tokens` [batch, length] int32, the drawn tokens without the prompt. The graph:
gpt2/interop/saved_model.py. A relative OUT_DIR is taken from the working directory.
"""
import signal
import sys

import fire

from gpt2.base import flags, runtime

if __name__ == '__main__':
    flags.check_script_early(__file__)  # a misspelled flag is refused before TensorFlow's seconds of loading
tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
import model  # noqa: E402
from gpt2.base import atomic  # noqa: E402
from gpt2.base import checkpoint  # noqa: E402
from gpt2.interop import saved_model  # noqa: E402

if __name__ == '__main__':
    # Ctrl-C while TensorFlow loads (seconds) ends the process at once and quietly; main() then lets it raise
    # KeyboardInterrupt, so that the folder being written is removed.
    signal.signal(signal.SIGINT, signal.SIG_DFL)





# ---------------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------------

@flags.script(
    'Export a model as a SavedModel whose serving_default signature samples with the knobs as inputs (prompt, '
    'length, temperature, top_k, top_p, seed -> tokens), for TensorFlow Serving or tf.saved_model.load.',
    model_folder='a model folder in the released layout, or a training run\'s folder (its latest checkpoint).',
    out_dir='the SavedModel folder to write; a relative path is taken from the working directory. It must not '
            'exist, unless --overwrite. TensorFlow Serving wants it as MODEL_BASE/VERSION, e.g. serving/gpt2/1.',
    max_length="the most tokens a call may have, prompt and sample together, 2 to the model's window (the "
               "default); the cache of keys and values is this long, so it bounds each call's memory.",
    overwrite='replace out_dir if it exists (only once the new one is complete).')
def export_main(model_folder, out_dir, max_length=None, overwrite=False):
    source = atomic.existing_folder('model_folder', model_folder)
    out = atomic.out_path(out_dir)
    flags.switch('overwrite', overwrite)
    hparams = model.default_hparams().override_from_dict(checkpoint.check_model_dir(source))
    max_length = flags.whole_number('max_length', max_length, 2, hparams.n_ctx, allow_none=True) or hparams.n_ctx
    saved_model.export(source, out, hparams, max_length, overwrite)
    print(f'Wrote {out}: signature {saved_model.SIGNATURE}, at most {max_length} tokens a call; '
          f'see it with `saved_model_cli show --dir {out} --all`')


def main():
    tf.disable_v2_behavior()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        fire.Fire(export_main)
    except KeyboardInterrupt:  # the folder being written is removed already (atomic.atomic_folder)
        sys.exit(130)


if __name__ == '__main__':
    sys.argv[1:] = flags.check_argv(export_main)  # main() hands sys.argv to fire
    main()
