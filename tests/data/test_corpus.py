"""Datasets -> chunks of token ids, the cuts that let text be encoded in pieces, and the Sampler's windows."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import support
import encoder
from gpt2.data import corpus
from gpt2.data.corpus import DatasetError, Sampler

VOCAB_DIR = Path(__file__).resolve().parent  # tests/data, which holds gpt2_vocab/
EOT = 50256  # <|endoftext|> in OpenAI's released encoder.json


@pytest.fixture(scope='module')
def real():
    """The encoder with OpenAI's released vocabulary (tests/data/gpt2_vocab)."""
    return encoder.get_encoder('gpt2_vocab', VOCAB_DIR)


@pytest.fixture(scope='module')
def tiny():
    return encoder.Encoder(support.tiny_vocabulary(), support.TINY_MERGES)


def write(path, text, encoding='utf-8'):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def ids(enc, text):
    """The ids of text that holds no special token, as a plain encoder gives them."""
    return list(enc.encode(text))


# ---------------------------------------------------------------------------------------------------------------
# The separator is the real <|endoftext|> token
# ---------------------------------------------------------------------------------------------------------------

def test_real_vocabulary_numbers_endoftext_50256(real):
    assert real.encoder['<|endoftext|>'] == EOT


def test_each_file_ends_with_token_50256_never_its_text(real, tmp_path):
    write(tmp_path / 'a.txt', 'Hello world.')
    write(tmp_path / 'b.txt', 'Second file\n')
    [chunk] = corpus.load_dataset(real, tmp_path)
    assert list(chunk) == ids(real, 'Hello world.') + [EOT] + ids(real, 'Second file\n') + [EOT]
    assert chunk.dtype == np.uint16


def test_literal_endoftext_in_a_file_is_one_token_50256(real, tmp_path):
    write(tmp_path / 'a.txt', 'one<|endoftext|>two <|endoftext|>')
    [chunk] = corpus.load_dataset(real, tmp_path / 'a.txt')
    # A text already ending with the token gets no second one.
    assert list(chunk) == ids(real, 'one') + [EOT] + ids(real, 'two ') + [EOT]
    assert ids(real, '<|endoftext|>') == [27, 91, 437, 1659, 5239, 91, 29]  # what plain text would have given


# ---------------------------------------------------------------------------------------------------------------
# Dataset forms
# ---------------------------------------------------------------------------------------------------------------

def test_folder_is_read_recursively_in_sorted_order_skipping_hidden_files(tiny, tmp_path):
    write(tmp_path / 'b.txt', 'b')
    write(tmp_path / 'a' / 'z.txt', 'az')
    write(tmp_path / 'a' / 'c' / 'y.md', 'acy')
    write(tmp_path / '.git' / 'HEAD', 'hidden')
    write(tmp_path / '.notes.txt', 'hidden')
    [chunk] = corpus.load_dataset(tiny, tmp_path)
    assert tiny.decode(chunk) == 'acy<|endoftext|>az<|endoftext|>b<|endoftext|>'


def test_glob_picks_matching_files_also_recursively(tiny, tmp_path):
    write(tmp_path / 'x.txt', 'x')
    write(tmp_path / 'y.csv', 'y')
    write(tmp_path / 'deep' / 'z.txt', 'z')
    [flat] = corpus.load_dataset(tiny, f'{tmp_path}/*.txt')
    assert tiny.decode(flat) == 'x<|endoftext|>'
    [deep] = corpus.load_dataset(tiny, f'{tmp_path}/**/*.txt')
    assert tiny.decode(deep) == 'z<|endoftext|>x<|endoftext|>'  # sorted paths: deep/z.txt < x.txt


@pytest.mark.parametrize('save', [np.savez, np.savez_compressed])
def test_npz_arrays_are_chunks_in_order(tiny, tmp_path, save):
    arrays = [np.arange(5, dtype=np.int64), np.array([3, 1, 4], dtype=np.uint16),
              np.arange(12, dtype=np.int32)[::-1]]
    save(tmp_path / 'data.npz', *arrays)  # as nshepperd's encode.py and gpt-2-simple write them
    chunks = corpus.load_dataset(tiny, tmp_path / 'data.npz')
    assert [list(c) for c in chunks] == [list(a) for a in arrays]
    assert all(c.dtype == np.uint16 for c in chunks)  # as text is loaded, whatever dtype the file has


def test_npz_in_a_folder_beside_text(tiny, tmp_path):
    np.savez(tmp_path / 'a.npz', np.array([7, 8]))
    write(tmp_path / 'b.txt', 'b')
    chunks = corpus.load_dataset(tiny, tmp_path)
    assert [list(c) for c in chunks] == [[7, 8], ids(tiny, 'b') + [tiny.encoder['<|endoftext|>']]]


# ---------------------------------------------------------------------------------------------------------------
# combine
# ---------------------------------------------------------------------------------------------------------------

def chunk_texts(enc, chunks):
    return [enc.decode(c) for c in chunks]


@pytest.mark.parametrize('combine, expected', [
    (0, ['a' * 30, 'b' * 30, 'c' * 30, 'd' * 30, 'e' * 30]),  # every file a chunk
    (30, ['a' * 30, 'b' * 30, 'c' * 30, 'd' * 30, 'e' * 30]),
    (31, ['a' * 30 + 'b' * 30, 'c' * 30 + 'd' * 30, 'e' * 30]),  # at least combine characters; the rest at the end
    (60, ['a' * 30 + 'b' * 30, 'c' * 30 + 'd' * 30, 'e' * 30]),
    (61, ['a' * 30 + 'b' * 30 + 'c' * 30, 'd' * 30 + 'e' * 30]),
    (10**6, ['a' * 30 + 'b' * 30 + 'c' * 30 + 'd' * 30 + 'e' * 30]),
])
def test_files_are_combined_into_chunks_of_at_least_combine_characters(tiny, tmp_path, combine, expected):
    for letter in 'abcde':
        write(tmp_path / f'{letter}.txt', letter * 30)
    chunks = corpus.load_dataset(tiny, tmp_path, combine=combine)
    texts = [t.replace('<|endoftext|>', '') for t in chunk_texts(tiny, chunks)]
    assert texts == expected
    assert all(t.endswith('<|endoftext|>') for t in chunk_texts(tiny, chunks))


# ---------------------------------------------------------------------------------------------------------------
# Encodings and bad input
# ---------------------------------------------------------------------------------------------------------------

def test_other_encoding_is_decoded_with_encoding_flag(tiny, tmp_path):
    write(tmp_path / 'a.txt', 'café', encoding='latin-1')
    with pytest.raises(DatasetError, match=r'a\.txt is not valid utf-8 .*--encoding'):
        corpus.load_dataset(tiny, tmp_path / 'a.txt')
    [chunk] = corpus.load_dataset(tiny, tmp_path / 'a.txt', encoding='latin-1')
    assert tiny.decode(chunk) == 'café<|endoftext|>'


@pytest.mark.parametrize('make, path, message', [
    (lambda d: None, 'missing.txt', r'missing\.txt not found'),
    (lambda d: (d / 'empty').mkdir(), 'empty', 'holds no files'),
    (lambda d: write(d / 'f' / 'a.txt', ''), 'f', 'holds no text'),
    (lambda d: None, '*.txt', 'no file matches'),
    (lambda d: np.savez(d / 'e.npz'), 'e.npz', 'holds no text'),
    (lambda d: write(d / 'bad.npz', 'not a zip'), 'bad.npz', r'cannot read .*bad\.npz'),
    (lambda d: np.savez(d / 'f.npz', np.array([1.5])), 'f.npz', 'not a list of token ids'),
    (lambda d: np.savez(d / 'big.npz', np.array([50257])), 'big.npz', 'outside the vocabulary'),
])
def test_bad_dataset_is_a_dataset_error_saying_what_to_do(real, tmp_path, make, path, message):
    make(tmp_path)
    with pytest.raises(DatasetError, match=message):
        corpus.load_dataset(real, tmp_path / path)


def test_unknown_encoding_is_an_error_naming_the_flag(tiny, tmp_path):
    write(tmp_path / 'a.txt', 'a')
    with pytest.raises(DatasetError, match='--encoding'):
        corpus.load_dataset(tiny, tmp_path / 'a.txt', encoding='no-such-codec')


# ---------------------------------------------------------------------------------------------------------------
# Cutting text into pieces that encode as the whole
# ---------------------------------------------------------------------------------------------------------------

def all_cuts(text):
    """Every place where the loader may cut text: the last cut of shorter and shorter prefixes. (A cut depends
    only on the characters around one whitespace run, so the loader, which looks at a window of the text, chooses
    among these.)"""
    cuts, end = [], len(text)
    while (cut := corpus.last_cut(text[:end])):
        cuts.append(cut)
        end = cut
    return cuts[::-1]


def pieces_at(text, cuts):
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize('text, cut', [
    ('ab cd', 2),  # before the space: " cd" stays one pre-token
    ('ab\ncd', 2),
    ('end.\r\nNext', 5),  # before '\n'; after the run would split '\r\n' differently
    ('one   two', 5),
    ('x \n\tY z', 5),
    ('<|endoftext|>\nNext', 13),
    ('abc.def', 3),  # punctuation after a letter
    ("it's", 2),
    ('{"a":1,"b":[2]}', 13),  # minified JSON: before ']', the last mark after a letter or digit
    ('x<|endoftext|>', 1),  # before the special token, never inside it
    ('<|endoftext|>', 0),
    ('nothing', 0),
    ('trailing  ', 0),
    ('  leading', 0),
    ('日本 語', 2),
    ('日本。語', 0),  # '。' is punctuation, but only ASCII counts after a letter
])
def test_last_cut_is_at_the_last_safe_place(text, cut):
    assert corpus.last_cut(text) == cut


def test_cutting_after_a_whitespace_run_would_change_the_pre_tokens():
    """Why the cut is before the run's last character: '\n' then a word is not a safe place on its own."""
    whole = encoder.PRETOKENIZE.findall('x \nY')
    assert whole == ['x', ' ', '\n', 'Y']
    assert encoder.PRETOKENIZE.findall('x \n') + encoder.PRETOKENIZE.findall('Y') != whole
    cut = corpus.last_cut('x \nY')
    assert encoder.PRETOKENIZE.findall('x \nY'[:cut]) + encoder.PRETOKENIZE.findall('x \nY'[cut:]) == whole


# Characters that make the pre-tokenizer's choices hard: whitespace of every kind (some of which only some
# definitions call whitespace), contractions, letters, digits, marks, symbols, and the special token.
TRICKY = st.lists(st.sampled_from([
    ' ', '  ', '\n', '\r\n', '\t', '\x0b', '\x0c', '\x1c', '\x1f', '\x85', '\xa0', '\u2028', '\u3000', '\u200b',
    'a', 'Z', 'é', 'e\u0301', '日本', '7', '42', '٣', "'", "'s", "'ll", '!', '.', '$', '😀', '\x00', '-',
    '<|endoftext|>', '<|', 'endoftext', '|>', '|', '"', ',', ':', '(', ')', '+', '/', '=', '_', '`', '\\',
]), max_size=40).map(''.join)


@settings(max_examples=400, deadline=None)
@given(TRICKY)
def test_pre_tokens_of_pieces_are_those_of_the_whole_text(text):
    pieces = pieces_at(text, all_cuts(text))
    assert ''.join(pieces) == text
    assert [t for p in pieces for t in encoder.PRETOKENIZE.findall(p)] == encoder.PRETOKENIZE.findall(text)


@settings(max_examples=100, deadline=None)
@given(TRICKY | st.text(max_size=60))
def test_encoding_of_pieces_is_the_encoding_of_the_whole_text(real, text):
    pieces = pieces_at(text, all_cuts(text))
    encode = lambda t: corpus.encode_text(real, t)
    assert [i for p in pieces for i in encode(p)] == encode(text)


@pytest.mark.parametrize('text', [
    'some words\n' * 300,
    '{"key":"value","n":[1,2,3]}' * 300,  # no whitespace at all
    'QUJDRA+/' * 300,  # base64
])
def test_pieces_stay_small_when_the_text_can_be_cut(tmp_path, monkeypatch, text):
    write(tmp_path / 'a.txt', text)
    monkeypatch.setattr(corpus, 'BLOCK_SIZE', 16)
    progress = type('Progress', (), {'update': lambda self, n: None})()
    pieces = list(corpus.text_pieces(tmp_path / 'a.txt', 'utf-8', progress))
    assert ''.join(pieces) == text
    assert max(map(len, pieces)) <= 2 * 16


def test_file_read_in_tiny_blocks_encodes_as_the_whole_text(real, tmp_path, monkeypatch):
    text = ('Über naïve café\r\n\r\nThe end.<|endoftext|>\nNext  doc 😀 ends\n' * 20).strip()
    write(tmp_path / 'a.txt', text)
    monkeypatch.setattr(corpus, 'BLOCK_SIZE', 5)  # cuts inside multi-byte characters and runs
    [chunk] = corpus.load_dataset(real, tmp_path / 'a.txt')
    assert list(chunk) == corpus.encode_text(real, text) + [EOT]


# ---------------------------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------------------------

def numbered_chunks(lengths):
    """Chunk c holds c*1000, c*1000+1, ...: a window's tokens tell where it came from."""
    return [np.arange(length) + 1000 * c for c, length in enumerate(lengths)]


def origin(row):
    """A window's tokens -> (chunk, start), after checking that they are consecutive tokens of one chunk."""
    assert np.all(np.diff(row) == 1), f'{row} crosses a chunk boundary'
    return int(row[0]) // 1000, int(row[0]) % 1000


def test_windows_stay_inside_one_chunk_and_short_chunks_come_whole():
    lengths = [3, 50, 8, 1, 20]
    sampler = Sampler(numbered_chunks(lengths), seq_len=8, seed=1)
    for _ in range(50):
        tokens, row_lengths = sampler.sample(6)
        assert tokens.dtype == np.int32 and row_lengths.dtype == np.int32
        assert tokens.shape == (6, row_lengths.max())
        for row, length in zip(tokens, row_lengths):
            chunk, start = origin(row[:length])
            assert start + length <= lengths[chunk]
            assert length == min(8, lengths[chunk])
            assert start == 0 or length == 8  # a short chunk has one start, 0
            assert np.all(row[length:] == Sampler.PAD)


def test_every_start_of_every_chunk_is_equally_likely():
    lengths = [10, 40, 3]  # 3 + 33 + 1 = 37 starts for windows of 8
    sampler = Sampler(numbered_chunks(lengths), seq_len=8, seed=2)
    per_start = 300
    counts = {}
    for _ in range(37 * per_start // 100):
        tokens, row_lengths = sampler.sample(100)
        for row, length in zip(tokens, row_lengths):
            key = origin(row[:length])
            counts[key] = counts.get(key, 0) + 1
    expected = {(0, s) for s in range(3)} | {(1, s) for s in range(33)} | {(2, 0)}
    assert set(counts) == expected
    # Binomial counts with mean 300 and sd ~17: a bound of 6 sd fails by chance about once in 10**7 runs.
    assert all(abs(n - per_start) < 6 * per_start ** 0.5 for n in counts.values()), counts


def test_batches_are_deterministic_for_a_seed_and_resumable():
    chunks = numbered_chunks([30, 30])
    first = [Sampler(chunks, 5, seed=7).sample(4) for _ in range(2)]
    assert np.array_equal(first[0][0], first[1][0])
    straight = Sampler(chunks, 5, seed=7)
    batches = [straight.sample(4)[0] for _ in range(5)]
    resumed = Sampler(chunks, 5, seed=7)
    resumed.draws = 3
    assert np.array_equal(resumed.sample(4)[0], batches[3])
    assert not np.array_equal(Sampler(chunks, 5, seed=8).sample(4)[0], batches[0])
    assert not np.array_equal(batches[0], batches[1])


def test_fixed_batches_do_not_depend_on_or_disturb_the_training_stream():
    chunks = numbered_chunks([40, 9])
    sampler = Sampler(chunks, 6, seed=3)
    fixed = sampler.fixed_batches(batch_size=3, count=4)
    assert len(fixed) == 4 and all(t.shape[0] == 3 for t, _ in fixed)
    training = sampler.sample(3)[0]
    again = Sampler(chunks, 6, seed=3)
    again.sample(3)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(fixed, again.fixed_batches(3, 4)))
    assert np.array_equal(training, Sampler(chunks, 6, seed=3).sample(3)[0])


def test_sampler_of_no_tokens_is_a_dataset_error():
    with pytest.raises(DatasetError):
        Sampler([np.array([], dtype=np.uint16)], 4, seed=0)


def test_sampler_without_seed_draws_and_window_length_must_be_positive():
    tokens, lengths = Sampler(numbered_chunks([20]), 4, seed=None).sample(2)
    assert tokens.shape == (2, 4) and list(lengths) == [4, 4]
    with pytest.raises(ValueError, match='seq_len'):
        Sampler(numbered_chunks([20]), 0, seed=0)
