"""The engine in-process, on the tiny model: rows with knobs of their own decode side by side and each gets what it
would alone (against the NumPy reference model, tests/reference.py), requests join a running loop, the graph is
built once, and a failure answers 500 while the engine goes on. Then the scheduler alone, step by step."""
import asyncio
import types

import numpy as np
import pytest

import encoder
import reference
from gpt2 import loading
from gpt2.evaluation import scoring
from gpt2.sampling import int8
from gpt2.serving import engine, parsing, scheduler

ROWS = 4
PROMPTS = [[32, 262, 263, 264, 45], [40, 41], [7]]


@pytest.fixture(scope='module')
def enc(tiny_model):
    return encoder.read_vocabulary(tiny_model.dir)


@pytest.fixture(scope='module')
def worker(tiny_model):
    running = engine.Engine(engine.loader(tiny_model.name, str(tiny_model.models_dir), 'latest', ROWS),
                            max_batch_size=ROWS, max_queue=64)
    running.start()
    assert running.ready.wait(120), running.failure
    yield running
    running.stop(60)


def request(tiny_model, **body):
    return parsing.completion(body, model_name=tiny_model.name, enc=None, n_ctx=tiny_model.hparams['n_ctx'],
                              n_vocab=tiny_model.hparams['n_vocab'])


async def answer(worker, req, on_token=None):
    """Submit req -> its choices' texts, once done; on_token(job, index, token, drawn) as tokens come (stream)."""
    job = engine.Job(req, asyncio.get_running_loop())
    worker.submit(job)
    while True:
        kind, *value = await asyncio.wait_for(job.events.get(), 60)
        if kind == 'token' and on_token:
            on_token(job, *value)
        elif kind == 'error':
            raise value[0]
        elif kind == 'done':
            return [c.text for c in value[0]]


def together(worker, reqs):
    async def run():
        return await asyncio.gather(*(answer(worker, r) for r in reqs))
    return asyncio.run(run())


def greedy_text(tiny_model, enc, prompt, length, **knobs):
    """The reference's greedy continuation, cut at <|endoftext|> (always a stop)."""
    tokens = reference.penalised_greedy(tiny_model.params, tiny_model.hparams, prompt, length, **knobs)
    tokens = tokens[len(prompt):]
    if tiny_model.endoftext in tokens:
        tokens = tokens[:tokens.index(tiny_model.endoftext)]
    return enc.decode(tokens)


def test_rows_with_knobs_of_their_own_get_what_they_would_alone(worker, tiny_model, enc):
    penalised = dict(repetition_penalty=1.5, presence_penalty=0.5, frequency_penalty=0.3, no_repeat_ngram_size=2)
    sampled = dict(temperature=0.8, top_k=5, top_p=0.9, seed=11)
    reqs = [request(tiny_model, prompt=PROMPTS[0], max_tokens=12, temperature=0),
            request(tiny_model, prompt=PROMPTS[1], max_tokens=20, temperature=0, **penalised),
            request(tiny_model, prompt=PROMPTS[2], max_tokens=15, n=2, **sampled),
            request(tiny_model, prompt=PROMPTS[0], max_tokens=9, temperature=1.5, seed=3)]
    mixed = together(worker, reqs)
    alone = [together(worker, [r])[0] for r in reqs]
    assert mixed == alone
    assert mixed[0] == [greedy_text(tiny_model, enc, PROMPTS[0], 12)]
    assert mixed[1] == [greedy_text(tiny_model, enc, PROMPTS[1], 20, repetition=1.5, presence=0.5,
                                    frequency=0.3, no_repeat_ngram=2)]
    assert mixed[2][0] != mixed[2][1]  # the choices of one seeded request draw apart


def test_a_request_joins_the_running_loop(worker, tiny_model):
    """A short request sent once a long one has drawn its first token ends before the long one does."""
    events = []

    async def run():
        started = asyncio.Event()
        long = request(tiny_model, prompt=[7], max_tokens=30, temperature=0, stream=True,
                       stop=['never in this vocabulary'])

        def on_token(job, index, token, drawn):
            events.append('long')
            started.set()

        first = asyncio.ensure_future(answer(worker, long, on_token))
        await started.wait()
        await answer(worker, request(tiny_model, prompt=[9], max_tokens=2, temperature=0))
        events.append('short done')
        await first
        events.append('long done')

    asyncio.run(run())
    assert events.index('short done') < events.count('long') < 31


def test_the_graph_is_built_once(worker, tiny_model):
    together(worker, [request(tiny_model, prompt=PROMPTS[0], max_tokens=3, echo=True, logprobs=2)])
    ops = len(worker.model.gen.graph.get_operations())
    reqs = [request(tiny_model, prompt=PROMPTS[i % 3], max_tokens=1 + i % 7, n=1 + i % 2, temperature=(i % 3) / 2,
                    top_k=i % 4, seed=i, echo=bool(i % 2), logprobs=i % 3 or None) for i in range(30)]
    together(worker, reqs)
    assert len(worker.model.gen.graph.get_operations()) == ops


def test_a_failed_loop_answers_500_and_the_engine_goes_on(worker, tiny_model, monkeypatch):
    add = scheduler.Row.add
    calls = []

    def breaks_once(self, *args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError('broken')
        return add(self, *args)

    monkeypatch.setattr(scheduler.Row, 'add', breaks_once)
    with pytest.raises(Exception) as failed:
        together(worker, [request(tiny_model, prompt=[7], max_tokens=3)])
    assert failed.value.status == 500 and 'broken' in failed.value.message
    assert len(together(worker, [request(tiny_model, prompt=[7], max_tokens=3)])[0]) > 0


def test_a_loop_that_cannot_start_ends_the_server_saying_why(tiny_model):
    """A loop that fails before its first step (as when its cache does not fit) would fail again at once: the
    engine stops, with the reason for the server's error line, and answers the waiting jobs 500."""
    ended = []

    class Unstartable:
        scheduler = types.SimpleNamespace(calls=0)

        def decode(self):
            raise MemoryError('the cache does not fit')

        def close(self):
            pass

    worker = engine.Engine(lambda queue, finish: Unstartable(), max_batch_size=2, max_queue=4,
                           on_failure=ended.append)

    async def run():
        job = engine.Job(request(tiny_model, prompt=[7]), asyncio.get_running_loop())
        worker.submit(job)  # before the engine starts: it waits in the queue
        worker.start()
        return await asyncio.wait_for(job.events.get(), 30)

    kind, error = asyncio.run(run())
    worker.thread.join(30)
    assert (kind, error.status) == ('error', 500) and 'the cache does not fit' in error.message
    assert ended == [worker.failure] and 'could not start: MemoryError: the cache does not fit' in worker.failure


def test_int8_serves_what_the_int8_generator_draws(tiny_model, enc):
    """--precision int8: the loop's products in int8 (gpt2/sampling/int8.py, tested against NumPy there), its
    greedy text the Generator's with the same precision, alone and beside another row (the batch path)."""
    from gpt2.sampling import generator
    prompt = enc.decode(PROMPTS[0])
    with generator.Generator(tiny_model.name, str(tiny_model.models_dir), precision='int8') as gen:
        expected = gen.generate(prompt, length=10, temperature=0, stop='<|endoftext|>').text
    served = engine.Engine(engine.loader(tiny_model.name, str(tiny_model.models_dir), 'latest', 2, 'int8'),
                           max_batch_size=2, max_queue=4)
    served.start()
    try:
        assert served.ready.wait(120), served.failure
        ask = request(tiny_model, prompt=PROMPTS[0], max_tokens=10, temperature=0)
        alone = together(served, [ask])
        beside = together(served, [ask, request(tiny_model, prompt=[7], max_tokens=10, temperature=0)])[0]
        quantized = {op.type for op in served.model.gen.graph.get_operations() if 'Quantized' in op.type}
        echoed = served.model.scorer(PROMPTS[0])[0]  # the echoed prompt's log-probabilities
        embedded = served.model.gen.embed([PROMPTS[0]])
    finally:
        served.stop(60)
    assert alone == [[expected]] and beside == [expected]
    assert bool(quantized) == int8.kernel_works()  # (a CPU without the kernel serves float32, and says so)
    # Only int8 copies of the weights are kept: the echo is scored as score.py --precision int8 scores.
    _, hparams, _ = loading.load_model(tiny_model.name, str(tiny_model.models_dir))
    with scoring.scorer_session(tiny_model.dir, hparams, 'int8') as scorer:
        (scored, _), = scorer.score([(PROMPTS[0], len(PROMPTS[0]) - 1)])
    np.testing.assert_allclose(echoed, scored, atol=1e-4)
    assert embedded.shape == (1, hparams.n_embd) and np.isfinite(embedded).all()


def test_a_run_folder_serves_the_checkpoint_asked_for(tiny_run, enc):
    """src/server.py --checkpoint best on a training run's folder: the best checkpoint's greedy text."""
    best = tiny_run[2]
    served = engine.Engine(engine.loader(best.name, str(best.models_dir), 'best', 2), max_batch_size=2, max_queue=4)
    served.start()
    try:
        assert served.ready.wait(120), served.failure
        texts = together(served, [request(best, prompt=PROMPTS[0], max_tokens=8, temperature=0)])
    finally:
        served.stop(60)
    assert texts == [[greedy_text(best, enc, PROMPTS[0], 8)]]
    assert texts != [[greedy_text(tiny_run[3], enc, PROMPTS[0], 8)]]  # not the latest checkpoint's


# ---------------------------------------------------------------------------------------------------------------
# The scheduler alone
# ---------------------------------------------------------------------------------------------------------------

class Stepper:
    """A Scheduler of 2 rows over a real queue, stepped by hand: every live row draws token 5 ('E'... any id)."""

    def __init__(self, tiny_model):
        self.queue = engine.Queue(max_queue=10)
        self.finished = []
        self.sched = scheduler.Scheduler(2, self.queue, finish=self.finished.append, token_bytes=lambda t: b'x',
                                         linger=0)
        self.tiny_model = tiny_model

    def submit(self, **body):
        job = engine.Job(request(self.tiny_model, **body), loop=None)
        self.queue.submit(job)
        return job

    def step(self):
        """One iteration -> (go, the row that takes a prompt, live per row, position per row)."""
        rows = len(self.sched.rows)
        ints, _, control, _ = self.sched(np.full([rows], 5, np.int32), np.zeros([rows], np.float32),
                                         np.zeros([rows, 5], np.float32), np.zeros([rows, 5], np.int32))
        live = ints[:, scheduler.slots.INTS.index('live')].tolist()
        return bool(control[0]), int(control[1]), live, ints[:, scheduler.slots.INTS.index('position')].tolist()


def test_a_queued_row_takes_a_row_freed_at_the_next_step(tiny_model):
    s = Stepper(tiny_model)
    a = s.submit(prompt=[1, 2, 3], max_tokens=2)
    b = s.submit(prompt=[4], max_tokens=5, n=2)
    assert s.step() == (True, 0, [1, 0], [2, 0])  # a's prompt into row 0; it feeds its last token at 2
    assert s.step() == (True, 1, [1, 1], [3, 0])  # b's first choice into row 1
    assert s.step() == (True, 0, [1, 1], [0, 1])  # a drew its 2 tokens: b's second choice takes its row at once
    assert [(row.job, row.tokens) for row in s.finished] == [(a, [5, 5])]
    assert s.step() == (True, -1, [1, 1], [1, 2])
    b.cancelled = True  # the client went away: both its rows free at once, nothing left: the loop ends
    assert s.step() == (False, -1, [0, 0], [0, 0])


def test_a_row_ends_at_a_stop_string_across_tokens(tiny_model):
    s = Stepper(tiny_model)
    s.submit(prompt=[1], max_tokens=10, stop=['xxx'])
    for _ in range(3):
        s.step()
    assert s.finished == [] and s.step()[2] == [0, 0]
    assert [len(row.tokens) for row in s.finished] == [3]
