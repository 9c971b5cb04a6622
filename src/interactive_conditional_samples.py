#!/usr/bin/env python3
"""Ask for a prompt, print GPT-2's continuations of it, and ask again. Prompts can also come from a pipe or a
file (reading them: gpt2/sampling/prompts.py)."""
import sys

import fire
import numpy as np

from gpt2.base import flags, runtime

if __name__ == '__main__':
    flags.check_script_early(__file__)  # a misspelled flag is refused before TensorFlow's seconds of loading
tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
import sample  # noqa: E402
from gpt2 import loading  # noqa: E402
from gpt2.base.checkpoint import ENDOFTEXT  # noqa: E402
from gpt2.sampling import printing  # noqa: E402
from gpt2.sampling import prompts as prompts_lib  # noqa: E402
from gpt2.sampling import rules  # noqa: E402


@flags.script(
    'Print samples from GPT-2 that continue the prompts you type. <|endoftext|> typed in a prompt is the\n'
    'end-of-text token that separates documents, as in training, not 9 tokens of text. A line that ends with a\n'
    'backslash goes on on the next: the prompt holds a newline there.',
    nsamples='how many samples to print for each prompt (1 or more).',
    length="tokens per sample, 1 or more; by default half the window (512). Below the window, a prompt longer "
           "than the room left keeps only its last tokens; from the window on, the model goes on from the last "
           "--context_keep tokens whenever prompt and sample fill it.",
    prompt_file='read the prompts from this UTF-8 file instead of asking, and sample --batch_size rows at a time '
                'whatever prompt each continues; each prompt is printed before its samples.',
    prompt_separator='with --prompt_file: the prompts are separated by lines that hold only this text; by default '
                     'a blank line, so a prompt may span lines.')
def interact_model(model_name='124M', seed=None, nsamples=1, batch_size=1, length=None, temperature=1, top_k=0,
                   top_p=1, models_dir='models', stop_at_endoftext=False, stop=None,
                   repetition_penalty=1, presence_penalty=0, frequency_penalty=0, no_repeat_ngram_size=0,
                   prompt_file=None, prompt_separator='', context_keep=None, checkpoint='latest',
                   precision='float32'):
    batch_size = rules.check_sampling_flags(nsamples=nsamples, batch_size=batch_size, temperature=temperature,
                                          top_k=top_k, top_p=top_p, seed=seed, min_nsamples=1)
    stops = rules.check_stops(stop)
    penalties = rules.check_penalties(repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                                    frequency_penalty=frequency_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    prompts = None if prompt_file is None else prompts_lib.read_prompt_file(str(prompt_file), str(prompt_separator))
    precision = rules.check_precision(precision, on_cpu=sample.on_cpu(sample.default_device()))
    model_dir, hparams, enc = loading.load_model(model_name, models_dir, checkpoint)
    length = rules.check_length(length, hparams.n_ctx, default=hparams.n_ctx // 2, room_for_prompt=True)
    context_keep = rules.check_context_keep(context_keep, hparams.n_ctx)
    # Below the window, prompt and sample fit it, as in the original; from the window on, it slides.
    sliding = length >= hparams.n_ctx
    endoftext = enc.encoder[ENDOFTEXT]
    printer = printing.SamplePrinter(enc, stop_token=endoftext if stop_at_endoftext else None, stops=stops)
    room = None if sliding else hparams.n_ctx - length

    def encode(text):
        return prompts_lib.fit_prompt(enc.encode(text, allowed_special={ENDOFTEXT}), room)
    if prompts is not None and not sliding:
        batch_size = min(batch_size, nsamples * len(prompts))

    with tf.Graph().as_default(), tf.Session(config=sample.session_config()) as sess:
        np.random.seed(seed)
        tf.set_random_seed(seed)
        restored = loading.start_restore(sess, model_dir, hparams, precision)  # meanwhile, build the graph
        knobs = dict(hparams=hparams, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                     stop_token=printer.stop_token, on_token=printer.on_token, frozen_weights=True,
                     penalties=penalties, precision=precision, **printer.stop_arrays(hparams.n_vocab),
                     **({'context_keep': context_keep} if sliding else {}))
        if prompts is not None and not sliding:
            # A prompt per row, of different lengths; a fixed batch size (see printing.print_samples).
            context, lengths = tf.placeholder(tf.int32, [batch_size, None]), tf.placeholder(tf.int32, [batch_size])
            output = sample.sample_sequence(context=context, context_lengths=lengths, **knobs)
            restored()
            prompts_lib.sample_prompt_file(sess, output, context, lengths, prompts, [encode(p) for p in prompts],
                                           printer, nsamples=nsamples, batch_size=batch_size)
            return
        # One prompt for every row, run once; a fixed batch size (see printing.print_samples).
        context = tf.placeholder(tf.int32, [1, None])
        output = sample.sample_sequence(context=context, batch_size=batch_size, **knobs)
        restored()
        # Past the window, rows slide on their own tokens: a file's prompts one at a time.
        typed = iter(prompts_lib.read_prompt, None) if prompts is None else prompts_lib.echoed(prompts)
        for text in typed:
            tokens = encode(text)
            run_batch = lambda n: sess.run(output, {context: [tokens]})[:n, len(tokens):]
            printing.print_samples(run_batch, printer, nsamples=nsamples, batch_size=batch_size)
            print('=' * 80, flush=True)


if __name__ == '__main__':
    runtime.setup_process()
    fire.Fire(interact_model, command=flags.check_argv(interact_model, rules.gather_repeated(sys.argv[1:], 'stop')))
