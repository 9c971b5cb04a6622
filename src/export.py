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

and gives `tokens` [batch, length] int32, the drawn tokens without the prompt. The graph is sample.py's steps
(sample.draw, with the knobs as tensors chosen per call by tf.cond) over gpt2/sampling/decoding.py's cache, sized once for
--max_length positions, with plain products: public TensorFlow ops only, no Python callback, nothing that a
serving binary lacks.
"""
import signal
import sys

import fire

from gpt2.base import runtime

tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
import model  # noqa: E402
import sample  # noqa: E402
from gpt2 import loading  # noqa: E402
from gpt2.base import atomic  # noqa: E402
from gpt2.base import checkpoint  # noqa: E402
from gpt2.base import flags  # noqa: E402
from gpt2.sampling import decoding  # noqa: E402

if __name__ == '__main__':
    # Ctrl-C while TensorFlow loads (seconds) ends the process at once and quietly; main() then lets it raise
    # KeyboardInterrupt, so that the folder being written is removed.
    signal.signal(signal.SIGINT, signal.SIG_DFL)





SIGNATURE = 'serving_default'


# ---------------------------------------------------------------------------------------------------------------
# The serving graph
# ---------------------------------------------------------------------------------------------------------------

def serving_inputs():
    """The signature's inputs, as placeholders: name -> tensor."""
    return {
        'prompt': tf.placeholder(tf.int32, [None, None], name='prompt'),
        'length': tf.placeholder(tf.int32, [], name='length'),
        'temperature': tf.placeholder(tf.float32, [], name='temperature'),
        'top_k': tf.placeholder(tf.int32, [], name='top_k'),
        'top_p': tf.placeholder(tf.float32, [], name='top_p'),
        'seed': tf.placeholder(tf.int64, [], name='seed'),
    }


def input_checks(inputs, hparams, max_length):
    """Assertions that fail a call with a message naming the input, before any work."""
    prompt, length = inputs['prompt'], inputs['length']
    seq = tf.shape(prompt)[1]
    a = tf.debugging
    return [
        a.assert_positive(seq, message='prompt must hold at least one token per row'),
        a.assert_non_negative(prompt, message='prompt: token ids must be 0 or more'),
        a.assert_less(prompt, hparams.n_vocab, message=f'prompt: token ids must be below n_vocab {hparams.n_vocab}'),
        a.assert_positive(length, message='length must be at least 1'),
        a.assert_less_equal(seq + length, max_length,
                            message=f'prompt tokens + length must be at most {max_length} (the export\'s '
                                    f'--max_length)'),
        a.assert_non_negative(inputs['temperature'], message='temperature must be 0 (greedy) or more'),
        a.assert_non_negative(inputs['top_k'], message='top_k must be 0 (off) or more'),
        a.assert_positive(inputs['top_p'], message='top_p must be above 0 and at most 1 (1 is off)'),
        a.assert_less_equal(inputs['top_p'], 1.0, message='top_p must be above 0 and at most 1 (1 is off)'),
    ]


def step_seed(seed, step):
    """The stateless seed [2] of one step, as sample.sample_sequence makes it from a seed [seed, 0]."""
    return tf.stack([seed, tf.cast(step, tf.int64)])


def serving_tokens(hparams, inputs, max_length):
    """The drawn tokens [batch, length] for the inputs of serving_inputs(). The weights are the variables of
    scope model (make them first)."""
    with tf.control_dependencies(input_checks(inputs, hparams, max_length)):
        prompt = tf.identity(inputs['prompt'])
    batch = tf.shape(prompt)[0]
    length = inputs['length']
    knobs = {k: inputs[k] for k in ('temperature', 'top_k', 'top_p')}
    scope = decoding.read_once_scope()
    # Every position but the last drawn token's goes through the model.
    cache = decoding.empty_cache(hparams, batch, max_length - 1)
    with tf.device(decoding.HOST):
        output = tf.TensorArray(tf.int32, size=length, element_shape=[None])

    # As in sample.sample_sequence: step 0 feeds the whole prompt, each later step the token drawn before it.
    def body(i, tokens, position, cache, output):
        logits, cache = decoding.decode_last(hparams, tokens, cache, position, scope=scope)
        token = sample.draw(logits, **knobs, seed=step_seed(inputs['seed'], i))
        return i + 1, token[:, tf.newaxis], position + tf.shape(tokens)[1], cache, output.write(i, token)

    loop_vars = [tf.constant(0), prompt, tf.constant(0), cache, output]
    invariants = [tf.TensorShape([]), tf.TensorShape([None, None]), tf.TensorShape([]),
                  [(k.shape, v.shape) for k, v in cache], tf.TensorShape(None)]
    output = tf.while_loop(lambda i, *_: i < length, body, loop_vars, shape_invariants=invariants,
                           back_prop=False, parallel_iterations=1)[-1]
    return tf.transpose(output.stack())  # [length, batch] -> [batch, length]


def model_variables(hparams):
    """The model's weights as resource variables under their released names (restored before saving)."""
    return [tf.get_variable(name, shape, initializer=tf.zeros_initializer(), use_resource=True)
            for name, shape in checkpoint.variable_shapes(hparams).items()]


def write_saved_model(folder, model_dir, hparams, max_length):
    """The SavedModel of model_dir's current checkpoint in the empty folder."""
    prefix = str(model_dir / checkpoint.current_checkpoint(model_dir))
    with tf.Graph().as_default(), tf.Session() as sess:
        variables = model_variables(hparams)
        inputs = serving_inputs()
        tokens = serving_tokens(hparams, inputs, max_length)
        try:
            tf.train.Saver(var_list=variables).restore(sess, prefix)
        except tf.errors.OpError as err:
            raise checkpoint.ModelError(f'cannot restore {prefix} ({loading.error_reason(err)})') from None
        signature = tf.saved_model.signature_def_utils.predict_signature_def(inputs=inputs,
                                                                             outputs={'tokens': tokens})
        # The Builder writes into a folder it creates itself.
        builder = tf.saved_model.Builder(str(folder / 'saved_model'))
        # clear_devices: the graph runs where the server puts it, a GPU if it has one.
        builder.add_meta_graph_and_variables(sess, [tf.saved_model.tag_constants.SERVING],
                                             signature_def_map={SIGNATURE: signature}, clear_devices=True,
                                             strip_default_attrs=True)
        builder.save()


# ---------------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------------

@flags.script(
    'Export a model as a SavedModel whose serving_default signature samples with the knobs as inputs (prompt, '
    'length, temperature, top_k, top_p, seed -> tokens), for TensorFlow Serving or tf.saved_model.load.',
    model_folder='a model folder in the released layout, or a training run\'s folder (its latest checkpoint).',
    out_dir='the SavedModel folder to write; it must not exist, unless --overwrite. TensorFlow Serving wants it '
            'as MODEL_BASE/VERSION, e.g. serving/gpt2/1.',
    max_length="the most tokens a call may have, prompt and sample together, 2 to the model's window (the "
               "default); the cache of keys and values is this long, so it bounds each call's memory.",
    overwrite='replace out_dir if it exists (only once the new one is complete).')
def export_main(model_folder, out_dir, max_length=None, overwrite=False):
    source = atomic.existing_folder('model_folder', model_folder)
    out = atomic.out_path(out_dir)
    atomic.check_overwrite(overwrite)
    hparams = model.default_hparams().override_from_dict(checkpoint.check_model_dir(source))
    max_length = flags.whole_number('max_length', max_length, 2, hparams.n_ctx, allow_none=True) or hparams.n_ctx
    with atomic.atomic_folder(out, overwrite) as folder:
        write_saved_model(folder, source, hparams, max_length)
        for path in (folder / 'saved_model').iterdir():
            path.rename(folder / path.name)
        (folder / 'saved_model').rmdir()
    print(f'Wrote {out}: signature {SIGNATURE}, at most {max_length} tokens a call; '
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
