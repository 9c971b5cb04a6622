"""The prompts of interactive_conditional_samples.py: typed at a prompt marker or piped (echoed, so that a batch
job's output shows which prompt each sample answers), or read from a file, then fitted to the model's window; and
a file's prompts sampled a batch at a time, whatever prompt each row continues."""
import sys

import sample

from gpt2.base import flags

PROMPT = 'Model prompt >>> '
CONTINUE = '... '  # the marker of a prompt's next line


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
