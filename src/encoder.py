"""GPT-2's byte-level BPE tokenizer: text <-> token ids, exactly as the released vocabulary numbers them."""
import functools
import json
from pathlib import Path

import regex

from checkpoint import ENDOFTEXT


@functools.lru_cache()
def bytes_to_unicode():
    """The table that lets BPE work on bytes while its vocabulary files stay printable text.

    Every one of the 256 byte values gets a unicode character of its own. The 188 bytes that are already
    printable and not whitespace (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves; the other 68 (control
    characters, space, and a few Latin-1 oddities) are moved, in byte order, to chr(256), chr(257), ... So a space
    is written `Ġ` (chr(288)) and a newline `Ċ` (chr(266)) in encoder.json and vocab.bpe. Because no byte maps to
    a space, a space can separate the symbols of a word while it is being merged.
    """
    printable = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
                 + list(range(ord('®'), ord('ÿ') + 1)))
    table = {b: chr(b) for b in printable}
    moved = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(moved)})
    return table


# Before BPE, text is cut into pieces that are encoded one at a time, so a merge never crosses a piece boundary.
# In order of preference: the English contraction endings; a run of letters, of digits, or of other non-space
# symbols, each with at most one leading space (so " world" is one piece and the space belongs to the word);
# a run of whitespace not followed by a non-space (so the last space before a word is left to join that word);
# and any other whitespace. \p{L} and \p{N} need the `regex` package: the standard `re` lacks them.
PRETOKENIZE = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

# The strings that encode(..., allowed_special=...) may map to a single id of their own. GPT-2 has one.
SPECIAL_TOKENS = frozenset({ENDOFTEXT})

# Distinct pieces whose BPE result is remembered; bounds memory on long or varied input.
BPE_CACHE_SIZE = 1 << 16


def get_pairs(word):
    return set(zip(word, word[1:]))


class Encoder:
    def __init__(self, encoder, bpe_merges, errors='replace'):
        self.encoder = encoder
        self.decoder = {v: k for k, v in encoder.items()}
        self.errors = errors  # how to handle bytes that are not valid UTF-8 when decoding
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.bpe_ranks = {tuple(merge): rank for rank, merge in enumerate(bpe_merges)}
        self.bpe = functools.lru_cache(maxsize=BPE_CACHE_SIZE)(self._bpe)

    def _bpe(self, piece):
        """A piece in byte-unicode characters -> its BPE symbols, merging the lowest-ranked pair first."""
        word = tuple(piece)
        while len(word) > 1:
            pair = min(get_pairs(word), key=lambda p: self.bpe_ranks.get(p, float('inf')))
            if pair not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == pair:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text, *, allowed_special=frozenset()):
        """text -> token ids. By default text is text: a literal '<|endoftext|>' is nine ordinary tokens, as the
        original encoder gave. allowed_special (a set of strings from SPECIAL_TOKENS, or 'all') names the special
        tokens whose literal occurrences become their own single id instead, e.g. to join documents with
        '<|endoftext|>' in a training file."""
        specials = self._special_ids(allowed_special)
        if not specials:
            return self._encode_ordinary(text)
        tokens = []
        split = regex.compile('(' + '|'.join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)) + ')')
        for n, part in enumerate(split.split(text)):
            tokens.extend([specials[part]] if n % 2 else self._encode_ordinary(part))
        return tokens

    def _special_ids(self, allowed_special):
        """allowed_special -> {special token string: its id}; a string that is no special token is an error."""
        if allowed_special == 'all':
            allowed_special = SPECIAL_TOKENS & self.encoder.keys()
        if isinstance(allowed_special, str):
            raise TypeError(f"allowed_special must be a set of strings or 'all', not the string {allowed_special!r}")
        unknown = set(allowed_special) - (SPECIAL_TOKENS & self.encoder.keys())
        if unknown:
            raise ValueError(f'not a special token of this vocabulary: {sorted(unknown)!r}; '
                             f'known: {sorted(SPECIAL_TOKENS & self.encoder.keys())!r}')
        return {s: self.encoder[s] for s in allowed_special}

    def _encode_ordinary(self, text):
        tokens = []
        for piece in PRETOKENIZE.findall(text):
            piece = ''.join(self.byte_encoder[b] for b in piece.encode('utf-8'))
            tokens.extend(self.encoder[symbol] for symbol in self.bpe(piece))
        return tokens

    def decode_bytes(self, tokens):
        return bytes(self.byte_decoder[c] for t in tokens for c in self.decoder[int(t)])

    def decode(self, tokens):
        return self.decode_bytes(tokens).decode('utf-8', errors=self.errors)


def read_merges(text):
    """vocab.bpe: a version header line, then one merge per line ("a b"), with or without a final newline."""
    lines = text.split('\n')[1:]
    return [tuple(line.split()) for line in lines if line.strip()]


def get_encoder(model_name, models_dir):
    folder = Path(models_dir) / model_name
    with open(folder / 'encoder.json', encoding='utf-8') as f:
        encoder = json.load(f)
    with open(folder / 'vocab.bpe', encoding='utf-8') as f:
        bpe_merges = read_merges(f.read())
    return Encoder(encoder=encoder, bpe_merges=bpe_merges)
