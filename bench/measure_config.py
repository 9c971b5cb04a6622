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

import numpy as np

import revisions  # bench/, on the path as the script's folder

SRC = Path(__file__).resolve().parent.parent / 'src'


class TokenClock:
    """Records when each step's tokens reach Python."""

    def __init__(self):
        self.times = []

    def __call__(self, tokens):
        self.times.append(time.time())


def build(src, settings, hparams, clock):
    """The sampling graph of src's sample.py, as the interactive script builds it: one prompt for every row,
    context placeholder [1, None] -> (context, lengths or None, tokens). With distinct_prompts, each row its own
    prompt: context [batch, None], and with mixed_lengths a lengths placeholder [batch] (left-padded prompts).
    With singles, the graph of batch 1 that runs the rows' prompts one at a time. The knobs of the new features
    (stop strings, penalties, context_keep, precision) are passed only when set, so a revision from before them builds its
    own default."""
    import sample
    import tensorflow.compat.v1 as tf

    batch = 1 if settings.get('singles') else settings['batch_size']
    rows = batch if settings['distinct_prompts'] else 1
    context = tf.placeholder(tf.int32, [rows, None])
    lengths = tf.placeholder(tf.int32, [rows]) if settings.get('mixed_lengths') and rows > 1 else None
    knobs = {}
    if lengths is not None:
        knobs['context_lengths'] = lengths
    if settings.get('penalties'):
        penalties = revisions.load(src, 'gpt2.sampling.penalties')
        knobs['penalties'] = penalties.Penalties(**settings['penalties'])
    if settings.get('stop'):
        import encoder
        stops = revisions.load(src, 'gpt2.sampling.stops')
        enc = encoder.read_vocabulary(Path(settings['model_dir']))
        knobs.update(stops=stops.stop_array(settings['stop']), token_bytes=stops.token_bytes(enc, hparams.n_vocab))
    if settings.get('precision', 'float32') != 'float32':
        knobs['precision'] = settings['precision']
    if settings['prompt_len'] + settings['decode_tokens'] - 1 > hparams.n_ctx:
        knobs['context_keep'] = settings.get('context_keep') or hparams.n_ctx // 2
    tf.set_random_seed(1)
    tokens = sample.sample_sequence(hparams=hparams, length=settings['decode_tokens'], context=context,
                                    batch_size=batch, temperature=settings['temperature'], top_k=settings['top_k'],
                                    top_p=settings['top_p'], on_token=clock, frozen_weights=True, **knobs)
    return context, lengths, tokens


def prompts(settings, n_vocab):
    """The prompts of a run: one of prompt_len tokens, or, with distinct_prompts (or singles), one per row; with
    mixed_lengths, row b's is shorter by b * prompt_len / (2 * batch) tokens (prompt_len down to about half)."""
    rng = np.random.default_rng(0)
    batch = settings['batch_size']
    if not (settings['distinct_prompts'] or settings.get('singles')):
        return [rng.integers(0, n_vocab, settings['prompt_len']).tolist()]
    lengths = [settings['prompt_len'] - (b * settings['prompt_len'] // (2 * batch) if settings.get('mixed_lengths')
                                         else 0) for b in range(batch)]
    return [rng.integers(0, n_vocab, max(n, 1)).tolist() for n in lengths]


def feeds(settings, context, lengths, rows):
    """-> the feeds of one run: one feed, or, with singles, one per prompt."""
    if settings.get('singles'):
        return [{context: [row]} for row in rows]
    width = max(map(len, rows))
    padded = np.array([[0] * (width - len(r)) + r for r in rows], np.int32)
    feed = {context: padded}
    if lengths is not None:
        feed[lengths] = [len(r) for r in rows]
    return [feed]


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
    src = settings.get('src') or str(SRC)
    revisions.use(src)
    tf = revisions.import_tensorflow(src)  # first, as in the scripts
    checkpoint = revisions.load(src, 'gpt2.base.checkpoint')
    loading = revisions.load(src, 'gpt2.loading')
    import model
    import sample
    tf.disable_v2_behavior()
    imported = time.time()

    # As the scripts do: the weights are restored on another thread while the sampling graph is built.
    model_dir = Path(settings['model_dir'])
    hparams = model.default_hparams().override_from_dict(checkpoint.read_hparams(model_dir))
    clock = TokenClock()
    sess = tf.Session(config=sample.session_config())
    # int8 restores only the int8 copies of the products' weights (revisions of before have no precision).
    precision = {'precision': settings['precision']} if settings.get('precision', 'float32') != 'float32' else {}
    wait_for_restore = loading.start_restore(sess, model_dir, hparams, **precision)
    context, lengths, tokens = build(src, settings, hparams, clock)
    built = time.time()
    wait_for_restore()
    restored = time.time()

    runs = feeds(settings, context, lengths, prompts(settings, hparams.n_vocab))
    run_once(sess, tokens, runs[0], clock)
    first_token = clock.times[0]

    prefills, rates, walls = [], [], []
    for _ in range(settings['repeats']):
        start = time.time()
        for feed in runs:  # one run, or with singles one per prompt
            prefill, rate = run_once(sess, tokens, feed, clock)
            prefills.append(prefill)
            rates.append(rate)
        walls.append(time.time() - start)
    step_rate = statistics.median(rates)
    rows = 1 if settings.get('singles') else settings['batch_size']
    result = {
        'import_s': imported - launched, 'build_s': built - imported, 'restore_wait_s': restored - built,
        'startup_s': restored - launched, 'first_token_s': first_token - launched,
        'prefill_s': statistics.median(prefills),
        'decode_tokens_per_s': step_rate * rows, 'decode_step_ms': 1000 / step_rate,
        # a run: the batch's samples from prompt to last token (with singles, all of them one after the other)
        'run_s': statistics.median(walls),
        'run_tokens_per_s': settings['batch_size'] * settings['decode_tokens'] / statistics.median(walls),
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'device': sample.default_device(),
    }
    if settings.get('profile'):
        result['ms_per_step_by_op'] = op_profile(sess, tokens, runs[0], clock)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == '__main__':
    print(json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
