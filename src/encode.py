#!/usr/bin/env python3
"""Encode a fine-tuning dataset once into a .npz of token ids, which src/train.py --dataset then reads at once.

The .npz holds one uint16 array per chunk (arr_0, arr_1, ...), the format nshepperd's encode.py and
gpt-2-simple write and read; it is written as it is encoded, so that a text larger than memory can be encoded,
and replaces an existing file only when complete (gpt2/data/npz_writer.py).
"""
from pathlib import Path

import fire

import encoder

from gpt2.base import checkpoint
from gpt2.base import flags
from gpt2.data import corpus
from gpt2.data import npz_writer


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
    return npz_writer.encode_dataset(enc, dataset, out, combine=combine, encoding=encoding), out


def check_out(out):
    out = Path(str(out))
    if out.suffix != corpus.NPZ_SUFFIX:
        raise flags.UsageError(f'the output must be a .npz file, got {str(out)!r}')
    if not out.parent.is_dir():
        raise flags.UsageError(f'the folder of {out} does not exist; create it first')
    if out.is_dir():
        raise flags.UsageError(f'{out} is a folder; name a .npz file')
    return out


if __name__ == '__main__':
    fire.Fire(encode, command=flags.check_argv(encode))
