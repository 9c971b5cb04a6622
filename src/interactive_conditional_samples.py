#!/usr/bin/env python3
"""Ask for a prompt, print GPT-2's continuations of it, and ask again. Prompts can also come from a pipe."""
import cli  # first: it quiets TensorFlow's start-up logging before TensorFlow loads

import sys

import fire
import numpy as np
import tensorflow.compat.v1 as tf

import checkpoint
import flags
import sample

PROMPT = 'Model prompt >>> '


def read_prompt():
    """The next non-empty prompt, or None at the end of input (Ctrl-D, or the end of a piped file).

    A prompt read from a pipe is echoed after the prompt marker, as a terminal would show it, so that the output
    of a batch job shows which prompt each sample answers."""
    while True:
        try:
            text = input(PROMPT)
        except EOFError:
            print()
            return None
        if not sys.stdin.isatty():
            print(text)
        if text:
            return text
        print('Prompt should not be empty!')


def fit_prompt(tokens, room):
    """Keep the last `room` prompt tokens, so prompt and sample fit the window, and say so when that drops any."""
    if len(tokens) <= room:
        return tokens
    print(f'note: the prompt is {len(tokens)} tokens and only {room} fit the window with --length; '
          f'the first {len(tokens) - room} were dropped', file=sys.stderr, flush=True)
    return tokens[-room:]


@flags.script(
    'Print samples from GPT-2 that continue the prompts you type. <|endoftext|> typed in a prompt is the\n'
    'end-of-text token that separates documents, as in training, not 9 tokens of text.',
    nsamples='how many samples to print for each prompt (1 or more).',
    length="tokens per sample, 1 to the model's window less one (1023); by default half the window (512). "
           "A prompt longer than the window has room for keeps only its last tokens.")
def interact_model(model_name='124M', seed=None, nsamples=1, batch_size=1, length=None, temperature=1, top_k=0,
                   top_p=1, models_dir='models', stop_at_endoftext=False, checkpoint='latest'):
    batch_size = cli.check_sampling_flags(nsamples=nsamples, batch_size=batch_size, temperature=temperature,
                                          top_k=top_k, top_p=top_p, seed=seed, min_nsamples=1)
    model_dir, hparams, enc = cli.load_model(model_name, models_dir, checkpoint)
    length = cli.check_length(length, hparams.n_ctx, default=hparams.n_ctx // 2, room_for_prompt=True)
    endoftext = enc.encoder[cli.checkpoint.ENDOFTEXT]
    printer = cli.SamplePrinter(enc, stop_token=endoftext if stop_at_endoftext else None)

    with tf.Graph().as_default(), tf.Session(config=sample.session_config()) as sess:
        np.random.seed(seed)
        tf.set_random_seed(seed)
        restored = cli.start_restore(sess, model_dir, hparams)  # meanwhile, build the sampling graph
        # One prompt for every row, run once; a fixed batch size (see cli.print_samples).
        context = tf.placeholder(tf.int32, [1, None])
        output = sample.sample_sequence(hparams=hparams, length=length, context=context, batch_size=batch_size,
                                        temperature=temperature, top_k=top_k, top_p=top_p,
                                        stop_token=printer.stop_token, on_token=printer.on_token,
                                        frozen_weights=True)
        restored()
        while (text := read_prompt()) is not None:
            tokens = fit_prompt(enc.encode(text, allowed_special={cli.checkpoint.ENDOFTEXT}), hparams.n_ctx - length)
            run_batch = lambda n: sess.run(output, {context: [tokens]})[:n, len(tokens):]
            cli.print_samples(run_batch, printer, nsamples=nsamples, batch_size=batch_size)
            print('=' * 80, flush=True)


if __name__ == '__main__':
    cli.setup_process()
    fire.Fire(interact_model)
