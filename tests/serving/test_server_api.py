"""src/server.py as clients see it, on the tiny model: the `openai` Python client and lm-evaluation-harness's
`local-completions` (clients no one here wrote) and plain HTTP, against the NumPy reference model
(tests/reference.py), the tiny vocabulary (tests/support.py), and the project's own scripts that score text
(src/score.py, src/evaluate_tasks.py harness)."""
import concurrent.futures
import json
import os
import time

import numpy as np
import openai
import pytest
import requests

import reference
import support
from support import decode, run_script

os.environ.setdefault('HF_DATASETS_OFFLINE', '1')  # the harness's task data are local files: no network

# --max_queue 1: one request may wait, the next is refused (test_a_full_queue_answers_503_with_retry_after)
SERVER_FLAGS = ('--max_body_bytes=4096', '--max_batch_size=4', '--max_queue=1')
PROMPT = [32, 262, 263, 264, 45]  # ' ', ' and', 'll', 'ell', 'E' (ids of tests/support.py's vocabulary)


@pytest.fixture(scope='module')
def client(server):
    return openai.OpenAI(base_url=server[1] + '/v1', api_key='unused', max_retries=0, timeout=60)


def expected_greedy(tiny, prompt, length):
    """The reference's greedy tokens after prompt, through <|endoftext|> if drawn (a stop), and their text."""
    tokens = reference.greedy(tiny.params, tiny.hparams, prompt, length)[len(prompt):]
    if tiny.endoftext in tokens:
        tokens = tokens[:tokens.index(tiny.endoftext) + 1]
        return tokens, decode(tiny, tokens[:-1]), 'stop'
    return tokens, decode(tiny, tokens), 'length'


def test_models_lists_the_model(client, tiny_model):
    assert [m.id for m in client.models.list().data] == [tiny_model.name]


def test_greedy_completion_is_the_references(client, tiny_model):
    tokens, text, reason = expected_greedy(tiny_model, PROMPT, 10)
    answer = client.completions.create(model=tiny_model.name, prompt=PROMPT, max_tokens=10, temperature=0)
    assert answer.object == 'text_completion' and answer.model == tiny_model.name
    assert [(c.index, c.text, c.finish_reason) for c in answer.choices] == [(0, text, reason)]
    assert answer.usage.prompt_tokens == len(PROMPT) and answer.usage.completion_tokens == len(tokens)


def test_a_text_prompt_is_its_tokens(client, tiny_model):
    """' the<|endoftext|>' is two tokens of the tiny vocabulary: 'Ġthe', then <|endoftext|> as its one token."""
    ids = [tiny_model.vocab['Ġthe'], tiny_model.endoftext]
    by_text = client.completions.create(model=tiny_model.name, prompt=' the<|endoftext|>', max_tokens=4,
                                        temperature=0)
    by_ids = client.completions.create(model=tiny_model.name, prompt=ids, max_tokens=4, temperature=0)
    assert by_text.choices[0].text == by_ids.choices[0].text == expected_greedy(tiny_model, ids, 4)[1]
    assert by_text.usage.prompt_tokens == 2


def test_streamed_chunks_add_up_to_the_completion(client, tiny_model):
    _, text, reason = expected_greedy(tiny_model, PROMPT, 12)
    chunks = list(client.completions.create(model=tiny_model.name, prompt=PROMPT, max_tokens=12, temperature=0,
                                            stream=True, stream_options={'include_usage': True}))
    assert ''.join(c.choices[0].text for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reason
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == len(PROMPT)


def test_n_and_several_prompts_index_the_choices(client, tiny_model):
    prompts = [PROMPT, PROMPT[:2], [tiny_model.endoftext]]
    answer = client.completions.create(model=tiny_model.name, prompt=prompts, max_tokens=5, n=2, temperature=0)
    assert [c.index for c in answer.choices] == list(range(6))
    for p, prompt in enumerate(prompts):
        greedy = expected_greedy(tiny_model, prompt, 5)[1]
        assert [answer.choices[2 * p + j].text for j in range(2)] == [greedy, greedy]


def test_a_seed_repeats_the_samples(client, tiny_model):
    ask = dict(model=tiny_model.name, prompt=PROMPT, max_tokens=8, n=3, temperature=1.0, seed=7)
    first, again = (client.completions.create(**ask) for _ in range(2))
    assert [c.text for c in first.choices] == [c.text for c in again.choices]


def test_stop_cuts_the_text_before_it(client, tiny_model):
    _, text, _ = expected_greedy(tiny_model, PROMPT, 12)
    assert len(text) >= 5
    stop = text[3:5]
    answer = client.completions.create(model=tiny_model.name, prompt=PROMPT, max_tokens=12, temperature=0,
                                       stop=[stop, 'never there'])
    assert answer.choices[0].text == text[:text.find(stop)]
    assert answer.choices[0].finish_reason == 'stop'


def test_echoed_logprobs_are_the_references(client, tiny_model):
    """With echo the prompt's tokens get their log-probabilities too (the first none): those of the NumPy
    reference, as score.py's; the completion's (greedy) are the reference's over prompt and completion."""
    tokens, _, reason = expected_greedy(tiny_model, PROMPT, 3)
    answer = client.completions.create(model=tiny_model.name, prompt=PROMPT, max_tokens=3, temperature=0,
                                       echo=True, logprobs=2)
    logprobs = answer.choices[0].logprobs
    sequence = PROMPT + tokens
    assert logprobs.tokens == [decode(tiny_model, [t]) for t in sequence]
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    expected = -reference.next_token_losses(tiny_model.params, tiny_model.hparams, np.array(sequence))
    np.testing.assert_allclose(logprobs.token_logprobs[1:], expected, atol=1e-4)
    z = reference.logits(tiny_model.params, tiny_model.hparams, np.array(sequence))
    z = z - z.max(-1, keepdims=True)
    best = (z - np.log(np.exp(z).sum(-1, keepdims=True))).max(-1)  # the most likely token's log-probability
    np.testing.assert_allclose([max(top.values()) for top in logprobs.top_logprobs[1:]], best[:-1], atol=1e-4)
    assert logprobs.text_offset == list(np.cumsum([0] + [len(t) for t in logprobs.tokens])[:-1])
    if reason == 'length':  # (a stop's text is not in the text, its token is in the tokens)
        assert answer.choices[0].text == ''.join(logprobs.tokens)


def test_streamed_logprobs_are_the_references(client, tiny_model):
    """With stream, a chunk per token carries that token's logprobs: the reference's, as unstreamed."""
    tokens, _, _ = expected_greedy(tiny_model, PROMPT, 6)
    chunks = [c.choices[0] for c in client.completions.create(model=tiny_model.name, prompt=PROMPT, max_tokens=6,
                                                              temperature=0, logprobs=2, stream=True)]
    scored = [c.logprobs for c in chunks if c.logprobs is not None]
    assert [piece for lp in scored for piece in lp.tokens] == [decode(tiny_model, [t]) for t in tokens]
    sequence = PROMPT + tokens
    expected = -reference.next_token_losses(tiny_model.params, tiny_model.hparams, np.array(sequence))
    np.testing.assert_allclose([v for lp in scored for v in lp.token_logprobs], expected[len(PROMPT) - 1:],
                               atol=1e-4)
    assert all(len(top) == 2 for lp in scored for top in lp.top_logprobs)
    assert [o for lp in scored for o in lp.text_offset] == list(np.cumsum([0] + [len(decode(tiny_model, [t]))
                                                                                for t in tokens])[:-1])


def test_max_tokens_0_with_echo_scores_the_prompt(client, tiny_model):
    answer = client.completions.create(model=tiny_model.name, prompt=PROMPT, max_tokens=0, echo=True, logprobs=0)
    expected = -reference.next_token_losses(tiny_model.params, tiny_model.hparams, np.array(PROMPT))
    np.testing.assert_allclose(answer.choices[0].logprobs.token_logprobs[1:], expected, atol=1e-4)
    assert answer.choices[0].text == decode(tiny_model, PROMPT) and answer.usage.completion_tokens == 0


@pytest.mark.parametrize('ask, error, words', [
    (dict(model='other'), openai.NotFoundError, ["'other'"]),
    (dict(temperature=3), openai.BadRequestError, ['temperature']),
    (dict(prompt=[1] * 30, max_tokens=16), openai.BadRequestError, ['window is 32 tokens']),
    (dict(prompt=[5, 10 ** 6]), openai.BadRequestError, ['1000000', 'vocabulary']),
    (dict(max_tokens=0), openai.BadRequestError, ['max_tokens']),
    (dict(logprobs=6), openai.BadRequestError, ['logprobs']),
    (dict(max_tokens='ten'), openai.BadRequestError, ['max_tokens', "'ten'"]),
    (dict(prompt=[]), openai.BadRequestError, ['prompt']),
    (dict(prompt=' the' * 20, max_tokens=13), openai.BadRequestError, ['window is 32', '20 tokens']),
    (dict(logprobs=1, echo=True, stream=True), openai.BadRequestError, ['echo and stream']),
], ids=['model', 'temperature', 'window', 'token id', 'max_tokens 0', 'logprobs', 'max_tokens type', 'no prompt',
        'text window', 'echoed logprobs streamed'])
def test_bad_requests_raise_the_clients_errors(client, tiny_model, ask, error, words):
    with pytest.raises(error) as raised:
        client.completions.create(**{'model': tiny_model.name, 'prompt': PROMPT, **ask})
    body = raised.value.body
    assert set(body) == {'message', 'type', 'param', 'code'}
    for word in words:
        assert word in body['message']
    assert_still_serving(client, tiny_model)


def assert_still_serving(client, tiny_model):
    """A good request after a bad one gets the reference's greedy text."""
    answer = client.completions.create(model=tiny_model.name, prompt=PROMPT, max_tokens=3, temperature=0)
    assert answer.choices[0].text == expected_greedy(tiny_model, PROMPT, 3)[1]


def error_of(answer, status):
    assert answer.status_code == status, answer.text
    assert set(answer.json()['error']) == {'message', 'type', 'param', 'code'}
    return answer.json()['error']['message']


def test_plain_http_errors_in_openais_shape(server, client, tiny_model):
    big = json.dumps({'model': tiny_model.name, 'prompt': 'a' * 5000}).encode()
    for method, path, options, status, word in [
            ('POST', '/v1/completions', dict(data=b'{"prompt": '), 400, 'JSON'),
            ('POST', '/v1/completions', dict(data=b'{"prompt": "\xff"}'), 400, 'JSON'),  # not UTF-8
            ('POST', '/v1/completions', dict(json=[1, 2]), 400, 'object'),
            ('GET', '/v1/nothing', {}, 404, '/v1/nothing'),
            ('GET', '/v1/completions', {}, 405, 'GET'),
            ('POST', '/v1/completions', dict(data=big), 413, '4096'),
            # chunked, with no Content-Length to refuse it by: counted as it is read
            ('POST', '/v1/completions', dict(data=iter([big[:3000], big[3000:]])), 413, '4096'),
            ('POST', '/tokenize', dict(json={'prompt': 5}), 400, 'prompt')]:
        assert word in error_of(requests.request(method, server[1] + path, **options), status)
        assert_still_serving(client, tiny_model)
    assert requests.get(server[1] + '/health').status_code == 200


def test_a_full_queue_answers_503_with_retry_after(server, client, tiny_model):
    """While a streamed request of 8 prompts x 128 choices holds the engine (its rows wait in the queue for the
    loop's 4 rows, 256 turns of them), three more requests find the queue full (--max_queue 1): 503 with
    Retry-After.
    Then the server answers as before, to a client that waits as Retry-After says."""
    url = server[1] + '/v1/completions'
    ask = {'model': tiny_model.name, 'prompt': PROMPT, 'max_tokens': 3, 'temperature': 0}
    busy = {**ask, 'prompt': [PROMPT] * 8, 'max_tokens': 32 - len(PROMPT), 'n': 128, 'temperature': 1,
            'stream': True}
    with requests.post(url, json=busy, stream=True) as stream, concurrent.futures.ThreadPoolExecutor(3) as pool:
        lines = stream.iter_lines()  # kept: a dropped iterator closes the connection, and the job with it
        assert next(lines).startswith(b'data: ')  # the engine is drawing it
        answers = list(pool.map(lambda _: requests.post(url, json=ask, timeout=60), range(3)))
    statuses = [a.status_code for a in answers]
    assert statuses == [503] * 3, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert 'queue is full' in error_of(answer, 503)
            assert answer.json()['error']['type'] == 'server_overloaded'
            assert float(answer.headers['Retry-After']) > 0
    assert requests.get(server[1] + '/health').status_code == 200
    for _ in range(3):  # the stream's client has gone: its job leaves the queue when the engine notices
        answer = requests.post(url, json=ask)
        if answer.status_code != 503:
            break
        time.sleep(float(answer.headers['Retry-After']))
    assert answer.status_code == 200, answer.text
    assert answer.json()['choices'][0]['text'] == expected_greedy(tiny_model, PROMPT, 3)[1]


def test_tokenize_and_detokenize_with_the_tiny_vocabulary(server, tiny_model):
    url = server[1]
    info = requests.get(url + '/tokenizer_info').json()
    assert info['eos_token'] == '<|endoftext|>'
    answer = requests.post(url + '/tokenize', json={'prompt': ' the and<|endoftext|>', 'add_special_tokens': False})
    ids = [tiny_model.vocab['Ġthe'], tiny_model.vocab['Ġand'], tiny_model.endoftext]
    assert answer.json()['tokens'] == ids
    back = requests.post(url + '/detokenize', json={'tokens': ids}).json()['prompt']
    assert back == decode(tiny_model, ids) == ' the and<|endoftext|>'
    error_of(requests.post(url + '/detokenize', json={'tokens': [len(tiny_model.vocab)]}), 400)


def test_a_raw_stream_is_server_sent_events(server, tiny_model):
    ask = {'model': tiny_model.name, 'prompt': PROMPT, 'max_tokens': 4, 'temperature': 0, 'stream': True}
    with requests.post(server[1] + '/v1/completions', json=ask, stream=True) as answer:
        assert answer.headers['content-type'].startswith('text/event-stream')
        events = [line for line in answer.iter_lines(decode_unicode=True) if line]
    assert all(e.startswith('data: ') for e in events) and events[-1] == 'data: [DONE]'
    texts = [json.loads(e[6:])['choices'][0]['text'] for e in events[:-1]]
    assert ''.join(texts) == expected_greedy(tiny_model, PROMPT, 4)[1]


def test_lm_evals_local_completions_scores_as_the_reference(server, tiny_model):
    """lm-evaluation-harness's own client, with the server's tokenizer (tokenizer_backend=remote): the
    log-likelihood of each continuation is the NumPy reference's, and so is whether it is greedy."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    v = tiny_model.vocab
    # The tiny vocabulary's tokens, by its merges: ' hello' is 'Ġ', 'he', 'll', 'o'; ' world' 'Ġ', 'w', 'or', 'l', 'd'.
    pairs = [((' the and', [v['Ġthe'], v['Ġand']]), (' hello', [v['Ġ'], v['he'], v['ll'], v['o']])),
             (('or', [v['or']]), (' world', [v['Ġ'], v['w'], v['or'], v['l'], v['d']]))]
    lm = LocalCompletionsAPI(model=tiny_model.name, base_url=server[1] + '/v1/completions',
                             tokenizer_backend='remote', max_length=32)
    answers = lm.loglikelihood([Instance('loglikelihood', {}, (context, continuation), i)
                                for i, ((context, _), (continuation, _)) in enumerate(pairs)])
    for ((_, context), (_, continuation)), (logprob, greedy) in zip(pairs, answers):
        sequence = context + continuation
        expected = support.reference_logprobs(tiny_model, sequence)[len(context) - 1:]
        assert logprob == pytest.approx(expected.sum(), abs=1e-4)
        logits = reference.logits(tiny_model.params, tiny_model.hparams, np.array(sequence))
        assert greedy == all(np.argmax(logits[len(context) - 1:-1], -1) == continuation)


# lm_eval's local-completions and src/score.py against the project's scripts. Every document is short enough for
# one window both ways: local-completions keeps max_length - 1 tokens and asks for one more, the scripts n_ctx + 1.

TASKS = {
    'served_choice': """
task: served_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: question
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    'served_rolling': """
task: served_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
}
CHOICE_DOCS = [{'question': 'the hall and', 'choices': ['all', 'the world', 'hello'], 'answer': 0},
               {'question': 'hello world', 'choices': ['in', 'or the', 'and all'], 'answer': 1},
               {'question': 'in the', 'choices': ['hell', 'world', 'and'], 'answer': 2},
               {'question': 'or all', 'choices': ['the and', 'well', 'in hell'], 'answer': 2}]
ROLLING_DOCS = [{'text': 'the hello and the world'}, {'text': 'in hell or the and world'}, {'text': 'all'}]


@pytest.fixture(scope='module')
def served_tasks(tmp_path_factory):
    """A folder of the two task definitions and their data (one folder: the harness indexes its tasks once)."""
    return support.write_tasks(tmp_path_factory.mktemp('served_tasks'), {
        'served_choice': (TASKS['served_choice'], CHOICE_DOCS), 'served_rolling': (TASKS['served_rolling'],
                                                                                   ROLLING_DOCS)})


def test_lm_evals_local_completions_gives_the_harness_commands_figures(server, tiny_model, served_tasks, tmp_path,
                                                                     capsys):
    """A whole harness run of a multiple-choice and a rolling task through the server (lm_eval's own client and
    remote tokenizer) gives the figures of `evaluate_tasks.py harness`, which runs the model in-process."""
    import lm_eval
    import evaluate_tasks
    from gpt2.evaluation import harness_tasks
    names = ['served_choice', 'served_rolling']
    evaluate_tasks.run_harness(tasks=','.join(names), models_dir=str(tiny_model.models_dir),
                               model_name=tiny_model.name, include_path=str(served_tasks),
                               output_path=str(tmp_path / 'out'))
    capsys.readouterr()
    script = json.loads((tmp_path / 'out' / 'results.json').read_text(encoding='utf-8'))['results']
    served = lm_eval.simple_evaluate(
        model='local-completions', tasks=names, task_manager=harness_tasks.task_manager(str(served_tasks)),
        model_args=f'model={tiny_model.name},base_url={server[1]}/v1/completions,tokenizer_backend=remote,'
                   f'max_length=32', torch_random_seed=None, log_samples=False)['results']
    for name in names:
        figures = {k: v for k, v in script[name].items() if isinstance(v, float)}  # metrics, standard errors
        assert len(figures) >= 3, script[name]
        assert {k: v for k, v in served[name].items() if isinstance(v, float)} == pytest.approx(figures, rel=1e-4,
                                                                                              abs=1e-4), name
    assert 0 < script['served_choice']['acc,none'] < 1  # neither all right nor all wrong: a wrong score shows


def test_echoed_logprobs_are_score_pys_per_token_figures(server, tiny_model, tmp_path):
    """src/score.py run as a user runs it (--documents lines --per_token --json): each line scored after
    <|endoftext|>; the server's echoed log-probs of '<|endoftext|>' + the line are the same, token by token."""
    lines = ['the hello and the world', 'in hell or the and world!', 'é all']
    (tmp_path / 'text.txt').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    done = run_script('score.py', tmp_path / 'text.txt', f'--models_dir={tiny_model.models_dir}',
                      f'--model_name={tiny_model.name}', '--documents=lines', '--json',
                      f'--per_token={tmp_path / "tokens.jsonl"}')
    assert done.returncode == 0, done.err
    documents = [json.loads(line) for line in (tmp_path / 'tokens.jsonl').read_text(encoding='utf-8').splitlines()]
    answer = requests.post(server[1] + '/v1/completions', json={
        'model': tiny_model.name, 'prompt': ['<|endoftext|>' + line for line in lines], 'max_tokens': 0,
        'echo': True, 'logprobs': 0}).json()
    assert len(documents) == len(answer['choices']) == len(lines)
    for document, choice in zip(documents, answer['choices']):
        served = choice['logprobs']
        assert served['tokens'][1:] == document['tokens']
        np.testing.assert_allclose(served['token_logprobs'][1:], document['logprobs'], atol=1e-4)
    served_nll = -sum(sum(c['logprobs']['token_logprobs'][1:]) for c in answer['choices'])
    assert served_nll == pytest.approx(json.loads(done.out)['total']['nll'], abs=1e-3)
