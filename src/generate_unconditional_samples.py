#!/usr/bin/env python3
"""Print samples that GPT-2 writes from nothing (each starts from the <|endoftext|> token)."""
import cli  # first: it quiets TensorFlow's start-up logging before TensorFlow loads

import fire
import numpy as np
import tensorflow.compat.v1 as tf

import checkpoint
import flags
import sample


@flags.script(
    'Print unconditional samples from GPT-2.',
    nsamples='how many samples to print; 0 (the default) keeps going until Ctrl-C.',
    length="tokens per sample, 1 to the model's window (1024, the default).")
def sample_model(model_name='124M', seed=None, nsamples=0, batch_size=1, length=None, temperature=1, top_k=0,
                 top_p=1, models_dir='models', stop_at_endoftext=False, checkpoint='latest'):
    batch_size = cli.check_sampling_flags(nsamples=nsamples, batch_size=batch_size, temperature=temperature,
                                          top_k=top_k, top_p=top_p, seed=seed)
    model_dir, hparams, enc = cli.load_model(model_name, models_dir, checkpoint)
    length = cli.check_length(length, hparams.n_ctx, default=hparams.n_ctx)
    endoftext = enc.encoder[cli.checkpoint.ENDOFTEXT]
    printer = cli.SamplePrinter(enc, stop_token=endoftext if stop_at_endoftext else None)

    with tf.Graph().as_default(), tf.Session(config=sample.session_config()) as sess:
        np.random.seed(seed)
        tf.set_random_seed(seed)
        # A fixed batch size, which the fast paths need (see cli.print_samples); a smaller last batch uses n rows.
        restored = cli.start_restore(sess, model_dir, hparams)  # meanwhile, build the sampling graph
        output = sample.sample_sequence(hparams=hparams, length=length, start_token=endoftext,
                                        batch_size=batch_size, temperature=temperature, top_k=top_k, top_p=top_p,
                                        stop_token=printer.stop_token, on_token=printer.on_token, frozen_weights=True)
        restored()
        # Each row starts with the start token, which is not part of the sample.
        run_batch = lambda n: sess.run(output)[:n, 1:]
        cli.print_samples(run_batch, printer, nsamples=nsamples, batch_size=batch_size)


if __name__ == '__main__':
    cli.setup_process()
    fire.Fire(sample_model)
