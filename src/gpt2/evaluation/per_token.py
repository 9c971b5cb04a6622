"""src/score.py --per_token: one JSON line per document (path, document, ids, tokens, logprobs), in a file that
appears only once every document is scored (atomic.atomic_file), and is not left half-written by Ctrl-C."""
import contextlib
import json
import os
import signal
from pathlib import Path

from gpt2.base import atomic
from gpt2.base import flags


class PerTokenWriter:
    """Gathers a document's windows (scoring.score_documents yields a document in several) into its one line."""

    def __init__(self, file, enc):
        self.file = file
        self.enc = enc
        self.ids, self.logprobs = [], []

    def add(self, path, document, ids, logprobs, last):
        self.ids.extend(int(t) for t in ids)
        self.logprobs.extend(float(x) for x in logprobs)
        if last:
            tokens = [self.enc.token_bytes(t).decode('utf-8', 'replace') for t in self.ids]
            line = {'path': str(path), 'document': document, 'ids': self.ids, 'tokens': tokens,
                    'logprobs': self.logprobs}
            self.file.write(json.dumps(line, ensure_ascii=False) + '\n')
            self.ids, self.logprobs = [], []


@contextlib.contextmanager
def writer(path, enc):
    """Yield a PerTokenWriter of the file path (None without a path); the file appears when the block ends without
    an error, and nothing does otherwise. A file that cannot be opened is a flag error."""
    if not path:
        yield None
        return
    opened = False
    try:
        with atomic.atomic_file(path) as f:
            opened = True
            with partial_removed_on_ctrl_c(Path(f.name)):
                yield PerTokenWriter(f, enc)
    except OSError as err:
        if opened:
            raise
        raise flags.UsageError(f'--per_token cannot write {path} ({err.strerror or err}); '
                               f'give a path in a writable folder') from None


@contextlib.contextmanager
def partial_removed_on_ctrl_c(partial):
    """Ctrl-C ends the process at once (runtime.setup_process: TensorFlow would not return to Python for a
    KeyboardInterrupt until a batch is done); while this block runs, it first removes the file being written."""
    def interrupted(signum, frame):
        partial.unlink(missing_ok=True)
        os._exit(128 + signum)

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
