"""The engine: the threads that own the model's TensorFlow session; the event loop never runs it.

The HTTP side submits a Job (a checked request) to a bounded queue and awaits its events on an asyncio queue:
('token', choice index, token id) as a streamed job's tokens are drawn, then ('done', [Choice]) or ('error',
APIError). Two threads run the session (TensorFlow's sessions take concurrent runs):
- the loop thread runs the decoding loop (gpt2/serving/slots.py), in which every job's rows decode side by side,
  joining and leaving it as they come and end (continuous batching; gpt2/serving/scheduler.py picks them);
- the side thread does the short work around it: each finished row's Choice (and the echoed prompt's
  log-probabilities, one forward pass), the jobs with max_tokens 0, and `side(fn)` for other routes.
"""
import asyncio
import collections
import concurrent.futures
import functools
import threading
import traceback

import numpy as np
import tensorflow.compat.v1 as tf

import sample

from gpt2.sampling import cpu_matmul
from gpt2.sampling import generator as generator_lib
from gpt2.serving import choices as choices_lib
from gpt2.serving import scheduler as scheduler_lib
from gpt2.serving import slots
from gpt2.serving.errors import APIError

# Seconds the loop waits for work with no row live before it ends; None: until the server stops. The loop starts
# when the model has loaded and runs from then on: a new run would allocate and clear the cache again (a second
# for 124M at 8 rows), and the first request would pay for it.
LINGER = None
# The loop's pool of threads (see Model).
LOOP_POOL = 1


class QueueFull(Exception):
    """The queue holds max_queue jobs: the request is answered 503, with Retry-After."""


class Job:
    """A request on its way through the engine. Made on the event loop; its events go back to it."""

    def __init__(self, request, loop):
        self.request = request
        self.loop = loop
        self.events = asyncio.Queue()
        self.pending = collections.deque(request.rows())  # (choice index, prompt index, ids) not yet decoding
        self.cancelled = False  # answered, failed, or the client went away: no more events, rows dropped
        self.choices = {}  # choice index -> Choice, as its row ends (side thread)
        # The seed of its draws: the request's, or one of its own (so every row draws from a key of its own).
        self.seed = request.seed if request.seed is not None else int(np.random.randint(0, 2**32, dtype=np.int64))

    def post(self, *event):
        """Hand an event to the event loop (from an engine thread)."""
        if not self.cancelled:
            try:
                self.loop.call_soon_threadsafe(self.events.put_nowait, event)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                self.cancelled = True

    def fail(self, error):
        self.post('error', error)
        self.cancelled = True


class Queue:
    """The jobs whose rows wait for a row of the loop, first come first served (event loop and engine)."""

    def __init__(self, max_queue):
        self.max_queue = max_queue
        self.jobs = collections.deque()
        self.lock = threading.Condition()
        self.closed = False

    def submit(self, job):
        with self.lock:
            if any(waiting.cancelled for waiting in self.jobs):  # their clients went away: they hold no place
                self.jobs = collections.deque(waiting for waiting in self.jobs if not waiting.cancelled)
            if self.closed or len(self.jobs) >= self.max_queue:
                raise QueueFull()
            self.jobs.append(job)
            self.lock.notify_all()

    def close(self):
        """No more jobs (finished() once the queue is empty) -> the jobs waiting."""
        with self.lock:
            self.closed = True
            self.lock.notify_all()
            return list(self.jobs)

    def finished(self):
        """Whether the queue is closed and empty."""
        with self.lock:
            return self.closed and not self.live_jobs()

    def next_row(self, timeout):
        """The next waiting row -> (job, choice index, token ids), or None after timeout seconds (None: until
        the queue closes) without one."""
        with self.lock:
            if timeout is None:
                while not self.live_jobs() and not self.closed:
                    self.lock.wait()
            elif timeout and not self.live_jobs() and not self.closed:
                self.lock.wait(timeout)
            if not self.live_jobs():
                return None
            job = self.jobs[0]
            index, _, ids = job.pending.popleft()
            if not job.pending:
                self.jobs.popleft()
            return job, index, ids

    def live_jobs(self):
        """Whether a job waits (dropping those whose client went away)."""
        while self.jobs and self.jobs[0].cancelled:
            self.jobs.popleft()
        return bool(self.jobs)


class Model:
    """The Generator (weights, encoder, session), the scorer and the decoding loop beside it. Built on the loop
    thread."""

    def __init__(self, model_name, models_dir, checkpoint_name, max_batch_size, queue, finish, precision='float32'):
        config = sample.session_config()
        # Two pools of threads that run ops: the default one for the side thread's runs, and the loop's own
        # (LOOP_POOL), whose host call holds one of its threads while it waits for work. A pool of as many
        # threads as cores each: more, in one pool, decoded a tenth slower (ops beside the split products).
        cores = config.intra_op_parallelism_threads * cpu_matmul.CPU_SPLITS
        for _ in range(2):
            config.session_inter_op_thread_pool.add(num_threads=cores)
        self.gen = generator_lib.Generator(model_name, models_dir, checkpoint=checkpoint_name, session_config=config,
                                          precision=precision)
        self.scorer = choices_lib.Scorer(self.gen)
        self.gen.hidden_graph()  # POST /v1/embeddings' graph
        table = [self.gen.enc.decode_bytes([t]) for t in range(self.gen.hparams.n_vocab)]
        self.scheduler = scheduler_lib.Scheduler(max_batch_size, queue, finish=finish, token_bytes=table.__getitem__,
                                                 linger=LINGER)
        with self.gen.graph.as_default():
            self.loop = slots.build(self.gen.hparams, rows=max_batch_size, host=self.scheduler, device=self.gen.device,
                                    precision=precision)

    def decode(self):
        """Run the decoding loop until the queue closes."""
        self.gen.sess.run(self.loop, options=tf.RunOptions(inter_op_thread_pool=LOOP_POOL))

    def close(self):
        self.gen.close()


class Engine:
    """The threads that load the model and run it. ready: set once the model is loaded; failure: the message of
    a load that failed (the server then stops)."""

    def __init__(self, load, *, max_batch_size, max_queue, on_failure=None):
        self.load = load  # (queue, finish) -> Model, on the loop thread
        self.max_batch_size = max_batch_size
        self.queue = Queue(max_queue)
        self.ready = threading.Event()
        self.failure = None
        self.on_failure = on_failure
        self.model = None
        self.side_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='side')
        self.thread = threading.Thread(target=self.run, name='engine', daemon=True)

    def start(self):
        self.thread.start()

    def submit(self, job):
        if job.request.max_tokens == 0:  # nothing to draw: only the echoed prompt's log-probabilities
            job.pending.clear()
            self.side_thread.submit(self.answer_rows, job, [(index, ids) for index, _, ids in job.request.rows()])
            return
        self.queue.submit(job)

    async def side(self, fn):
        """fn(model) on the side thread, beside the decoding loop -> its result (its exception raised). For work
        outside the loop, as embeddings; fn must build no ops (TensorFlow's graph is not built safely from two
        threads), so its graphs are built when the model loads."""
        if not self.ready.is_set():
            raise APIError(503, 'the model is still loading')
        return await asyncio.wrap_future(self.side_thread.submit(fn, self.model))

    def stop(self, timeout=None):
        """Finish the queued and running jobs, then end the threads and close the session."""
        self.queue.close()
        self.thread.join(timeout)

    def run(self):
        try:
            self.model = self.load(self.queue, self.finish)
        except Exception as err:  # the model did not load: say why, and let the server end
            self.failure = str(err) or type(err).__name__
            if self.on_failure:
                self.on_failure(self.failure)
            return
        self.ready.set()
        try:
            while not self.queue.finished() and self.run_loop():
                pass
        finally:
            self.side_thread.shutdown(wait=True)
            self.model.close()

    def run_loop(self):
        """One run of the decoding loop, until the queue closes; a failure answers its jobs with 500. -> whether
        to run it again: not after a failure before its first step (its cache could not be allocated, say), which
        would come again at once: the server then ends, saying why."""
        calls = self.model.scheduler.calls
        try:
            self.model.decode()
        except Exception as err:
            traceback.print_exc()
            message = op_error_line(err) if isinstance(err, tf.errors.OpError) else f'{type(err).__name__}: {err}'
            if self.model.scheduler.calls == calls:
                self.failure = f'the decoding loop could not start: {message}'
                for job in self.queue.close():
                    job.fail(APIError(500, self.failure))
                if self.on_failure:
                    self.on_failure(self.failure)
                return False
            for job in self.model.scheduler.abandon():
                job.fail(APIError(500, f'the decoding loop failed: {message}'))
        return True

    def finish(self, row):
        """A row has ended (loop thread): its Choice is made on the side thread."""
        self.side_thread.submit(self.answer_rows, row.job, [(row.index, row.prompt)], row.tokens, row.logprobs)

    def answer_rows(self, job, rows, tokens=(), logprobs=()):
        """Side thread: the Choices of rows [(choice index, prompt)] of job; once it has them all, 'done'."""
        if job.cancelled:
            return
        try:
            for index, prompt in rows:
                job.choices[index] = choices_lib.choice(self.model.gen, self.model.scorer, index=index,
                                                        prompt=prompt, request=job.request, tokens=tokens,
                                                        logprobs=logprobs)
        except Exception as err:
            traceback.print_exc()
            job.fail(APIError(500, f'the answer failed: {type(err).__name__}: {err}'))
            return
        if len(job.choices) == len(job.request.rows()):
            job.post('done', [job.choices[i] for i in sorted(job.choices)])


def op_error_line(err):
    """A TensorFlow error's one telling line: the Python exception of the host call, or the first line."""
    lines = [line.strip() for line in err.message.splitlines() if line.strip()]
    raised = [line for line in lines if line.split(':')[0].endswith(('Error', 'Exception'))
              and not line.startswith('Graph execution')]
    return raised[0] if raised else lines[0]


def loader(model_name, models_dir, checkpoint_name, max_batch_size, precision='float32'):
    """The Engine's load: -> (queue, finish) -> Model."""
    return functools.partial(Model, model_name, models_dir, checkpoint_name, max_batch_size, precision=precision)
