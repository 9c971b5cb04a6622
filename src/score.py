#!/usr/bin/env python3
"""Score text with GPT-2: per-token log-probabilities, perplexity, bits per byte of files (see gpt2/evaluation/scoring.py)."""
import codecs
import json
import math
import os
import signal
import sys
from pathlib import Path

import fire
import tqdm

from gpt2.base import runtime

tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
from gpt2 import loading  # noqa: E402
from gpt2.base import checkpoint  # noqa: E402
from gpt2.base import flags  # noqa: E402
from gpt2.data import corpus  # noqa: E402
from gpt2.evaluation import detokenize  # noqa: E402
from gpt2.evaluation import scoring  # noqa: E402

DOCUMENTS = ('file', 'endoftext', 'lines')
BLOCK_SIZE = corpus.BLOCK_SIZE  # bytes read at a time
BINARY_SNIFF = 8192  # a NUL byte in a file's first bytes marks it as binary, as git and grep judge it


class FileProblem(Exception):
    """A file that cannot be scored: the message names it and says what to do."""


# ---------------------------------------------------------------------------------------------------------------
# Reading documents
# ---------------------------------------------------------------------------------------------------------------

def check_file(path):
    """Fail early, before the model loads, on a file that is missing, unreadable, empty or binary."""
    try:
        with open(path, 'rb') as f:
            head = f.read(BINARY_SNIFF)
    except OSError as err:
        raise FileProblem(f'cannot read {path} ({err.strerror or err}); check that it is a readable text file')
    if not head:
        raise FileProblem(f'{path} is empty; give a file with text to score')
    if b'\0' in head:
        raise FileProblem(f'{path} looks binary (it has NUL bytes); give a UTF-8 text file')


def text_blocks(path, progress):
    """The text of a UTF-8 file in blocks of about BLOCK_SIZE bytes."""
    decoder = codecs.getincrementaldecoder('utf-8')()
    offset = 0
    try:
        with open(path, 'rb') as f:
            while True:
                block = f.read(BLOCK_SIZE)
                try:
                    text = decoder.decode(block, final=not block)
                except UnicodeDecodeError as err:
                    raise FileProblem(f'{path} is not UTF-8 text (near byte {offset + max(err.start, 0)}); '
                                      f'convert it to UTF-8') from None
                offset += len(block)
                progress.update(len(block))
                if text:
                    yield text
                if not block:
                    return
    except OSError as err:
        raise FileProblem(f'cannot read {path} ({err.strerror or err}); check that it is a readable text file')


def split_blocks(blocks, separator):
    """Blocks of text -> the texts between separators (including a last one after the final separator)."""
    pending = ''
    for block in blocks:
        parts = (pending + block).split(separator)
        pending = parts.pop()
        yield from parts
    yield pending


def recut(blocks, last_cut):
    """Blocks of text -> pieces cut where last_cut(text) (an index, 0 for none) says, the rest carried on."""
    pending = ''
    for block in blocks:
        pending += block
        cut = last_cut(pending)
        if cut:
            yield pending[:cut]
            pending = pending[cut:]
    if pending:
        yield pending


def last_line_start(text):
    match = None
    for match in detokenize.LINE_START.finditer(text, max(0, len(text) - BLOCK_SIZE)):
        pass
    return match.start() if match else 0


class Counts:
    """The counts of a text as given: bytes (UTF-8), characters, whitespace-separated words."""

    def __init__(self):
        self.bytes = self.characters = self.words = 0
        self.in_word = False  # the text so far ends inside a word: a word may go on in the next piece

    def add(self, text):
        if not text:
            return
        self.bytes += len(text.encode('utf-8', 'surrogatepass'))
        self.characters += len(text)
        self.words += len(text.split()) - (self.in_word and not text[0].isspace())
        self.in_word = not text[-1].isspace()


class Reader:
    """A file's documents as (key, token chunks) pairs for scoring.score_documents, counting their text."""

    def __init__(self, enc, *, documents, detokenizer, progress):
        self.enc = enc
        self.documents = documents
        self.detokenizer = detokenizer
        self.progress = progress

    def encode(self, text):
        return self.enc.encode(detokenize.detokenize(text, self.detokenizer), fast=True)

    def file_chunks(self, blocks):
        """One document as it streams: blocks (cut at line starts when de-tokenizing) are cut again where BPE
        gives the same ids to the pieces as to the whole text (corpus.last_cut), and encoded one by one."""
        if self.detokenizer != 'none':
            blocks = (detokenize.detokenize(b, self.detokenizer) for b in recut(blocks, last_line_start))
        for piece in recut(blocks, corpus.last_cut):
            yield self.enc.encode(piece, fast=True)

    def read(self, file_index, path, counts):
        """Yields ((file_index, document index), chunks) for each document of the file with text; counts gets
        the counts of the text as given."""
        blocks = text_blocks(path, self.progress)
        if self.documents == 'file':
            yield (file_index, 0), self.file_chunks(counted(blocks, counts))
            return
        separator = checkpoint.ENDOFTEXT if self.documents == 'endoftext' else '\n'
        index = 0
        for text in split_blocks(blocks, separator):
            if self.documents == 'lines':
                text = text.removesuffix('\r')
            if not text:
                continue
            counts.add(text)
            counts.in_word = False
            yield (file_index, index), [self.encode(text)]
            index += 1


def counted(blocks, counts):
    for block in blocks:
        counts.add(block)
        yield block


# ---------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------

class Totals:
    def __init__(self, path=None):
        self.path = path
        self.tokens, self.nll = 0, 0.0
        self.counts = Counts()

    def figures(self):
        """The figures of --json: nll in nats; bits per byte and per character from the same nll."""
        c, bits = self.counts, self.nll / math.log(2)
        ratio = lambda a, b: a / b if b else None
        return {'tokens': self.tokens, 'nll': self.nll, 'perplexity': math.exp(self.nll / self.tokens),
                'bytes': c.bytes, 'bits_per_byte': ratio(bits, c.bytes), 'characters': c.characters,
                'bits_per_character': ratio(bits, c.characters), 'words': c.words,
                'word_perplexity': math.exp(self.nll / c.words) if c.words else None}


def summary_line(name, figures):
    word = f"{figures['word_perplexity']:.4g}" if figures['word_perplexity'] is not None else '-'
    bpb = f"{figures['bits_per_byte']:.4f}" if figures['bits_per_byte'] is not None else '-'
    return (f"{name}: {figures['tokens']} tokens, perplexity {figures['perplexity']:.4g}, bits per byte {bpb}, "
            f"word perplexity {word} ({figures['words']} words)")


def add_totals(parts):
    total = Totals()
    for part in parts:
        total.tokens += part.tokens
        total.nll += part.nll
        for name in ('bytes', 'characters', 'words'):
            setattr(total.counts, name, getattr(total.counts, name) + getattr(part.counts, name))
    return total


# ---------------------------------------------------------------------------------------------------------------
# Per-token output
# ---------------------------------------------------------------------------------------------------------------

class PerTokenWriter:
    """--per_token: one JSON line per document, written to a temporary name and renamed once all is done."""

    def __init__(self, path, enc):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + checkpoint.PARTIAL_SUFFIX)
        self.enc = enc
        try:
            self.file = open(self.partial, 'w', encoding='utf-8')
        except OSError as err:
            raise flags.UsageError(f'--per_token cannot write {self.path} ({err.strerror or err}); '
                                   f'give a path in a writable folder')
        self.ids, self.logprobs = [], []
        # Ctrl-C ends the process at once (runtime.setup_process); first remove what was half written.
        self.previous_handler = signal.signal(signal.SIGINT, self.interrupted)

    def interrupted(self, signum, frame):
        self.partial.unlink(missing_ok=True)
        os._exit(128 + signum)

    def add(self, path, document, ids, logprobs, last):
        self.ids.extend(int(t) for t in ids)
        self.logprobs.extend(float(x) for x in logprobs)
        if last:
            tokens = [self.enc.token_bytes(t).decode('utf-8', 'replace') for t in self.ids]
            line = {'path': str(path), 'document': document, 'ids': self.ids, 'tokens': tokens,
                    'logprobs': self.logprobs}
            self.file.write(json.dumps(line, ensure_ascii=False) + '\n')
            self.ids, self.logprobs = [], []

    def finish(self):
        self.file.close()
        os.replace(self.partial, self.path)
        signal.signal(signal.SIGINT, self.previous_handler)

    def abandon(self):
        self.file.close()
        self.partial.unlink(missing_ok=True)
        signal.signal(signal.SIGINT, self.previous_handler)


# ---------------------------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------------------------

def check_flags(files, *, documents, stride, batch_size, detokenizer):
    if not files:
        raise flags.UsageError('give at least one text file to score, e.g. python src/score.py some.txt')
    if documents not in DOCUMENTS:
        raise flags.UsageError(f'--documents must be one of {", ".join(DOCUMENTS)}, got {documents!r}')
    if detokenizer not in detokenize.DETOKENIZERS:
        raise flags.UsageError(f'--detokenizer must be one of {", ".join(detokenize.DETOKENIZERS)}, '
                               f'got {detokenizer!r}')
    flags.whole_number('stride', stride, 1, allow_none=True)
    flags.whole_number('batch_size', batch_size, 1, allow_none=True)


def score_files(scorer, enc, paths, *, documents, stride, batch_size, detokenizer, per_token):
    """-> a Totals per file, after scoring every document of every file; per_token gets each document."""
    progress = tqdm.tqdm(total=sum(os.path.getsize(p) for p in paths), unit='B', unit_scale=True, desc='score',
                         file=sys.stderr, disable=None)
    totals = [Totals(p) for p in paths]
    reader = Reader(enc, documents=documents, detokenizer=detokenizer, progress=progress)
    docs = (doc for n, p in enumerate(paths) for doc in reader.read(n, p, totals[n].counts))
    results = scoring.score_documents(scorer.score, docs, first=enc.encoder[checkpoint.ENDOFTEXT],
                                      n_ctx=scorer.hparams.n_ctx, stride=stride, batch_size=batch_size)
    with progress:
        for (n, document), ids, logprobs, last in results:
            totals[n].tokens += len(ids)
            totals[n].nll -= float(logprobs.sum())
            if per_token:
                per_token.add(paths[n], document, ids, logprobs, last)
    for t in totals:
        if t.tokens == 0:
            raise FileProblem(f'{t.path} has no text to score (every document is empty)')
    return totals


@flags.script(
    'Score text files with GPT-2: perplexity, bits per byte, per-token log-probabilities.',
    files='the UTF-8 text files to score.',
    documents="how files are cut into documents, each scored from <|endoftext|> as its context: 'file' "
              "(default; each file is one), 'endoftext' (split at a literal <|endoftext|>) or 'lines' (each "
              "non-empty line).",
    stride="tokens each window moves on by, 1 to the model's window; a token sees at least window + 1 - "
           "stride tokens before it. Default: the window (disjoint windows, as lm-evaluation-harness).",
    batch_size='windows scored at once; default: as many as 1 GiB of activations holds (10 windows at 124M).',
    json='print one JSON object: {"files": [{"path": ..., FIGURES}], "total": {FIGURES}}.',
    per_token='write one JSON line per document to this file: path, document, ids, tokens, logprobs.',
    detokenizer="undo a corpus's tokenised spelling before scoring: none (default), wikitext or ptb; "
                "counts are of the text as given.")
def score(*files, model_name='124M', models_dir='models', documents='file', stride=None, batch_size=None,
          json=False, per_token=None, detokenizer='none', checkpoint='latest'):
    check_flags(files, documents=documents, stride=stride, batch_size=batch_size, detokenizer=detokenizer)
    paths = [str(f) for f in files]
    try:
        for path in paths:
            check_file(path)
    except FileProblem as err:
        flags.fail(err, code=1)
    model_dir, hparams, enc = loading.load_model(model_name, models_dir, checkpoint)
    stride = hparams.n_ctx if stride is None else flags.whole_number('stride', stride, 1, hparams.n_ctx)
    batch_size = batch_size or scoring.default_batch_size(hparams)
    writer = PerTokenWriter(per_token, enc) if per_token else None
    try:
        with tf.Graph().as_default(), tf.Session(config=scoring.session_config()) as sess:
            restored = loading.start_restore(sess, model_dir, hparams)
            scorer = scoring.Scorer(sess, hparams)
            restored()
            totals = score_files(scorer, enc, paths, documents=documents, stride=stride, batch_size=batch_size,
                                 detokenizer=detokenizer, per_token=writer)
    except FileProblem as err:
        writer and writer.abandon()
        flags.fail(err, code=1)
    except BaseException:
        writer and writer.abandon()
        raise
    writer and writer.finish()
    print_figures(totals, as_json=json)


def print_figures(totals, *, as_json):
    total = add_totals(totals)
    if as_json:
        print(json.dumps({'files': [{'path': t.path, **t.figures()} for t in totals],
                            'total': total.figures()}))
        return
    for t in totals:
        print(summary_line(t.path, t.figures()))
    if len(totals) > 1:
        print(summary_line('total', total.figures()))


if __name__ == '__main__':
    runtime.setup_process()
    fire.Fire(score, command=flags.check_argv(score))
