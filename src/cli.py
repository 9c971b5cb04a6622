"""What the two sampling scripts share: process set-up, flag checks, loading a model, printing samples.

Import this module before TensorFlow: it loads TensorFlow without its start-up log lines
(checkpoint.import_tensorflow).
"""
import codecs
import functools
import inspect
import os
import signal
import sys
import threading

import checkpoint

tf = checkpoint.import_tensorflow()
import encoder  # noqa: E402  (these import TensorFlow, which must be loaded quietly first)
import model  # noqa: E402


class UsageError(Exception):
    """A flag out of range or of the wrong type. The message names the flag and what it accepts."""


def setup_process():
    """Ctrl-C and a closed pipe end the process at once and quietly, as for any command-line tool: TensorFlow
    runs the sampling loop without returning to Python, so a Python KeyboardInterrupt would wait for the whole
    batch. Text that the terminal or pipe cannot encode is replaced, not fatal, and so is invalid UTF-8 read."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.stdout.reconfigure(errors='replace')
    sys.stdin.reconfigure(errors='replace')
    tf.disable_v2_behavior()


# The --help line of each flag both scripts have; each script adds its own for nsamples and length.
COMMON_FLAGS = {
    'model_name': 'the model to use, a folder in models_dir: 124M, 355M, 774M or 1558M.',
    'seed': 'a whole number that makes the samples repeatable; by default they differ on every run.',
    'batch_size': 'how many samples to draw at once; more is faster per sample and uses more memory.',
    'temperature': 'divides the logits; below 1 the text is more predictable, above 1 more random, 0 is greedy.',
    'top_k': 'draw only from the k most likely tokens at each step; 0 (the default) means no limit. '
             '40 is a good value.',
    'top_p': 'draw only from the most likely tokens whose probabilities add up to at most top_p (nucleus '
             'sampling), in (0, 1]; 1 (the default) means no limit.',
    'models_dir': 'the folder holding the model folders; a relative path is looked up in the working '
                  'directory, then in the repository.',
    'stop_at_endoftext': 'end each sample at its first <|endoftext|> token (which is not printed).',
}


def script(summary, **own_flags):
    """Decorate a script's main function for fire: its docstring becomes the --help manual (the summary, then
    a line per flag in the order of the signature), and its errors become one-line messages."""
    def decorate(main):
        wrapper = friendly_errors(main)
        docs = {**COMMON_FLAGS, **own_flags}
        flags = inspect.signature(main).parameters
        wrapper.__doc__ = f'{summary}\n\nArgs:\n' + ''.join(f'  {name}: {docs[name]}\n' for name in flags)
        return wrapper
    return decorate


def friendly_errors(main):
    """Wrap a script's main function: a bad flag or a broken model folder ends with one line on stderr and a
    non-zero exit (2 for a flag, 1 for the model), not a traceback."""
    @functools.wraps(main)
    def wrapper(*args, **flags):
        try:
            return main(*args, **flags)
        except UsageError as err:
            fail(err, code=2)
        except checkpoint.ModelError as err:
            fail(err, code=1)
    return wrapper


def fail(message, code):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------------------------

def whole_number(name, value, low, high=None, *, allow_none=False):
    """value must be an int in [low, high]; fire hands over whatever the user typed, e.g. the string 'abc'."""
    if value is None and allow_none:
        return value
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        upper = f' and {high}' if high is not None else ' or more'
        raise UsageError(f'--{name} must be a whole number {"between " if high is not None else ""}{low}{upper}, '
                         f'got {value!r}')
    return value


def number(name, value, low, high, *, low_open=False, what=None):
    """value must be a real number in [low, high] (or (low, high] when low_open)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and (value < low or (low_open and value == low) or value > high):
        ok = False
    if not ok:
        raise UsageError(f'--{name} must be {what or f"a number from {low} to {high}"}, got {value!r}')
    return float(value)


def check_sampling_flags(*, nsamples, batch_size, temperature, top_k, top_p, seed, min_nsamples=0):
    """-> the batch size to build the sampling graph with: never more rows than samples wanted (nsamples 0 wants
    them forever), since every batch is sampled at that size (see print_samples)."""
    whole_number('nsamples', nsamples, min_nsamples)
    whole_number('batch_size', batch_size, 1)
    number('temperature', temperature, 0, float('inf'), what='a number, 0 or more (0 means greedy)')
    whole_number('top_k', top_k, 0)
    number('top_p', top_p, 0, 1, low_open=True, what='a number above 0 and at most 1 (1 keeps every token)')
    whole_number('seed', seed, 0, 2**32 - 1, allow_none=True)  # NumPy's seeds are 32-bit
    return min(batch_size, nsamples) if nsamples else batch_size


def check_length(length, n_ctx, *, default, room_for_prompt=False):
    """length defaults to `default`; at most the window, or one less when a prompt needs a place in it."""
    if length is None:
        return default
    return whole_number('length', length, 1, n_ctx - 1 if room_for_prompt else n_ctx)


# ---------------------------------------------------------------------------------------------------------------
# Loading a model
# ---------------------------------------------------------------------------------------------------------------

def load_model(model_name, models_dir):
    """-> (model_dir, hparams, encoder), after checking that the folder holds a complete, consistent model."""
    whole_name = isinstance(model_name, str) and model_name and os.sep not in model_name
    if not whole_name:
        raise UsageError(f'--model_name must be a folder name such as 124M, got {model_name!r}')
    models_dir = checkpoint.resolve_models_dir(models_dir)
    model_dir = models_dir / model_name
    if not models_dir.is_dir():
        raise checkpoint.ModelError(f'models folder {models_dir} not found; {checkpoint.download_hint(model_name)}')
    hparams = model.default_hparams().override_from_dict(checkpoint.check_model_dir(model_dir, model_name))
    try:
        enc = encoder.get_encoder(model_name, models_dir)
    except (OSError, ValueError, KeyError) as err:
        raise checkpoint.ModelError(f'cannot read encoder.json or vocab.bpe in {model_dir} ({err}); '
                                    f'{checkpoint.download_hint(model_name)}') from None
    if checkpoint.ENDOFTEXT not in enc.encoder or max(enc.encoder.values()) >= hparams.n_vocab:
        raise checkpoint.ModelError(f'encoder.json in {model_dir} does not fit the model (it needs ids below '
                                    f'n_vocab {hparams.n_vocab} and a {checkpoint.ENDOFTEXT} token); '
                                    f'{checkpoint.download_hint(model_name)}')
    return model_dir, hparams, enc


def error_reason(err):
    """The line of a TensorFlow error that says what went wrong (its message starts with where, in the graph and
    in Python), e.g. 'TensorBundle at .../model.ckpt shard 0 (...): Checksum does not match: ...'."""
    lines = [line for line in err.message.strip().splitlines() if line.strip()]
    context = ('Graph execution error', 'Detected at node', 'Node:', ' ', '\t')
    reasons = [line for line in lines if not line.startswith(context)]
    return (reasons or lines or ['unknown error'])[-1].strip()


def start_restore(sess, model_dir, hparams):
    """Create the model's variables and start restoring them from model_dir's current checkpoint (the one its
    state file names: model.ckpt, or a training run's latest) on another thread, so that the restore (0.7 s for
    124M) overlaps building the sampling graph, which is Python's work: the first token comes that much sooner.
    -> a function that waits for the restore to end; it raises ModelError if the restore failed. Call it
    before running anything else in sess."""
    for name, shape in checkpoint.variable_shapes(hparams).items():
        # The initial values never matter: every variable is restored before the first sample.
        tf.get_variable(name, shape, initializer=tf.zeros_initializer())
    saver = tf.train.Saver()
    graph = sess.graph
    # A callable runs without extending the session's graph. Session.run would first take the graph's lock,
    # which the thread building the sampling graph takes for every op it adds: the restore would wait for it.
    run = sess.make_callable(graph.get_operation_by_name(saver.saver_def.restore_op_name),
                             [graph.get_tensor_by_name(saver.saver_def.filename_tensor_name)])
    failure = []

    def restore():
        try:
            run(str(model_dir / checkpoint.current_checkpoint(model_dir)))
        except tf.errors.OpError as err:
            failure.append(error_reason(err))

    thread = threading.Thread(target=restore, name='restore', daemon=True)
    thread.start()

    def wait():
        thread.join()
        if failure:
            raise checkpoint.ModelError(f'cannot restore the checkpoint in {model_dir} ({failure[0]}); '
                                        f'{checkpoint.download_hint(model_dir.name)}')
    return wait


# ---------------------------------------------------------------------------------------------------------------
# Printing samples
# ---------------------------------------------------------------------------------------------------------------

def sample_header(number):
    return '=' * 40 + f' SAMPLE {number} ' + '=' * 40


def sample_text(enc, tokens, stop_token=None):
    """Decode one sample's new tokens, ending before the first stop_token if one is given."""
    tokens = list(tokens)
    if stop_token is not None and stop_token in tokens:
        tokens = tokens[:tokens.index(stop_token)]
    return enc.decode(tokens)


class SamplePrinter:
    """Prints samples as the original scripts did: a header line, then the text.

    With batch size 1 the text is printed token by token as the sampling loop draws it (on_token is called from
    inside the graph), so a long sample shows progress. Tokens can end inside a multi-byte UTF-8 character, so
    the bytes go through an incremental decoder. Larger batches are printed when the batch is done.
    """

    def __init__(self, enc, stop_token=None):
        self.enc = enc
        self.stop_token = stop_token
        self.streaming = False
        self.decoder = None

    def start_stream(self, number):
        """Announce sample `number`, whose tokens will arrive through on_token."""
        print(sample_header(number), flush=True)
        self.streaming = True
        self.decoder = codecs.getincrementaldecoder('utf-8')(errors=self.enc.errors)

    def on_token(self, tokens):
        """The sampling loop's callback: one step's tokens, [batch]."""
        if not self.streaming:
            return
        token = int(tokens[0])
        if token == self.stop_token:
            self.streaming = False
            return
        sys.stdout.write(self.decoder.decode(self.enc.decode_bytes([token])))
        sys.stdout.flush()

    def end_stream(self):
        if self.decoder is not None:
            print(self.decoder.decode(b'', final=True), flush=True)
        self.streaming, self.decoder = False, None

    def print_sample(self, number, tokens):
        print(sample_header(number))
        print(sample_text(self.enc, tokens, self.stop_token), flush=True)


def print_samples(run_batch, printer, *, nsamples, batch_size):
    """Print nsamples samples (0: forever), numbered 1, 2, 3 ... without gaps, in batches of at most batch_size.

    run_batch(n) returns the new tokens [n, length] of n samples; the last batch is only as large as the samples
    still wanted. The scripts' graphs have a fixed batch size, because the fast paths of sampling at batch > 1
    (packed weights, attention split in two) need it; a smaller last batch is sampled at the full batch size and
    only its first n rows kept, and a last batch of one is streamed from its first row.
    """
    number = 0
    while nsamples == 0 or number < nsamples:
        rows = batch_size if nsamples == 0 else min(batch_size, nsamples - number)
        if rows == 1:
            printer.start_stream(number + 1)
            run_batch(1)
            printer.end_stream()
            number += 1
            continue
        for tokens in run_batch(rows):
            number += 1
            printer.print_sample(number, tokens)
