#!/usr/bin/env python3
"""Ask for a prompt, print GPT-2's continuations of it, and ask again. Prompts can also come from a pipe."""
import sys

import fire
import numpy as np

from gpt2.base import runtime

tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
import sample  # noqa: E402
from gpt2 import loading  # noqa: E402
from gpt2.base import flags  # noqa: E402
from gpt2.base.checkpoint import ENDOFTEXT  # noqa: E402
from gpt2.sampling import printing  # noqa: E402
from gpt2.sampling import rules  # noqa: E402

PROMPT = 'Model prompt >>> '


CONTINUE = '... '


def read_prompt():
    """The next non-empty prompt, or None at the end of input (Ctrl-D, or the end of a piped file). A line that
    ends with a backslash goes on on the next line: the prompt holds a newline there instead.

    A prompt read from a pipe is echoed after the prompt marker, as a terminal would show it, so that the output
    of a batch job shows which prompt each sample answers."""
    while True:
        lines, marker = [], PROMPT
        while True:
            try:
                line = input(marker)
            except EOFError:
                print()
                return '\n'.join(lines) if lines else None
            if not sys.stdin.isatty():
                print(line)
            if not line.endswith('\\'):
                lines.append(line)
                break
            lines.append(line[:-1])
            marker = CONTINUE
        text = '\n'.join(lines)
        if text:
            return text
        print('Prompt should not be empty!')


def read_prompt_file(path, separator):
    """The prompts of a file: separated by lines that hold only `separator` ('' : a blank line), so a prompt may
    span lines. Empty prompts are skipped; a file without any is a usage error."""
    try:
        text = open(path, encoding='utf-8', errors='replace').read()
    except OSError as err:
        raise flags.UsageError(f'--prompt_file {path}: cannot read it ({err.strerror})') from None
    prompts, current = [], []
    for line in text.splitlines():
        if (line.strip() == '') if separator == '' else (line == separator):
            prompts.append('\n'.join(current))
            current = []
        else:
            current.append(line)
    prompts.append('\n'.join(current))
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise flags.UsageError(f'--prompt_file {path} holds no prompt; write prompts separated by '
                               f'{"blank lines" if separator == "" else "lines of " + repr(separator)}')
    return prompts


def fit_prompt(tokens, room):
    """Keep the last `room` prompt tokens, so prompt and sample fit the window, and say so when that drops any.
    room None keeps them all."""
    if room is None or len(tokens) <= room:
        return tokens
    print(f'note: the prompt is {len(tokens)} tokens and only {room} fit the window with --length; '
          f'the first {len(tokens) - room} were dropped', file=sys.stderr, flush=True)
    return tokens[-room:]


def print_prompt_samples(text, samples, printer):
    """One prompt's samples, as for a prompt read from a pipe: the prompt after its marker, the samples, a line."""
    print(PROMPT + text.replace('\n', '\n' + CONTINUE))
    for number, tokens in enumerate(samples, 1):
        printer.print_sample(number, tokens)
    print('=' * 80, flush=True)


def echoed(prompts):
    """The prompts, each printed after the prompt marker as it is handed on."""
    for text in prompts:
        print(PROMPT + text.replace('\n', '\n' + CONTINUE), flush=True)
        yield text


def sample_prompt_file(sess, output, context, lengths, prompts, tokens, printer, *, nsamples, batch_size):
    """nsamples samples of every prompt, batch_size rows at a time whatever prompt they continue (prompts of
    different lengths in one batch, left-padded); each prompt's printed once all its samples are done. A last
    batch with fewer rows is filled up with copies of its first (the graph's batch size is fixed)."""
    jobs = [p for p in range(len(prompts)) for _ in range(nsamples)]
    samples = [[] for _ in prompts]
    printed = 0
    for start in range(0, len(jobs), batch_size):
        rows = jobs[start:start + batch_size]
        padded, n = sample.left_pad([tokens[p] for p in rows + rows[:1] * (batch_size - len(rows))])
        out = sess.run(output, {context: padded, lengths: n})
        for row, p in enumerate(rows):
            samples[p].append(out[row, padded.shape[1]:])
        while printed < len(prompts) and len(samples[printed]) == nsamples:
            print_prompt_samples(prompts[printed], samples[printed], printer)
            printed += 1


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
                   prompt_file=None, prompt_separator='', context_keep=None, checkpoint='latest'):
    batch_size = rules.check_sampling_flags(nsamples=nsamples, batch_size=batch_size, temperature=temperature,
                                          top_k=top_k, top_p=top_p, seed=seed, min_nsamples=1)
    stops = rules.check_stops(stop)
    penalties = rules.check_penalties(repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                                    frequency_penalty=frequency_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    prompts = None if prompt_file is None else read_prompt_file(str(prompt_file), str(prompt_separator))
    model_dir, hparams, enc = loading.load_model(model_name, models_dir, checkpoint)
    length = rules.check_length(length, hparams.n_ctx, default=hparams.n_ctx // 2, room_for_prompt=True)
    context_keep = rules.check_context_keep(context_keep, hparams.n_ctx)
    # Below the window, prompt and sample fit it, as in the original; from the window on, it slides.
    sliding = length >= hparams.n_ctx
    endoftext = enc.encoder[ENDOFTEXT]
    printer = printing.SamplePrinter(enc, stop_token=endoftext if stop_at_endoftext else None, stops=stops)
    room = None if sliding else hparams.n_ctx - length

    def encode(text):
        return fit_prompt(enc.encode(text, allowed_special={ENDOFTEXT}), room)
    if prompts is not None and not sliding:
        batch_size = min(batch_size, nsamples * len(prompts))

    with tf.Graph().as_default(), tf.Session(config=sample.session_config()) as sess:
        np.random.seed(seed)
        tf.set_random_seed(seed)
        restored = loading.start_restore(sess, model_dir, hparams)  # meanwhile, build the sampling graph
        knobs = dict(hparams=hparams, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                     stop_token=printer.stop_token, on_token=printer.on_token, frozen_weights=True,
                     penalties=penalties, **printer.stop_arrays(hparams.n_vocab),
                     **({'context_keep': context_keep} if sliding else {}))
        if prompts is not None and not sliding:
            # A prompt per row, of different lengths; a fixed batch size (see printing.print_samples).
            context, lengths = tf.placeholder(tf.int32, [batch_size, None]), tf.placeholder(tf.int32, [batch_size])
            output = sample.sample_sequence(context=context, context_lengths=lengths, **knobs)
            restored()
            sample_prompt_file(sess, output, context, lengths, prompts, [encode(p) for p in prompts], printer,
                               nsamples=nsamples, batch_size=batch_size)
            return
        # One prompt for every row, run once; a fixed batch size (see printing.print_samples).
        context = tf.placeholder(tf.int32, [1, None])
        output = sample.sample_sequence(context=context, batch_size=batch_size, **knobs)
        restored()
        # Past the window, rows slide on their own tokens: a file's prompts one at a time.
        typed = iter(read_prompt, None) if prompts is None else echoed(prompts)
        for text in typed:
            tokens = encode(text)
            run_batch = lambda n: sess.run(output, {context: [tokens]})[:n, len(tokens):]
            printing.print_samples(run_batch, printer, nsamples=nsamples, batch_size=batch_size)
            print('=' * 80, flush=True)


if __name__ == '__main__':
    runtime.setup_process()
    fire.Fire(interact_model, command=flags.check_argv(interact_model, rules.gather_repeated(sys.argv[1:], 'stop')))
