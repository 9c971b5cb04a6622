import pytest
from hypothesis import given, settings, strategies as st

import checkpoint
import conftest
import encoder


@pytest.fixture(scope='module')
def enc():
    return encoder.Encoder(conftest.tiny_vocabulary(), conftest.TINY_MERGES)


def test_byte_table_is_gpt2s():
    table = encoder.bytes_to_unicode()
    assert table == conftest.byte_table()
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
def test_encode_gives_hand_checked_ids(enc, text, ids):
    assert enc.encode(text) == ids
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
    small = encoder.Encoder(conftest.tiny_vocabulary(), conftest.TINY_MERGES)
    small.encode(' '.join(f'w{i}' for i in range(100)))
    assert small.bpe.cache_info().currsize == 10


def test_get_encoder_reads_the_model_folder(tiny_model):
    enc = encoder.get_encoder(tiny_model.name, tiny_model.models_dir)
    assert enc.encode(' the hello') == [258, ord(' '), 257, 263, ord('o')]
    assert enc.encoder['<|endoftext|>'] == tiny_model.endoftext


def test_endoftext_is_ordinary_text_unless_allowed(enc):
    eot = conftest.tiny_vocabulary()[checkpoint.ENDOFTEXT]
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
