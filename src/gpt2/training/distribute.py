"""Data-parallel training: one training step on several devices (tf.distribute.MirroredStrategy) or machines
(MultiWorkerMirroredStrategy, from the standard TF_CONFIG variable), in tf.compat.v1 graph mode.

Every replica builds graph.build_training on its rows of the step's batch; the optimizer sums the replicas'
gradients (an all-reduce: NCCL on GPUs, a ring on CPUs), and each replica's loss is its summed loss over the
target count of all replicas, so the sum is the gradient of the mean over all of them: K replicas at batch b make
the same update as one device at batch K x b. Replica r takes rows r x b to (r + 1) x b - 1 of the batch that one
device at K x b would draw, so a run is the same run whatever the number of replicas.

In graph mode nothing starts the server of a multi-worker job, and the strategy's health check is off (a worker
that loses another would wait in a collective for ever): Cluster does both, a Watchdog ends a process whose
collective step outlasts --collective_timeout.
"""
import dataclasses
import json
import os
import sys
import threading

import numpy as np
import tensorflow.compat.v1 as tf

from gpt2.base import flags

SUM = tf.distribute.ReduceOp.SUM


# ---------------------------------------------------------------------------------------------------------------
# Where the replicas are
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Cluster:
    """The replicas of a job, as seen by this process."""
    strategy: tf.distribute.Strategy
    config: tf.ConfigProto  # the sessions' configuration
    target: str  # the session target: '' in one process, this worker's server otherwise
    is_chief: bool  # the one process that writes checkpoints, samples and validation output
    num_workers: int
    timeout: float | None  # seconds a collective step may take before the process gives up; None: no limit
    server: object = None  # tf.distribute.Server, kept alive with the cluster

    @property
    def replicas(self):
        """How many replicas the job has, in all processes."""
        return self.strategy.num_replicas_in_sync

    def session(self, configure=lambda config: config):
        """A session on this process's part of the job; configure(a copy of its ConfigProto) may change it."""
        config = tf.ConfigProto()
        config.CopyFrom(self.config)
        return tf.Session(self.target, config=configure(config))

    def describe(self):
        """-> e.g. '2 replicas (2 devices)', '4 replicas (2 workers x 2 devices)'."""
        devices = len(self.strategy.extended.worker_devices)
        workers = f'{self.num_workers} workers x ' if self.num_workers > 1 else ''
        return f'{self.replicas} replicas ({workers}{devices} device{"s" * (devices > 1)})'

    def build(self, build, batch_size):
        """build(count_all=..., rows=...) -> graph.Training of batch_size rows (graph.build_training with every
        other option given), called once per replica in the strategy's scope -> Replicated."""
        return Replicated.build(self, build, batch_size)


def choose(devices=None, tf_config=None, collective_timeout=300):
    """--devices and TF_CONFIG -> the Cluster, or None for one device (the default, built without tf.distribute).

    devices: None or 1 (one device); N (the first N GPUs, or with no GPU N CPU devices, for testing); or a list
    of device names ('/gpu:0,/gpu:2') or GPU numbers. tf_config: the TF_CONFIG variable's text, if set (a
    multi-worker job: each process uses its machine's GPUs, or its CPU)."""
    flags.number('collective_timeout', collective_timeout, 0, float('inf'), low_open=True,
                 what='a number of seconds above 0')
    if tf_config:
        if devices not in (None, 1):
            raise flags.UsageError('--devices and TF_CONFIG do not go together: with TF_CONFIG each worker uses '
                                   'all of its machine\'s GPUs (or its CPU); drop --devices or unset TF_CONFIG')
        return multi_worker(tf_config, collective_timeout)
    names = device_names(devices)
    if names is None:
        return None
    config = tf.ConfigProto(allow_soft_placement=True)
    cpus = sum(1 for name in names if '/cpu:' in name.lower())
    if cpus > 1:
        config.device_count['CPU'] = cpus  # CPU devices beyond the first are virtual, made per session
    return Cluster(tf.distribute.MirroredStrategy(names), config, '', True, 1, None)


def device_names(devices):
    """--devices -> the local device names, or None for one device without tf.distribute."""
    gpus = len(tf.config.list_physical_devices('GPU'))
    if devices is None or devices == 1:
        return None
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices < 1:
            raise flags.UsageError(f'--devices must be a number of devices, 1 or more, or a list of them, got '
                                   f'{devices!r}')
        if gpus and devices > gpus:
            raise flags.UsageError(f'--devices {devices}: this machine has {gpus} GPUs; give at most {gpus}')
        return [f'/gpu:{i}' for i in range(devices)] if gpus else [f'/cpu:{i}' for i in range(devices)]
    items = devices.split(',') if isinstance(devices, str) else list(devices) if isinstance(
        devices, (list, tuple)) else None
    names = []
    for item in items or [None]:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < max(gpus, 1) and gpus:
            names.append(f'/gpu:{item}')
        elif isinstance(item, str) and item.strip().lower().lstrip('/').split(':')[0] in ('gpu', 'cpu'):
            names.append('/' + item.strip().lower().lstrip('/'))
        else:
            raise flags.UsageError(f'--devices must be a number of devices or a list such as /gpu:0,/gpu:1 '
                                   f'(this machine has {gpus} GPUs), got {devices!r}')
    if len(set(names)) != len(names):
        raise flags.UsageError(f'--devices names a device twice: {devices!r}')
    return names if len(names) > 1 else None


def multi_worker(tf_config, timeout):
    """TF_CONFIG -> a Cluster of MultiWorkerMirroredStrategy, with this worker's server started."""
    try:
        spec = json.loads(tf_config)
        cluster, task = spec['cluster'], spec['task']
        kind, index = task['type'], int(task['index'])
        if kind not in cluster or not 0 <= index < len(cluster[kind]) or set(cluster) - {'chief', 'worker'}:
            raise ValueError
    except (ValueError, TypeError, KeyError):
        raise flags.UsageError('TF_CONFIG must be JSON such as {"cluster": {"worker": ["host1:port", '
                               '"host2:port"]}, "task": {"type": "worker", "index": 0}}, its task one of its '
                               f'cluster\'s, got {tf_config!r}') from None
    is_chief = kind == 'chief' or (kind == 'worker' and index == 0 and 'chief' not in cluster)
    strategy = tf.distribute.experimental.MultiWorkerMirroredStrategy()
    config = strategy.update_config_proto(tf.ConfigProto(allow_soft_placement=True))
    try:
        server = tf.distribute.Server(tf.train.ClusterSpec(cluster), kind, index, config=config)
    except (tf.errors.OpError, ValueError) as err:
        raise flags.UsageError(f'TF_CONFIG: cannot start this worker\'s server at {cluster[kind][index]} '
                               f'({str(err).splitlines()[0]}); is the port free?') from None
    workers = sum(len(hosts) for hosts in cluster.values())
    return Cluster(strategy, config, server.target, is_chief, workers, timeout, server)


# ---------------------------------------------------------------------------------------------------------------
# The replicated step
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Replicated:
    """The training step of every local replica, used as graph.Training is (run_step, the variables), with
    batches of the whole job: each replica is fed its rows."""
    cluster: Cluster
    replicas: list  # graph.Training of each local replica, in the order of their rows
    first_row: int  # the global batch's row where this process's replicas begin
    totals: list  # float32 [2] per local replica: the summed loss and target count of the whole job's batch
    sync_op: tf.Operation  # sets every replica's variables to replica 0's (the chief's)
    train_op: tf.Operation
    accumulate_op: tf.Operation  # None with accumulate_gradients 1

    @classmethod
    def build(cls, cluster, build, batch_size):
        built = {}

        @tf.autograph.experimental.do_not_convert  # the replica function is plain Python building a graph
        def replica():
            index = int(tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group))
            training = build(count_all=sum_of_replicas, rows=(index * batch_size, cluster.replicas * batch_size))
            totals = sum_of_replicas(tf.stack([training.loss_sum, training.target_count]))
            built[index] = training, totals

        with cluster.strategy.scope():
            cluster.strategy.extended.call_for_each_replica(replica)
            sync_op = cluster.strategy.extended.call_for_each_replica(sync_from_first_replica)
        ids = sorted(built)
        replicas = [built[i][0] for i in ids]
        accumulate = replicas[0].accumulate_op is not None
        return cls(cluster, replicas, first_row=ids[0] * batch_size,
                   totals=[built[i][1] for i in ids], sync_op=tf.group(sync_op),
                   train_op=tf.group([r.train_op for r in replicas]),
                   accumulate_op=tf.group([r.accumulate_op for r in replicas]) if accumulate else None)

    # What the trainer and the loop read of a Training: the variables (those of replica 0 are the job's) and the sizes.
    def __getattr__(self, name):
        if name in ('global_step', 'seed', 'train_vars', 'model_vars', 'saved_vars', 'accumulate_gradients',
                    'skipped'):
            return getattr(self.replicas[0], name)
        raise AttributeError(name)

    @property
    def batch_size(self):
        """The job's batch: every replica's rows."""
        return self.replicas[0].batch_size * self.cluster.replicas

    def feed(self, tokens, lengths, micro_batch=None):
        """The job's batch (tokens [batch, L], lengths [batch]) -> the feed of this process's replicas' rows."""
        feed, rows = {}, self.replicas[0].batch_size
        for i, training in enumerate(self.replicas):
            begin = self.first_row + i * rows
            feed[training.tokens], feed[training.lengths] = tokens[begin:begin + rows], lengths[begin:begin + rows]
            if micro_batch is not None:
                feed[training.micro_batch] = micro_batch
        return feed

    def run_step(self, sess, batches):
        """One update from accumulate_gradients of the job's batches -> the mean loss over all their real
        targets (in every replica), before the update."""
        assert len(batches) == self.accumulate_gradients, (len(batches), self.accumulate_gradients)
        if self.accumulate_op is None:
            _, (total, count) = self.run(sess, [self.train_op, self.totals[0]], self.feed(*batches[0]))
            return float(total / count)
        total = np.zeros(2)
        for i, (tokens, lengths) in enumerate(batches):
            total += self.run(sess, [self.accumulate_op, self.totals[0]], self.feed(tokens, lengths, i))[1]
        self.run(sess, self.train_op)
        return float(total[0] / total[1])

    def restore(self, sess, prefix):
        """Restore the checkpoint at prefix as start.restore does, then give every replica the chief's values:
        a Saver restores one copy of a mirrored variable, and the workers of a job may have restored different
        checkpoints (a worker's own run folder holds none) and started from different seeds.

        In a multi-worker job every initialiser broadcasts the chief's value (a collective), so every worker must
        run the same ones whatever its checkpoint holds: all but the model's weights, which every checkpoint has."""
        found = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
        wanted = {v.op.name: v for v in self.saved_vars if v.op.name in found and v is not self.seed}
        restored = {id(v) for v in self.model_vars if v.op.name in found}
        self.run(sess, tf.variables_initializer([v for v in tf.global_variables() if id(v) not in restored]))
        tf.train.Saver(var_list=wanted).restore(sess, prefix)
        self.run(sess, self.sync_op)

    def run(self, sess, fetches, feed=None):
        """sess.run, ended with one error line if it fails or outlasts the cluster's timeout (a worker lost)."""
        with Watchdog(self.cluster.timeout):
            try:
                return sess.run(fetches, feed)
            except tf.errors.OpError as err:
                if self.cluster.num_workers == 1:
                    raise
                lost(f'a collective step failed ({type(err).__name__})')  # its message: pages of graph nodes


def sum_of_replicas(value):
    """In a replica: value summed over all replicas, without a gradient. Not ReplicaContext.all_reduce: its
    gradient function looks up every variable upstream by name and fails on the copies of replicas beyond the
    first ('model/wte/replica_1')."""
    @tf.autograph.experimental.do_not_convert
    def merge(strategy, value):
        return strategy.extended.reduce_to(SUM, value, destinations=value)
    return tf.distribute.get_replica_context().merge_call(merge, args=(tf.stop_gradient(value),))


def sync_from_first_replica():
    """In each replica: every mirrored variable := its value in replica 0 (of the job: the chief's first device),
    as a sum in which the others count zero; the replicas' own accumulators (ON_READ) are left alone.

    Only replica 0 reads its copies: a restore sets one copy of each mirrored variable (the first device's), so
    the copies of the other local devices hold nothing yet, and reading one fails the step."""
    context = tf.distribute.get_replica_context()
    first = tf.get_static_value(context.replica_id_in_sync_group) == 0
    variables = [v for v in tf.global_variables() if v.synchronization != tf.VariableSynchronization.ON_READ]
    # Summed as floats (the step and the seed as float64, exact below 2**53), one batch per dtype: the
    # all-reduce packs a batch into one tensor.
    values = [v.read_value() if first else tf.zeros(v.shape, v.dtype) for v in variables]
    values = [value if value.dtype.is_floating else tf.cast(value, tf.float64) for value in values]
    dtypes = [value.dtype for value in values]

    @tf.autograph.experimental.do_not_convert
    def merge(strategy, *values):  # values: of every replica (PerReplica), or of this one when it is the only one
        reduced = [None] * len(values)
        for dtype in set(dtypes):
            group = [i for i in range(len(values)) if dtypes[i] == dtype]
            pairs = [(values[i], variables[i]) for i in group]
            for i, value in zip(group, strategy.extended.batch_reduce_to(SUM, pairs)):
                reduced[i] = value
        return [strategy.extended.update(v, lambda copy, value: copy.assign(tf.cast(value, copy.dtype)), args=(r,))
                for v, r in zip(variables, reduced)]
    return context.merge_call(merge, args=values)


# ---------------------------------------------------------------------------------------------------------------
# Losing a worker
# ---------------------------------------------------------------------------------------------------------------

def lost(reason):
    """End the process at once (its server's threads would keep a normal exit waiting) with one error line."""
    print(f'error: {reason}: another worker has stopped or cannot be reached; restart every worker of the job '
          f'(it resumes from the chief\'s latest checkpoint with --restore_from latest)', file=sys.stderr, flush=True)
    os._exit(1)


class Watchdog:
    """Within `with Watchdog(seconds):`, the process ends with an error line (or on_timeout(message) is called)
    if the block outlasts seconds. None: no limit."""

    def __init__(self, seconds, on_timeout=lost):
        self.seconds, self.on_timeout = seconds, on_timeout
        self.timer = None

    def __enter__(self):
        if self.seconds:
            message = f'no answer from the other workers in {self.seconds:g} s (--collective_timeout)'
            self.timer = threading.Timer(self.seconds, self.on_timeout, [message])
            self.timer.daemon = True
            self.timer.start()
        return self

    def __exit__(self, *exc):
        if self.timer:
            self.timer.cancel()
