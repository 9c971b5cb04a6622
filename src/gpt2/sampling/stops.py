"""Stop strings: a sample ends where its text first contains one of them, however the string falls across tokens.

Text is bytes to the model: each token stands for a fixed run of UTF-8 bytes (encoder.decode_bytes), and a
stop string is found in the text exactly where its UTF-8 bytes are found in the sample's bytes (UTF-8 is
self-synchronising: no character's bytes start inside another's). So the sampling loop finds them in the graph,
with no Python per token: each row keeps the last `width - 1` bytes of its sample (width: the longest stop
string's bytes), and each step appends the new token's bytes and compares every window of `width` bytes that
ends in them with every stop string. A string that ends inside a token is found at that token; one that spans
several tokens at the token holding its last byte. The row is then done, and the batch stops once every row is.

The stop strings are an array [n_stops, width] of byte values, right-aligned and padded on the left with ANY,
which matches every byte, so strings of different lengths share one comparison. The array may be a placeholder:
other stop strings per run of one graph.

The loop marks where a row stops; what is printed is cut in Python, once per sample (cut), or as a stream at
batch 1 (StreamCut), which holds back text that may be the start of a stop string until it knows.
"""
import numpy as np
import tensorflow.compat.v1 as tf

# Padding of the stop strings' array on the left: matches any byte.
ANY = -2
# Padding of a token's bytes after its end, and the window's bytes before the sample's first: matches no byte.
NO_BYTE = -1


# ---------------------------------------------------------------------------------------------------------------
# Arrays, in Python
# ---------------------------------------------------------------------------------------------------------------

def token_bytes(enc, n_vocab):
    """-> [n_vocab, longest token's bytes] int32: each token's bytes, then NO_BYTE (ids the encoder lacks: none)."""
    pieces = [enc.decode_bytes([i]) if i in enc.decoder else b'' for i in range(n_vocab)]
    table = np.full([n_vocab, max(1, max(map(len, pieces)))], NO_BYTE, np.int32)
    for i, piece in enumerate(pieces):
        table[i, :len(piece)] = list(piece)
    return table


def stop_array(stops, width=None):
    """Stop strings (str) -> [n_stops, width] int32, each string's UTF-8 bytes right-aligned, ANY before them.
    width: at least the longest's bytes (more lets one graph take longer strings later)."""
    encoded = [s.encode('utf-8') for s in stops]
    width = max([1, width or 0, *map(len, encoded)])
    array = np.full([len(encoded), width], ANY, np.int32)
    for row, b in enumerate(encoded):
        array[row, width - len(b):] = list(b)
    return array


# ---------------------------------------------------------------------------------------------------------------
# In the graph
# ---------------------------------------------------------------------------------------------------------------

def empty_window(batch, stops):
    """The window before a sample's first byte: [batch, width - 1] of NO_BYTE."""
    return tf.fill(tf.stack([batch, tf.shape(stops)[1] - 1]), NO_BYTE)


def advance(window, table, tokens, stops):
    """window [batch, width - 1], table from token_bytes, tokens [batch], stops [n_stops, width]
    -> (the window after the tokens' bytes, [batch] bool: a stop string ends in this token's bytes)."""
    new = tf.gather(table, tokens)  # [batch, token_len], NO_BYTE after each token's end
    token_len = tf.shape(new)[1]
    width = tf.shape(stops)[1]
    lengths = tf.reduce_sum(tf.cast(new >= 0, tf.int32), axis=1)  # [batch]
    joined = tf.concat([window, new], axis=1)  # [batch, width - 1 + token_len]
    # Window j holds joined[j : j + width], which ends at the token's byte j.
    frames = tf.gather(joined, tf.range(token_len)[:, tf.newaxis] + tf.range(width)[tf.newaxis, :], axis=1)
    same = tf.logical_or(tf.equal(stops, ANY), tf.equal(frames[:, :, tf.newaxis, :], stops))
    ends_here = tf.reduce_any(tf.reduce_all(same, axis=-1), axis=-1)  # [batch, token_len]
    real = tf.range(token_len)[tf.newaxis, :] < lengths[:, tf.newaxis]
    hit = tf.reduce_any(tf.logical_and(ends_here, real), axis=-1)
    # The last width - 1 bytes of window + token: they start where the token's real bytes begin, less one window.
    kept = tf.gather(joined, lengths[:, tf.newaxis] + tf.range(width - 1)[tf.newaxis, :], batch_dims=1)
    return kept, hit


# ---------------------------------------------------------------------------------------------------------------
# Cutting the printed text, in Python
# ---------------------------------------------------------------------------------------------------------------

def cut(text, stops):
    """text up to the first place where one of the stop strings starts; all of it if none occurs."""
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[:min(ends)] if ends else text


class StreamCut:
    """Text as it streams in, cut before the first stop string: feed() returns what may be printed now. Text that
    could be the start of a stop string waits until the next pieces tell; at the end (finish) it is printed."""

    def __init__(self, stops):
        self.stops = list(stops)
        self.pending = ''
        self.stopped = False

    def feed(self, piece):
        if self.stopped:
            return ''
        text = self.pending + piece
        head = cut(text, self.stops)
        if len(head) < len(text):
            self.stopped, self.pending = True, ''
            return head
        hold = max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        self.pending = text[len(text) - hold:] if hold else ''
        return text[:len(text) - hold]

    def finish(self):
        rest, self.pending = ('' if self.stopped else self.pending), ''
        return rest
