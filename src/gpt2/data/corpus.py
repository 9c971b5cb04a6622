"""Fine-tuning data: text files, folders, globs or pre-encoded .npz files -> chunks of token ids, and random
training windows from those chunks.

A dataset is a list of chunks (1-D arrays of token ids). Each text file is one document; a document ends with
the <|endoftext|> token (its id, never its text), and documents are gathered into chunks of at least `combine`
characters, as nshepperd's load_dataset did. A .npz (written by src/encode.py, nshepperd's encode.py or
gpt-2-simple) holds one chunk per array. Training windows never cross a chunk boundary.

Text is read and encoded in pieces (see CUT), so a file larger than memory can be encoded with memory bounded by
its tokens, not its text. (Only a stretch of text with neither whitespace between words nor ASCII punctuation after
a letter or digit is held whole.)
"""
import codecs
import glob
import os
import zipfile
from pathlib import Path

import numpy as np
import regex
import tqdm

from gpt2.base import checkpoint

# Bytes read at a time. A piece of text is encoded at once, so this bounds the text held in memory.
BLOCK_SIZE = 1 << 20

# Where text may be cut into pieces that are encoded one at a time with the same ids as the whole text. GPT-2's
# pre-tokenizer (encoder.PRETOKENIZE) cuts text into pre-tokens that BPE never merges across; a cut is safe where
# the whole text has a pre-token boundary and the pre-tokens on each side come out the same from each piece alone.
# Two kinds of place, written as the character that starts the second piece:
# 1. The last character of a run of spaces, tabs and line breaks that has a letter, mark, digit, punctuation or
#    symbol on each side ("word| Word", "end.\r|\nNext", "one  | two"):
#    - no pre-token runs from a non-space character into the whitespace after it (`' ?'` lets a pre-token hold a
#      space only at its start), so the run starts a new pre-token;
#    - `\s+(?!\S)` takes all of the run but its last character (followed by a non-space), in the whole text and
#      at the end of the first piece alike. Cutting AFTER the run would be wrong: at the end of a piece, "x \n"
#      is one pre-token " \n", but followed by "Y" it is " " then "\n";
#    - the last character starts the next pre-token (" Word", or "\n" then "Word"), which depends only on what
#      follows it.
#    The characters around the run are ones that no definition of whitespace includes (every engine agrees on
#    them, unlike '\x1c' or '\x85').
# 2. An ASCII punctuation mark or symbol after an ASCII letter or digit ("abc|.def", "x|'s", "12|,5"): runs of
#    letters and of digits end at punctuation, and punctuation starts a pre-token of its own (or a contraction).
#    ASCII only, because which other characters are letters depends on the Unicode tables of the installed
#    `regex`. This lets text without whitespace (minified code, base64) be cut too.
#    Not before '|': "<|endoftext|>" must stay whole, and 't|' is the only such place in it (it has no spaces).
CUT = regex.compile(r"(?|[\p{L}\p{M}\p{N}\p{P}\p{S}][ \t\r\n]*([ \t\r\n])[\p{L}\p{M}\p{N}\p{P}\p{S}]"
                    r"|[A-Za-z0-9]([!-/:-@\[-`{}~]))", flags=regex.REVERSE)
WHITESPACE = ' \t\r\n'  # the whitespace of CUT

NPZ_SUFFIX = '.npz'


class DatasetError(Exception):
    """A dataset that is missing, empty or cannot be read. The message says what to do."""


# ---------------------------------------------------------------------------------------------------------------
# Finding the files
# ---------------------------------------------------------------------------------------------------------------

def dataset_files(path):
    """A file, a folder (its files, recursively, in sorted order; hidden ones such as .git are skipped) or a glob
    -> the list of files, or DatasetError if there are none."""
    path = str(path)
    if os.path.isfile(path):
        return [Path(path)]
    if os.path.isdir(path):
        files = folder_files(Path(path))
        if not files:
            raise DatasetError(f'dataset folder {path} holds no files; put text files (or .npz files) in it')
        return files
    if not any(c in path for c in '*?['):
        raise DatasetError(f'dataset {path} not found; pass a text file, a folder, a glob or a .npz')
    files = []
    for match in sorted(glob.glob(path, recursive=True)):
        files.extend(folder_files(Path(match)) if os.path.isdir(match) else [Path(match)])
    if not files:
        raise DatasetError(f'no file matches the dataset pattern {path}; check the pattern (quote it in the shell)')
    return files


def folder_files(folder):
    return sorted(p for p in folder.rglob('*')
                  if p.is_file() and not any(part.startswith('.') for part in p.relative_to(folder).parts))


def check_encoding(encoding):
    """-> the codec's name; ValueError with a message naming the flag if Python has no such text encoding."""
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise ValueError(f'--encoding must name a text encoding such as utf-8 or latin-1, got {encoding!r}') from None


def token_dtype(vocab_size):
    """The smallest dtype for token ids: uint16 for GPT-2's 50257 tokens, as nshepperd's and gpt-2-simple's
    .npz files hold them."""
    return np.uint16 if vocab_size <= 1 << 16 else np.int32


# ---------------------------------------------------------------------------------------------------------------
# Encoding text
# ---------------------------------------------------------------------------------------------------------------

def encode_text(enc, text):
    """Text -> token ids, a literal <|endoftext|> becoming its token rather than five tokens of punctuation.
    Always the bulk path (tiktoken, where it gives the same ids): a corpus of many small files would otherwise
    stay on the readable BPE, several times slower."""
    return enc.encode(text, allowed_special={checkpoint.ENDOFTEXT}, fast=True)


def last_cut(text, start=0):
    """-> the index of the last place in text[start:] where text may be cut (see CUT), or 0 if there is none."""
    match = CUT.search(text, start)
    return match.start(1) if match else 0


def text_pieces(path, encoding, progress):
    """The text of a file in pieces of about BLOCK_SIZE that can be encoded one at a time (see CUT)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    pending, offset = '', 0
    with open(path, 'rb') as f:
        while True:
            block = f.read(BLOCK_SIZE)
            # A cut needs a character of the new text, and the non-space character before it (see CUT), so a
            # text without cuts is searched once, not once per block.
            search_from = max(len(pending.rstrip(WHITESPACE)) - 1, 0)
            try:
                pending += decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                raise DatasetError(f'{path} is not valid {encoding} (near byte {offset + max(err.start, 0)}); '
                                   f'pass --encoding with the encoding of the file, e.g. latin-1') from None
            offset += len(block)
            progress.update(len(block))
            if not block:
                break
            cut = last_cut(pending, search_from)
            if cut:
                yield pending[:cut]
                pending = pending[cut:]
    if pending:
        yield pending


def file_tokens(enc, path, encoding, dtype, endoftext, progress):
    """Yields the tokens of a text file as arrays, one per piece of text, then <|endoftext|> unless the text
    ended with it. -> the number of characters (0 for a file without text, which yields nothing)."""
    characters, last = 0, None
    try:
        for piece in text_pieces(path, encoding, progress):
            tokens = np.asarray(encode_text(enc, piece), dtype=dtype)
            characters += len(piece)
            progress.show()
            yield tokens
            last = tokens[-1]
    except OSError as err:
        raise DatasetError(f'cannot read {path} ({err.strerror or err}); check that it is a readable file') from None
    if last is not None and last != endoftext:
        yield np.array([endoftext], dtype=dtype)
    return characters


# ---------------------------------------------------------------------------------------------------------------
# Pre-encoded .npz files
# ---------------------------------------------------------------------------------------------------------------

def npz_chunks(path, vocab_size, dtype):
    """The arrays of a .npz, each a chunk, in the order they were written; checked to be token ids."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                chunk = npz[name]
                check_tokens(chunk, path, name, vocab_size)
                if chunk.size:
                    yield chunk.astype(dtype, copy=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DatasetError(f'cannot read {path} as a .npz of token ids ({err}); encode the text again with '
                           f'src/encode.py') from None


def check_tokens(chunk, path, name, vocab_size):
    if chunk.ndim != 1 or not np.issubdtype(chunk.dtype, np.integer):
        raise DatasetError(f'{path}: array {name} is not a list of token ids ({chunk.dtype}, shape {chunk.shape}); '
                           f'encode the text again with src/encode.py')
    if chunk.size and (chunk.min() < 0 or chunk.max() >= vocab_size):
        raise DatasetError(f'{path}: array {name} holds ids outside the vocabulary of {vocab_size} tokens; was it '
                           f'encoded for another model? Encode the text again with src/encode.py')


# ---------------------------------------------------------------------------------------------------------------
# Chunks
# ---------------------------------------------------------------------------------------------------------------

class Progress:
    """The bytes of a dataset read so far, on a progress bar that shows only once the dataset has given its
    first tokens: a dataset with nothing in it (empty files, a .npz of empty arrays) prints its error line alone."""

    def __init__(self, total):
        self.total, self.done, self.bar = total, 0, None

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def show(self):
        if self.bar is None:
            self.bar = tqdm.tqdm(total=self.total, initial=self.done, unit='B', unit_scale=True, desc='dataset')

    def close(self):
        if self.bar is not None:
            self.bar.close()


def token_stream(enc, files, *, combine, encoding):
    """Every file's tokens, as arrays, with None after the last array of each chunk.

    Text files are gathered into chunks of at least `combine` characters; each file's tokens end with the
    <|endoftext|> token (unless its text already ends with a literal one). Each array of a .npz is a chunk of its
    own. Streamed, so that src/encode.py can write a chunk that does not fit in memory.
    """
    endoftext = enc.encoder[checkpoint.ENDOFTEXT]
    vocab_size = len(enc.encoder)
    dtype = token_dtype(vocab_size)
    characters = 0  # of the text files in the chunk being gathered
    total = sum(os.path.getsize(f) for f in files)
    progress = Progress(total)
    try:
        for path in files:
            if path.suffix == NPZ_SUFFIX:
                if characters:
                    yield None
                    characters = 0
                for chunk in npz_chunks(path, vocab_size, dtype):
                    progress.show()
                    yield chunk
                    yield None
                progress.update(os.path.getsize(path))
                continue
            characters += yield from file_tokens(enc, path, encoding, dtype, endoftext, progress)
            if characters and characters >= combine:
                yield None
                characters = 0
    finally:
        progress.close()
    if characters:
        yield None


def load_dataset(enc, path, *, combine=50000, encoding='utf-8'):
    """A dataset (a text file, a folder, a glob or a .npz; see the module's docstring) -> its chunks, 1-D arrays
    of token ids (uint16 for GPT-2's vocabulary). DatasetError if it is missing, unreadable or holds no tokens."""
    try:
        encoding = check_encoding(encoding)
    except ValueError as err:
        raise DatasetError(err) from None
    chunks, pieces = [], []
    for array in token_stream(enc, dataset_files(path), combine=combine, encoding=encoding):
        if array is None:
            # A chunk of a .npz comes whole; copying it would double the memory a large one needs.
            chunks.append(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
            pieces = []
        else:
            pieces.append(array)
    if not chunks:
        raise DatasetError(f'dataset {path} holds no text; give it at least one non-empty file')
    return chunks


# ---------------------------------------------------------------------------------------------------------------
# Training windows
# ---------------------------------------------------------------------------------------------------------------

class Sampler:
    """Random windows of seq_len tokens from chunks, never crossing a chunk boundary.

    Every start of a window in every chunk is equally likely, so a long chunk is drawn from more often than a
    short one, in proportion to its starts (len - seq_len + 1). A chunk shorter than seq_len has one start and is
    used whole; a batch is as long as its longest row, and shorter rows are padded with PAD (see `lengths`).

    Batch number k of a seed is the same whatever was drawn before: it comes from its own generator, seeded with
    (seed, k). `draws` counts the batches drawn; a resumed run sets it to go on where it stopped.
    """
    PAD = 0

    def __init__(self, chunks, seq_len, seed):
        if seq_len < 1:
            raise ValueError(f'seq_len must be 1 or more, got {seq_len}')
        self.chunks = [np.asarray(c) for c in chunks if len(c)]
        if not self.chunks:
            raise DatasetError('the dataset holds no tokens')
        self.seq_len = seq_len
        self.seed = np.random.SeedSequence().entropy if seed is None else seed
        self.draws = 0
        starts = np.array([max(len(c) - seq_len, 0) + 1 for c in self.chunks], dtype=np.int64)
        self.first_start = np.cumsum(starts) - starts  # [chunks] index of each chunk's first start among all
        self.total_starts = int(starts.sum())

    def sample(self, batch_size):
        """-> (tokens int32 [batch, L], lengths int32 [batch]), L the longest row's length (at most seq_len)."""
        rng = np.random.default_rng([self.seed, self.draws])
        self.draws += 1
        return self.windows(rng.integers(self.total_starts, size=batch_size))

    def fixed_batches(self, batch_size, count):
        """`count` batches chosen once, the same for a seed whatever was sampled, e.g. to measure a validation
        loss that is comparable over a run. Drawn from their own generator, not from the training stream."""
        rng = np.random.default_rng([self.seed, 2**32])  # sample() never uses 2**32: draws stay below it
        return [self.windows(rng.integers(self.total_starts, size=batch_size)) for _ in range(count)]

    def windows(self, starts):
        """Indices among all starts [batch] -> (tokens [batch, L], lengths [batch])."""
        chunk_ids = np.searchsorted(self.first_start, starts, side='right') - 1
        rows = [self.chunks[c][s - self.first_start[c]:][:self.seq_len] for c, s in zip(chunk_ids, starts)]
        lengths = np.array([len(r) for r in rows], dtype=np.int32)
        tokens = np.full((len(rows), lengths.max()), self.PAD, dtype=np.int32)
        for i, row in enumerate(rows):
            tokens[i, :len(row)] = row
        return tokens, lengths
