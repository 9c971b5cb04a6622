"""Load benchmark of src/server.py on a random-weight model of a released shape (no download needed).

    python bench/bench_server.py                   # 124M shape: 1, 4 and 16 clients, first token, memory
    python bench/bench_server.py --quick           # the same at a glance: fewer and shorter requests
    python bench/bench_server.py --n_layer=2 --n_embd=64 --n_head=2 --quick      # a tiny shape, to try it

The server runs as a user runs it, a subprocess on a free port of 127.0.0.1, first warmed up (warm_up); the
clients are threads of this process, a new connection per request (http.client). In turn it measures:
1. the scripts' batch-1 decode rate: bench_sample.py's measurement (a fresh process, batch 1, a prompt of
   --prompt_tokens, --max_tokens tokens, the same top_k), before the server starts, so that it runs alone;
2. for each C in --concurrency, a closed loop of C clients, each sending its next POST /v1/completions when its
   last is answered, each with a prompt of its own (random token ids) and no stop: completion tokens/s (the
   answers' usage: random weights may draw <|endoftext|>, where the server always stops), requests/s, p50 and
   p99 latency;
3. the server's memory (VmRSS, VmHWM of /proc/PID/status) over --memory_requests short requests;
4. the time to first token of a new streamed request while --streams streams of --stream_tokens tokens run.
It prints one JSON line per measurement as it is made, then Markdown tables. The figures: docs/serving.md.
"""
import http.client
import inspect
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import fire
import numpy as np

import bench_sample  # bench/, on the path as the script's folder

sys.path.insert(0, str(bench_sample.REPO / 'tests'))
import support  # noqa: E402  (tests/support.py: the server started and stopped as the tests do; no TensorFlow)
from gpt2.base import checkpoint, flags  # noqa: E402  (src/, on the path since bench_sample)

HEADERS = {'Content-Type': 'application/json'}
# Seconds an unstreamed request may take: C requests queued behind a batch of long ones on a slow CPU.
REQUEST_TIMEOUT = 600
# --memory_requests is reported after its first this many answers and after its last.
MEMORY_FIRST = 100


# ---------------------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------------------

def connection(url, timeout):
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def random_prompt(rng, opts):
    """--prompt_tokens random token ids, <|endoftext|> (the vocabulary's last id) left out: a prompt no other
    request shares, so no cache of prompts could help."""
    return rng.integers(0, opts.n_vocab - 1, opts.prompt_tokens).tolist()


def request_body(opts, prompt, max_tokens, stream=False):
    return {'model': opts.model, 'prompt': prompt, 'max_tokens': max_tokens, 'temperature': opts.temperature,
            'top_k': opts.top_k, 'stream': stream}


def complete(url, body):
    """POST /v1/completions, unstreamed -> (seconds until the whole answer, its completion tokens)."""
    conn = connection(url, REQUEST_TIMEOUT)
    try:
        start = time.perf_counter()
        conn.request('POST', '/v1/completions', json.dumps(body), HEADERS)
        answer = conn.getresponse()
        data = answer.read()
        seconds = time.perf_counter() - start
    finally:
        conn.close()
    if answer.status != 200:
        raise RuntimeError(f'POST /v1/completions answered {answer.status}: {data[:500].decode(errors="replace")}')
    return seconds, json.loads(data)['usage']['completion_tokens']


class Stream:
    """A streamed completion, read on a thread of its own: first_s is the seconds from sending it to its first
    chunk of text (None until then); `first` is set then, or when it fails (error). Setting `stop` closes it at
    its next chunk, as a client that goes away."""

    def __init__(self, url, body, timeout):
        self.first, self.stop = threading.Event(), threading.Event()
        self.first_s, self.error = None, None
        self.thread = threading.Thread(target=self.read, args=(url, body, timeout), daemon=True)
        self.thread.start()

    def read(self, url, body, timeout):
        conn = connection(url, timeout)
        try:
            sent = time.perf_counter()
            conn.request('POST', '/v1/completions', json.dumps(body), HEADERS)
            answer = conn.getresponse()
            if answer.status != 200:
                raise RuntimeError(f'a stream was answered {answer.status}: {answer.read()[:500]}')
            for line in answer:  # server-sent events: `data: {...}` lines, `data: [DONE]` at the end
                if not line.startswith(b'data: {'):
                    continue
                if self.first_s is None:
                    self.first_s = time.perf_counter() - sent
                    self.first.set()
                if self.stop.is_set():
                    break
        except Exception as err:  # noqa: BLE001  (a timeout included: the caller reports it)
            self.error = err
        finally:
            conn.close()
            self.first.set()


def in_threads(count, work):
    """work(i) for i < count, each on a thread of its own, all at once -> the results in order; the first
    error is raised here."""
    results, errors = [None] * count, []

    def run(i):
        try:
            results[i] = work(i)
        except Exception as err:  # noqa: BLE001  (handed to the caller)
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------

def percentile(values, q):
    """The q-th percentile (0 to 100), linear between the two nearest ranks (NumPy's default)."""
    ordered = sorted(values)
    at = (len(ordered) - 1) * q / 100
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def summarize(answers, seconds):
    """answers: (latency s, completion tokens) of every request of a closed loop that ran `seconds` -> its
    figures."""
    latencies = [latency for latency, _ in answers]
    tokens = sum(count for _, count in answers)
    return {'requests': len(answers), 'completion_tokens': tokens, 'seconds': seconds,
            'tokens_per_s': tokens / seconds, 'requests_per_s': len(answers) / seconds,
            'tokens_per_request': tokens / len(answers), 'p50_s': percentile(latencies, 50),
            'p99_s': percentile(latencies, 99)}


def emit(row):
    """Print a measurement as a JSON line, with the load average at its end -> the row as printed."""
    row = {k: round(v, 4) if isinstance(v, float) else v for k, v in dict(row, load=os.getloadavg()[0]).items()}
    print(json.dumps(row), flush=True)
    return row


def warm_up(url, opts):
    """One request of b prompts for every b up to --max_batch_size, 1 token each, not counted: the first runs of
    each of the loop's paths (one row, every row) and of the prompt's pass set up oneDNN's kernels, which no
    measured request should wait for. -> the row."""
    rng, start = np.random.default_rng([opts.seed, 0]), time.perf_counter()
    for rows in range(1, opts.max_batch_size + 1):
        complete(url, request_body(opts, [random_prompt(rng, opts) for _ in range(rows)], 1))
    return emit({'measure': 'warm_up', 'seconds': time.perf_counter() - start})


def closed_loop(url, clients, opts):
    """`clients` clients, each sending its next request when its last is answered, ceil(--requests / clients)
    each, all starting at once -> the row."""
    per_client = math.ceil(opts.requests / clients)

    def client(i):
        rng = np.random.default_rng([opts.seed, clients, i])
        return [complete(url, request_body(opts, random_prompt(rng, opts), opts.max_tokens))
                for _ in range(per_client)]

    start = time.perf_counter()
    answers = in_threads(clients, client)
    seconds = time.perf_counter() - start
    return emit({'measure': 'throughput', 'clients': clients, 'max_tokens': opts.max_tokens,
                 **summarize([a for mine in answers for a in mine], seconds)})


def script_rate(model_dir, opts):
    """bench_sample.py's measurement of the scripts' sampling loop (a fresh process, batch 1, one random prompt
    of --prompt_tokens, --max_tokens tokens), its other settings its own defaults -> the row."""
    defaults = {knob: inspect.signature(bench_sample.main).parameters[knob].default
                for knob in bench_sample.CONFIG_KNOBS}
    revision, settings = bench_sample.parse_config(
        '.', dict(defaults, top_k=opts.top_k, temperature=float(opts.temperature), decode_tokens=opts.max_tokens))
    result = bench_sample.measure_config(bench_sample.child_settings(
        settings, model_dir, bench_sample.revisions.src_of(revision), 1, opts.prompt_tokens, opts.script_repeats,
        False))
    return emit({'measure': 'script_batch1', 'prompt_tokens': opts.prompt_tokens, 'max_tokens': opts.max_tokens,
                 'top_k': opts.top_k, **{k: result[k] for k in ('decode_tokens_per_s', 'run_tokens_per_s',
                                                               'prefill_s', 'peak_rss_mb')}})


def first_token(url, opts):
    """Time to the first chunk of a new streamed request (--max_tokens) sent once --streams streams of
    --stream_tokens have begun (or --ttft_timeout has passed without) -> the row; None past the timeout. An
    engine that runs each batch to its end makes the new request wait for the streams' batch."""
    rng = np.random.default_rng([opts.seed, 1])
    running = [Stream(url, request_body(opts, random_prompt(rng, opts), opts.stream_tokens, stream=True),
                      opts.ttft_timeout) for _ in range(opts.streams)]
    deadline = time.perf_counter() + opts.ttft_timeout
    for stream in running:
        stream.first.wait(max(0.0, deadline - time.perf_counter()))
    begun = sum(s.first_s is not None for s in running)
    new = Stream(url, request_body(opts, random_prompt(rng, opts), opts.max_tokens, stream=True), opts.ttft_timeout)
    new.first.wait(opts.ttft_timeout)
    for stream in running + [new]:
        stream.stop.set()
    failed = [s.error for s in running + [new] if s.error and not isinstance(s.error, TimeoutError)]
    if failed:
        raise failed[0]
    return emit({'measure': 'first_token', 'streams': opts.streams, 'streams_begun': begun,
                 'stream_tokens': opts.stream_tokens, 'first_token_s': new.first_s,
                 'timed_out': new.first_s is None, 'timeout_s': opts.ttft_timeout})


def server_memory(pid):
    """The process's resident memory now and at its peak, MB, from /proc/PID/status."""
    fields = dict(line.split(':', 1) for line in Path(f'/proc/{pid}/status').read_text().splitlines()
                  if ':' in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ('VmRSS', 'VmHWM')}


def memory(url, pid, opts):
    """--memory_requests short requests (--memory_max_tokens each) from --memory_clients closed-loop clients;
    the server's VmRSS after every hundredth answer -> the row."""
    lock, counts, rss = threading.Lock(), {'sent': 0, 'answered': 0}, []
    rngs = [np.random.default_rng([opts.seed, 2, i]) for i in range(opts.memory_clients)]

    def client(i):
        while True:
            with lock:
                if counts['sent'] == opts.memory_requests:
                    return
                counts['sent'] += 1
            complete(url, request_body(opts, random_prompt(rngs[i], opts), opts.memory_max_tokens))
            with lock:
                counts['answered'] += 1
                if counts['answered'] % MEMORY_FIRST == 0 or counts['answered'] == opts.memory_requests:
                    rss.append(round(server_memory(pid)['VmRSS'], 1))

    in_threads(opts.memory_clients, client)
    return emit({'measure': 'memory', 'requests': opts.memory_requests, 'max_tokens': opts.memory_max_tokens,
                 f'rss_after_{MEMORY_FIRST}_mb': rss[0], 'rss_after_last_mb': rss[-1],
                 'growth_mb': rss[-1] - rss[0], 'peak_mb': server_memory(pid)['VmHWM'],
                 f'rss_every_{MEMORY_FIRST}_mb': rss})


def serve(name, opts):
    """src/server.py on the cached model, as the tests start it -> (the process, its URL, the server row)."""
    start = time.perf_counter()
    most = max(opts.concurrency + [opts.memory_clients, opts.streams + 1])  # the most requests ever queued
    process, url = support.start_server(SimpleNamespace(name=name, models_dir=bench_sample.CACHE_DIR),
                                        f'--max_batch_size={opts.max_batch_size}', f'--max_queue={most}',
                                        timeout=opts.startup_timeout)
    return process, url, emit({'measure': 'server', 'model': name, 'max_batch_size': opts.max_batch_size,
                               'ready_s': time.perf_counter() - start, 'cpus': os.cpu_count(),
                               **server_memory(process.pid)})


def stop(process, opts):
    """SIGTERM; the server finishes what is in flight first (the current engine: the streams' batch to its end,
    though their clients have gone), so it gets --ttft_timeout to do it, then is killed."""
    try:
        support.stop_server(process, timeout=opts.ttft_timeout)
    except subprocess.TimeoutExpired:
        print('the server did not stop in time; killed', file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

def throughput_table(rows, script):
    """The closed loops as a Markdown table; each C's tokens/s beside C = 1's and the script's batch-1 decode."""
    base = rows[0]['tokens_per_s'] if rows[0]['clients'] == 1 else None
    lines = ['| clients | requests | tokens/request | tokens/s | requests/s | p50 s | p99 s | over C = 1 | '
             'over the script |', '|--:|--:|--:|--:|--:|--:|--:|--:|--:|']
    for row in rows:
        over_base = f'{row["tokens_per_s"] / base:.2f}' if base else ''
        over_script = f'{row["tokens_per_s"] / script["decode_tokens_per_s"]:.2f}' if script else ''
        lines.append(f'| {row["clients"]} | {row["requests"]} | {row["tokens_per_request"]:.1f} | '
                     f'{row["tokens_per_s"]:.1f} | {row["requests_per_s"]:.2f} | {row["p50_s"]:.2f} | '
                     f'{row["p99_s"]:.2f} | {over_base} | {over_script} |')
    return '\n'.join(lines)


def summary_table(server, script, first, mem, opts):
    """The other measurements as a Markdown table of what and its figure."""
    lines = ['| what | figure |', '|---|--:|',
             f'| server ready (start to GET /health 200) | {server["ready_s"]:.1f} s |',
             f'| warm-up (a request of b prompts for every b up to {opts.max_batch_size}) | '
             f'{server["warm_up_s"]:.1f} s |']
    if script:
        lines.append(f'| script, batch 1: decode tokens/s (with the prompt: tokens/s) | '
                     f'{script["decode_tokens_per_s"]:.1f} ({script["run_tokens_per_s"]:.1f}) |')
    if first:
        figure = (f'{first["first_token_s"]:.2f} s' if not first['timed_out']
                  else f'over {first["timeout_s"]} s (timed out)')
        lines.append(f'| first token of a new stream, {first["streams_begun"]} of {first["streams"]} streams of '
                     f'{first["stream_tokens"]} running | {figure} |')
    if mem:
        lines.append(f'| server RSS after {MEMORY_FIRST} / {mem["requests"]} requests of {mem["max_tokens"]} tokens '
                     f'(peak) | {mem[f"rss_after_{MEMORY_FIRST}_mb"]:.0f} / {mem["rss_after_last_mb"]:.0f} MB '
                     f'({mem["peak_mb"]:.0f} MB) |')
    return '\n'.join(lines)


def report(name, opts, rows, script, server, first, mem):
    print(f'\n{name} random weights, prompts of {opts.prompt_tokens} random tokens, {opts.max_tokens} tokens each, '
          f'temperature {opts.temperature}, top_k {opts.top_k}; server --max_batch_size {opts.max_batch_size}; '
          f'{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n')
    if rows:
        print(throughput_table(rows, script) + '\n')
    print(summary_table(server, script, first, mem, opts))


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------

QUICK = dict(concurrency=[1, 4], requests=8, max_tokens=32, stream_tokens=128, memory_requests=200,
             script_repeats=1)


def number(name, value, ok, what):
    if type(value) not in (int, float) or not ok(value):  # type(): True is an int, not a number of seconds
        raise flags.UsageError(f'--{name} must be {what}, got {value!r}')


def check_options(opts):
    """Refuse what cannot run, naming the flag (flags.UsageError); the window is checked by check_window."""
    for count in opts.concurrency:
        flags.whole_number('concurrency', count, 1)
    for name in ('requests', 'max_tokens', 'prompt_tokens', 'max_batch_size', 'streams', 'stream_tokens',
                 'memory_clients', 'memory_max_tokens', 'script_repeats', 'n_layer', 'n_embd', 'n_head'):
        flags.whole_number(name, getattr(opts, name), 1)
    flags.whole_number('top_k', opts.top_k, 0)
    flags.whole_number('memory_requests', opts.memory_requests, MEMORY_FIRST)
    number('ttft_timeout', opts.ttft_timeout, lambda v: v > 0, 'a number of seconds above 0')
    number('startup_timeout', opts.startup_timeout, lambda v: v > 0, 'a number of seconds above 0')
    number('temperature', opts.temperature, lambda v: 0 <= v <= 2, 'a number from 0 to 2')


def options(values):
    """main's arguments -> the run's options (--quick's where no flag says otherwise, concurrency a list),
    checked."""
    defaults = inspect.signature(main).parameters
    opts = SimpleNamespace(**values)
    if values['quick']:
        vars(opts).update({k: v for k, v in QUICK.items() if values[k] == defaults[k].default})
    opts.concurrency = bench_sample.as_list(opts.concurrency)
    check_options(opts)
    return opts


def check_window(opts, n_ctx):
    longest = opts.prompt_tokens + max(opts.max_tokens, opts.stream_tokens)
    if longest > n_ctx:
        raise flags.UsageError(f'--prompt_tokens + the longest of --max_tokens and --stream_tokens must be at most '
                               f'the window, {n_ctx}, got {longest}')


def run(opts):
    """The measurements in turn: the script first, alone, then the server's."""
    name, model_dir = bench_sample.ensure_model(opts.n_layer, opts.n_embd, opts.n_head)
    hparams = checkpoint.read_hparams(model_dir)
    check_window(opts, hparams['n_ctx'])
    opts.model, opts.n_vocab = name, hparams['n_vocab']
    script = script_rate(model_dir, opts) if opts.script else None
    process, url, server = serve(name, opts)
    try:
        server['warm_up_s'] = warm_up(url, opts)['seconds']
        rows = [closed_loop(url, clients, opts) for clients in opts.concurrency]
        mem = memory(url, process.pid, opts) if opts.memory else None
        first = first_token(url, opts) if opts.first_token else None
    finally:
        stop(process, opts)
    report(name, opts, rows, script, server, first, mem)


def main(concurrency=(1, 4, 16), requests=64, max_tokens=64, prompt_tokens=16, temperature=1.0, top_k=40,
         max_batch_size=16, streams=8, stream_tokens=512, ttft_timeout=120, memory_requests=1000, memory_clients=4,
         memory_max_tokens=8, script=True, script_repeats=3, first_token=True, memory=True, n_layer=12, n_embd=768,
         n_head=12, seed=0, startup_timeout=600, quick=False):
    """Benchmark src/server.py under load on a random-weight GPT-2; print a JSON line per measurement and tables.

    concurrency: the numbers of closed-loop clients to measure, e.g. --concurrency=1,4,16
    requests: requests per number of clients (each client sends ceil(requests / clients))
    max_tokens: tokens each request asks for (no stop; <|endoftext|> may end one sooner), and the script's
    prompt_tokens: tokens of each request's prompt, random ids, different for every request
    temperature: sampling temperature of every request
    top_k: top-k of every request and of the script (0: off)
    max_batch_size: the server's --max_batch_size; above --streams, so that a new request has a free row
    streams: streams running while a new request's first token is timed
    stream_tokens: tokens each of those streams asks for
    ttft_timeout: seconds to wait for the streams, then for the new request's first token
    memory_requests: short requests over which the server's memory is followed (at least 100)
    memory_clients: closed-loop clients sending them
    memory_max_tokens: tokens each of them asks for
    script: measure the scripts' batch-1 decode rate (bench_sample.py's measurement) before the server starts
    script_repeats: runs of it; the median is reported
    first_token: measure the time to first token under --streams streams
    memory: follow the server's memory over --memory_requests
    n_layer: model depth (with n_embd and n_head: 12/768/12 is 124M; 2/64/2 a tiny shape to try the benchmark)
    n_embd: model width
    n_head: attention heads
    seed: seed of the random prompts
    startup_timeout: seconds the server may take to answer GET /health with 200
    quick: fewer and shorter requests where their flags are not given: 1 and 4 clients, 8 requests of 32
        tokens, streams of 128 tokens, 200 memory requests, 1 script run
    """
    try:
        run(options(locals()))
    except flags.UsageError as err:
        flags.fail(str(err), code=2)
    except (RuntimeError, AssertionError, OSError) as err:  # a server that did not start, or answered an error
        flags.fail(str(err), code=1)


if __name__ == '__main__':
    fire.Fire(main)
