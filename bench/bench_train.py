"""Benchmark of GPT-2 training steps on a random-weight model of a released shape (no download needed), with
Hugging Face transformers' GPT2LMHeadModel (PyTorch, CPU) side by side as the peer.

    python bench/bench_train.py                   # 124M shape, batch 1 x 1024 tokens, Adam: this project and HF
    python bench/bench_train.py --peers=False     # this project only
    python bench/bench_train.py --configs=tf,tf+xla --rounds=2 --profile
    python bench/bench_train.py --help

Each configuration runs in a fresh process (bench/measure_train.py; bench/peer_train.py for the peers, with
--peers_python), so start-up and peak memory are its own; with --rounds the configurations alternate, since this
machine's speed drifts with the load of other work. Every row notes the load average when it started.
The model is written once to bench/.cache/models/ (git-ignored) and reused.

A configuration is NAME[@REVISION][+KNOB[=VALUE]]...:
    tf               this checkout's training step (src/train.py's graph; a bare Adam loop over model.model
                     before train.py exists, or with +loop=bare)
    tf@REV           the same from git revision REV's src/ (exported to bench/.cache/src/), to compare code
    script           src/train.py itself on a random-token .npz, from launch to its progress lines (its own
                     tokens/s; no CPU times); script@REV too
    script+workers=N src/train.py as N worker processes of one job (TF_CONFIG on 127.0.0.1), each pinned to its
                     own core with one thread, the chief's tokens/s (the job's) and the bytes the all-reduce
                     sends per step; script+devices=N: --devices N in one process (--workers, --devices add these)
    +KNOB=VALUE      a setting of measure_train.KNOBS, e.g. +xla, +intra=1, +inter=2, +grappler=one
    hf-eager         transformers with attn_implementation='eager' (attention weights materialised, as GPT-2)
    hf-sdpa          transformers' default, PyTorch's fused scaled_dot_product_attention
    hf-...+autocast  the forward pass and loss under torch.autocast('cpu', dtype=torch.bfloat16) (PyTorch's mixed
                     precision, as HF Trainer's --bf16 runs it)

    python bench/bench_train.py --mixed           # float32 and bfloat16 side by side: tf, tf+mixed=bfloat16,
                                                  # hf-sdpa, hf-sdpa+autocast (+ --recompute: the lean step too)
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import fire
import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_sample  # noqa: E402  (it puts this checkout's src/ on the path)
import measure_train  # noqa: E402
from revisions import src_of  # noqa: E402

from gpt2.base import checkpoint  # noqa: E402
from gpt2.base import runtime  # noqa: E402

REPO = bench_sample.REPO
PEERS = {'hf-eager': 'eager', 'hf-sdpa': 'sdpa'}
PEER_KNOBS = {'autocast': False}  # the settings of a peer's configuration (bench/peer_train.py)
# --mixed: this project in float32 and bfloat16, and HF in float32 and under bfloat16 autocast
MIXED = ('tf', 'tf+mixed=bfloat16', 'hf-sdpa', 'hf-sdpa+autocast')
DISTRIBUTED = ('workers', 'devices')  # the knobs of the script configuration: src/train.py over several of them
DEFAULT_PEERS_PYTHON = '/tmp/peers/bin/python'


# ---------------------------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------------------------

def parse_config(text):
    """'tf@REV+xla+intra=1' -> (name, revision or None, {knob: value})"""
    name, *knobs = text.split('+')
    name, _, revision = name.partition('@')
    if name not in ('tf', 'script', *PEERS):
        raise ValueError(f'unknown configuration {name!r}: tf, script, {", ".join(PEERS)}')
    settings = {}
    for knob in knobs:
        key, _, value = knob.partition('=')
        if name == 'script' and key in DISTRIBUTED:
            settings[key] = int(value)
            continue
        if name in PEERS:
            if key not in PEER_KNOBS:
                raise ValueError(f'unknown knob {key!r} of a peer in {text!r}: {", ".join(PEER_KNOBS)}')
            settings[key] = not value or value.lower() in ('1', 'true', 'yes', 'on')
            continue
        if key not in measure_train.KNOBS:
            raise ValueError(f'unknown knob {key!r} in {text!r}: {", ".join(measure_train.KNOBS)}')
        default = measure_train.KNOBS[key]
        settings[key] = True if not value else type(default)(value) if not isinstance(default, bool) else \
            value.lower() in ('1', 'true', 'yes', 'on')
    return name, revision or None, settings


def malloc_environment(settings):
    """glibc's malloc reads its settings from the environment when the process starts."""
    env = dict(os.environ)
    if settings.get('arenas'):
        env['MALLOC_ARENA_MAX'] = str(settings['arenas'])
    if settings.get('mmap_mb'):
        env['MALLOC_MMAP_THRESHOLD_'] = str(settings['mmap_mb'] << 20)
    return env


def run_json(python, script, settings):
    """Run script in a fresh interpreter with the settings -> its last line of stdout, parsed."""
    settings = dict(settings, launched=time.time())
    proc = subprocess.run([python, str(script), json.dumps(settings)], capture_output=True, cwd=REPO,
                          env=malloc_environment(settings))
    if proc.returncode:
        raise RuntimeError(f'{script.name} failed:\n{proc.stderr.decode(errors="replace")[-3000:]}')
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def random_dataset(n_vocab, tokens=200_000):
    """A .npz of random token ids (as src/encode.py writes: one uint16 array a chunk), written once."""
    path = BENCH / '.cache' / 'data' / f'random-{n_vocab}-{tokens}.npz'
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        partial = path.with_suffix('.part.npz')
        np.savez(partial, chunk0=rng.integers(0, n_vocab, tokens).astype(np.uint16))
        os.replace(partial, path)
    return path


# A progress line of src/train.py: [step | seconds since it started training] loss=... avg=... tokens/s=...
PROGRESS = re.compile(rb'^\[(\d+) \| [\d.]+\] loss=\S+ avg=\S+ tokens/s=([\d.]+)')


def measure_script(src, common, extra=()):
    """Run src/train.py itself, as a user would, on a random-token dataset -> the time from launch to its first
    step's progress line, the median tokens/s of the steps after it, and its peak RSS."""
    runs = BENCH / '.cache' / 'runs'
    model_dir = Path(common['model_dir'])
    args = [sys.executable, str(src / 'train.py'), '--dataset', str(random_dataset(common['n_vocab'])),
            '--model_name', model_dir.name, '--models_dir', str(model_dir.parent), '--checkpoint_dir', str(runs),
            '--run_name', 'bench', '--restore_from', 'fresh', '--overwrite', '--steps', str(common['steps'] + 1),
            '--seed', '1', '--batch_size', str(common['batch_size']), '--seq_len', str(common['seq_len']),
            '--learning_rate', str(common['learning_rate']), *extra]
    start = time.time()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    first_step, rates = None, []
    for line in proc.stdout:
        match = PROGRESS.match(line)
        if match:
            if first_step is None:
                first_step = time.time() - start
            else:
                rates.append(float(match.group(2)))
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    shutil.rmtree(runs / 'bench', ignore_errors=True)
    if os.waitstatus_to_exitcode(status) or first_step is None:
        raise RuntimeError(f'train.py failed:\n{err.decode(errors="replace")[-3000:]}')
    tokens_per_s = statistics.median(rates)
    return {'loop': 'train.py', 'first_step_s': round(first_step, 3), 'tokens_per_s': tokens_per_s,
            'step_s': round(common['batch_size'] * common['seq_len'] / tokens_per_s * devices(extra), 3),
            'step_cpu_s': None, 'first_step_cpu_s': None, 'peak_rss_mb': round(usage.ru_maxrss / 1024)}


def write_shape_model(model_dir, n_layer, n_embd, n_head):
    """A random-weight model of a released shape, written by TensorFlow a layer at a time (in a fresh process, see
    bench_sample.in_fresh_process): each layer's variables are saved to a bundle of their own, and the bundles
    merged into model.ckpt, so the 1558M shape's 6.2 GB of weights are never in memory at once."""
    tf = runtime.import_tensorflow()
    tf.disable_v2_behavior()
    model_dir.mkdir(parents=True, exist_ok=True)
    n_vocab = bench_sample.write_vocabulary(model_dir)
    hparams = {'n_vocab': n_vocab, 'n_ctx': 1024, 'n_embd': n_embd, 'n_head': n_head, 'n_layer': n_layer}
    (model_dir / 'hparams.json').write_text(json.dumps(hparams, indent=2) + '\n', encoding='utf-8')
    shapes = checkpoint.variable_shapes(SimpleNamespace(**hparams))
    groups = {}
    for name in shapes:
        groups.setdefault(name.split('/')[1] if name.startswith('model/h') else name, []).append(name)
    prefix = str(model_dir / checkpoint.CHECKPOINT_PREFIX)
    parts = []
    with tf.Graph().as_default(), tf.Session() as sess:
        names = tf.placeholder(tf.string, [None])
        for number, (group, members) in enumerate(groups.items()):
            values = []
            for name in members:
                seed = list(shapes).index(name)
                base = 1.0 if name.endswith('/g') else 0.0
                values.append(base + 0.02 * tf.random.stateless_normal(shapes[name], seed=[seed, 0]))
            part = f'{prefix}.part{number}'
            sess.run(tf.raw_ops.SaveV2(prefix=part, tensor_names=members, shape_and_slices=[''] * len(members),
                                       tensors=values))
            parts.append(part)
        sess.run(tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=parts, destination_prefix=prefix,
                                               delete_old_dirs=True))
        del names
    # The graph file the released folders have: the variables alone, which the scripts never read.
    with tf.Graph().as_default():
        variables = [tf.Variable(tf.zeros([1]), name=name, validate_shape=False) for name in shapes]
        tf.train.export_meta_graph(str(model_dir / 'model.ckpt.meta'), clear_devices=True)
        del variables
    (model_dir / checkpoint.STATE_FILE).write_text(checkpoint.state_text([checkpoint.CHECKPOINT_PREFIX]))
    (model_dir / '.complete').touch()


def ensure_shape(shape):
    """--shape NAME -> (name, model folder): the cached random-weight model of that released shape."""
    if shape not in checkpoint.MODEL_SIZES:
        sys.exit(f'error: --shape must be one of {", ".join(checkpoint.MODEL_SIZES)}, got {shape!r}')
    model_dir = bench_sample.CACHE_DIR / shape
    if not (model_dir / '.complete').exists():
        print(f'writing a random-weight {shape} model to {model_dir} (once) ...', flush=True)
        bench_sample.in_fresh_process(write_shape_model, model_dir, *checkpoint.MODEL_SIZES[shape])
    return shape, model_dir


def free_ports(count):
    """count ports of 127.0.0.1 that were free a moment ago (tests/support.py's, which loads no TensorFlow: this
    process stays small, so that the peak RSS of the workers it starts is their own)."""
    sys.path.insert(0, str(REPO / 'tests'))
    import support
    return support.free_ports(count)


def bytes_sent(ports):
    """The bytes sent so far over the open TCP connections to or from any of ports on this machine (both ends
    of each: what every worker has sent), from the kernel's counters (`ss`)."""
    where = ' or '.join(f'sport = :{p} or dport = :{p}' for p in ports)
    out = subprocess.run(['ss', '-tinH', f'( {where} )'], capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in re.findall(r'bytes_sent:(\d+)', out))


def measure_workers(src, common, workers):
    """Run src/train.py as `workers` processes of one job on 127.0.0.1, each on its own core with one thread ->
    the chief's time to its first step's progress line, the median tokens/s of the steps after it (the job's),
    each worker's peak RSS (the largest), and the bytes each worker sends per step: measured over the steps after
    the first (`ss`'s counters of the job's connections), and the ring all-reduce's arithmetic, 2 (N - 1) / N of
    the float32 gradients."""
    runs = BENCH / '.cache' / 'runs'
    model_dir = Path(common['model_dir'])
    hosts = [f'127.0.0.1:{port}' for port in free_ports(workers)]
    cores = sorted(os.sched_getaffinity(0))
    processes = []
    start = time.time()
    for i in range(workers):
        args = [sys.executable, str(src / 'train.py'), '--dataset', str(random_dataset(common['n_vocab'])),
                '--model_name', model_dir.name, '--models_dir', str(model_dir.parent), '--checkpoint_dir',
                str(runs / f'w{i}'), '--run_name', 'bench', '--restore_from', 'fresh', '--overwrite', '--steps',
                str(common['steps'] + 1), '--seed', '1', '--batch_size', str(common['batch_size']), '--seq_len',
                str(common['seq_len']), '--learning_rate', str(common['learning_rate']), '--sample_every', '0']
        env = dict(os.environ, PYTHONUNBUFFERED='1', TF_NUM_INTRAOP_THREADS='1', TF_NUM_INTEROP_THREADS='1',
                   TF_CONFIG=json.dumps({'cluster': {'worker': hosts}, 'task': {'type': 'worker', 'index': i}}))
        if workers == 1:
            env.pop('TF_CONFIG')
        core = cores[i % len(cores)]
        processes.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO,
                                          env=env, preexec_fn=lambda core=core: os.sched_setaffinity(0, {core})))
    ports = [int(host.rsplit(':', 1)[1]) for host in hosts]
    first_step, rates, sent = None, [], []
    for line in processes[0].stdout:
        match = PROGRESS.match(line)
        if match:
            sent.append(bytes_sent(ports) if workers > 1 else 0)
            if first_step is None:
                first_step = time.time() - start
            else:
                rates.append(float(match.group(2)))
    codes, peaks = [], []
    for p in processes:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        codes.append(p.returncode)
        peaks.append(usage.ru_maxrss)
    for i in range(workers):
        shutil.rmtree(runs / f'w{i}', ignore_errors=True)
    if any(codes) or not rates:
        raise RuntimeError(f'train.py workers failed with {codes}')
    shapes = checkpoint.variable_shapes(SimpleNamespace(**{k: common[k] for k in checkpoint.HPARAMS_KEYS}))
    params = sum(int(np.prod(shape)) for shape in shapes.values())
    tokens_per_s = statistics.median(rates)
    return {'loop': f'train.py x{workers}', 'first_step_s': round(first_step, 3), 'tokens_per_s': tokens_per_s,
            'step_s': round(common['batch_size'] * workers * common['seq_len'] / tokens_per_s, 3),
            'step_cpu_s': None, 'first_step_cpu_s': None, 'peak_rss_mb': round(max(peaks) / 1024),
            'sent_mb_per_step': round((sent[-1] - sent[0]) / workers / (len(sent) - 1) / 2**20, 1),
            'ring_mb_per_step': round(2 * (workers - 1) / workers * 4 * params / 2**20, 1)}


def devices(extra):
    """train.py's --devices in extra, else 1: the job's batch is that many times --batch_size."""
    return int(extra[list(extra).index('--devices') + 1]) if '--devices' in extra else 1


def measure(config, src, common, peers_python, profile):
    name, _, knobs = parse_config(config)
    if name == 'script' and 'workers' in knobs:
        return measure_workers(src, common, knobs['workers'])
    if name == 'script' and knobs.get('devices', 1) > 1:
        return measure_script(src, common, ['--devices', str(knobs['devices'])])
    if name == 'script':
        return measure_script(src, common)
    if name in PEERS:
        return run_json(peers_python, BENCH / 'peer_train.py', {**common, **PEER_KNOBS, **knobs, 'attn': PEERS[name]})
    settings = {**common, **knobs, 'src': str(src), 'profile': profile or knobs.get('profile', False)}
    return run_json(sys.executable, BENCH / 'measure_train.py', settings)


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

COLUMNS = [  # (heading, key, format of the value); each value is as wide as its heading
    ('tokens/s', 'tokens_per_s', '.1f'), ('s/step', 'step_s', '.2f'), ('CPU s/step', 'step_cpu_s', '.2f'),
    ('peak RSS MB', 'peak_rss_mb', '.0f'), ('1st step s', 'first_step_s', '.1f'),
    ('1st step CPU s', 'first_step_cpu_s', '.1f'), ('load', 'load', '.2f'),
    ('sent MB/step', 'sent_mb_per_step', '.1f'), ('ring MB/step', 'ring_mb_per_step', '.1f'),
]


def table(rows):
    width = max(len('config'), *(len(row['config']) for row in rows))
    lines = [f'{"config":<{width}}  ' + '  '.join(heading for heading, _, _ in COLUMNS)]
    for row in rows:
        lines.append(f'{row["config"]:<{width}}  ' + '  '.join(
            format(row[key], f'>{len(heading)}{fmt}') if row.get(key) is not None else ' ' * len(heading)
            for heading, key, fmt in COLUMNS))
    return '\n'.join(lines)


def memory_table(rows):
    """docs/memory.md's table rows (Markdown) for the `tf` rows."""
    lines = ['| shape | optimizer | memory saving | precision | peak RSS | tokens/s | load |',
             '|---|---|---|---|--:|--:|--:|']
    for row in rows:
        name, _, knobs = parse_config(row['config'])
        if name != 'tf':
            continue
        lines.append(f'| {row["model"]} | {knobs.get("optimizer", "adam")} | '
                     f'{"on" if knobs.get("recompute") else "off"} | {knobs.get("mixed") or "float32"} | '
                     f'{row["peak_rss_mb"] / 1000:.1f} GB | '
                     f'{row["tokens_per_s"]:.1f} | {row["load"]:.1f} |')
    return '\n'.join(lines)


def print_profile(row):
    profile = row['profile']
    print(f'\n{row["config"]}: one traced step, allocator peak {profile["allocator_peak_mb"]} MB')
    print(f'  {"op":<36} {"ms":>9}     {"op":<36} {"MB new":>9}')
    for (op, ms), (op2, mb) in zip(profile['ms_by_op'].items(), profile['output_mb_by_op'].items()):
        print(f'  {op:<36} {ms:9.1f}     {op2:<36} {mb:9.1f}')
    if 'live_mb_at_peak' in profile:
        print(f'  the step\'s own peak (above the variables and optimizer state): {profile["step_peak_mb"]} MB; '
              f'held then, by op (layers summed):')
        for op, mb in profile['live_mb_at_peak'].items():
            print(f'    {op:<70} {mb:9.1f}')


def main(configs=('tf',), peers=True, rounds=1, batch_size=1, seq_len=1024, steps=3, learning_rate=2e-5,
         n_layer=12, n_embd=768, n_head=12, profile=False, dropout=0.0, peers_python=DEFAULT_PEERS_PYTHON,
         shape=None, workers=(), devices=(), mixed=False, recompute=False):
    """Benchmark training steps on a random-weight GPT-2; print one JSON line per run, then a table.

    configs: configurations of this project to measure, e.g. --configs=tf,tf+xla (see the module's docstring)
    peers: also measure hf-eager and hf-sdpa (transformers on PyTorch, with --peers_python)
    rounds: run every configuration this many times, alternating; the table's last rows are the medians
    batch_size: windows per step
    seq_len: tokens per window
    steps: timed steps per run after the first, untimed one; the median is reported
    learning_rate: Adam's learning rate
    n_layer: model depth (with n_embd and n_head: 12/768/12 is 124M, 24/1024/16 is 355M)
    n_embd: model width
    n_head: attention heads
    profile: trace one step of each configuration of this project: ms and MB of outputs by op type
    dropout: the peers' dropout (GPT-2 and this project train without; transformers' default config has 0.1)
    peers_python: the Python with torch and transformers installed
    shape: a released shape by name (124M, 355M, 774M, 1558M) instead of n_layer, n_embd and n_head; its
           random weights are written once to bench/.cache/models/NAME, one variable at a time
    workers: also measure src/train.py as this many worker processes of one job (e.g. --workers=1,2), each on its
        own core; batch_size is each worker's
    devices: also measure src/train.py --devices N (e.g. --devices=2), batch_size on each device
    mixed: measure float32 against bfloat16 instead of configs: tf, tf+mixed=bfloat16, hf-sdpa, hf-sdpa+autocast
    recompute: with mixed, also tf+recompute and tf+recompute+mixed=bfloat16 (the lean step)
    """
    configs = configs.split(',') if isinstance(configs, str) else list(configs)
    if mixed:
        configs = list(MIXED) + (['tf+recompute', 'tf+recompute+mixed=bfloat16'] if recompute else [])
        peers = False  # MIXED names its peers
    elif recompute:
        sys.exit('error: --recompute goes with --mixed; otherwise name tf+recompute in --configs')
    for knob, counts in (('workers', workers), ('devices', devices)):
        counts = [counts] if isinstance(counts, int) else list(counts)
        configs += [f'script+{knob}={n}' for n in counts if f'script+{knob}={n}' not in configs]
    if peers:
        configs += [c for c in PEERS if c not in configs]
    if any(parse_config(c)[0] in PEERS for c in configs) and not Path(peers_python).exists():
        sys.exit(f'error: no Python at --peers_python {peers_python}; make a venv with torch (CPU) and transformers '
                 f'there, or pass --peers=False')
    # Each revision is exported now: a commit made while this runs must not change what HEAD measures.
    sources = {config: src_of(parse_config(config)[1]) for config in configs}
    if shape is not None:
        name, model_dir = ensure_shape(str(shape))
    else:
        name, model_dir = bench_sample.ensure_model(n_layer, n_embd, n_head)
    hparams = checkpoint.read_hparams(model_dir)
    if seq_len > hparams['n_ctx']:
        raise ValueError(f'seq_len {seq_len} exceeds n_ctx {hparams["n_ctx"]}')
    common = {**hparams, 'model_dir': str(model_dir), 'batch_size': batch_size, 'seq_len': seq_len,
              'steps': steps, 'learning_rate': learning_rate, 'dropout': dropout}

    rows = []
    for round_ in range(rounds):
        for config in configs:
            load = os.getloadavg()[0]
            result = measure(config, sources[config], common, peers_python, profile)
            row = {'config': config, 'round': round_, 'model': name, 'batch_size': batch_size, 'seq_len': seq_len,
                   'load': load, 'load_after': os.getloadavg()[0], **result}
            print(json.dumps(row), flush=True)
            rows.append(row)

    print(f'\n{name} random weights, batch {batch_size} x {seq_len} tokens, Adam unless +optimizer=..., median of '
          f'{steps} steps per run; '
          f'load = 1-minute load average at the start of the run, on {os.cpu_count()} cores; CPU s: '
          f'CPU time of the process (all threads), which grows less than the time on the clock with the load')
    print(table(rows))
    if rounds > 1:
        def median(config, key):
            values = [r[key] for r in rows if r['config'] == config and r.get(key) is not None]
            return statistics.median(values) if values else None
        medians = [{'config': f'{c} (median)', **{key: median(c, key) for _, key, _ in COLUMNS}} for c in configs]
        print(table(medians))
    print(memory_table(rows))
    for row in rows:
        if 'profile' in row:
            print_profile(row)


if __name__ == '__main__':
    fire.Fire(main)
