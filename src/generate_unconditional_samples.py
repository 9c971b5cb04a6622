#!/usr/bin/env python3
"""Print samples that GPT-2 writes from nothing (each starts from the <|endoftext|> token)."""
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
from gpt2.sampling import rules  # noqa: E402


@flags.script(
    'Print unconditional samples from GPT-2.',
    nsamples='how many samples to print; 0 (the default) keeps going until Ctrl-C.',
    length="tokens per sample, 1 or more; by default the model's window (1024). Past the window, see "
           "--context_keep.")
def sample_model(model_name='124M', seed=None, nsamples=0, batch_size=1, length=None, temperature=1, top_k=0,
                 top_p=1, models_dir='models', stop_at_endoftext=False, stop=None,
                 repetition_penalty=1, presence_penalty=0, frequency_penalty=0, no_repeat_ngram_size=0,
                 context_keep=None, checkpoint='latest', precision='float32'):
    batch_size = rules.check_sampling_flags(nsamples=nsamples, batch_size=batch_size, temperature=temperature,
                                          top_k=top_k, top_p=top_p, seed=seed)
    stops = rules.check_stops(stop)
    penalties = rules.check_penalties(repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                                    frequency_penalty=frequency_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    precision = rules.check_precision(precision, on_cpu=sample.on_cpu(sample.default_device()))
    model_dir, hparams, enc = loading.load_model(model_name, models_dir, checkpoint)
    length = rules.check_length(length, hparams.n_ctx, default=hparams.n_ctx)
    context_keep = rules.check_context_keep(context_keep, hparams.n_ctx)
    # The start token and every sampled token but the last go through the model: past the window, it slides.
    sliding = {'context_keep': context_keep} if length > hparams.n_ctx else {}
    endoftext = enc.encoder[ENDOFTEXT]
    printer = printing.SamplePrinter(enc, stop_token=endoftext if stop_at_endoftext else None, stops=stops)

    with tf.Graph().as_default(), tf.Session(config=sample.session_config()) as sess:
        np.random.seed(seed)
        tf.set_random_seed(seed)
        # A fixed batch size, which the fast paths need (see printing.print_samples); a smaller last batch uses n rows.
        restored = loading.start_restore(sess, model_dir, hparams, precision)  # meanwhile, build the graph
        output = sample.sample_sequence(hparams=hparams, length=length, start_token=endoftext,
                                        batch_size=batch_size, temperature=temperature, top_k=top_k, top_p=top_p,
                                        stop_token=printer.stop_token, on_token=printer.on_token, frozen_weights=True,
                                        penalties=penalties, precision=precision,
                                        **printer.stop_arrays(hparams.n_vocab), **sliding)
        restored()
        # Each row starts with the start token, which is not part of the sample.
        run_batch = lambda n: sess.run(output)[:n, 1:]
        printing.print_samples(run_batch, printer, nsamples=nsamples, batch_size=batch_size)


if __name__ == '__main__':
    runtime.setup_process()
    fire.Fire(sample_model, command=flags.check_argv(sample_model, rules.gather_repeated(sys.argv[1:], 'stop')))
