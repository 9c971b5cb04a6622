import json
import random
import re
import sys
import unicodedata

import pytest
import tiktoken
from hypothesis import given, settings, strategies as st

from gpt2.base import checkpoint
import support
import encoder

sys.path.insert(0, str(support.REPO / 'tools'))
import make_unicode_classes  # noqa: E402

GPT2_VOCAB = support.REPO / 'tests' / 'data' / 'gpt2_vocab'
# tiktoken's own spelling of GPT-2's pre-tokenizer (its r50k/gpt2 encodings), read by tiktoken's regex engine.
TIKTOKEN_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.fixture(scope='module')
def enc():
    return encoder.Encoder(support.tiny_vocabulary(), support.TINY_MERGES)


@pytest.fixture(scope='module')
def gpt2():
    """The released vocabulary, through get_encoder."""
    return encoder.get_encoder(GPT2_VOCAB.name, GPT2_VOCAB.parent)


@pytest.fixture(scope='module')
def tiktoken_gpt2():
    """The reference for real ids: tiktoken (the version requirements.txt pins) with its own pattern, and ranks
    written from encoder.json and conftest's byte table, as tiktoken's gpt2 encoding has them."""
    unbyte = {c: b for b, c in support.byte_table().items()}
    vocab = json.loads((GPT2_VOCAB / 'encoder.json').read_text(encoding='utf-8'))
    ranks = {bytes(unbyte[c] for c in token): i for token, i in vocab.items() if token != checkpoint.ENDOFTEXT}
    return tiktoken.Encoding('gpt2 reference', pat_str=TIKTOKEN_GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={checkpoint.ENDOFTEXT: vocab[checkpoint.ENDOFTEXT]})


def gpt2_bpe(word, ranks):
    """GPT-2's own merge loop (quadratic, as released): merge every occurrence of the best-ranked pair, rescan."""
    word = tuple(word)
    while len(word) > 1:
        pairs = set(zip(word, word[1:]))
        pair = min(pairs, key=lambda p: ranks.get(p, float('inf')))
        if pair not in ranks:
            return word
        merged, i = [], 0
        while i < len(word):
            if word[i:i + 2] == pair:
                merged.append(pair[0] + pair[1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = tuple(merged)
    return word


def test_byte_table_is_gpt2s():
    table = encoder.bytes_to_unicode()
    assert table == support.byte_table()
    assert table[ord(' ')] == 'Ġ' and table[ord('\n')] == 'Ċ' and table[ord('A')] == 'A'
    assert len(set(table.values())) == 256


@pytest.mark.parametrize('text, pieces', [
    ("Hello world's  end\n", ['Hello', ' world', "'s", ' ', ' end', '\n']),
    ("I'm 42 years!! ok", ['I', "'m", ' 42', ' years', '!!', ' ok']),
    ('a\n\n  b', ['a', '\n\n ', ' b']),
    ('日本語 テキスト', ['日本語', ' テキスト']),
    ("we'll they've you'd", ['we', "'ll", ' they', "'ve", ' you', "'d"]),
])
def test_pretokenizer_splits_like_gpt2(text, pieces):
    assert encoder.PRETOKENIZE.findall(text) == pieces


@pytest.mark.parametrize('text, ids', [
    (' the', [258]),  # Ġ t h e -> Ġt h e -> Ġt he -> Ġthe (merges 0, 1, 2)
    ('the', [ord('t'), 257]),  # t h e -> t he; 'the' is not a merge
    (' and', [262]),  # Ġ a n d -> Ġa n d -> Ġan d -> Ġand (merges 4, 5, 6)
    ('hello', [257, 263, ord('o')]),  # h e l l o: (h,e) ranks before (l,l), so he + ll + o; (e,ll) never applies
    (' world', [ord(' '), ord('w'), 266, ord('l'), ord('d')]),  # only (o,r) applies: 'Ġw' is never made
    ('in the', [259, 258]),
    ('\n', [ord('\n')]),
])
@pytest.mark.parametrize('fast', [False, True])
def test_encode_gives_hand_checked_ids(enc, text, ids, fast):
    assert enc.encode(text, fast=fast) == ids
    assert enc.decode(ids) == text


@pytest.mark.parametrize('text', [
    '👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽',
    '中文字符和日本語のテキスト、한국어',
    'e\u0301 n\u0303 combining marks',
    'control \x00\x01\x1f\x7f chars\t\ttabs',
    'spaces     and\n\n\n\nnewlines \r\n ',
    "contractions: I'm, you're, they've, we'll, he'd, it's, don't",
    'surrogate-free astral: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓂀',
    '',
])
def test_round_trip_on_awkward_unicode(enc, text):
    assert enc.decode(enc.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_on_any_text(enc, text):
    assert enc.decode(enc.encode(text)) == text


def test_decode_replaces_invalid_utf8_instead_of_raising(enc):
    assert enc.decode([0xff, ord('a')]) == '\ufffda'
    assert enc.decode_bytes([0xe6]) == b'\xe6'  # half of a character, for incremental decoding


def test_merges_file_with_or_without_final_newline_loses_nothing():
    assert encoder.read_merges('#version: 0.2\na b\nc d') == [('a', 'b'), ('c', 'd')]
    assert encoder.read_merges('#version: 0.2\na b\nc d\n') == [('a', 'b'), ('c', 'd')]


def test_bpe_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(encoder, 'BPE_CACHE_SIZE', 10)
    small = encoder.Encoder(support.tiny_vocabulary(), support.TINY_MERGES)
    small.encode(' '.join(f'w{i}' for i in range(100)), fast=False)
    assert small.piece_ids.cache_info().currsize == 10


def test_get_encoder_reads_the_model_folder(tiny_model):
    enc = encoder.get_encoder(tiny_model.name, tiny_model.models_dir)
    assert enc.encode(' the hello') == [258, ord(' '), 257, 263, ord('o')]
    assert enc.encoder['<|endoftext|>'] == tiny_model.endoftext


def test_endoftext_is_ordinary_text_unless_allowed(enc):
    eot = support.tiny_vocabulary()[checkpoint.ENDOFTEXT]
    as_text = [ord('a')] + [ord(c) for c in '<|endoftext|>'] + [ord('b')]  # no tiny merge applies inside it
    assert enc.encode('a<|endoftext|>b') == as_text
    assert enc.encode('a<|endoftext|>b', allowed_special={checkpoint.ENDOFTEXT}) == [ord('a'), eot, ord('b')]
    assert enc.encode('<|endoftext|><|endoftext|> the', allowed_special='all') == [eot, eot, 258]
    assert enc.decode([ord('a'), eot, ord('b')]) == 'a<|endoftext|>b'


def test_allowed_special_rejects_unknown_tokens(enc):
    with pytest.raises(ValueError, match='<|startoftext|>'):
        enc.encode('x', allowed_special={'<|startoftext|>'})
    with pytest.raises(TypeError, match='allowed_special'):
        enc.encode('x', allowed_special='<|endoftext|>')


# --- the merge loop: O(n log n), with GPT-2's ids

@st.composite
def merge_lists(draw):
    """Any merge list over a three-letter alphabet, consistent or not: out-of-order, unreachable, repeated."""
    tokens, merges = ['a', 'b', 'c'], []
    for _ in range(draw(st.integers(1, 12))):
        pair = (draw(st.sampled_from(tokens)), draw(st.sampled_from(tokens)))
        merges.append(pair)
        tokens.append(''.join(pair))
    return merges


@settings(max_examples=300, deadline=None)
@given(merge_lists(), st.text('abc', min_size=1, max_size=30))
def test_heap_merges_equal_gpt2s_merge_loop_on_any_merge_list(merges, word):
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    assert encoder.bpe_merge(word, ranks) == gpt2_bpe(word, ranks)


def test_merges_all_occurrences_of_a_pair_before_what_they_create():
    ranks = {('aa', 'a'): 0, ('a', 'a'): 1}  # a one-at-a-time heap would give ('aaa', 'a')
    assert encoder.bpe_merge('aaaa', ranks) == gpt2_bpe('aaaa', ranks) == ('aa', 'aa')


def test_long_piece_gets_gpt2s_ids(gpt2, tiktoken_gpt2):
    """The quadratic case (a run of letters with no space); bench/bench_encode.py times it."""
    rng = random.Random(0)
    letters = ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(10_000))
    assert gpt2.encode(letters[:2000], fast=False) == [gpt2.encoder[s] for s in gpt2_bpe(letters[:2000],
                                                                                           gpt2.bpe_ranks)]
    assert gpt2.encode(letters, fast=False) == tiktoken_gpt2.encode_ordinary(letters)


# --- the released vocabulary: readable path, tiktoken path, and tiktoken itself agree

TORTURE = [
    '👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽', '中文字符和日本語のテキスト、한국어', 'e\u0301 n\u0303 ǅ ﬁ ß ẞ İı',
    'control \x00\x01\x1c\x1f\x7f\x85 chars\t\ttabs\u2028\u2029', 'spaces     and\n\n\n\nnewlines \r\n \u3000\u00a0 x',
    "I'm you're they've we'll he'd it's don't I'M 'S ''s 's's", '  leading and trailing  ', '12345 ١٢٣ ½ ⅷ 𝟙𝟚',
    'http://example.com/a?b=c&d=%20#frag', 'QmFzZTY0IGJsb2I' * 50, '\ufeffBOM \ufffd \U0010ffff \U000e0001',
    'x' * 5000, ' ' * 300 + 'x', 'ab' * 1000, '\u0558\'s \u0558\'ll', 'Ꙭ́ 𐐷 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓂀', '',
]


@pytest.mark.parametrize('text', TORTURE)
def test_ids_equal_tiktokens_on_torture_strings(gpt2, tiktoken_gpt2, text):
    expected = tiktoken_gpt2.encode_ordinary(text)
    assert gpt2.encode(text, fast=False) == expected
    assert gpt2.encode(text, fast=True) == expected
    assert gpt2.decode(expected) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fast_path_equals_readable_path_on_any_text(gpt2, tiktoken_gpt2, text):
    readable = gpt2.encode(text, fast=False)
    assert gpt2.encode(text, fast=True) == readable == tiktoken_gpt2.encode_ordinary(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 50255), min_size=1, max_size=20))
def test_fast_path_equals_readable_path_on_text_made_of_tokens(gpt2, tiktoken_gpt2, ids):
    """Texts made by gluing vocabulary tokens, where BPE's choices between competing merges are hardest."""
    text = gpt2.decode(ids)
    assert gpt2.encode(text, fast=True) == gpt2.encode(text, fast=False) == tiktoken_gpt2.encode_ordinary(text)


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from('ab c'), max_size=40))
def test_fast_path_equals_readable_path_on_the_tiny_vocabulary(enc, text):
    assert enc.encode(text, fast=True) == enc.encode(text, fast=False)


def test_tiktoken_is_offered_only_the_tokens_bpe_can_make(enc):
    ranks = encoder.tiktoken_ranks(enc)
    assert ranks[b' the'] == 258 and ranks[b'or'] == 266
    assert b' wor' not in ranks  # its merge ('Ġw', 'or') needs 'Ġw', which no merge makes
    assert checkpoint.ENDOFTEXT.encode() not in ranks


@pytest.mark.parametrize('merges, made, text, ids', [
    ([('a', 'b'), ('b', 'c')], {'bc': 256, 'ab': 257}, 'abc', [257, ord('c')]),  # ids against vocab.bpe's order
    ([('b', 'c'), ('a', 'bc'), ('a', 'b'), ('ab', 'c')], {'bc': 256, 'abc': 257, 'ab': 258}, 'abc', [257]),  # twice
    ([('b', 'aa'), ('a', 'a')], {'baa': 256, 'aa': 257}, 'baa', [256]),  # a token numbered before its part
])
def test_vocabularies_tiktoken_cannot_reproduce_take_the_readable_path(merges, made, text, ids):
    odd = encoder.Encoder({**{c: b for b, c in support.byte_table().items()}, **made}, merges)
    assert encoder.tiktoken_ranks(odd) is None
    assert odd.encode(text, fast=True) == odd.encode(text, fast=False) == ids


@settings(max_examples=300, deadline=None)
@given(merge_lists(), st.lists(st.text('abc', min_size=1, max_size=14), min_size=1, max_size=10),
       st.randoms(use_true_random=False))
def test_tiktoken_is_used_only_where_it_gives_gpt2s_ids(merges, words, rng):
    """tiktoken_ranks's conditions are enough: whenever it accepts a merge list (in any id order), tiktoken's ids
    are the merge loop's."""
    made = list(dict.fromkeys(a + b for a, b in merges))
    rng.shuffle(made)
    vocab = {t: i for i, t in enumerate(dict.fromkeys(list(support.byte_table().values()) + made))}
    odd = encoder.Encoder(vocab, merges)
    pieces = [words[0]] + ['Ġ' + word for word in words[1:]]  # how GPT-2 cuts ' '.join(words)
    expected = [vocab[symbol] for piece in pieces for symbol in gpt2_bpe(piece, odd.bpe_ranks)]
    assert odd.encode(' '.join(words), fast=True) == expected


# --- the same ids whatever `regex` is installed

EVERYTHING = ''.join(chr(c) for c in range(0x110000) if not 0xd800 <= c <= 0xdfff)
TABLE_LETTERS = frozenset(map(ord, re.findall(encoder.L, EVERYTHING)))
TABLE_NUMBERS = frozenset(map(ord, re.findall(encoder.N, EVERYTHING)))
TABLE_WHITESPACE = frozenset(map(ord, re.findall(encoder.S, EVERYTHING)))


def assigned_code_points():
    """Every code point Python's Unicode tables assign, surrogates aside, plus every one the pre-tokenizer's table
    counts as a letter, number or space (tiktoken's Unicode version may be newer than Python's)."""
    classed = TABLE_LETTERS | TABLE_NUMBERS | TABLE_WHITESPACE
    return [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) not in ('Cn', 'Cs') or c in classed]


def classes_disagree(c):
    """Python's own Unicode tables (whatever version this Python has) class c differently from the checked-in
    table's: the code points where an engine's Unicode version shows."""
    category = unicodedata.category(chr(c))[0]
    return (category == 'L') != (c in TABLE_LETTERS) or (category == 'N') != (c in TABLE_NUMBERS)


@pytest.mark.parametrize('context', ['{c}', "{c}'s", "{c}'ll", 'x{c}', ' {c}', '{c}1', '1{c}'])
def test_every_code_point_gets_tiktokens_ids_in_every_context(gpt2, tiktoken_gpt2, context):
    """The pre-tokenizer's letters, numbers and spaces are tiktoken's, not the installed regex's: each code point in
    each context, one per line (a newline never joins the piece before or after it). The readable path, slower,
    takes every 11th code point and every one whose class differs between Unicode versions."""
    code_points = assigned_code_points()
    lines = [context.format(c=c) for c in code_points]
    text = '\n'.join(lines)
    assert gpt2.encode(text, fast=True) == tiktoken_gpt2.encode_ordinary(text)
    text = '\n'.join(line for n, (c, line) in enumerate(zip(code_points, lines))
                      if n % 11 == 0 or classes_disagree(ord(c)))
    assert gpt2.encode(text, fast=False) == tiktoken_gpt2.encode_ordinary(text)


def test_pythons_re_reads_the_classes_as_tiktoken_reads_its_own():
    for table, pattern in [(TABLE_LETTERS, r'\p{L}'), (TABLE_NUMBERS, r'\p{N}'), (TABLE_WHITESPACE, r'\s')]:
        assert sorted(table) == make_unicode_classes.matching_code_points(pattern)


# --- odd input

@pytest.mark.parametrize('text, replaced', [
    ('a\ud83db', 'a\ufffdb'),
    ('\udcff', '\ufffd'),
    ('\ud83d\ude00 pair', '😀 pair'),  # a surrogate pair in a str is the character it encodes
    ('x\udc80y\ud800', 'x\ufffdy\ufffd'),
])
@pytest.mark.parametrize('fast', [False, True])
def test_lone_surrogates_become_replacement_characters(gpt2, tiktoken_gpt2, text, replaced, fast):
    assert gpt2.encode(text, fast=fast) == gpt2.encode(replaced, fast=fast) == tiktoken_gpt2.encode_ordinary(text)


@pytest.mark.parametrize('bad', ['5', 3.0, True, None, b'5', [5]])
def test_decode_rejects_ids_that_are_not_integers(enc, bad):
    with pytest.raises(TypeError, match=f'not {bad!r}'.replace('[', r'\[').replace(']', r'\]')):
        enc.decode([ord('a'), bad])


@pytest.mark.parametrize('bad', [-1, 10**6])
def test_decode_rejects_ids_outside_the_vocabulary(enc, bad):
    with pytest.raises(ValueError, match=f'token id {bad} is not in the vocabulary'):
        enc.decode([bad])


def test_decode_takes_numpy_integers(enc):
    import numpy as np
    assert enc.decode(np.array([259, 258], dtype=np.int32)) == 'in the'
    assert enc.decode([np.int64(259)]) == 'in'


def test_endoftext_on_the_released_vocabulary(gpt2, tiktoken_gpt2):
    text = 'a<|endoftext|>b <|endoftext|>\n<|endoftext|>'
    assert gpt2.encode(text) == tiktoken_gpt2.encode_ordinary(text)  # text is text
    allowed = {checkpoint.ENDOFTEXT}
    expected = tiktoken_gpt2.encode(text, allowed_special=allowed)
    assert gpt2.encode(text, allowed_special=allowed, fast=False) == expected
    assert gpt2.encode(text, allowed_special=allowed, fast=True) == expected
    assert gpt2.encode('a<|endoftext|>b', allowed_special=allowed) == [64, 50256, 65]


def test_another_tiktoken_release_gets_the_spelled_out_classes(monkeypatch, tiktoken_gpt2):
    monkeypatch.setattr(encoder.unicode_classes, 'TIKTOKEN_VERSION', '0.0.0')
    other = encoder.get_encoder(GPT2_VOCAB.name, GPT2_VOCAB.parent)
    assert other.tiktoken_encoding._pat_str == encoder.PRETOKENIZE_PATTERN
    for text in TORTURE:
        assert other.encode(text, fast=True) == tiktoken_gpt2.encode_ordinary(text)
