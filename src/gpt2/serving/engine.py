"""The engine: one thread owns the model's TensorFlow session and runs batches; the event loop never runs it.

The HTTP side submits a Job (a checked request) to a bounded queue and awaits its events on an asyncio queue;
the engine thread takes the jobs, makes batches of their rows, runs them (gpt2/serving/batches.py) and posts
each job's events back to the event loop (call_soon_threadsafe): ('token', choice index, token id) as tokens are
drawn, for a streamed job, then ('done', [Choice]) or ('error', APIError).

Batching, in this first slice: one batch at a time, each run to its end. A batch takes the rows of the job at
the head of the queue (at most max_batch_size; a larger job goes on in the next batch), then the rows of queued
jobs that ask for the same knobs and length, while they fit: Generator feeds its knobs per run, one value for
every row. A seeded job runs alone, so that its text does not depend on what else is in the batch. Continuous
batching (rows that join a running loop, per-row knobs) would replace Batcher.next_batch and batches.run with a
loop that persists between chunks of steps; Job and its events stay as they are.
"""
import asyncio
import collections
import concurrent.futures
import dataclasses
import threading
import traceback

import numpy as np

from gpt2.serving import batches
from gpt2.serving.errors import APIError


class QueueFull(Exception):
    """The queue holds max_queue jobs: the request is answered 503, with Retry-After."""


class Job:
    """A request on its way through the engine. Made on the event loop; its events go back to it."""

    def __init__(self, request, loop):
        self.request = request
        self.loop = loop
        self.events = asyncio.Queue()
        self.rows = request.rows()  # the rows not yet in a batch
        self.cancelled = False  # the client went away: no more events, no more batches
        self.choices = {}  # choice index -> batches.Choice, as its batch ends
        self.batches = 0  # batches run for it so far (a seeded job's next batch draws with the next seed)

    def key(self):
        """Jobs with equal keys may share a batch: the same knobs, length, stops, and no seed."""
        r = self.request
        if r.seed is not None:
            return None
        return (r.max_tokens, tuple(r.stop), tuple(sorted(r.knobs.items())))

    def post(self, *event):
        """Hand an event to the event loop (from the engine thread)."""
        if not self.cancelled:
            try:
                self.loop.call_soon_threadsafe(self.events.put_nowait, event)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                self.cancelled = True


@dataclasses.dataclass
class Piece:
    """Some rows of a job, in a batch."""
    job: Job
    rows: list  # (choice index, prompt index, token ids)


class Batcher:
    """The bounded queue of jobs and the choice of each batch's rows (engine thread and event loop alike)."""

    def __init__(self, max_batch_size, max_queue):
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.jobs = collections.deque()
        self.lock = threading.Condition()
        self.closed = False

    def submit(self, job):
        with self.lock:
            if self.closed or len(self.jobs) >= self.max_queue:
                raise QueueFull()
            self.jobs.append(job)
            self.lock.notify()

    def close(self):
        """No more jobs; next_batch returns None once the queue is empty."""
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def next_batch(self):
        """Wait for jobs -> the pieces of the next batch, or None once closed and empty."""
        with self.lock:
            while True:
                while self.jobs and self.jobs[0].cancelled:
                    self.jobs.popleft()
                if self.jobs:
                    break
                if self.closed:
                    return None
                self.lock.wait()
            head, *others = self.jobs
            pieces = [self.take(head, self.max_batch_size)]
            room = self.max_batch_size - len(pieces[0].rows)
            key = head.key()
            for job in others:
                if key is None or room <= 0:
                    break
                if not job.cancelled and job.key() == key and len(job.rows) <= room:
                    pieces.append(self.take(job, room))
                    room -= len(pieces[-1].rows)
            return pieces

    def take(self, job, count):
        """Up to count of job's rows; the job leaves the queue once it has none left."""
        piece = Piece(job, job.rows[:count])
        job.rows = job.rows[count:]
        if not job.rows:
            self.jobs.remove(job)
        return piece


class Engine:
    """The thread that loads the model and runs the batches. ready: set once the model is loaded; failure: the
    message of a load that failed (the server then stops)."""

    def __init__(self, load, *, max_batch_size, max_queue, on_failure=None):
        self.load = load  # () -> batches.Model, on the engine thread: TensorFlow's session lives there
        self.batcher = Batcher(max_batch_size, max_queue)
        self.ready = threading.Event()
        self.failure = None
        self.on_failure = on_failure
        self.model = None
        self.thread = threading.Thread(target=self.run, name='engine', daemon=True)
        # (embeddings' stand-in, until the continuous-batching engine's own side() replaces it)
        self.side_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='engine-side')

    def start(self):
        self.thread.start()

    def submit(self, job):
        self.batcher.submit(job)

    async def side(self, fn):
        """fn(model) on a side thread that shares the session, beside the batches -> its result (or its exception
        raised here). For work outside the sampling loop, as embeddings; fn must build no ops (TensorFlow's graph
        is not built safely from two threads), so its graphs are built when the model loads."""
        if not self.ready.is_set():
            raise APIError(503, 'the model is still loading')
        return await asyncio.wrap_future(self.side_pool.submit(fn, self.model))

    def stop(self, timeout=None):
        """Finish the side work and the queued jobs, then end the thread and close the session."""
        self.side_pool.shutdown(wait=True)
        self.batcher.close()
        self.thread.join(timeout)

    def run(self):
        try:
            self.model = self.load()
        except Exception as err:  # the model did not load: say why, and let the server end
            self.failure = str(err) or type(err).__name__
            if self.on_failure:
                self.on_failure(self.failure)
            return
        self.ready.set()
        try:
            while (pieces := self.batcher.next_batch()) is not None:
                self.run_batch(pieces)
        finally:
            self.model.close()

    def run_batch(self, pieces):
        """Run one batch and answer its jobs; a failure answers them with 500, and the engine goes on."""
        live = [p for p in pieces if not p.job.cancelled]
        if not live:
            return
        head = live[0].job
        seed = head.request.seed
        pair = (np.random.randint(0, 2**31 - 1, size=2) if seed is None
                else (seed % 2**31, seed // 2**31 + 2 * head.batches))  # a seeded job's batches: seeds apart
        try:
            results = batches.run(self.model, live, seed=[int(s) for s in pair])
        except Exception as err:
            traceback.print_exc()
            for piece in live:
                piece.job.post('error', APIError(500, f'the batch failed: {type(err).__name__}: {err}'))
                piece.job.cancelled = True
            return
        for piece, choices in zip(live, results):
            job = piece.job
            job.batches += 1
            job.choices.update(choices)
            if not job.rows and len(job.choices) == len(job.request.rows()):
                job.post('done', [job.choices[i] for i in sorted(job.choices)])
