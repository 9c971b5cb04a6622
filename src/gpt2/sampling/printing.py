"""Printing samples as the original scripts did: a header line per sample, then its text, streamed token by
token at batch size 1."""
import codecs
import sys

from gpt2.sampling import stops as stops_lib


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
