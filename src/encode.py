#!/usr/bin/env python3
"""Encode a fine-tuning dataset once into a .npz of token ids, which src/train.py --dataset then reads at once.

The .npz holds one uint16 array per chunk (arr_0, arr_1, ...), the format nshepperd's encode.py and
gpt-2-simple write and read. It is written as it is encoded, so that a text larger than memory can be encoded:
the tokens go to an anonymous temporary file, then into the .npz (stored, not compressed: token ids hardly
compress), under a temporary name that is renamed only when complete.
"""
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import fire
import numpy as np

import encoder

from gpt2.base import checkpoint
from gpt2.base import flags
from gpt2.data import corpus

COPY_SIZE = 1 << 20  # bytes copied at a time from the temporary token file into the .npz


def encode(dataset, out, model_name='124M', models_dir='models', combine=50000, encoding='utf-8'):
    """Encode a dataset into a .npz of token ids for src/train.py --dataset.

    Each file is a document and ends with the <|endoftext|> token (id 50256); a literal <|endoftext|> in a text
    becomes that token too. Memory stays small whatever the size of the text.

    Args:
      dataset: the text to encode: a text file, a folder (all files in it, recursively), or a glob in quotes.
      out: the .npz file to write; its folder must exist. An existing file is replaced only once the new one is
        complete.
      model_name: the model whose vocabulary encodes the text, a folder in models_dir: 124M, 355M, 774M or 1558M
        (all four share one vocabulary). Only its encoder.json and vocab.bpe are read.
      models_dir: the folder holding the model folders; a relative path is looked up in the working directory,
        then in the repository.
      combine: files are gathered into chunks of at least this many characters; training windows never cross a
        chunk boundary.
      encoding: the text encoding of the files.
    """
    try:
        chunks, out = encode_dataset(dataset, out, model_name, models_dir, combine, encoding)
    except flags.UsageError as err:
        flags.fail(err, code=2)
    except (checkpoint.ModelError, corpus.DatasetError) as err:
        flags.fail(err, code=1)
    except OSError as err:  # e.g. the disk is full
        flags.fail(f'cannot write {out} ({err.strerror or err}); nothing was written', code=1)
    except KeyboardInterrupt:
        flags.fail(f'interrupted; {out} was not written', code=130)
    print(f'{out}: {chunks} chunks', flush=True)


def encode_dataset(dataset, out, model_name, models_dir, combine, encoding):
    """-> (the number of chunks written, the output path)."""
    out = check_out(out)
    flags.whole_number('combine', combine, 0)
    try:
        encoding = corpus.check_encoding(encoding)
    except ValueError as err:
        raise flags.UsageError(err) from None
    flags.folder_name('model_name', model_name)
    # Only encoder.json and vocab.bpe: encoding needs no weights, nor TensorFlow (600 MB and seconds to load).
    enc = encoder.read_vocabulary(checkpoint.resolve_models_dir(models_dir) / model_name)
    files = corpus.dataset_files(str(dataset))
    stream = corpus.token_stream(enc, files, combine=combine, encoding=encoding)
    return write_npz(stream, out, corpus.token_dtype(len(enc.encoder))), out


def check_out(out):
    out = Path(str(out))
    if out.suffix != corpus.NPZ_SUFFIX:
        raise flags.UsageError(f'the output must be a .npz file, got {str(out)!r}')
    if not out.parent.is_dir():
        raise flags.UsageError(f'the folder of {out} does not exist; create it first')
    if out.is_dir():
        raise flags.UsageError(f'{out} is a folder; name a .npz file')
    return out


def write_npz(stream, out, dtype):
    """Write the chunks of a token_stream to out as arr_0.npy, arr_1.npy, ... -> the number of chunks.
    Only one piece of tokens is in memory at a time."""
    # Anonymous (O_TMPFILE): it vanishes whenever the process ends, even on SIGKILL.
    with tempfile.TemporaryFile(dir=out.parent) as tokens:
        lengths = write_tokens(stream, tokens, dtype)
        if not lengths:
            raise corpus.DatasetError('the dataset holds no text; give it at least one non-empty file')
        tokens.seek(0)
        fd, partial = tempfile.mkstemp(dir=out.parent, prefix=f'.{out.name}.', suffix='.tmp')
        try:
            with os.fdopen(fd, 'wb') as f, zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as npz:
                for number, length in enumerate(lengths):
                    write_array(npz, f'arr_{number}.npy', tokens, length, dtype)
            os.chmod(partial, new_file_mode())  # mkstemp made it private
            os.replace(partial, out)
        except BaseException:
            os.unlink(partial)
            raise
    return len(lengths)


def new_file_mode():
    """The permissions open() gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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


if __name__ == '__main__':
    fire.Fire(encode, command=flags.check_argv(encode))
