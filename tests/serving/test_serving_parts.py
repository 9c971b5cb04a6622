"""The server's parts without a server: reading a request body, the queue, and a streamed choice's text (what is
held back for a stop string), on hand-checked cases."""
import pytest

import encoder
from gpt2.serving import engine, parsing, responses
from gpt2.serving.errors import APIError


@pytest.fixture(scope='module')
def enc(tiny_model):
    return encoder.read_vocabulary(tiny_model.dir)


def completion(enc, tiny_model, **body):
    return parsing.completion({'prompt': 'the', **body}, model_name=tiny_model.name, enc=enc, n_ctx=32,
                               n_vocab=len(tiny_model.vocab))


def test_the_four_prompt_forms(enc, tiny_model):
    the = [ord('t'), tiny_model.vocab['he']]
    assert completion(enc, tiny_model, prompt='the').prompts == [the]
    assert completion(enc, tiny_model, prompt=['the', '']).prompts == [the, [tiny_model.endoftext]]
    assert completion(enc, tiny_model, prompt=[1, 2]).prompts == [[1, 2]]
    assert completion(enc, tiny_model, prompt=[[1], [2, 3]]).prompts == [[1], [2, 3]]


@pytest.mark.parametrize('body, status, param', [
    ({'prompt': []}, 400, 'prompt'), ({'prompt': [1, 'a']}, 400, 'prompt'), ({'prompt': [[]]}, 400, 'prompt'),
    ({'model': 'x'}, 404, 'model'), ({'n': 0}, 400, 'n'), ({'top_p': 0}, 400, 'top_p'),
    ({'stop': 3}, 400, 'stop'), ({'echo': 'yes'}, 400, 'echo'), ({'seed': 1.5}, 400, 'seed'),
    ({'stream_options': {'include_usage': True}}, 400, 'stream_options'),
    ({'max_tokens': 32}, 400, 'max_tokens'), ({'logit_bias': {'1': 2}}, 400, 'logit_bias'),
])
def test_bad_bodies_name_their_parameter(enc, tiny_model, body, status, param):
    with pytest.raises(APIError) as raised:
        completion(enc, tiny_model, **body)
    assert (raised.value.status, raised.value.param) == (status, param)


def test_rows_are_indexed_prompt_by_n(enc, tiny_model):
    request = completion(enc, tiny_model, prompt=[[1], [2]], n=3)
    assert [(index, p) for index, p, _ in request.rows()] == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]


def job(enc, tiny_model, **body):
    return engine.Job(completion(enc, tiny_model, **body), loop=None)


def test_the_queue_hands_out_rows_first_come_first_served(enc, tiny_model):
    queue = engine.Queue(max_queue=10)
    a, b, c = job(enc, tiny_model, n=2), job(enc, tiny_model, prompt=[5]), job(enc, tiny_model, prompt=[6])
    for j in (a, b, c):
        queue.submit(j)
    b.cancelled = True  # its client went away while it waited
    taken = [queue.next_row(timeout=0) for _ in range(4)]
    assert [(t[0], t[1]) for t in taken[:3]] == [(a, 0), (a, 1), (c, 0)] and taken[3] is None
    assert taken[2][2] == [6]


def test_a_full_queue_refuses(enc, tiny_model):
    queue = engine.Queue(max_queue=1)
    queue.submit(job(enc, tiny_model))
    with pytest.raises(engine.QueueFull):
        queue.submit(job(enc, tiny_model))


def test_a_stream_holds_back_what_may_become_a_stop_string(enc, tiny_model):
    stream = responses.TextStream(enc, ['the end'])
    ids = enc.encode(' hello the endless')
    sent = [stream.add(t) for t in ids]
    assert ''.join(sent) == ' hello '  # 'the en' might have begun 'the end'; then it did
    assert stream.stopped and stream.rest(' hello ') == ''


def test_a_stream_waits_for_a_characters_last_byte(enc, tiny_model):
    stream = responses.TextStream(enc, [])
    data = 'é'.encode('utf-8')  # two bytes, two tokens of the tiny vocabulary
    assert stream.add(tiny_model.vocab[encoder.bytes_to_unicode()[data[0]]]) == ''
    assert stream.add(tiny_model.vocab[encoder.bytes_to_unicode()[data[1]]]) == 'é'


def test_held_is_the_longest_tail_that_begins_a_stop():
    assert responses.held('abc', ['cd', 'bcx']) == 2
    assert responses.held('abc', ['x']) == 0
