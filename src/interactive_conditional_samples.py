#!/usr/bin/env python3
"""Ask for a prompt, print GPT-2's continuations of it, and ask again. Prompts can also come from a pipe."""
import cli  # first: it quiets TensorFlow's start-up logging before TensorFlow loads

import sys

import fire
import numpy as np
import tensorflow.compat.v1 as tf

import checkpoint
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


@cli.friendly_errors
def interact_model(model_name='124M', seed=None, nsamples=1, batch_size=1, length=None, temperature=1, top_k=0,
                   top_p=1, models_dir='models', stop_at_endoftext=False):
    """Print samples from GPT-2 that continue the prompts you type.

    Args:
      model_name: the model to use, a folder in models_dir: 124M, 355M, 774M or 1558M.
      seed: a whole number that makes the samples repeatable; by default they differ on every run.
      nsamples: how many samples to print for each prompt (1 or more).
      batch_size: how many samples to draw at once; more is faster per sample and uses more memory.
      length: tokens per sample, 1 to the model's window less one (1023); by default half the window (512). A prompt longer than the window has room for keeps only its last tokens.
      temperature: divides the logits; below 1 the text is more predictable, above 1 more random, 0 is greedy.
      top_k: draw only from the k most likely tokens at each step; 0 (the default) means no limit. 40 is a good value.
      top_p: draw only from the most likely tokens whose probabilities add up to at most top_p (nucleus sampling), in (0, 1]; 1 (the default) means no limit.
      models_dir: the folder holding the model folders; a relative path is looked up in the working directory, then in the repository.
      stop_at_endoftext: end each sample at its first <|endoftext|> token (which is not printed).
    """
    cli.check_sampling_flags(nsamples=nsamples, batch_size=batch_size, temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=seed, min_nsamples=1)
    model_dir, hparams, enc = cli.load_model(model_name, models_dir)
    length = cli.check_length(length, hparams.n_ctx, default=hparams.n_ctx // 2, room_for_prompt=True)
    endoftext = enc.encoder[checkpoint.ENDOFTEXT]
    printer = cli.SamplePrinter(enc, stop_token=endoftext if stop_at_endoftext else None)

    with tf.Graph().as_default(), tf.Session(config=sample.session_config()) as sess:
        np.random.seed(seed)
        tf.set_random_seed(seed)
        context = tf.placeholder(tf.int32, [None, None])
        output = sample.sample_sequence(hparams=hparams, length=length, context=context, temperature=temperature,
                                        top_k=top_k, top_p=top_p, stop_token=printer.stop_token,
                                        on_token=printer.on_token)
        cli.restore(sess, model_dir)
        while (text := read_prompt()) is not None:
            tokens = fit_prompt(enc.encode(text), hparams.n_ctx - length)
            run_batch = lambda n: sess.run(output, {context: [tokens] * n})[:, len(tokens):]
            cli.print_samples(run_batch, printer, nsamples=nsamples, batch_size=batch_size)
            print('=' * 80, flush=True)


if __name__ == '__main__':
    cli.setup_process()
    fire.Fire(interact_model)
