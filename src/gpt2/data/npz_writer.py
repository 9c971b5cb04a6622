"""Writing a dataset's tokens as a .npz, for src/encode.py, as they are encoded.

The .npz holds one array per chunk (arr_0, arr_1, ...), the format nshepperd's encode.py and gpt-2-simple write
and read (corpus.py reads it back). So that a text larger than memory can be encoded, the tokens first go to an
anonymous temporary file, then into the .npz, stored, not compressed (token ids hardly compress), written at
once (atomic.atomic_file): an existing .npz is replaced only when the new one is complete.
"""
import shutil
import tempfile
import zipfile

import numpy as np

from gpt2.base import atomic
from gpt2.data import corpus

COPY_SIZE = 1 << 20  # bytes copied at a time from the temporary token file into the .npz


def encode_dataset(enc, dataset, out, *, combine, encoding):
    """Encode the files of dataset (a file, a folder or a glob) into the .npz out -> the number of chunks.
    combine and encoding: as corpus.token_stream takes them."""
    files = corpus.dataset_files(str(dataset))
    stream = corpus.token_stream(enc, files, combine=combine, encoding=encoding)
    return write_npz(stream, out, corpus.token_dtype(len(enc.encoder)))


def write_npz(stream, out, dtype):
    """Write the chunks of a token_stream to out as arr_0.npy, arr_1.npy, ... -> the number of chunks.
    Only one piece of tokens is in memory at a time."""
    # Anonymous (O_TMPFILE): it vanishes whenever the process ends, even on SIGKILL.
    with tempfile.TemporaryFile(dir=out.parent) as tokens:
        lengths = write_tokens(stream, tokens, dtype)
        if not lengths:
            raise corpus.DatasetError('the dataset holds no text; give it at least one non-empty file')
        tokens.seek(0)
        with atomic.atomic_file(out, 'wb') as f, zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as npz:
            for number, length in enumerate(lengths):
                write_array(npz, f'arr_{number}.npy', tokens, length, dtype)
    return len(lengths)


def write_tokens(stream, f, dtype):
    """Append the stream's arrays to f as raw dtype values -> the length of each chunk."""
    lengths, length = [], 0
    for array in stream:
        if array is None:
            lengths.append(length)
            length = 0
        else:
            f.write(array.astype(dtype, copy=False).tobytes())
            length += len(array)
    return lengths


def write_array(npz, name, tokens, length, dtype):
    """One entry of the .npz: a .npy header for a 1-D array of `length` dtype values, then the values, copied
    from the file `tokens` (at its current position) in pieces."""
    header = {'descr': np.lib.format.dtype_to_descr(np.dtype(dtype)), 'fortran_order': False, 'shape': (length,)}
    with npz.open(name, 'w', force_zip64=True) as entry:
        np.lib.format.write_array_header_1_0(entry, header)
        shutil.copyfileobj(LimitedReader(tokens, length * np.dtype(dtype).itemsize), entry, COPY_SIZE)


class LimitedReader:
    """The next `size` bytes of a file, as a file to read from."""

    def __init__(self, f, size):
        self.f, self.left = f, size

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data
