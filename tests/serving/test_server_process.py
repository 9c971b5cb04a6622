"""src/server.py as a process: its API key, concurrent requests, a client that goes away mid-stream, SIGTERM with
a request in flight (the last test: it ends this module's server), and bad flags."""
import concurrent.futures
import socket
import time

import openai
import pytest
import requests

from support import assert_clean_error, run_script, server_log, stop_server

KEY = 'secret-key'
SERVER_FLAGS = (f'--api_key={KEY}',)
ASK = {'model': 'tiny', 'prompt': [5, 6, 7], 'max_tokens': 8, 'temperature': 0}


def post(url, body, key=KEY, **options):
    return requests.post(url + '/v1/completions', json=body, headers={'Authorization': f'Bearer {key}'}, **options)


def test_the_api_key_is_asked_for(server, tiny_model):
    url = server[1]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + '/v1', api_key='wrong', max_retries=0).models.list()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + '/v1', api_key='wrong', max_retries=0).completions.create(**ASK)
    assert requests.get(url + '/v1/models').status_code == 401
    missing = requests.post(url + '/v1/completions', json=ASK)  # no key sent
    assert missing.status_code == 401 and missing.json()['error']['code'] == 'invalid_api_key'
    assert requests.post(url + '/tokenize', json={'prompt': 'the'}).status_code == 401
    assert requests.get(url + '/health').status_code == 200  # a load balancer's probe needs no key
    client = openai.OpenAI(base_url=url + '/v1', api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == [tiny_model.name]
    assert client.completions.create(**{**ASK, 'model': tiny_model.name}).choices[0].finish_reason


def test_concurrent_requests_get_what_each_gets_alone(server, tiny_model):
    """Greedy requests of other prompts, lengths and knobs, a streamed one, and seeded sampled ones, sent all at
    once (twice each) through the openai client, share the engine: each gets the choices it gets alone."""
    client = openai.OpenAI(base_url=server[1] + '/v1', api_key=KEY, max_retries=0, timeout=60)
    asks = [dict(prompt=[5, 6, 7], max_tokens=8, temperature=0),
            dict(prompt=[40, 41], max_tokens=12, temperature=0, n=2),
            dict(prompt='the and', max_tokens=6, temperature=0, presence_penalty=1.5, stop=['x']),
            dict(prompt=[[1, 2, 3, 4], [9]], max_tokens=5, temperature=0, extra_body={'repetition_penalty': 1.3}),
            dict(prompt=[9, 8], max_tokens=10, temperature=0, stream=True),
            dict(prompt=[5, 6, 7], max_tokens=8, temperature=1, seed=3, n=2),
            dict(prompt=' the', max_tokens=10, temperature=0.7, seed=11, extra_body={'top_k': 5})]  # vLLM's extras

    def choices(ask):
        """-> [(index, text, finish_reason)], a stream's chunks joined."""
        answer = client.completions.create(model=tiny_model.name, **ask)
        if not ask.get('stream'):
            return [(c.index, c.text, c.finish_reason) for c in answer.choices]
        texts, reasons = {}, {}
        for chunk in answer:
            for c in chunk.choices:
                texts[c.index] = texts.get(c.index, '') + c.text
                reasons[c.index] = c.finish_reason or reasons.get(c.index)
        return [(i, texts[i], reasons[i]) for i in sorted(texts)]

    alone = [choices(ask) for ask in asks]
    with concurrent.futures.ThreadPoolExecutor(2 * len(asks)) as pool:
        together = list(pool.map(choices, asks * 2))
    assert together == alone * 2


def test_a_client_that_leaves_mid_stream_leaves_the_server_serving(server, tiny_model):
    url = server[1]
    body = {**ASK, 'model': tiny_model.name, 'max_tokens': 28, 'stream': True, 'n': 4, 'temperature': 1}
    with post(url, body, stream=True) as answer:
        first = next(answer.iter_lines())
        assert first.startswith(b'data: ')
    # The connection is closed: the server drops the job's rows and answers the next request as ever.
    plain = post(url, {**ASK, 'model': tiny_model.name})
    assert plain.status_code == 200, plain.text
    assert plain.json()['choices'][0]['finish_reason'] in ('stop', 'length')
    assert 'Traceback' not in server_log(server[0])


def test_sigterm_finishes_the_request_in_flight_and_exits_0(server, tiny_model):
    """A request whose headers are in but whose body is not: SIGTERM stops the server accepting, yet it waits
    for that request, answers it, and exits 0."""
    process, url = server
    port = int(url.rsplit(':', 1)[1])
    body = ('{"model": "%s", "prompt": [5, 6, 7], "max_tokens": 4, "temperature": 0}' % tiny_model.name).encode()
    with socket.create_connection(('127.0.0.1', port), timeout=30) as conn:
        conn.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                     b'Authorization: Bearer ' + KEY.encode() + b'\r\nConnection: close\r\n'
                     b'Content-Length: ' + str(len(body)).encode() + b'\r\n\r\n' + body[:10])
        time.sleep(0.5)  # the server has the headers: the request is in flight
        process.terminate()
        time.sleep(0.5)
        with pytest.raises(OSError):  # no longer accepting
            socket.create_connection(('127.0.0.1', port), timeout=5).close()
        conn.sendall(body[10:])
        answer = b''
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b'HTTP/1.1 200'), answer
    assert b'"text_completion"' in answer
    assert stop_server(process) == 0, server_log(process)


def test_a_missing_model_is_one_error_line(tmp_path):
    done = run_script('server.py', '--model_name=absent', f'--models_dir={tmp_path}')
    assert done.returncode == 1
    assert_clean_error(done, 'absent')


@pytest.mark.parametrize('flag, words', [('--max_batch_size=0', ['--max_batch_size']),
                                         ('--precision=int4', ['--precision', 'float32', 'int8']),
                                         # no half-precision cache in the server's loop yet
                                         ('--precision=bfloat16', ['--precision', 'float32', 'int8, got'])])
def test_a_bad_flag_is_refused(tiny_model, flag, words):
    done = run_script('server.py', f'--models_dir={tiny_model.models_dir}', f'--model_name={tiny_model.name}', flag)
    assert done.returncode == 2
    assert_clean_error(done, *words)
