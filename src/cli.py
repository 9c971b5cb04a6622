"""What the two sampling scripts share: process set-up, flag checks, loading a model, printing samples.

Import this module before TensorFlow: it loads TensorFlow without its start-up log lines
(checkpoint.import_tensorflow).
"""
import codecs
import signal
import sys
import threading
from pathlib import Path

import checkpoint
import flags

tf = checkpoint.import_tensorflow()
import encoder  # noqa: E402  (these import TensorFlow, which must be loaded quietly first)
import model  # noqa: E402
import penalties  # noqa: E402
import stops as stops_lib  # noqa: E402


def setup_process():
    """Ctrl-C and a closed pipe end the process at once and quietly, as for any command-line tool: TensorFlow
    runs the sampling loop without returning to Python, so a Python KeyboardInterrupt would wait for the whole
    batch. Text that the terminal or pipe cannot encode is replaced, not fatal, and so is invalid UTF-8 read."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.stdout.reconfigure(errors='replace')
    sys.stdin.reconfigure(errors='replace')
    tf.disable_v2_behavior()


# ---------------------------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------------------------

def check_sampling_flags(*, nsamples, batch_size, temperature, top_k, top_p, seed, min_nsamples=0):
    """-> the batch size to build the sampling graph with: never more rows than samples wanted (nsamples 0 wants
    them forever), since every batch is sampled at that size (see print_samples)."""
    flags.whole_number('nsamples', nsamples, min_nsamples)
    flags.whole_number('batch_size', batch_size, 1)
    flags.number('temperature', temperature, 0, float('inf'), what='a number, 0 or more (0 means greedy)')
    flags.whole_number('top_k', top_k, 0)
    flags.number('top_p', top_p, 0, 1, low_open=True, what='a number above 0 and at most 1 (1 keeps every token)')
    flags.whole_number('seed', seed, 0, 2**32 - 1, allow_none=True)  # NumPy's seeds are 32-bit
    return min(batch_size, nsamples) if nsamples else batch_size


def check_stops(stop):
    """--stop: None, one string or a list of them (see gather_repeated) -> a list of stop strings, with \\n and
    \\t in them standing for a newline and a tab (which a shell makes hard to type), and \\\\ for a backslash."""
    if stop is None:
        return []
    values = list(stop) if isinstance(stop, (list, tuple)) else [stop]
    texts = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise flags.UsageError(f'--stop must be text, got {value!r}')
        text = unescape(str(value))
        if not text:
            raise flags.UsageError('--stop must not be empty: give the text a sample ends at, e.g. --stop "\\n\\n"')
        texts.append(text)
    return texts


def unescape(text):
    """\\n -> newline, \\t -> tab, \\\\ -> backslash; any other backslash stays as typed."""
    out, i = [], 0
    while i < len(text):
        pair = text[i:i + 2]
        if pair in ('\\n', '\\t', '\\\\'):
            out.append({'\\n': '\n', '\\t': '\t', '\\\\': '\\'}[pair])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return ''.join(out)


def gather_repeated(argv, name):
    """argv with every --name VALUE and --name=VALUE gathered into one --name=[...] at the first's place, so that
    a flag may be repeated (fire keeps only the last) and each value stays text (fire would read 5 as a number)."""
    flag, values, out, first = f'--{name}', [], [], None
    args = iter(argv)
    for arg in args:
        if arg == flag:
            value = next(args, None)
            if value is None:
                out.append(arg)
                continue
        elif arg.startswith(flag + '='):
            value = arg[len(flag) + 1:]
        else:
            out.append(arg)
            continue
        values.append(value)
        if first is None:
            first = len(out)
            out.append(None)
    if first is not None:
        out[first] = f'{flag}={values!r}'
    return out


def check_penalties(*, repetition_penalty, presence_penalty, frequency_penalty, no_repeat_ngram_size):
    """-> the penalties.Penalties of the flags (all off by default)."""
    big = 1e30  # finite: inf or nan would make every logit nan
    for name, value in (('repetition_penalty', repetition_penalty), ('presence_penalty', presence_penalty),
                        ('frequency_penalty', frequency_penalty)):
        if isinstance(value, float) and value != value:
            raise flags.UsageError(f'--{name} must be a number, got nan')
    return penalties.Penalties(
        repetition=flags.number('repetition_penalty', repetition_penalty, 0, big, low_open=True,
                                what='a number above 0 (1 is off; above 1 penalises repeats)'),
        presence=flags.number('presence_penalty', presence_penalty, -big, big, what='a finite number (0 is off)'),
        frequency=flags.number('frequency_penalty', frequency_penalty, -big, big,
                               what='a finite number (0 is off)'),
        no_repeat_ngram=flags.whole_number('no_repeat_ngram_size', no_repeat_ngram_size, 0))


def check_length(length, n_ctx, *, default, room_for_prompt=False):
    """length defaults to `default`; 1 or more: past the window, the model goes on from the last tokens
    (check_context_keep)."""
    if length is None:
        return default
    return flags.whole_number('length', length, 1)


def check_context_keep(context_keep, n_ctx):
    """--context_keep: by default half the window; 1 to the window."""
    if context_keep is None:
        return n_ctx // 2
    return flags.whole_number('context_keep', context_keep, 1, n_ctx)


# ---------------------------------------------------------------------------------------------------------------
# Loading a model
# ---------------------------------------------------------------------------------------------------------------

class ModelFolder(type(Path())):
    """A model folder's path that also names the checkpoint in it to load (checkpoint_name)."""
    checkpoint_name = None


def load_model(model_name, models_dir, which='latest'):
    """-> (model_dir, hparams, encoder), after checking that the folder holds a complete, consistent model.
    which: the --checkpoint flag, latest, best or a step (checkpoint.choose_checkpoint); start_restore restores
    that one."""
    flags.folder_name('model_name', model_name)
    if isinstance(which, str) and which.isdecimal():
        which = int(which)  # a step given as text: lm_eval's --model_args, or Python callers
    if not (which in ('latest', 'best') or (isinstance(which, int) and not isinstance(which, bool) and which >= 0)):
        raise flags.UsageError(f'--checkpoint must be latest, best or a step (a whole number), got {which!r}')
    models_dir = checkpoint.resolve_models_dir(models_dir)
    model_dir = ModelFolder(models_dir / model_name)
    if not models_dir.is_dir():
        raise checkpoint.ModelError(f'models folder {models_dir} not found; {checkpoint.download_hint(model_name)}')
    if which != 'latest' and model_dir.is_dir():
        model_dir.checkpoint_name = checkpoint.choose_checkpoint(model_dir, which)
    hparams = model.default_hparams().override_from_dict(
        checkpoint.check_model_dir(model_dir, model_name, model_dir.checkpoint_name))
    enc = encoder.read_vocabulary(model_dir)
    if max(enc.encoder.values()) >= hparams.n_vocab:
        raise checkpoint.ModelError(f'encoder.json in {model_dir} does not fit the model (it needs ids below '
                                    f'n_vocab {hparams.n_vocab}); '
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
            run(str(model_dir / (getattr(model_dir, 'checkpoint_name', None)
                                 or checkpoint.current_checkpoint(model_dir))))
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


def sample_text(enc, tokens, stop_token=None, stops=()):
    """Decode one sample's new tokens, ending before the first stop_token if one is given, and before the first
    of the stop strings."""
    tokens = list(tokens)
    if stop_token is not None and stop_token in tokens:
        tokens = tokens[:tokens.index(stop_token)]
    return stops_lib.cut(enc.decode(tokens), stops)


class SamplePrinter:
    """Prints samples as the original scripts did: a header line, then the text.

    With batch size 1 the text is printed token by token as the sampling loop draws it (on_token is called from
    inside the graph), so a long sample shows progress. Tokens can end inside a multi-byte UTF-8 character, so
    the bytes go through an incremental decoder. Larger batches are printed when the batch is done.
    """

    def __init__(self, enc, stop_token=None, stops=()):
        self.enc = enc
        self.stop_token = stop_token
        self.stops = list(stops)
        self.streaming = False
        self.decoder = None
        self.cut = None

    def start_stream(self, number):
        """Announce sample `number`, whose tokens will arrive through on_token."""
        print(sample_header(number), flush=True)
        self.streaming = True
        self.decoder = codecs.getincrementaldecoder('utf-8')(errors=self.enc.errors)
        self.cut = stops_lib.StreamCut(self.stops)

    def on_token(self, tokens):
        """The sampling loop's callback: one step's tokens, [batch]."""
        if not self.streaming:
            return
        token = int(tokens[0])
        if token == self.stop_token:
            self.streaming = False
            return
        sys.stdout.write(self.cut.feed(self.decoder.decode(self.enc.decode_bytes([token]))))
        sys.stdout.flush()
        if self.cut.stopped:
            self.streaming = False

    def end_stream(self):
        if self.decoder is not None:
            print(self.cut.feed(self.decoder.decode(b'', final=True)) + self.cut.finish(), flush=True)
        self.streaming, self.decoder, self.cut = False, None, None

    def print_sample(self, number, tokens):
        print(sample_header(number))
        print(sample_text(self.enc, tokens, self.stop_token, self.stops), flush=True)

    def stop_arrays(self, n_vocab):
        """-> sample_sequence's stops and token_bytes for the stop strings (both None without any)."""
        if not self.stops:
            return {}
        return {'stops': stops_lib.stop_array(self.stops), 'token_bytes': stops_lib.token_bytes(self.enc, n_vocab)}


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
