"""Benchmark of text -> token ids: this encoder beside tiktoken, on text found on this machine (no download).

    python bench/bench_encode.py             # ~10 MB corpus, 3 alternating rounds, long pieces, start-up (~2 min)
    python bench/bench_encode.py --help

The corpus is read, never written: documentation (/usr/share/doc, gzipped man pages in /usr/share/man) and the
Python standard library's sources, one text per file, in a fixed order. Each round encodes every file with one
call of each encoder, alternating, so that load from other processes falls on both alike. The vocabulary is the
released one in tests/data/gpt2_vocab.
"""
import gzip
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import fire

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / 'src'))

import encoder  # noqa: E402

VOCAB = REPO / 'tests' / 'data' / 'gpt2_vocab'
CORPUS_ROOTS = (Path('/usr/share/doc'), Path('/usr/share/man'), Path(sysconfig.get_paths()['stdlib']))
# tiktoken's own spelling of the pattern, as its gpt2 encoding has it: the independent side of the comparison.
TIKTOKEN_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
STARTUP_SCRIPT = ("import sys, time; t = time.perf_counter(); sys.path.insert(0, {src!r}); import encoder; "
                  "e = encoder.get_encoder({name!r}, {models!r}); e.encode('Hello, my name is'); "
                  "print(time.perf_counter() - t)")


def read_text(path):
    data = path.read_bytes()
    if path.suffix == '.gz':
        data = gzip.decompress(data)
    if b'\0' in data[:4096]:
        return None  # binary
    return data.decode('utf-8', errors='replace')


def corpus(megabytes):
    """Texts of readable files, an equal share of `megabytes` (in UTF-8) from each of CORPUS_ROOTS, each root's
    files in sorted order. -> (texts, bytes, {root: files})"""
    texts, size, files = [], 0, {}
    for root in CORPUS_ROOTS:
        share, files[root] = 0, 0
        for path in sorted(p for p in root.rglob('*') if p.is_file() and not p.is_symlink()):
            if share >= megabytes * 1e6 / len(CORPUS_ROOTS):
                break
            try:
                text = read_text(path)
            except (OSError, EOFError, gzip.BadGzipFile):
                continue
            if text:
                texts.append(text)
                share += len(text.encode('utf-8'))
                files[root] += 1
        size += share
    return texts, size, files


def tiktoken_reference():
    """tiktoken's GPT-2, built from the model folder's two files as tiktoken's own gpt2 encoding is."""
    import tiktoken
    enc = encoder.get_encoder(VOCAB.name, VOCAB.parent)
    ranks = {bytes(enc.byte_decoder[c] for c in token): i for token, i in enc.encoder.items()
             if token not in encoder.SPECIAL_TOKENS}
    return tiktoken.Encoding('gpt2 reference', pat_str=TIKTOKEN_GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={})


def timed(fn, texts):
    """-> (seconds, ids of every text)"""
    start = time.perf_counter()
    ids = [fn(text) for text in texts]
    return time.perf_counter() - start, ids


def side_by_side(fns, texts, rounds):
    """-> ([seconds of each round] for each fn), [ids of each text] for each fn). Each text goes through every fn
    in turn, so that a change of load falls on all of them alike."""
    seconds, ids = [[0.0] * rounds for _ in fns], [[] for _ in fns]
    for r in range(rounds):
        for text in texts:
            for n, fn in enumerate(fns):
                start = time.perf_counter()
                result = fn(text)
                seconds[n][r] += time.perf_counter() - start
                if r == 0:
                    ids[n].append(result)
    return seconds, ids


def bulk(enc, reference, texts, size, rounds, readable_mb):
    print(f'corpus: {len(texts)} files, {size / 1e6:.1f} MB of UTF-8; {rounds} rounds, one call per file, '
          f'the two encoders alternating file by file')
    seconds, (our_ids, their_ids) = side_by_side([enc.encode, reference.encode_ordinary], texts, rounds)
    for name, times in zip(['encoder.encode (default)', 'tiktoken'], seconds):
        print(f'  {name:28s} {size / 1e6 / statistics.median(times):6.2f} MB/s  (median of {rounds}; '
              f'{", ".join(f"{t:.2f}" for t in times)} s)')
    print(f'  files whose ids differ from tiktoken\'s: {sum(a != b for a, b in zip(our_ids, their_ids))}')
    some, some_size = [], 0
    for text in texts:
        if some_size >= readable_mb * 1e6:
            break
        some.append(text)
        some_size += len(text.encode('utf-8'))
    readable, readable_ids = timed(lambda t: enc.encode(t, fast=False), some)
    differ = sum(a != b for a, b in zip(readable_ids, (reference.encode_ordinary(t) for t in some)))
    print(f'  {"readable path (fast=False)":28s} {some_size / 1e6 / readable:6.2f} MB/s  (first '
          f'{some_size / 1e6:.1f} MB, once; files whose ids differ from tiktoken\'s: {differ})')


def long_pieces(enc, reference, lengths):
    """One run of letters with no space: a single piece, the case whose merges used to be quadratic."""
    rng = random.Random(0)
    print('long piece (random lowercase letters):')
    for n in lengths:
        text = ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(n))
        readable, ids = timed(lambda t: enc.encode(t, fast=False), [text])
        theirs, their_ids = timed(reference.encode_ordinary, [text])
        print(f'  {n:7,d} letters: readable path {readable * 1e3:8.1f} ms, tiktoken {theirs * 1e3:6.2f} ms, '
              f'same ids: {ids == their_ids}')


def startup(runs):
    """import + get_encoder + one short encode, in a fresh process: what a sampling script pays before TF."""
    code = STARTUP_SCRIPT.format(src=str(REPO / 'src'), name=VOCAB.name, models=str(VOCAB.parent))
    times = [float(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                  check=True).stdout) for _ in range(runs)]
    print(f'start-up (import, read vocabulary, encode a prompt): median {statistics.median(times) * 1e3:.0f} ms '
          f'of {runs} fresh processes')


def main(megabytes: float = 10.0, rounds: int = 3, readable_mb: float = 1.0, long_lengths=(1000, 4000, 10_000, 100_000),
         startup_runs: int = 7):
    """Encoding throughput (MB/s) of this encoder beside tiktoken's, long pieces, and start-up time.

    megabytes: how much text to gather for the corpus.
    rounds: alternating rounds over the corpus; the median is reported.
    readable_mb: how much of the corpus to encode also through the readable pure-Python path (slow).
    long_lengths: lengths of the single long pieces to time, e.g. 1000,10000 (or one number).
    startup_runs: fresh processes timed for start-up.
    """
    print(f'load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; '
          f'{os.cpu_count()} cores; Python {sys.version.split()[0]}')
    startup(startup_runs)
    enc = encoder.get_encoder(VOCAB.name, VOCAB.parent)
    start = time.perf_counter()
    assert enc.tiktoken_encoding is not None
    print(f'building the fast path (checks + tiktoken tables, once per Encoder): {time.perf_counter() - start:.2f} s')
    reference = tiktoken_reference()
    texts, size, files = corpus(megabytes)
    print('corpus files: ' + ', '.join(f'{n} from {root}' for root, n in files.items()))
    bulk(enc, reference, texts, size, rounds, readable_mb)
    long_pieces(enc, reference, long_lengths if isinstance(long_lengths, (tuple, list)) else [long_lengths])
    print(f'load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}')


if __name__ == '__main__':
    fire.Fire(main)
