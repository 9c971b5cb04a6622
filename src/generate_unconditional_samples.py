#!/usr/bin/env python3
"""Print samples that GPT-2 writes from nothing (each starts from the <|endoftext|> token)."""
import cli  # first: it quiets TensorFlow's start-up logging before TensorFlow loads

import fire
import numpy as np
import tensorflow.compat.v1 as tf

import checkpoint
import sample


@cli.friendly_errors
def sample_model(model_name='124M', seed=None, nsamples=0, batch_size=1, length=None, temperature=1, top_k=0,
                 top_p=1, models_dir='models', stop_at_endoftext=False):
    """Print unconditional samples from GPT-2.

    Args:
      model_name: the model to use, a folder in models_dir: 124M, 355M, 774M or 1558M.
      seed: a whole number that makes the samples repeatable; by default they differ on every run.
      nsamples: how many samples to print; 0 (the default) keeps going until Ctrl-C.
      batch_size: how many samples to draw at once; more is faster per sample and uses more memory.
      length: tokens per sample, 1 to the model's window (1024, the default).
      temperature: divides the logits; below 1 the text is more predictable, above 1 more random, 0 is greedy.
      top_k: draw only from the k most likely tokens at each step; 0 (the default) means no limit. 40 is a good value.
      top_p: draw only from the most likely tokens whose probabilities add up to at most top_p (nucleus sampling), in (0, 1]; 1 (the default) means no limit.
      models_dir: the folder holding the model folders; a relative path is looked up in the working directory, then in the repository.
      stop_at_endoftext: end each sample at its first <|endoftext|> token (which is not printed).
    """
    cli.check_sampling_flags(nsamples=nsamples, batch_size=batch_size, temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=seed)
    model_dir, hparams, enc = cli.load_model(model_name, models_dir)
    length = cli.check_length(length, hparams.n_ctx, default=hparams.n_ctx)
    endoftext = enc.encoder[checkpoint.ENDOFTEXT]
    printer = cli.SamplePrinter(enc, stop_token=endoftext if stop_at_endoftext else None)

    with tf.Graph().as_default(), tf.Session(config=sample.session_config()) as sess:
        np.random.seed(seed)
        tf.set_random_seed(seed)
        rows = tf.placeholder_with_default(batch_size, [])
        output = sample.sample_sequence(hparams=hparams, length=length, start_token=endoftext, batch_size=rows,
                                        temperature=temperature, top_k=top_k, top_p=top_p,
                                        stop_token=printer.stop_token, on_token=printer.on_token)
        cli.restore(sess, model_dir)
        # Each row starts with the start token, which is not part of the sample.
        run_batch = lambda n: sess.run(output, {rows: n})[:, 1:]
        cli.print_samples(run_batch, printer, nsamples=nsamples, batch_size=batch_size)


if __name__ == '__main__':
    cli.setup_process()
    fire.Fire(sample_model)
