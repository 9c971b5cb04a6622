"""How far training on 2 replicas drifts from one device at twice the batch, and why (docs/distributed.md).

    python bench/measure_replica_drift.py                  # SGD and Adam, float32 and float64, 3 steps
    python bench/measure_replica_drift.py --steps=10 --adam_rate=3e-4

The same steps from the same random weights of the tests' tiny shape, on the same windows of a dataset of four
documents of random tokens (900, 20, 700 and 45 tokens, as the issue that asked had it), three ways:
    batch 2          one device, both rows in one batch (the reference)
    accumulated      one device, the two rows as two micro-batches of --accumulate_gradients 2: no tf.distribute,
                     only the gradients summed in another order
    2 replicas       --devices 2 (2 CPU devices in this process), a row each, their gradients summed by the
                     all-reduce, as two TF_CONFIG workers sum them
Each of SGD and Adam, in float32 (what train.py runs) and in float64 (every weight, activation and gradient), with
one thread (so each run is bit-reproducible). Printed: the largest difference from the reference of any weight or
optimizer slot, where it is, and the largest outside the key part of c_attn/b (whose gradient is exactly zero in
exact arithmetic: a softmax over keys ignores a bias added to all of them).
"""
import sys
from pathlib import Path

import fire
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'src'))

from gpt2.base import runtime  # noqa: E402

tf = runtime.import_tensorflow()
import model  # noqa: E402
from gpt2.base import checkpoint  # noqa: E402
from gpt2.data import corpus  # noqa: E402
from gpt2.training import distribute  # noqa: E402
from gpt2.training import graph  # noqa: E402

TINY = {'n_vocab': 269, 'n_ctx': 32, 'n_embd': 16, 'n_head': 2, 'n_layer': 2}  # tests/support.py's tiny model


def random_weights(hparams, seed=0):
    """{name: float64 array}: the tests' recipe (1 + or 0 + 0.3 x a normal draw), so logits differ clearly."""
    rng = np.random.default_rng(seed)
    return {name: (name.endswith('/g') + 0.3 * rng.standard_normal(shape))
            for name, shape in checkpoint.variable_shapes(hparams).items()}


def one_thread(config):
    config.intra_op_parallelism_threads = config.inter_op_parallelism_threads = 1
    return config


def train(hparams, weights, batches, *, dtype, way, optimizer, learning_rate):
    """Steps from weights on batches (each of 2 rows), the way asked -> {name: float64 array} of every variable
    a checkpoint saves (the first replica's copy)."""
    cluster = distribute.choose(2) if way == '2 replicas' else None
    accumulate = 2 if way == 'accumulated' else 1
    rows = 2 if way == 'batch 2' else 1
    with tf.Graph().as_default():
        def build(**replica):
            return graph.build_training(hparams, batch_size=rows, seq_len=batches[0][0].shape[1],
                                        optimizer=optimizer, learning_rate=learning_rate,
                                        accumulate_gradients=accumulate, **replica)
        # Every variable the scope makes (the model's, the optimizer's slots) in dtype.
        with tf.variable_scope(tf.get_variable_scope(), dtype=dtype):
            training = cluster.build(build, rows) if cluster else build()
        with cluster.session(one_thread) if cluster else tf.Session(config=one_thread(tf.ConfigProto())) as sess:
            sess.run(tf.global_variables_initializer())
            # In the cross-replica context an assignment sets every replica's copy.
            sess.run([v.assign(weights[v.op.name].astype(dtype.as_numpy_dtype)) for v in training.model_vars])
            for tokens, lengths in batches:
                if accumulate == 2:
                    training.run_step(sess, [(tokens[:1], lengths[:1]), (tokens[1:], lengths[1:])])
                else:
                    training.run_step(sess, [(tokens, lengths)])
            return {v.op.name: np.asarray(sess.run(v), np.float64) for v in training.saved_vars}


def largest(got, want, n_embd, skip_key_bias=False):
    """-> (the largest |got - want| of any variable, its name)."""
    worst = (0.0, '')
    for name, value in want.items():
        difference = np.abs(got[name] - value)
        if skip_key_bias and (name.endswith('/c_attn/b') or '/c_attn/b/' in name):  # its Adam slots too
            difference = np.delete(difference, np.s_[n_embd:2 * n_embd], axis=-1)
        if difference.size and difference.max() > worst[0]:
            worst = (float(difference.max()), name)
    return worst


def measure(steps=3, adam_rate=0.01, sgd_rate=0.5, seq_len=32, documents='900,20,700,45', distinct=0, seed=1):
    """Print the table (see the module's docstring). distinct K: the documents use only K different tokens (as a
    text of few words does), not the whole vocabulary."""
    hparams = model.default_hparams().override_from_dict(TINY)
    weights = random_weights(hparams)
    rng = np.random.default_rng(seed)
    lengths = [int(n) for n in str(documents).split(',')]
    chunks = [rng.integers(distinct or TINY['n_vocab'], size=n).astype(np.int32) for n in lengths]
    sampler = corpus.Sampler(chunks, seq_len, seed)
    batches = [sampler.sample(2) for _ in range(steps)]
    print(f'{steps} steps, batch 2 x {seq_len} tokens, documents of {documents} tokens of {distinct or "all"} ids, '
          f'seed {seed}; largest difference from '
          f'one device at batch 2 (outside the key bias)')
    for optimizer, rate in (('sgd', sgd_rate), ('adam', adam_rate)):
        for dtype in (tf.float32, tf.float64):
            options = dict(dtype=dtype, optimizer=optimizer, learning_rate=rate)
            want = train(hparams, weights, batches, way='batch 2', **options)
            for way in ('accumulated', '2 replicas'):
                got = train(hparams, weights, batches, way=way, **options)
                (all_of, where), (rest, other) = (largest(got, want, TINY['n_embd'], skip) for skip in (False, True))
                print(f'{optimizer} {rate:g} {dtype.name}: {way:11}  {all_of:.1e} ({where})  {rest:.1e} ({other})',
                      flush=True)


if __name__ == '__main__':
    fire.Fire(measure)
