"""POST /v1/embeddings as clients see it, on the tiny model: the `openai` client's embeddings.create in both
encodings against the NumPy reference model's hidden states (tests/reference.py), and its errors."""
import asyncio
import base64
import threading
import types

import numpy as np
import openai
import pytest
import requests

import reference
from gpt2.serving import engine

PROMPT = [32, 262, 263, 264, 45]  # ' ', ' and', 'll', 'ell', 'E' (ids of tests/support.py's vocabulary)


@pytest.fixture(scope='module')
def client(server):
    return openai.OpenAI(base_url=server[1] + '/v1', api_key='unused', max_retries=0, timeout=60)


def expected(tiny_model, tokens, pooling='mean'):
    """The reference's final hidden states (after ln_f) of tokens, pooled -> [n_embd]."""
    final = reference.hidden_states(tiny_model.params, tiny_model.hparams, np.array(tokens))[-1]
    return final.mean(axis=0) if pooling == 'mean' else final[-1]


def test_the_clients_default_is_base64_decoded_to_the_references(client, tiny_model):
    """Without encoding_format the client asks for base64 and decodes it itself, as openai 3.x does."""
    the_and = [tiny_model.vocab['Ġthe'], tiny_model.vocab['Ġand']]
    answer = client.embeddings.create(model=tiny_model.name, input=[' the and', 'll'])
    assert answer.object == 'list' and answer.model == tiny_model.name
    assert [d.index for d in answer.data] == [0, 1] and all(d.object == 'embedding' for d in answer.data)
    np.testing.assert_allclose(answer.data[0].embedding, expected(tiny_model, the_and), atol=1e-4)
    np.testing.assert_allclose(answer.data[1].embedding, expected(tiny_model, [tiny_model.vocab['ll']]), atol=1e-4)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == 3


@pytest.mark.parametrize('pooling', ['mean', 'last'])
def test_floats_of_token_ids_are_the_references(client, tiny_model, pooling):
    inputs = [PROMPT, PROMPT[:2], [tiny_model.endoftext]]
    answer = client.embeddings.create(model=tiny_model.name, input=inputs, encoding_format='float',
                                      extra_body={'pooling': pooling})
    for data, tokens in zip(answer.data, inputs):
        assert isinstance(data.embedding, list) and len(data.embedding) == 16
        np.testing.assert_allclose(data.embedding, expected(tiny_model, tokens, pooling), atol=1e-4)
    assert answer.usage.prompt_tokens == len(PROMPT) + 3


def test_base64_asked_for_is_little_endian_float32(client, tiny_model):
    """Asked for explicitly, base64 comes back as the string (the client leaves it); its bytes are the floats'."""
    ask = dict(model=tiny_model.name, input=PROMPT)
    encoded = client.embeddings.create(**ask, encoding_format='base64').data[0].embedding
    floats = client.embeddings.create(**ask, encoding_format='float').data[0].embedding
    assert isinstance(encoded, str)
    decoded = np.frombuffer(base64.b64decode(encoded), dtype='<f4')
    assert decoded.tolist() == np.float32(floats).tolist()
    np.testing.assert_allclose(decoded, expected(tiny_model, PROMPT), atol=1e-4)


@pytest.mark.parametrize('ask, error, param, words', [
    (dict(model='other'), openai.NotFoundError, 'model', ["'other'"]),
    (dict(encoding_format='hex'), openai.BadRequestError, 'encoding_format', ["'hex'"]),
    (dict(extra_body={'pooling': 'max'}), openai.BadRequestError, 'pooling', ["'max'"]),
    (dict(input=''), openai.BadRequestError, 'input', ['empty']),
    (dict(input=['a', '']), openai.BadRequestError, 'input', ['empty']),
    (dict(input=[]), openai.BadRequestError, 'input', ['input']),
    (dict(input=[[1], []]), openai.BadRequestError, 'input', ['input']),
    (dict(input=[1] * 33), openai.BadRequestError, 'input', ['window is 32 tokens', '33']),
    (dict(input=[5, 10 ** 6]), openai.BadRequestError, 'input', ['1000000', 'vocabulary']),
    (dict(dimensions=8), openai.BadRequestError, 'dimensions', ['16']),
], ids=['model', 'encoding_format', 'pooling', 'empty text', 'an empty text', 'no input', 'empty ids',
        'window', 'token id', 'dimensions'])
def test_bad_requests_raise_the_clients_errors(client, tiny_model, ask, error, param, words):
    with pytest.raises(error) as raised:
        client.embeddings.create(**{'model': tiny_model.name, 'input': PROMPT, **ask})
    body = raised.value.body
    assert set(body) == {'message', 'type', 'param', 'code'} and body['param'] == param
    for word in words:
        assert word in body['message']


def test_the_server_goes_on_after_bad_input(server, tiny_model):
    url = server[1]
    answer = requests.post(url + '/v1/embeddings', json={'model': tiny_model.name})
    assert answer.status_code == 400 and answer.json()['error']['param'] == 'input'
    assert requests.post(url + '/v1/embeddings', data=b'{"input": ').status_code == 400
    assert requests.get(url + '/health').status_code == 200
    good = requests.post(url + '/v1/embeddings', json={'input': [1] * 32})
    assert good.status_code == 200 and len(good.json()['data'][0]['embedding']) == 16


def test_side_work_runs_off_the_event_loop_and_raises_its_errors():
    """Engine.side, which the route runs the embeddings with: fn(model) on another thread than the event loop's,
    its result returned and its exception raised."""
    model = FakeModel()
    worker = engine.Engine(model.load, max_batch_size=1, max_queue=1)
    worker.start()
    assert worker.ready.wait(30)

    async def ask():
        here = threading.get_ident()
        there, given = await worker.side(lambda m: (threading.get_ident(), m))
        with pytest.raises(ZeroDivisionError):
            await worker.side(lambda m: 1 / 0)
        return here, there, given

    try:
        here, there, given = asyncio.run(ask())
    finally:
        worker.stop(30)
    assert there != here and given is model and model.closed


class FakeModel:
    """The engine's model, without TensorFlow: its decoding loop waits until the queue closes."""
    closed = False
    scheduler = types.SimpleNamespace(calls=0)

    def load(self, queue, finish):
        self.queue = queue
        return self

    def decode(self):
        assert self.queue.next_row(timeout=None) is None

    def close(self):
        self.closed = True
