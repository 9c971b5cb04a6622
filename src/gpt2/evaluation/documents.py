"""The documents of the text files src/score.py scores, read as they stream (a file larger than memory is fine),
and the counts of their text as given (bytes, characters, words), which the figures per byte and per word use.

A file is one document, or is cut at each literal <|endoftext|>, or at each line (DOCUMENTS). A document's text
arrives in blocks of about BLOCK_SIZE bytes; blocks are cut again where BPE gives the pieces the ids it gives the
whole text (corpus.last_cut), so the ids are those of the document encoded at once.
"""
import codecs

from gpt2.base import checkpoint
from gpt2.data import corpus
from gpt2.evaluation import detokenize

DOCUMENTS = ('file', 'endoftext', 'lines')
BLOCK_SIZE = corpus.BLOCK_SIZE  # bytes read at a time
BINARY_SNIFF = 8192  # a NUL byte in a file's first bytes marks it as binary, as git and grep judge it


class FileProblem(Exception):
    """A file that cannot be scored: the message names it and says what to do."""


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
    """The text of a UTF-8 file in blocks of about BLOCK_SIZE bytes; progress (a tqdm bar) counts the bytes."""
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
    """The index of the last line start in text's last BLOCK_SIZE characters, 0 for none: where text may be cut
    into pieces that are de-tokenized one at a time (see detokenize.LINE_START)."""
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
    """The blocks, unchanged, each added to counts as it passes."""
    for block in blocks:
        counts.add(block)
        yield block
