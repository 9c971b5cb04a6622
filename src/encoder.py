"""GPT-2's byte-level BPE tokenizer: text <-> token ids, exactly as the released vocabulary numbers them.

Text is cut into pieces by a pattern (the pre-tokenizer), each piece's UTF-8 bytes are written as printable
characters, and BPE merges those characters pairwise into vocabulary tokens. The readable implementation of all
three steps is below; long texts can go through tiktoken instead (OpenAI's BPE in Rust, built from the same two
files), which gives the same ids many times faster.
"""
import functools
import heapq
import json
import operator
import re
from pathlib import Path

from gpt2.base import checkpoint
from gpt2.base import unicode_classes
from gpt2.base.checkpoint import ENDOFTEXT

# ---------------------------------------------------------------------------------------------------------------
# Bytes as printable characters
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# The pre-tokenizer
# ---------------------------------------------------------------------------------------------------------------


L = f'[{unicode_classes.LETTERS}]'
N = f'[{unicode_classes.NUMBERS}]'
S = f'[{unicode_classes.WHITESPACE}]'
NOT_S = f'[^{unicode_classes.WHITESPACE}]'
OTHER = f'[^{unicode_classes.LETTERS}{unicode_classes.NUMBERS}{unicode_classes.WHITESPACE}]'

# Before BPE, text is cut into pieces that are encoded one at a time, so a merge never crosses a piece boundary.
# In order of preference: the English contraction endings; a run of letters, of digits, or of other non-space
# symbols, each with at most one leading space (so " world" is one piece and the space belongs to the word);
# a run of whitespace not followed by a non-space (so the last space before a word is left to join that word);
# and any other whitespace. GPT-2 wrote it with \p{L}, \p{N} and \s; here those classes are spelled out as the
# code point ranges the pinned tiktoken uses (gpt2/base/unicode_classes.py, made by tools/make_encoder_classes.py), because
# every regex release has its own Unicode tables and the ids of a text must not depend on which one is installed.
PRETOKENIZE_PATTERN = rf"""'s|'t|'re|'ve|'m|'ll|'d| ?{L}+| ?{N}+| ?{OTHER}+|{S}+(?!{NOT_S})|{S}+"""
PRETOKENIZE = re.compile(PRETOKENIZE_PATTERN)
# The same pattern as tiktoken spells it, for tiktoken: its regex engine is built into its wheel, so in the release
# that gpt2/base/unicode_classes.py was measured from, \p{L}, \p{N} and \s are exactly the table's classes, and tiktoken
# matches this spelling about 20% faster than the ranges, or than GPT-2's own 's|'t|... (python
# bench/bench_encode.py). No contraction is the start of another, so their order does not matter.
TIKTOKEN_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def without_lone_surrogates(text):
    """A Python str may hold surrogate code points (from surrogateescape, or JSON's '\\ud83d'), which UTF-8 cannot
    encode. As tiktoken does: a surrogate pair becomes the character it stands for, a lone one U+FFFD."""
    try:
        text.encode('utf-8')
        return text
    except UnicodeEncodeError:
        return text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')


# ---------------------------------------------------------------------------------------------------------------
# BPE
# ---------------------------------------------------------------------------------------------------------------


def bpe_merge(symbols, ranks):
    """A piece's symbols -> its BPE symbols: repeatedly merge every occurrence (left to right, not overlapping) of
    the adjacent pair that comes first in vocab.bpe, until no adjacent pair is in vocab.bpe.

    That is GPT-2's rule; GPT-2 found the pair by rescanning the whole piece after each merge, which costs the
    square of the piece's length (seconds for a base64 blob). Here the symbols are a linked list and the candidate
    pairs sit in a heap keyed by (rank, position): each merge only adds the two pairs it creates, so a piece of n
    bytes costs O(n log n). Heap entries are not removed when a merge destroys their pair; they are recognised as
    stale when popped, because their symbols no longer form a pair of that rank.
    """
    symbols = list(symbols)
    following = list(range(1, len(symbols))) + [None]  # following[i]: index of the next live symbol
    preceding = [None] + list(range(len(symbols) - 1))
    heap = [(ranks[pair], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks]
    heapq.heapify(heap)

    def rank_at(i):
        j = following[i]
        return None if j is None or symbols[i] is None else ranks.get((symbols[i], symbols[j]))

    while heap:
        rank = heap[0][0]
        # all occurrences of this one pair, in text order; the pairs their merges create wait for the next round
        occurrences = []
        while heap and heap[0][0] == rank:
            occurrences.append(heapq.heappop(heap)[1])
        merged = []
        for i in occurrences:
            if rank_at(i) != rank:
                continue  # stale: one of its symbols was merged into something else since it was pushed
            j = following[i]
            symbols[i], symbols[j] = symbols[i] + symbols[j], None
            following[i] = following[j]
            if following[j] is not None:
                preceding[following[j]] = i
            merged.append(i)
        for i in merged:
            for left in (preceding[i], i):
                if left is not None and rank_at(left) is not None:
                    heapq.heappush(heap, (rank_at(left), left))
    return tuple(s for s in symbols if s is not None)


# Distinct pieces whose ids are remembered by the readable path; bounds memory on long or varied input.
BPE_CACHE_SIZE = 1 << 16
# The strings that encode(..., allowed_special=...) may map to a single id of their own. GPT-2 has one.
SPECIAL_TOKENS = frozenset({ENDOFTEXT})
# encode() builds tiktoken for a text at least this long. Below it, building tiktoken's tables (about a second,
# once) would cost more than it saves, and the sampling scripts, whose prompts are short, never pay for it.
BULK_MIN_CHARS = 50_000


class Encoder:
    def __init__(self, encoder, bpe_merges, errors='replace'):
        self.encoder = encoder
        self.decoder = {v: k for k, v in encoder.items()}
        self.errors = errors  # how to handle bytes that are not valid UTF-8 when decoding
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.bpe_ranks = {tuple(merge): rank for rank, merge in enumerate(bpe_merges)}
        self.piece_ids = functools.lru_cache(maxsize=BPE_CACHE_SIZE)(self._piece_ids)

    # --- text -> ids

    def encode(self, text, *, allowed_special=frozenset(), fast=None):
        """text -> token ids.

        allowed_special: by default text is text, and a literal '<|endoftext|>' is nine ordinary tokens, as in
            GPT-2. A set of strings from SPECIAL_TOKENS (or 'all') names the special tokens whose occurrences in
            text become their own single id instead, e.g. to separate documents in a training file.
        fast: True to use tiktoken, False to use the readable BPE below, None (default) to use tiktoken for a
            text of BULK_MIN_CHARS or more and, once it is built, for every text. Both give the same ids; a
            vocabulary that tiktoken cannot reproduce exactly (see tiktoken_ranks) always takes the readable path.
        """
        text = without_lone_surrogates(text)
        specials = self._special_ids(allowed_special)
        if fast is None:
            fast = len(text) >= BULK_MIN_CHARS or 'tiktoken_encoding' in vars(self)  # built: cached_property
        encode_ordinary = self._encode_tiktoken if fast and self.tiktoken_encoding else self._encode_readable
        if not specials:
            return encode_ordinary(text)
        tokens = []
        split = re.compile('(' + '|'.join(map(re.escape, sorted(specials, key=len, reverse=True))) + ')')
        for n, part in enumerate(split.split(text)):
            tokens.extend([specials[part]] if n % 2 else encode_ordinary(part))
        return tokens

    def _special_ids(self, allowed_special):
        """allowed_special -> {special token string: its id}; a string that is no special token is an error."""
        known = SPECIAL_TOKENS & self.encoder.keys()
        if allowed_special == 'all':
            allowed_special = known
        if isinstance(allowed_special, str):
            raise TypeError(f"allowed_special must be a set of strings or 'all', not the string {allowed_special!r}")
        unknown = set(allowed_special) - known
        if unknown:
            raise ValueError(f'not a special token of this vocabulary: {sorted(unknown)!r}; known: {sorted(known)!r}')
        return {s: self.encoder[s] for s in allowed_special}

    def _encode_readable(self, text):
        tokens = []
        for piece in PRETOKENIZE.findall(text):
            tokens.extend(self.piece_ids(piece))
        return tokens

    def _piece_ids(self, piece):
        symbols = bpe_merge([self.byte_encoder[b] for b in piece.encode('utf-8')], self.bpe_ranks)
        return tuple(self.encoder[symbol] for symbol in symbols)

    def _encode_tiktoken(self, text):
        return self.tiktoken_encoding.encode_ordinary(text)

    @functools.cached_property
    def tiktoken_encoding(self):
        """tiktoken's encoder for this vocabulary and the pre-tokenizer, built on first use; None if tiktoken
        cannot give this vocabulary's ids (or is not installed)."""
        try:
            import tiktoken
        except ImportError:
            return None
        ranks = tiktoken_ranks(self)
        if ranks is None:
            return None
        same_tables = tiktoken.__version__ == unicode_classes.TIKTOKEN_VERSION
        pattern = TIKTOKEN_PATTERN if same_tables else PRETOKENIZE_PATTERN
        return tiktoken.Encoding('gpt2-from-model-folder', pat_str=pattern, mergeable_ranks=ranks, special_tokens={})

    # --- ids -> text

    def token_bytes(self, token):
        """One token id (an int, or a NumPy integer) -> its bytes."""
        try:
            if isinstance(token, bool):
                raise TypeError
            symbol = self.decoder.get(operator.index(token))
        except TypeError:
            raise TypeError(f'token ids must be integers, not {token!r} ({type(token).__name__})') from None
        if symbol is None:
            raise ValueError(f'token id {token!r} is not in the vocabulary (ids are 0..{max(self.decoder)})')
        return bytes(self.byte_decoder[c] for c in symbol)

    def decode_bytes(self, tokens):
        return b''.join(map(self.token_bytes, tokens))

    def decode(self, tokens):
        return self.decode_bytes(tokens).decode('utf-8', errors=self.errors)


# ---------------------------------------------------------------------------------------------------------------
# When tiktoken gives GPT-2's ids
# ---------------------------------------------------------------------------------------------------------------


def tiktoken_ranks(enc):
    """enc's vocabulary as tiktoken's mergeable_ranks ({token bytes: id}), or None if tiktoken's BPE could give
    different ids from bpe_merge's.

    tiktoken has no list of merges: one at a time, it merges the leftmost adjacent pair whose concatenation has the
    lowest id. That gives bpe_merge's ids when
    - only tokens that bpe_merge makes from their own bytes are offered (the others, such as unreachable merges
      and special tokens, are left out: bpe_merge never makes them either). A symbol in a longer piece went
      through the same merges as its bytes alone, so whenever bpe_merge has x and y side by side and x + y is
      offered, (x, y) is that token's own merge: tiktoken finds no pair that GPT-2 lacks;
    - ids follow vocab.bpe's order: tiktoken's priority is the id, GPT-2's the line in vocab.bpe;
    - each token's id is above its parts': a merge then only creates pairs that come later, so tiktoken too
      merges every occurrence of a pair before any pair those merges create...
    - ...but one: if (a + b) + a is a token numbered before a + b, and a b a b can stand side by side when (a, b)
      is merged, tiktoken would join the first a + b to the second a before merging the second (a, b).
    The released vocabulary meets them all; tests/test_encoder.py checks them on random merge lists.
    """
    reachable = {}
    for token, token_id in enc.encoder.items():
        if token not in SPECIAL_TOKENS and set(token) <= enc.byte_decoder.keys():
            if len(token) == 1 or bpe_merge(token, enc.bpe_ranks) == (token,):
                reachable[token] = token_id
    if len(set(reachable.values())) != len(reachable) or not set(enc.byte_encoder.values()) <= reachable.keys():
        return None
    merges = [(a, b) for a, b in sorted(enc.bpe_ranks, key=enc.bpe_ranks.get) if a + b in reachable]
    made = [reachable[a + b] for a, b in merges]
    if len(set(made)) != len(made) or made != sorted(made):
        return None
    for a, b in merges:
        ab = reachable[a + b]
        if max(reachable.get(a, ab), reachable.get(b, ab)) >= ab:
            return None
        if reachable.get(a + b + a, ab) < ab:
            earlier = {pair: rank for pair, rank in enc.bpe_ranks.items() if rank < enc.bpe_ranks[a, b]}
            if bpe_merge(list(a + b + a + b), earlier) == (a, b, a, b):
                return None
    return {bytes(enc.byte_decoder[c] for c in token): token_id for token, token_id in reachable.items()}


# ---------------------------------------------------------------------------------------------------------------
# The model folder's two files
# ---------------------------------------------------------------------------------------------------------------


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


def read_vocabulary(model_dir):
    """The encoder of a model folder, from its encoder.json and vocab.bpe alone (no weights, no TensorFlow);
    checkpoint.ModelError, saying what to do, if they cannot be read or lack the <|endoftext|> token."""
    model_dir = Path(model_dir)
    try:
        enc = get_encoder(model_dir.name, model_dir.parent)
    except (OSError, ValueError, KeyError) as err:
        raise checkpoint.ModelError(f'cannot read encoder.json or vocab.bpe in {model_dir} ({err}); '
                                    f'{checkpoint.download_hint(model_dir.name)}') from None
    if ENDOFTEXT not in enc.encoder:
        raise checkpoint.ModelError(f'encoder.json in {model_dir} has no {ENDOFTEXT} token; '
                                    f'{checkpoint.download_hint(model_dir.name)}')
    return enc
