"""Half precision on a GPU, at a glance: sampling tokens/s in float32, float16 and bfloat16, and a training step.

    python bench/gpu_check.py                   # on a machine with a GPU: the table below (~3 min for 124M)
    python bench/gpu_check.py --quick           # fewer tokens and runs (~1 min)
    python bench/gpu_check.py --cpu_products    # on a CPU: a 124M step's 48 products at one row, per dtype
    python bench/gpu_check.py --on_cpu --batch_sizes=1 --precisions=float32,bfloat16 --train_seq_len=0

It builds a random-weight model of a released shape in the graph (no files: the weights' values do not change
the time), and for each precision and batch size the sampling graph of the scripts (sample.sample_sequence,
top_k 40, frozen weights, streaming off), on the first GPU. A run of `short` tokens and one of `long` tokens
time the decode steps between them (tokens/s = batch x (long - short) / the time difference), so start-up and the
first step do not count; medians of `repeats` runs after one warm-up. Then one training step of 1 x seq_len
tokens (gpt2/training/graph.build_training, Adam), in float32 and in each of --train_precisions that this
revision's build_training takes as mixed_precision. Prints a table, then one JSON line per row.

The scripts refuse half precision on a CPU (gpt2/sampling/rules.check_precision); --cpu_products and --on_cpu
measure whether bfloat16 would pay there: the products alone, and the sampling rows end to end.
"""
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

import fire
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'src'))

from gpt2.base import runtime  # noqa: E402

tf = runtime.import_tensorflow()
import model  # noqa: E402
import sample  # noqa: E402
from gpt2.base import checkpoint  # noqa: E402

SHAPES = {'124M': dict(n_embd=768, n_head=12, n_layer=12), '355M': dict(n_embd=1024, n_head=16, n_layer=24),
          '774M': dict(n_embd=1280, n_head=20, n_layer=36), '1558M': dict(n_embd=1600, n_head=25, n_layer=48)}
N_VOCAB = 50257


def hparams_of(size):
    return model.default_hparams().override_from_dict(dict(SHAPES[size], n_vocab=N_VOCAB, n_ctx=1024))


def random_variables(hparams):
    """The model's variables with random values (N(0, 0.02); layer norm gains 1), initialised in the graph."""
    for name, shape in checkpoint.variable_shapes(hparams).items():
        init = (tf.ones_initializer() if name.endswith('/g') else tf.zeros_initializer() if name.endswith('/b')
                else tf.random_normal_initializer(stddev=0.02))
        tf.get_variable(name, shape, initializer=init)


def timed(run, repeats):
    """The median seconds of repeats calls of run, after one call to warm up."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sampling_row(hparams, precision, batch, *, short, long, repeats, device):
    """Decode tokens/s of the scripts' sampling graph at one precision and batch size, on device."""
    with tf.Graph().as_default(), tf.Session(config=sample.session_config()) as sess:
        random_variables(hparams)
        length = tf.placeholder(tf.int32, [])
        out = sample.sample_sequence(hparams=hparams, length=length, start_token=N_VOCAB - 1, batch_size=batch,
                                     top_k=40, frozen_weights=True, precision=precision, device=device)
        sess.run(tf.global_variables_initializer())
        seconds = {n: timed(lambda: sess.run(out, {length: n}), repeats) for n in (short, long)}
    step = (seconds[long] - seconds[short]) / (long - short)
    return dict(what='sample', precision=precision, batch=batch, tokens_per_s=round(batch / step, 1),
                ms_per_step=round(1000 * step, 2), first_run_s=round(seconds[short], 3))


def training_row(hparams, precision, seq_len, repeats, device):
    """Tokens/s of one Adam step of 1 x seq_len tokens; precision float32, or build_training's mixed_precision."""
    from gpt2.training import graph
    options = {} if precision == 'float32' else {'mixed_precision': precision}
    if options and 'mixed_precision' not in inspect.signature(graph.build_training).parameters:
        return dict(what='train', precision=precision, skipped='build_training has no mixed_precision here')
    with tf.Graph().as_default(), tf.device(device), tf.Session(config=graph.session_config()) as sess:
        training = graph.build_training(hparams, batch_size=1, seq_len=seq_len, **options)
        sess.run(tf.global_variables_initializer())
        tokens = np.random.default_rng(0).integers(0, N_VOCAB, [1, seq_len]).astype(np.int32)
        seconds = timed(lambda: training.run_step(sess, [(tokens, [seq_len])]), repeats)
    return dict(what='train', precision=precision, batch=1, seq_len=seq_len,
                tokens_per_s=round(seq_len / seconds, 1), ms_per_step=round(1000 * seconds, 1))


def products_per_dtype(size='124M', repeats=50):
    """The products of one sampling step at one row (4 a block), each dtype's own weights, on the CPU."""
    hparams = hparams_of(size)
    n = hparams.n_embd
    shapes = [(n, 3 * n), (n, n), (n, 4 * n), (4 * n, n)] * hparams.n_layer
    rows = []
    for dtype in (tf.float32, tf.bfloat16, tf.float16):
        with tf.Graph().as_default(), tf.device('/CPU:0'):
            x = tf.Variable(tf.random.normal([1, 4 * n], dtype=tf.float32))
            ws = [tf.Variable(tf.cast(tf.random.normal(s, stddev=0.02), dtype)) for s in shapes]
            # Fetched as one sum: products nothing reads would be pruned by TensorFlow's graph optimizer.
            products = tf.add_n([tf.reduce_sum(tf.cast(tf.matmul(tf.cast(x[:, :k], dtype), w), tf.float32))
                                 for (k, _), w in zip(shapes, ws)])
            config = tf.ConfigProto(device_count={'GPU': 0})
            with tf.Session(config=config) as sess:
                sess.run(tf.global_variables_initializer())
                seconds = timed(lambda: sess.run(products), repeats)
        rows.append(dict(what='cpu products', dtype=dtype.name, products=len(shapes), ms=round(1000 * seconds, 2)))
    return rows


def as_list(value):
    """A flag of one value or several (fire reads --batch_sizes=1 as 1, --batch_sizes=1,8 as (1, 8))."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def print_table(rows):
    columns = ['what', 'device', 'precision', 'dtype', 'batch', 'seq_len', 'tokens_per_s', 'ms_per_step', 'ms',
               'skipped']
    used = [c for c in columns if any(c in r for r in rows)]
    print(' | '.join(used))
    for row in rows:
        print(' | '.join(str(row.get(c, '')) for c in used))
    for row in rows:
        print(json.dumps(row))


def main(size='124M', batch_sizes=(1, 8), precisions=('float32', 'float16', 'bfloat16'), quick=False,
         train_seq_len=1024, train_precisions=('float32', 'bfloat16', 'float16'), cpu_products=False, on_cpu=False):
    """size: 124M, 355M, 774M or 1558M. batch_sizes, precisions: the sampling rows. train_seq_len: 0 skips the
    training step. train_precisions: float32, and mixed precisions build_training may take. cpu_products: only
    the CPU's products per dtype. on_cpu: the rows on the CPU, whether or not there is a GPU."""
    tf.disable_v2_behavior()
    if cpu_products:
        print_table(products_per_dtype(size))
        return
    if not on_cpu and not tf.config.list_physical_devices('GPU'):
        sys.exit('error: no GPU is visible to TensorFlow; on a CPU, run with --cpu_products or --on_cpu')
    device = '/CPU:0' if on_cpu else '/GPU:0'
    hparams = hparams_of(size)
    batch_sizes, precisions, train_precisions = map(as_list, (batch_sizes, precisions, train_precisions))
    short, long, repeats = (8, 40, 2) if quick else (16, 144, 3)
    rows = [sampling_row(hparams, p, b, short=short, long=long, repeats=repeats, device=device)
            for b in batch_sizes for p in precisions]
    if train_seq_len:
        rows += [training_row(hparams, p, train_seq_len, repeats, device) for p in train_precisions]
    for row in rows:
        row['device'] = device
    print_table(rows)


if __name__ == '__main__':
    fire.Fire(main)
