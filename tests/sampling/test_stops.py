import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import support
import encoder
import reference
import sample
from gpt2.sampling import stops
from support import restore

# A hand-made vocabulary of byte strings: token i is PIECES[i].
PIECES = [b'ab', b'c', b'abc', b'\n', b'\n\n', b'x', b'END', b'\xe2\x82', b'\xac', b'']


def table():
    t = np.full([len(PIECES), 3], stops.NO_BYTE, np.int32)
    for i, p in enumerate(PIECES):
        t[i, :len(p)] = list(p)
    return t


def first_stop_step(tokens, stop_strings):
    """The step whose token holds the last byte of the first stop string to appear, or None: from the bytes."""
    for step in range(len(tokens)):
        text = b''.join(PIECES[t] for t in tokens[:step + 1])
        if any(s.encode() in text for s in stop_strings):
            return step
    return None


@pytest.mark.parametrize('stop_strings, rows', [
    (['abc'], [[2, 5], [0, 1], [1, 0, 5], [5, 0, 1]]),  # inside one token, across two, never, across at the end
    (['\n\n'], [[3, 3], [4], [3, 5, 3], [5, 4]]),  # across, one token, split by another, after another
    (['c', 'END'], [[0, 5, 6], [6], [0, 0, 1], [5, 5, 5]]),  # several at once, short and long
    (['€'], [[7, 8], [5, 7, 8, 5], [8, 7], [9, 7, 8]]),  # a character whose bytes fall in two tokens
    (['bc\n'], [[2, 3], [0, 1, 4], [0, 3, 1], [5, 9, 2, 9, 3]]),  # across three tokens, empty tokens between
])
def test_the_loop_side_finds_stop_strings_where_the_bytes_do(stop_strings, rows):
    steps = max(map(len, rows))
    with tf.Graph().as_default(), tf.Session() as sess:
        tokens = tf.placeholder(tf.int32, [len(rows)])
        array = stops.stop_array(stop_strings)
        window = tf.placeholder(tf.int32, [len(rows), None])
        advanced = stops.advance(window, tf.constant(table()), tokens, tf.constant(array))
        state = sess.run(stops.empty_window(len(rows), tf.constant(array)))
        hits = []
        for step in range(steps):
            fed = [r[step] if step < len(r) else 9 for r in rows]  # token 9 is empty: nothing changes
            state, hit = sess.run(advanced, {tokens: fed, window: state})
            hits.append(hit)
    got = [next((s for s in range(steps) if hits[s][row]), None) for row in range(len(rows))]
    assert got == [first_stop_step(r, stop_strings) for r in rows]


def test_cut_ends_before_the_first_stop_string():
    assert stops.cut('one\n\ntwo END three', ['END', '\n\n']) == 'one'
    assert stops.cut('one END two\n\n', ['\n\n', 'END']) == 'one '
    assert stops.cut('nothing here', ['END']) == 'nothing here'
    assert stops.cut('END', ['END']) == ''


@pytest.mark.parametrize('pieces', [['one E', 'N', 'D two'], ['one EN', 'Dx'], ['one', ' END'], ['one E', 'x E', 'ND']])
def test_stream_cut_prints_the_same_text_as_cut_whatever_the_pieces(pieces):
    stream = stops.StreamCut(['END', '\n\n'])
    printed = ''.join(stream.feed(p) for p in pieces) + stream.finish()
    assert printed == stops.cut(''.join(pieces), ['END', '\n\n'])


def test_stream_cut_holds_back_only_a_possible_start_and_prints_it_at_the_end():
    stream = stops.StreamCut(['END'])
    assert stream.feed('abcE') == 'abc'
    assert stream.feed('Nx') == 'ENx'  # 'ENx' can no longer become 'END'
    assert stream.feed(' EN') == ' '
    assert stream.finish() == 'EN'
    stream = stops.StreamCut(['END'])
    assert (stream.feed('aEN'), stream.feed('D and more'), stream.finish()) == ('a', '', '')


def test_token_bytes_holds_each_tokens_bytes(tiny_model):
    enc = encoder.read_vocabulary(tiny_model.dir)
    t = stops.token_bytes(enc, tiny_model.hparams['n_vocab'])
    by_id = {i: s for s, i in tiny_model.vocab.items()}
    to_byte = {c: b for b, c in support.byte_table().items()}
    for i in (0, 65, 258, tiny_model.endoftext):
        expected = bytes(to_byte[c] for c in by_id[i]) if i != tiny_model.endoftext else b'<|endoftext|>'
        assert bytes(b for b in t[i] if b >= 0) == expected


def decode_bytes(tiny_model, tokens):
    by_id = {i: s for s, i in tiny_model.vocab.items()}
    to_byte = {c: b for b, c in support.byte_table().items()}
    special = {tiny_model.endoftext: b'<|endoftext|>'}
    return b''.join(special.get(t) or bytes(to_byte[c] for c in by_id[t]) for t in tokens)


def test_sampling_stops_once_every_row_has_its_stop_string(tiny_model):
    """Greedy rows from two prompts; a stop string made of the end of one token and the start of the next in
    the first row's sample: each row is done at the token that completes the string (or never), and the loop ends
    when both are, or at length."""
    enc = encoder.read_vocabulary(tiny_model.dir)
    prompts = [[4, 2], [7, 1]]
    greedy = [reference.greedy(tiny_model.params, tiny_model.hparams, p, 12)[2:] for p in prompts]
    text = [decode_bytes(tiny_model, g) for g in greedy]
    # Two ASCII bytes around a boundary of the first row's tokens, from the 3rd on.
    ends = np.cumsum([len(decode_bytes(tiny_model, [t])) for t in greedy[0]])
    step = next(s for s in range(2, 11) if 0 < ends[s - 1] < len(text[0]) and text[0][ends[s - 1] - 1] < 0x80
                and text[0][ends[s - 1]] < 0x80 and 0 < ends[s] - ends[s - 1])
    stop_bytes = text[0][ends[step - 1] - 1:ends[step - 1] + 1]
    stop = stop_bytes.decode('ascii')

    def done_at(row):
        return next((s for s in range(12) if stop_bytes in decode_bytes(tiny_model, greedy[row][:s + 1])), None)
    with tf.Graph().as_default():
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=tf.constant(prompts), length=12,
                                     top_k=1, stops=stops.stop_array([stop]),
                                     token_bytes=stops.token_bytes(enc, tiny_model.hparams['n_vocab']))
        with tf.Session() as sess:
            restore(sess, tiny_model)
            got = sess.run(out)
    stopped = [done_at(0), done_at(1)]
    assert stopped[0] <= step
    expected_len = 12 if None in stopped else max(stopped) + 1
    assert got.shape == (2, 2 + expected_len)
    assert got[:, 2:].tolist() == [g[:expected_len] for g in greedy]
