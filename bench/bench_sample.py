"""Benchmark of GPT-2 sampling on a random-weight model of a released shape (no download needed).

    python bench/bench_sample.py            # 124M shape, batch 1 and 8, prompts of 1 and 512 tokens (~5 min)
    python bench/bench_sample.py --quick    # the same at a glance (~2 min)
    python bench/bench_sample.py --help
    python bench/bench_sample.py --configs=.,75b3faf^ --rounds=3     # this code beside a git revision's
    python bench/bench_sample.py --configs=.,.+repetition_penalty=1.2+no_repeat_ngram_size=3 --rounds=3
    python bench/bench_sample.py --batch_sizes=8 --distinct_prompts --mixed_lengths --configs=.,.+singles
    python bench/bench_sample.py --batch_sizes=1 --prompt_lengths=1 --configs=.+decode_tokens=1023,.+decode_tokens=2048

Each configuration runs in a fresh process (bench/measure_config.py), so start-up and peak memory are its own.
Batch-1 decoding reads every weight once per token, so it cannot beat memory bandwidth / weight bytes; the
benchmark measures this machine's bandwidth and reports decode speed as a fraction of that ceiling.
The model is written once to bench/.cache/models/ (git-ignored) and reused.
"""
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import fire
import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / 'src'))

import encoder  # noqa: E402
import revisions  # noqa: E402  (bench/, on the path as the script's folder)
from gpt2.base import checkpoint  # noqa: E402

CACHE_DIR = BENCH / '.cache' / 'models'
# The header the scripts print before each sample, as the original GPT-2 scripts do.
SAMPLE_HEADER = b'=' * 40 + b' SAMPLE 1 ' + b'=' * 40
# encoder.json size of the released models: 256 bytes, 50000 merges, <|endoftext|>.
N_MERGES = 50000
# Each token of the synthetic vocabulary is extended by this many different bytes to make new tokens.
MERGES_PER_TOKEN = 7


# ---------------------------------------------------------------------------------------------------------------
# A random-weight model in the released layout
# ---------------------------------------------------------------------------------------------------------------

def synthetic_merges():
    """N_MERGES merges (a, b) of tokens that exist by then: a token so far plus one byte character. A merge's
    result ends with b after a, so two merges never make the same string."""
    chars = list(encoder.bytes_to_unicode().values())
    tokens, merges = list(chars), []
    for j in range(N_MERGES):
        a = tokens[j // MERGES_PER_TOKEN]
        b = chars[(j * 37) % len(chars)]  # 37 is odd, so the bytes tried for one token all differ
        merges.append((a, b))
        tokens.append(a + b)
    return merges


def write_vocabulary(model_dir):
    merges = synthetic_merges()
    vocab = {c: i for i, c in enumerate(encoder.bytes_to_unicode().values())}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab[checkpoint.ENDOFTEXT] = len(vocab)
    assert len(vocab) == 256 + N_MERGES + 1
    (model_dir / 'encoder.json').write_text(json.dumps(vocab), encoding='utf-8')
    (model_dir / 'vocab.bpe').write_text('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges),
                                         encoding='utf-8')
    return len(vocab)


def random_params(hparams, seed=0, scale=1.0):
    """Layer-norm gains 1, biases 0, other weights N(0, 0.02 x scale): at scale 1 like a freshly initialised
    GPT-2."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in checkpoint.variable_shapes(SimpleNamespace(**hparams)).items():
        if name.endswith('/g'):
            params[name] = np.ones(shape, np.float32)
        elif name.endswith('/b'):
            params[name] = np.zeros(shape, np.float32)
        else:
            params[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02 * scale)
    return params


def model_name(n_layer, n_embd, n_head):
    """The released name for a released shape (so the scripts accept it), else a descriptive one."""
    for name, shape in checkpoint.MODEL_SIZES.items():
        if shape == (n_layer, n_embd, n_head):
            return name
    return f'custom-{n_layer}x{n_embd}x{n_head}'


def in_fresh_process(fn, *args):
    """fn(*args) in a new interpreter. Memory-hungry work goes there: Linux carries a process's peak RSS over
    to the children it starts, so this one must stay small for the children's peaks to be their own."""
    with multiprocessing.get_context('spawn').Pool(1) as pool:
        return pool.apply(fn, args)


def ensure_model(n_layer, n_embd, n_head):
    """The folder of a cached random-weight model of this shape, written first if absent."""
    name = model_name(n_layer, n_embd, n_head)
    model_dir = CACHE_DIR / name
    if not (model_dir / '.complete').exists():
        print(f'writing a random-weight {name} model to {model_dir} (once) ...', flush=True)
        in_fresh_process(write_model, model_dir, n_layer, n_embd, n_head)
    return name, model_dir


def write_model(model_dir, n_layer, n_embd, n_head):
    model_dir.mkdir(parents=True, exist_ok=True)
    n_vocab = write_vocabulary(model_dir)
    hparams = {'n_vocab': n_vocab, 'n_ctx': 1024, 'n_embd': n_embd, 'n_head': n_head, 'n_layer': n_layer}
    checkpoint.save_checkpoint(model_dir, hparams, random_params(hparams))
    (model_dir / '.complete').touch()


def weight_bytes_per_token(model_dir):
    """Float32 bytes a batch-1 step reads: every weight once, except wpe, of which it reads one row."""
    h = checkpoint.read_hparams(model_dir)
    shapes = checkpoint.variable_shapes(SimpleNamespace(**h))
    elements = sum(int(np.prod(s)) for n, s in shapes.items() if n != 'model/wpe') + h['n_embd']
    return 4 * elements


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------

def read_bandwidth(threads=2, gib=1, repeats=5):
    """Bytes per second at which `threads` threads sum a `gib` GiB array (NumPy releases the GIL), best of
    repeats."""
    data = np.ones(gib << 28, np.float32)
    parts = np.array_split(data, threads)
    best = float('inf')
    for _ in range(repeats):
        workers = [threading.Thread(target=np.sum, args=(p,)) for p in parts]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best


def run_child(args):
    """Run a Python script in a child process; -> its stdout."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f'{args[0]} failed:\n{err.decode(errors="replace")[-3000:]}')
    return out.decode()


def measure_config(settings):
    settings = dict(settings, launched=time.time())
    out = run_child([str(BENCH / 'measure_config.py'), json.dumps(settings)])
    return json.loads(out.strip().splitlines()[-1])


def script_first_token(name, models_dir, length):
    """Launch generate_unconditional_samples.py at batch 1 -> (seconds until its first sample's first token
    appears, the process's peak RSS in MB). Unbuffered output, so the time is when the token is printed."""
    script = REPO / 'src' / 'generate_unconditional_samples.py'
    args = [sys.executable, str(script), '--model_name', name, '--models_dir', str(models_dir), '--nsamples', '1',
            '--length', str(length), '--seed', '1']
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    start = time.time()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    seen, first_token = b'', None
    while chunk := os.read(proc.stdout.fileno(), 4096):
        seen += chunk
        header = seen.find(SAMPLE_HEADER)
        line_end = seen.find(b'\n', header) if header >= 0 else -1
        if first_token is None and 0 <= line_end < len(seen) - 1:
            first_token = time.time() - start
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f'{script.name} failed:\n{err.decode(errors="replace")[-3000:]}')
    return first_token, usage.ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------------------------

# The settings a configuration may change (see main's configs); each is also a flag of main, its default for all.
CONFIG_KNOBS = ('top_k', 'top_p', 'temperature', 'decode_tokens', 'distinct_prompts', 'mixed_lengths', 'singles',
                'stop', 'repetition_penalty', 'presence_penalty', 'frequency_penalty', 'no_repeat_ngram_size',
                'context_keep', 'precision')
PENALTIES = {'repetition_penalty': ('repetition', 1.0), 'presence_penalty': ('presence', 0.0),
             'frequency_penalty': ('frequency', 0.0), 'no_repeat_ngram_size': ('no_repeat_ngram', 0)}


def parse_config(text, defaults):
    """'REV+knob=value+...' -> (the revision, '.' for this checkout's src/, and the settings: defaults with the
    knobs changed). A knob without a value is true (+singles); +stop=TEXT adds a stop string."""
    revision, *knobs = text.split('+')
    settings = dict(defaults, stop=list(defaults['stop']))
    for knob in knobs:
        key, equals, value = knob.partition('=')
        if key not in CONFIG_KNOBS:
            raise ValueError(f'unknown knob {key!r} in configuration {text!r}: {", ".join(CONFIG_KNOBS)}')
        if key == 'stop':
            settings['stop'].append(value)
        elif isinstance(defaults[key], str):
            settings[key] = value
        elif isinstance(defaults[key], bool) or not equals:
            settings[key] = not equals or value.lower() in ('1', 'true', 'yes', 'on')
        else:
            settings[key] = float(value) if isinstance(defaults[key], float) or '.' in value else int(value)
    return revision or revisions.HERE, settings


def parse_configs(configs, defaults, prompt_lengths):
    """--configs -> ({configuration: (its src/ folder, its settings)}, the configurations in order). Each
    revision is exported now: a commit made while this runs must not change what it measures."""
    configs = configs.split(',') if isinstance(configs, str) else [str(c) for c in configs]
    parsed = {}
    for config in configs:
        revision, settings = parse_config(config, defaults)
        parsed[config] = revisions.src_of(revision), settings
    if any(s['singles'] and s['decode_tokens'] + max(prompt_lengths) - 1 > 1024 for _, s in parsed.values()):
        raise ValueError('singles compares batches within the window')
    return parsed, configs


def child_settings(settings, model_dir, src, batch, prompt, repeats, profile):
    """One configuration's settings for measure_config.py: the penalties only when one is on."""
    penalties = {name: settings[flag] for flag, (name, off) in PENALTIES.items() if settings[flag] != off}
    return {'model_dir': str(model_dir), 'src': str(src), 'batch_size': batch, 'prompt_len': prompt,
            'repeats': repeats, 'profile': profile, 'penalties': penalties,
            **{k: settings[k] for k in CONFIG_KNOBS if k not in PENALTIES}}


# ---------------------------------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------------------------------

def measure_machine(name, model_dir):
    """Print and return this machine's read bandwidth and the batch-1 decode ceiling it sets for the model."""
    bandwidth = in_fresh_process(read_bandwidth)
    ceiling = bandwidth / weight_bytes_per_token(model_dir)
    print(json.dumps({'machine': {'read_bandwidth_gb_s': round(bandwidth / 1e9, 1), 'cpus': os.cpu_count(),
                                  'model': name, 'weight_mb_per_token': weight_bytes_per_token(model_dir) / 1e6,
                                  'batch1_ceiling_tokens_per_s': round(ceiling, 1)}}), flush=True)
    return bandwidth, ceiling


def measure_rounds(parsed, configs, grid, name, model_dir, ceiling):
    """Every configuration at every batch size and prompt length, grid.rounds times -> the rows, each printed as
    a JSON line when measured."""
    rows = []
    for round_ in range(grid.rounds):
        for batch in grid.batch_sizes:
            for prompt in grid.prompt_lengths:
                # Every other round in the reverse order, so that no configuration always runs first.
                for config in configs if round_ % 2 == 0 else configs[::-1]:
                    src, settings = parsed[config]
                    load = os.getloadavg()[0]
                    result = measure_config(child_settings(settings, model_dir, src, batch, prompt, grid.repeats,
                                                           grid.profile))
                    if batch == 1:
                        result['of_ceiling'] = f'{result["decode_tokens_per_s"] / ceiling:.0%}'
                    row = {'config': config, 'round': round_, 'model': name, 'batch_size': batch,
                           'prompt_len': prompt, **{k: settings[k] for k in CONFIG_KNOBS}, 'load': load,
                           'load_after': os.getloadavg()[0], **result}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    return rows


SCRIPT = REPO / 'src' / 'generate_unconditional_samples.py'


def measure_script(name, length):
    """The real script's start-up -> its row (printed as a JSON line), or None where this checkout has none."""
    if not SCRIPT.exists():
        return None
    first, rss = script_first_token(name, CACHE_DIR, length)
    row = {'script': SCRIPT.name, 'model': name, 'length': length, 'first_token_s': first and round(first, 3),
           'peak_rss_mb': round(rss)}
    print(json.dumps(row), flush=True)
    return row


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

COLUMNS = [  # (heading, key, format of the value); each value is as wide as its heading
    ('batch', 'batch_size', 'd'), ('prompt', 'prompt_len', 'd'), ('startup s', 'startup_s', '.2f'),
    ('1st token s', 'first_token_s', '.2f'), ('prefill s', 'prefill_s', '.3f'),
    ('decode tok/s', 'decode_tokens_per_s', '.1f'), ('ms/step', 'decode_step_ms', '.1f'),
    ('run s', 'run_s', '.2f'), ('of ceiling', 'of_ceiling', 's'), ('peak RSS MB', 'peak_rss_mb', '.0f'),
]


def table(rows, configs=False):
    columns = ([('config', 'config', 's')] if configs else []) + COLUMNS
    width = max([len(r.get('config', '')) for r in rows] + [6]) if configs else 0
    lines = ['  '.join(heading.ljust(width) if key == 'config' else heading for heading, key, _ in columns)]
    for row in rows:
        lines.append('  '.join(format(row.get(key, ''), f'<{width}' if key == 'config' else f'>{len(heading)}{fmt}')
                               for heading, key, fmt in columns))
    return '\n'.join(lines)


def median_table(rows, configs, batch_sizes, prompt_lengths):
    """Per batch, prompt and configuration: the median decode tok/s, ms/step and run s over the rounds, and the
    ratio of its decode tok/s to the first configuration's in the same round."""
    lines = [f'{"config":<{max(map(len, configs))}}  batch  prompt  decode tok/s  ms/step   run s  ratio']
    for batch in batch_sizes:
        for prompt in prompt_lengths:
            same = [r for r in rows if r['batch_size'] == batch and r['prompt_len'] == prompt]
            base = {r['round']: r['decode_tokens_per_s'] for r in same if r['config'] == configs[0]}
            for config in configs:
                mine = [r for r in same if r['config'] == config]
                ratios = [r['decode_tokens_per_s'] / base[r['round']] for r in mine]
                median = lambda key: statistics.median(r[key] for r in mine)
                lines.append(f'{config:<{max(map(len, configs))}}  {batch:>5}  {prompt:>6}  '
                             f'{median("decode_tokens_per_s"):>12.1f}  {median("decode_step_ms"):>7.1f}  '
                             f'{median("run_s"):>6.2f}  {statistics.median(ratios):.3f} '
                             f'({min(ratios):.3f} to {max(ratios):.3f})')
    return '\n'.join(lines)


def report(rows, parsed, configs, grid, name, machine):
    """The summary line, the table of every run, and with several configurations or rounds their medians."""
    bandwidth, ceiling = machine
    first = parsed[configs[0]][1]
    prompts = ('a different prompt for each row' + (' of its own length' if first['mixed_lengths'] else '')
               if first['distinct_prompts'] else 'one prompt for all rows')
    loads = [r['load'] for r in rows] + [r['load_after'] for r in rows]
    print(f'\n{name} random weights, top_k {first["top_k"]}, top_p {first["top_p"]}, {prompts}, '
          f'{first["decode_tokens"]} tokens per run, median of {grid.repeats}; read bandwidth '
          f'{bandwidth / 1e9:.1f} GB/s -> batch-1 ceiling {ceiling:.0f} tok/s; load average {min(loads):.1f} to '
          f'{max(loads):.1f} on {os.cpu_count()} cores')
    side_by_side = len(configs) > 1 or grid.rounds > 1
    print(table(rows, configs=side_by_side))
    if side_by_side:
        print(f'\nmedians over {grid.rounds} round(s); ratio: decode tok/s over the first configuration\'s in the '
              f'same round, median (range)')
        print(median_table(rows, configs, grid.batch_sizes, grid.prompt_lengths))


def report_script(script_row, script, length):
    if script_row:
        print(f'\n{SCRIPT.name} (batch 1, {length} tokens): first token after {script_row["first_token_s"]} s, '
              f'peak RSS {script_row["peak_rss_mb"]} MB')
    elif script:
        print(f'\n{SCRIPT.name} not found; script start-up not measured')


def report_profiles(rows):
    for row in rows:
        print(f'\n{row["config"]}, batch {row["batch_size"]}, prompt {row["prompt_len"]}: ms per step by op type')
        for op, ms in row['ms_per_step_by_op'].items():
            print(f'  {op:<28} {ms:8.3f}')


def as_list(numbers):
    return [numbers] if isinstance(numbers, int) else list(numbers)


def main(batch_sizes=(1, 8), prompt_lengths=(1, 512), decode_tokens=64, repeats=3, top_k=40, top_p=1.0,
         temperature=1.0, n_layer=12, n_embd=768, n_head=12, script_length=256, script=True, profile=False,
         distinct_prompts=False, quick=False, mixed_lengths=False, singles=False, stop=(), repetition_penalty=1.0,
         presence_penalty=0.0, frequency_penalty=0.0, no_repeat_ngram_size=0, context_keep=0, configs='.',
         rounds=1, precision='float32'):
    """Benchmark sampling on a random-weight GPT-2 and print a table and one JSON line per configuration.

    batch_sizes: batch sizes to measure, e.g. --batch_sizes=1,8
    prompt_lengths: context lengths to measure, e.g. --prompt_lengths=1,512
    decode_tokens: tokens sampled per run after the prompt; past the window (prompt + decode_tokens - 1 above
        1024) the window slides (see context_keep), and ms/step is then the cost per token, slides included
    repeats: warm runs per configuration; the medians are reported
    top_k: top-k of the sampler (0: off)
    top_p: top-p of the sampler (1: off)
    temperature: sampling temperature
    n_layer: model depth (with n_embd and n_head: 12/768/12 is 124M, 24/1024/16 is 355M)
    n_embd: model width
    n_head: attention heads
    script_length: tokens generate_unconditional_samples.py samples when its start-up is measured
    script: measure the real script's start-up too (if it exists)
    profile: also print each configuration's milliseconds per decode step by op type (one traced run)
    distinct_prompts: a different random prompt for each row; by default all rows share one, as in the scripts
    quick: fewer and shorter runs: prompts of 1 and 64 tokens, 32 tokens, 2 repeats, script length 32
    mixed_lengths: with distinct_prompts, prompts of different lengths in one batch (left-padded, as the
        interactive script's --prompt_file): row b's is b * prompt / (2 * batch) tokens shorter
    singles: the batch's prompts (as distinct_prompts and mixed_lengths make them) sampled one at a time at
        batch 1 instead, to compare with one batch of them: see the run s column (a run: all the batch's samples)
    stop: stop strings (a string or a list), as the scripts' --stop; random weights seldom meet them, so this
        measures the check
    repetition_penalty: as the scripts' flag (1: off)
    presence_penalty: as the scripts' flag (0: off)
    frequency_penalty: as the scripts' flag (0: off)
    no_repeat_ngram_size: as the scripts' flag (0: off)
    context_keep: past the window, tokens kept when it slides (0: half the window, as the scripts)
    precision: as the scripts' flag: float32, or int8 (compare: --configs=.,.+precision=int8)
    configs: configurations to measure side by side, comma-separated, each REV[+KNOB=VALUE]...: REV is a git
        revision whose src/ is exported to bench/.cache/src/ (bench/revisions.py), or . for this checkout's; a
        knob is one of the flags above that sets it for this configuration, e.g.
        --configs=.,75b3faf^ (this code against the code of before the generation work), or
        --configs=.,.+repetition_penalty=1.2+no_repeat_ngram_size=3 (penalties off and on). Older revisions take
        only the knobs their sample_sequence has.
    rounds: run every configuration this many times, alternating (every other round in the reverse order),
        since this machine's speed drifts with the load; with more than one configuration or round, the medians
        and each configuration's ratio to the first in the same round follow
    """
    if quick:
        prompt_lengths, decode_tokens, repeats, script_length = (1, 64), 32, 2, 32
    grid = SimpleNamespace(batch_sizes=as_list(batch_sizes), prompt_lengths=as_list(prompt_lengths),
                           repeats=repeats, profile=profile, rounds=rounds)
    defaults = dict(top_k=top_k, top_p=float(top_p), temperature=float(temperature), decode_tokens=decode_tokens,
                    distinct_prompts=bool(distinct_prompts), mixed_lengths=bool(mixed_lengths),
                    singles=bool(singles), stop=[stop] if isinstance(stop, str) else list(stop),
                    repetition_penalty=float(repetition_penalty), presence_penalty=float(presence_penalty),
                    frequency_penalty=float(frequency_penalty), no_repeat_ngram_size=int(no_repeat_ngram_size),
                    context_keep=int(context_keep), precision=str(precision))
    parsed, configs = parse_configs(configs, defaults, grid.prompt_lengths)

    name, model_dir = ensure_model(n_layer, n_embd, n_head)
    machine = measure_machine(name, model_dir)
    rows = measure_rounds(parsed, configs, grid, name, model_dir, ceiling=machine[1])
    script_row = measure_script(name, script_length) if script else None
    report(rows, parsed, configs, grid, name, machine)
    report_script(script_row, script, script_length)
    if profile:
        report_profiles(rows)


if __name__ == '__main__':
    fire.Fire(main)
