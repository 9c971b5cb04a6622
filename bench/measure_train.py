"""One training configuration of this project, run in a fresh process so that its start-up and peak memory are
its own.

Called by bench_train.py as `python measure_train.py '<json settings>'`; prints one JSON line of results.
settings: model_dir, batch_size, seq_len, steps, learning_rate, launched (the parent's time.time() just before
it started this process), src (the src/ folder to import the model from: this checkout's or an exported
revision's), and the knobs of one configuration (see KNOBS).
"""
import json
import os
import re
from pathlib import Path
import resource
import statistics
import sys
import time

import revisions  # bench/, on the path as the script's folder

# The knobs a configuration may set, and their defaults (what the project's code does when nothing is set).
KNOBS = {
    'xla': False,  # XLA auto-clustering of the whole step (global_jit_level ON_1, CPU allowed)
    'intra': 0,  # intra-op threads (0: TensorFlow's default, one per core)
    'inter': 0,  # inter-op threads (0: TensorFlow's default)
    'grappler': 'default',  # 'default', 'one' (one pass of the meta-optimizer) or 'off' (no rewrites)
    'loop': 'auto',  # 'bare': the loop below over model.model; 'train': train.py's builder; 'auto': train if any
    'recompute': False,  # train.py's --memory_saving_gradients
    'optimizer': 'adam',  # train.py's --optimizer: adam, sgd or adafactor
    'mixed': '',  # train.py's --mixed_precision: bfloat16 or float16 ('': float32)
    'arenas': 0,  # MALLOC_ARENA_MAX for glibc's malloc (0: its default, 8 per core), set by bench_train.py
    'mmap_mb': 0,  # MALLOC_MMAP_THRESHOLD_ in MB (0: glibc's default, which rises up to 32 MB as blocks are freed)
    'profile': False,  # trace one step and return where its time and memory go
    'folding': 'default',  # grappler's constant folding: 'default' (as train's session_config has it), 'on', 'off'
}


def configure_xla(settings):
    """XLA on CPU clusters only when told so by TF_XLA_FLAGS, which is read once, when TensorFlow starts."""
    if settings['xla']:
        flags = os.environ.get('TF_XLA_FLAGS', '')
        os.environ['TF_XLA_FLAGS'] = f'{flags} --tf_xla_cpu_global_jit --tf_xla_auto_jit=1'.strip()


def session_config(tf, settings):
    from tensorflow.core.protobuf import rewriter_config_pb2

    config = tf.ConfigProto()
    if settings['loop'] != 'bare':
        try:
            config = revisions.training(settings['src']).session_config()  # what src/train.py runs its step with
        except (ImportError, AttributeError):  # a revision whose train.py does not say
            pass
    config.intra_op_parallelism_threads = settings['intra']
    config.inter_op_parallelism_threads = settings['inter']
    if settings['xla']:
        config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
    rewrite = config.graph_options.rewrite_options
    if settings['grappler'] == 'one':
        rewrite.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    elif settings['grappler'] == 'off':
        rewrite.disable_meta_optimizer = True
    if settings['folding'] != 'default':
        rewrite.constant_folding = getattr(rewriter_config_pb2.RewriterConfig, settings['folding'].upper())
    return config


def bare_loop(tf, sess, hparams, settings):
    """The training step as a user would first write it: model.model on a batch of windows, the mean
    cross-entropy of each next token (logits [:, :-1] against tokens [:, 1:]), Adam; the weights restored while
    it is built (loading.start_restore)."""
    import model

    loading = revisions.load(settings['src'], 'gpt2.loading')
    wait_for_restore = loading.start_restore(sess, Path(settings['model_dir']), hparams)
    tokens = tf.placeholder(tf.int32, [settings['batch_size'], settings['seq_len']])
    logits = model.model(hparams, tokens, reuse=tf.AUTO_REUSE)['logits']
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens[:, 1:],
                                                                         logits=logits[:, :-1]))
    optimizer = tf.train.AdamOptimizer(settings['learning_rate'])
    train_op = optimizer.minimize(loss, var_list=tf.trainable_variables())
    init_optimizer = tf.variables_initializer(optimizer.variables())

    def restore(sess):
        wait_for_restore()
        sess.run(init_optimizer)
    return tokens, train_op, loss, restore, {}


def build(tf, sess, hparams, settings):
    """-> (tokens placeholder, train op, loss, a function(sess) that restores the weights and initialises the
    rest), and which loop it is."""
    loop = settings['loop']
    if loop == 'auto':
        loop = 'train' if hasattr(revisions.training(settings['src']), 'build_training') else 'bare'
    if loop == 'bare':
        return bare_loop(tf, sess, hparams, settings), loop
    return train_builder(tf, hparams, settings), loop


def train_builder(tf, hparams, settings):
    """train.py's own graph and restore, as `python src/train.py` makes them (without its sampler)."""
    train = revisions.training(settings['src'])
    options = {} if settings['optimizer'] == 'adam' else {'optimizer': settings['optimizer']}  # older revisions
    if settings['mixed']:
        options['mixed_precision'] = settings['mixed']
    learning_rate = 1e-3 if settings['optimizer'] == 'adafactor' else settings['learning_rate']
    training = train.build_training(hparams, batch_size=settings['batch_size'], seq_len=settings['seq_len'],
                                    learning_rate=learning_rate, memory_saving_gradients=settings['recompute'],
                                    **options)
    feed_lengths = {training.lengths: [settings['seq_len']] * settings['batch_size']}

    def restore(sess):
        train.restore(sess, training, os.path.join(settings['model_dir'], 'model.ckpt'))
        # Before train.restore initialised the rest itself, train.py ran a global initialiser first: initialise
        # what is left (the `script` configuration measures train.py's own start-up).
        missing = set(sess.run(tf.report_uninitialized_variables()))
        sess.run(tf.variables_initializer([v for v in tf.global_variables() if v.op.name.encode() in missing]))
    return training.tokens, training.train_op, training.loss, restore, feed_lengths


# Ops whose output shares the buffer of their input (or of a variable): no new memory.
ALIASING_OPS = {'Reshape', 'Identity', 'IdentityN', 'ReadVariableOp', 'Squeeze', 'ExpandDims', 'Snapshot'}


def op_profile(tf, sess, train_op, feed):
    """One traced step -> (ms by op type summed over threads, MB of new buffers by op type, the allocator's
    peak MB as the trace reports it), the largest first."""
    options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
    metadata = tf.RunMetadata()
    sess.run(train_op, feed, options=options, run_metadata=metadata)
    ms, mb, peak = {}, {}, 0
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            op = node.timeline_label.split('(')[0].split(' = ')[-1].strip() or node.node_name
            ms[op] = ms.get(op, 0) + node.all_end_rel_micros / 1000
            if op not in ALIASING_OPS:
                out = sum(o.tensor_description.allocation_description.allocated_bytes for o in node.output)
                mb[op] = mb.get(op, 0) + out / 2**20
            for memory in node.memory:
                peak = max(peak, memory.peak_bytes / 2**20)

    def top(d, n=20):
        return {k: round(v, 1) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n]}
    live_peak, live = live_at_peak(metadata)
    return {'ms_by_op': top(ms), 'output_mb_by_op': top(mb), 'allocator_peak_mb': round(peak),
            'step_peak_mb': round(live_peak), 'live_mb_at_peak': top(live, 30)}


def live_at_peak(metadata):
    """From the trace's allocation records (every allocation and free during the step, by the op that made it):
    the peak of the memory the step allocated on top of what was there before (variables and optimizer state),
    and the MB still held at that moment by each op's allocations, by op name with its layer number dropped
    (model/h7/... and model/h8/... together), the largest first."""
    events = []
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            for memory in node.memory:
                for record in memory.allocation_records:
                    events.append((record.alloc_micros, record.alloc_bytes, node.node_name))
    events.sort()
    total, peak, peak_index = 0, 0, -1
    for i, (_, size, _) in enumerate(events):
        total += size
        if total > peak:
            peak, peak_index = total, i
    held = {}
    for _, size, name in events[:peak_index + 1]:
        held[name] = held.get(name, 0) + size
    grouped = {}
    for name, size in held.items():
        key = re.sub(r'h\d+(?=/|_)', 'hN', name)
        grouped[key] = grouped.get(key, 0) + size / 2**20
    return peak / 2**20, {k: v for k, v in grouped.items() if v > 0.5}


def cpu_seconds():
    """CPU time of this process so far, over all its threads: on a loaded machine it stays near what the work
    costs, where the time on the clock grows with the others' load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb():
    """This process's own peak resident memory (VmHWM). getrusage's ru_maxrss may count pages of the process
    that forked this one, where it was bigger."""
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(settings):
    settings = {**KNOBS, **settings}
    launched = settings['launched']
    configure_xla(settings)
    revisions.use(settings['src'])
    tf = revisions.import_tensorflow(settings['src'])  # first, as in the scripts
    import numpy as np

    checkpoint = revisions.load(settings['src'], 'gpt2.base.checkpoint')
    import model
    tf.disable_v2_behavior()
    tf.enable_resource_variables()
    imported = time.time()

    hparams = model.default_hparams().override_from_dict(checkpoint.read_hparams(settings['model_dir']))
    sess = tf.Session(config=session_config(tf, settings))
    (tokens, train_op, loss, restore, feed), loop = build(tf, sess, hparams, settings)
    built = time.time()
    restore(sess)
    restored = time.time()
    start_peak_rss_mb = peak_rss_mb()  # the peak before any step: the restore and the initialisers

    rng = np.random.default_rng(0)
    feed[tokens] = rng.integers(0, hparams.n_vocab, (settings['batch_size'], settings['seq_len']))
    sess.run(train_op, feed)
    first_step, first_step_cpu = time.time(), cpu_seconds()
    times = []
    for _ in range(settings['steps']):
        start = time.time()
        sess.run(train_op, feed)
        times.append(time.time() - start)
    step_s = statistics.median(times)
    step_cpu_s = (cpu_seconds() - first_step_cpu) / settings['steps']
    result = {
        'loop': loop, 'import_s': imported - launched, 'build_s': built - imported, 'restore_wait_s': restored - built,
        'first_step_run_s': first_step - restored, 'first_step_s': first_step - launched, 'step_s': step_s,
        'first_step_cpu_s': first_step_cpu, 'step_cpu_s': step_cpu_s,
        'step_times': [round(t, 2) for t in times],
        'tokens_per_s': settings['batch_size'] * settings['seq_len'] / step_s,
        'peak_rss_mb': peak_rss_mb(), 'start_peak_rss_mb': start_peak_rss_mb,
        'loss': float(sess.run(loss, feed)),
    }
    if settings['profile']:
        result['profile'] = op_profile(tf, sess, train_op, feed)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == '__main__':
    print(json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
