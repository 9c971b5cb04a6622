"""The host side of the decoding loop (gpt2/serving/slots.py): at every iteration it takes the tokens just drawn,
hands them to their requests, ends the rows that are done, takes in at most one new row from the queue, and
answers with every row's state for the next step.

A request's choices are rows (engine.Job.rows: one per prompt and choice). A row is done when its text holds a
stop string (<|endoftext|> always ends it, as for OpenAI and vLLM), when it has drawn max_tokens, or when its
request's client has gone; it frees its cache row at once, and the next queued row takes it at the next step.
Each row draws with its request's knobs and its own random key: (the request's seed and the choice's index) and
the number of tokens it has drawn, so a seeded request draws the same tokens whatever else runs.

Runs on TensorFlow's thread inside the loop (tf.numpy_function): it must be quick, and never raise for one
request's sake (an exception ends the loop, and the engine answers every live row with 500).
"""
import numpy as np

from gpt2.base import checkpoint
from gpt2.serving import slots

# Knob values of a free row: every filter and penalty off, greedy (the cheapest; its token is thrown away).
IDLE = dict(live=0, token=0, position=0, top_k=0, no_repeat_ngram=0, key0=0, key1=0, logprobs=0, temperature=0.0,
            top_p=1.0,
            repetition=1.0, presence=0.0, frequency=0.0)
# The request's knobs under the loop's names.
KNOB_NAMES = dict(temperature='temperature', top_k='top_k', top_p='top_p', repetition='repetition_penalty',
                  presence='presence_penalty', frequency='frequency_penalty', no_repeat_ngram='no_repeat_ngram_size')


class Row:
    """One choice of a job, decoding in a row of the cache."""

    def __init__(self, job, index, prompt):
        self.job = job
        self.index = index  # the choice's index in the response
        self.prompt = list(prompt)
        self.tokens = []  # drawn so far
        self.logprobs = []  # per drawn token: (its log-probability, top values [TOP], top token ids [TOP])
        self.data = b''  # the drawn tokens' bytes
        request = job.request
        self.stops = [s.encode('utf-8') for s in request.stop + [checkpoint.ENDOFTEXT]]
        self.knobs = {name: request.knobs[key] for name, key in KNOB_NAMES.items()}
        self.key0 = ((job.seed & 0x7fffffff) ^ (index * 0x9E3779B9)) & 0x7fffffff
        self.key1 = job.seed >> 31
        self.logprobs_asked = int(request.logprobs is not None)

    def state(self):
        """This row's entries of the host's answer."""
        return dict(self.knobs, live=1, logprobs=self.logprobs_asked, token=(self.tokens or self.prompt)[-1],
                    position=len(self.prompt) + len(self.tokens) - 1, key0=self.key0,
                    key1=self.key1 | (len(self.tokens) << 1))

    def add(self, token, logprob, top_values, top_ids, token_bytes):
        """A drawn token -> whether the row is done (a stop string in its text, or max_tokens drawn)."""
        self.tokens.append(token)
        self.logprobs.append((logprob, top_values, top_ids))
        start = len(self.data)
        self.data += token_bytes(token)
        found = any(s in self.data[max(0, start - len(s) + 1):] for s in self.stops)
        return found or len(self.tokens) >= self.job.request.max_tokens


class Scheduler:
    """Called by the loop with each iteration's results; see the module's docstring.

    queue: the engine's queue of jobs (next_row, wait); finish(row): called once for each row that ends with
    tokens (not for a cancelled one); token_bytes(token id) -> bytes; linger: seconds to wait for work with no
    row live before ending the loop."""

    def __init__(self, rows, queue, *, finish, token_bytes, linger):
        self.rows = [None] * rows
        self.queue = queue
        self.finish = finish
        self.token_bytes = token_bytes
        self.linger = linger
        self.running = []  # the rows live in the last answer: [(cache row, Row)]
        self.calls = 0

    def __call__(self, tokens, logprobs, top_values, top_ids):
        self.calls += 1
        for r, row in self.running:
            if row.job.cancelled:
                continue
            token = int(tokens[r])
            drawn = (float(logprobs[r]), top_values[r].tolist(), top_ids[r].tolist())
            if row.job.request.stream:
                row.job.post('token', row.index, token, drawn)
            if row.add(token, *drawn, self.token_bytes):
                self.rows[r] = None
                self.finish(row)
        for r, row in enumerate(self.rows):
            if row is not None and row.job.cancelled:
                self.rows[r] = None  # its client went away: the row is free from this step on
        admit, prompt = self.take_one()
        self.running = [(r, row) for r, row in enumerate(self.rows) if row is not None]
        return self.answer(go=bool(self.running), admit=admit, prompt=prompt)

    def take_one(self):
        """A queued row into a free cache row -> (that row or -1, its prompt). With no row live, wait for one
        (linger seconds at most, if given; the queue's closing ends the wait)."""
        if None not in self.rows:
            return -1, []
        busy = any(row is not None for row in self.rows)
        taken = self.queue.next_row(timeout=0 if busy else self.linger)
        if taken is None:
            return -1, []
        job, index, prompt = taken
        r = self.rows.index(None)
        self.rows[r] = Row(job, index, prompt)
        return r, prompt

    def answer(self, *, go, admit, prompt):
        """The four arrays slots.ask expects."""
        states = [IDLE if row is None else row.state() for row in self.rows]
        ints = np.array([[s[name] for name in slots.INTS] for s in states], np.int32)
        floats = np.array([[s[name] for name in slots.FLOATS] for s in states], np.float32)
        return ints, floats, np.array([go, admit], np.int32), np.array(prompt, np.int32)

    def abandon(self):
        """The loop failed: -> the jobs of the rows in it, which are dropped."""
        jobs = {id(row.job): row.job for row in self.rows if row is not None}
        self.rows = [None] * len(self.rows)
        self.running = []
        return list(jobs.values())
