"""One benchmark configuration, run in a fresh process so that its start-up and peak memory are its own.

Called by bench_sample.py as `python measure_config.py '<json settings>'`; prints one JSON line of results.
Times are taken in the on_token callback, which the scripts use too, so they include what a user waits for.
"""
import json
import resource
import statistics
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / 'src'


class TokenClock:
    """Records when each step's tokens reach Python."""

    def __init__(self):
        self.times = []

    def __call__(self, tokens):
        self.times.append(time.time())


def build(settings, hparams, clock):
    """The sampling graph, as the interactive script builds it: one prompt for every row, context placeholder
    [1, None] -> tokens. With distinct_prompts, each row its own prompt: context [batch, None]."""
    import sample
    import tensorflow.compat.v1 as tf

    context = tf.placeholder(tf.int32, [settings['batch_size'] if settings['distinct_prompts'] else 1, None])
    tf.set_random_seed(1)
    tokens = sample.sample_sequence(hparams=hparams, length=settings['decode_tokens'], context=context,
                                    batch_size=settings['batch_size'],
                                    temperature=settings['temperature'], top_k=settings['top_k'],
                                    top_p=settings['top_p'], on_token=clock, frozen_weights=True)
    return context, tokens


def run_once(sess, fetch, feed, clock, **kwargs):
    """-> (seconds from run start to the first token, decode steps per second after it)."""
    clock.times.clear()
    start = time.time()
    sess.run(fetch, feed, **kwargs)
    first, last = clock.times[0], clock.times[-1]
    steps = len(clock.times) - 1
    return first - start, steps / (last - first) if steps else float('nan')


def op_profile(sess, fetch, feed, clock):
    """Milliseconds per decode step by op type, summed over threads, from one traced run; the largest first."""
    import tensorflow.compat.v1 as tf

    options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
    metadata = tf.RunMetadata()
    run_once(sess, fetch, feed, clock, options=options, run_metadata=metadata)
    decode_start_us = clock.times[0] * 1e6  # after the first token: the prompt's step is left out
    totals, counts = {}, {}
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            if node.all_start_micros < decode_start_us:
                continue
            op = node.timeline_label.split('(')[0].split(' = ')[-1].strip() or node.node_name
            op = op.split(':')[0] if ':' in op else op
            totals[op] = totals.get(op, 0) + node.all_end_rel_micros / 1000
            counts[op] = counts.get(op, 0) + 1
    # TensorFlow keeps the stats of at most about a million op runs, so a long run's trace stops early: count the
    # steps traced by the clock's op, which runs once a step.
    steps = counts.get('PyFunc', 0) or len(clock.times) - 1
    per_step = {op: round(ms / steps, 3) for op, ms in totals.items()}
    return dict(sorted(per_step.items(), key=lambda kv: -kv[1])[:15])


def measure(settings):
    launched = settings['launched']
    sys.path.insert(0, str(SRC))
    import cli  # first, as in the scripts: it loads TensorFlow quietly
    import numpy as np
    import tensorflow.compat.v1 as tf

    import checkpoint
    import model
    import sample
    tf.disable_v2_behavior()
    imported = time.time()

    # As the scripts do: the weights are restored on another thread while the sampling graph is built.
    model_dir = Path(settings['model_dir'])
    hparams = model.default_hparams().override_from_dict(checkpoint.read_hparams(model_dir))
    clock = TokenClock()
    sess = tf.Session(config=sample.session_config())
    wait_for_restore = cli.start_restore(sess, model_dir, hparams)
    context, tokens = build(settings, hparams, clock)
    built = time.time()
    wait_for_restore()
    restored = time.time()

    rng = np.random.default_rng(0)
    feed = {context: rng.integers(0, hparams.n_vocab, (context.shape[0], settings['prompt_len']))}
    run_once(sess, tokens, feed, clock)
    first_token = clock.times[0]

    prefills, rates = zip(*(run_once(sess, tokens, feed, clock) for _ in range(settings['repeats'])))
    step_rate = statistics.median(rates)
    result = {
        'import_s': imported - launched, 'build_s': built - imported, 'restore_wait_s': restored - built,
        'startup_s': restored - launched, 'first_token_s': first_token - launched,
        'prefill_s': statistics.median(prefills),
        'decode_tokens_per_s': step_rate * settings['batch_size'], 'decode_step_ms': 1000 / step_rate,
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'device': sample.default_device(),
    }
    if settings.get('profile'):
        result['ms_per_step_by_op'] = op_profile(sess, tokens, feed, clock)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == '__main__':
    print(json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
