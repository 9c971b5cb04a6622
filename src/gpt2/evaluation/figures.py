"""The figures of src/score.py: every document of every file scored (scoring.score_documents) into a file's
totals, then perplexity, bits per byte and per character, and word perplexity, per file and in all.

All come from one sum, the negative log-likelihood in nats of every token: perplexity divides it by the tokens,
bits per byte by the text's UTF-8 bytes (in bits), word perplexity by its whitespace-separated words. The bytes,
characters and words are counted on the text as given (documents.Counts), before any de-tokenizing, so that the
figures of different tokenizers and spellings compare.
"""
import json
import math
import os
import sys

import tqdm

from gpt2.base import checkpoint
from gpt2.evaluation import documents as documents_lib
from gpt2.evaluation import scoring


class Totals:
    """A file's (or all files') tokens, their negative log-likelihood in nats, and the counts of its text."""

    def __init__(self, path=None):
        self.path = path
        self.tokens, self.nll = 0, 0.0
        self.counts = documents_lib.Counts()

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


def print_figures(totals, *, as_json):
    """A line per file and one for the total when there are several files, or one JSON object (--json)."""
    total = add_totals(totals)
    if as_json:
        print(json.dumps({'files': [{'path': t.path, **t.figures()} for t in totals],
                          'total': total.figures()}))
        return
    for t in totals:
        print(summary_line(t.path, t.figures()))
    if len(totals) > 1:
        print(summary_line('total', total.figures()))


def score_files(scorer, enc, paths, *, documents, stride, batch_size, detokenizer, per_token):
    """-> a Totals per file, after scoring every document of every file; per_token (a per_token.PerTokenWriter,
    or None) gets each document's tokens and log-probabilities."""
    progress = tqdm.tqdm(total=sum(os.path.getsize(p) for p in paths), unit='B', unit_scale=True, desc='score',
                         file=sys.stderr, disable=None)
    totals = [Totals(p) for p in paths]
    reader = documents_lib.Reader(enc, documents=documents, detokenizer=detokenizer, progress=progress)
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
            raise documents_lib.FileProblem(f'{t.path} has no text to score (every document is empty)')
    return totals
