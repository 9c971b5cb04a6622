#!/usr/bin/env python3
"""Fine-tune GPT-2 on a text dataset; the run folder it writes is a model folder the sampling scripts load.

Sections: the training graph (build_training, which the benchmark uses too), then the run folder (checkpoints
that survive a crash at any moment), then the training loop and its command line.
"""
import dataclasses
import functools
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import fire
import numpy as np

from gpt2.base import runtime

tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
from tensorflow.core.protobuf import rewriter_config_pb2  # noqa: E402
import model  # noqa: E402
import sample  # noqa: E402
from gpt2 import loading  # noqa: E402
from gpt2.base import checkpoint  # noqa: E402
from gpt2.base import flags  # noqa: E402
from gpt2.data import corpus  # noqa: E402
from gpt2.sampling import printing  # noqa: E402
from gpt2.training import adafactor  # noqa: E402
from gpt2.training import distribute  # noqa: E402
from gpt2.training import memory  # noqa: E402
from gpt2.training import schedules  # noqa: E402

OPTIMIZERS = ('adam', 'sgd', 'adafactor')
# --learning_rate's default for each optimizer: Adafactor's is transformers' fine-tuning setting.
DEFAULT_LEARNING_RATE = {'adam': 2e-5, 'sgd': 2e-5, 'adafactor': 1e-3}
# The variables --only_train_transformer_layers trains: the blocks', not the embeddings' or ln_f's.
TRANSFORMER_LAYER = re.compile(r'^model/h\d+/')


# ---------------------------------------------------------------------------------------------------------------
# The training graph
# ---------------------------------------------------------------------------------------------------------------

def token_losses(logits, tokens, lengths):
    """logits [batch, seq, n_vocab], tokens [batch, seq], lengths [batch]
    -> cross-entropy of each next token [batch, seq - 1], and where it counts [batch, seq - 1] (1.0, or 0.0 for
    a target in a row's padding, at a position >= its length)."""
    # Every position's cross-entropy, the last one's against a stand-in target and then dropped: the same losses
    # as logits[:, :-1] against tokens[:, 1:], without copying the logits (206 MB at 1024 tokens) for the slice
    # and again for its gradient (bench/bench_train.py).
    next_tokens = tf.concat([tokens[:, 1:], tokens[:, :1]], axis=1)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=next_tokens, logits=logits)[:, :-1]
    target_positions = tf.range(1, tf.shape(tokens)[1])  # the position of each target in its row
    real = tf.cast(target_positions[tf.newaxis, :] < lengths[:, tf.newaxis], losses.dtype)
    return losses, real


# Tokens per piece of the chunked cross-entropy: its logits are 128 x 50257 floats, 26 MB, where the whole
# window's are 206 MB, and as much again for their gradient and for the softmax.
LOSS_CHUNK = memory.LOSS_CHUNK


def chunked_token_losses(h, wte, tokens, lengths, chunk=LOSS_CHUNK):
    """token_losses(unembed(h, wte), tokens, lengths) without the logits [batch, seq, n_vocab] at full size: h
    [batch, seq, n_embd] (after ln_f), wte [n_vocab, n_embd]. The forward pass makes the logits of `chunk` tokens
    at a time and keeps none of them; the backward pass makes them again, chunk by chunk, and adds each chunk's
    share of the embeddings' gradient to one sum. The same losses and gradients (up to the order of float
    additions), for one more product of the logits."""
    batch, seq, n_embd = model.shape_list(h)
    next_tokens = tf.concat([tokens[:, 1:], tokens[:, :1]], axis=1)  # the last position's target is dropped
    flat_losses = chunked_cross_entropy(tf.reshape(h, [-1, n_embd]), tf.convert_to_tensor(wte),
                                        tf.reshape(next_tokens, [-1]), chunk)
    losses = tf.reshape(flat_losses, [batch, seq])[:, :-1]
    target_positions = tf.range(1, tf.shape(tokens)[1])
    real = tf.cast(target_positions[tf.newaxis, :] < lengths[:, tf.newaxis], losses.dtype)
    return losses, real


def chunked_cross_entropy(h, wte, targets, chunk):
    """h [tokens, n_embd], wte [n_vocab, n_embd], targets [tokens] -> cross-entropy of each token's logits
    h @ wte^T against its target [tokens], `chunk` tokens at a time (see chunked_token_losses)."""
    n = tf.shape(h)[0]
    pieces = (n + chunk - 1) // chunk

    def part(i):
        return slice(i * chunk, tf.minimum((i + 1) * chunk, n))

    @tf.custom_gradient
    def run(h, wte):
        def body(i, losses):
            logits = tf.matmul(h[part(i)], wte, transpose_b=True)  # [chunk, n_vocab]
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets[part(i)], logits=logits)
            return i + 1, losses.write(i, loss)
        array = tf.TensorArray(h.dtype, size=pieces, infer_shape=False, element_shape=tf.TensorShape([None]))
        # One chunk at a time: each iteration's logits are freed before the next one's are made.
        _, array = tf.while_loop(lambda i, _: i < pieces, body, [0, array], back_prop=False, parallel_iterations=1)

        def grad(dlosses):
            with tf.control_dependencies([dlosses]):
                h_after = tf.identity(h)  # the logits are made again only once the backward pass is here

            def body(i, dh, dwte):
                rows = part(i)
                logits = tf.matmul(h_after[rows], wte, transpose_b=True)
                _, softmax_less_target = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
                    features=logits, labels=targets[rows])  # d loss / d logits, [chunk, n_vocab]
                dlogits = softmax_less_target * dlosses[rows][:, tf.newaxis]
                dwte = dwte + tf.matmul(dlogits, h_after[rows], transpose_a=True)
                return i + 1, dh.write(i, tf.matmul(dlogits, wte)), dwte
            dh = tf.TensorArray(h.dtype, size=pieces, infer_shape=False,
                                element_shape=tf.TensorShape([None, h.shape[-1]]))
            _, dh, dwte = tf.while_loop(lambda i, *_: i < pieces, body, [0, dh, tf.zeros_like(wte)],
                                        back_prop=False, parallel_iterations=1)
            return dh.concat(), dwte
        return array.concat(), grad
    return run(h, wte)


def with_noise(tokens, p, n_vocab, key, rows=None):
    """[batch, seq] -> the same, each token replaced by a uniformly random one with probability p, as a
    regulariser (nshepperd's --noise). The draw is stateless, keyed by key [2], so a resumed run draws the
    same noise as one that never stopped. rows (first, total): these are rows first.. of a batch of total rows
    (a replica's, src/gpt2/training/distribute.py), whose noise is those rows of the whole batch's."""
    if not p:
        return tokens
    first, total = rows or (0, tokens.shape[0])
    shape = tf.stack([total, tf.shape(tokens)[1]])
    replace = tf.random.stateless_uniform(shape, seed=key)[first:first + tokens.shape[0]] < p
    random_tokens = tf.random.stateless_uniform(shape, seed=key + [0, 1 << 40], minval=0, maxval=n_vocab,
                                                dtype=tf.int64)[first:first + tokens.shape[0]]
    return tf.where(replace, tf.cast(random_tokens, tokens.dtype), tokens)


def make_optimizer(name, learning_rate, adafactor_options=None):
    """adafactor_options: the keyword arguments of adafactor.AdafactorOptimizer (beta1, relative_step,
    scale_parameter)."""
    if name == 'adam':
        return tf.train.AdamOptimizer(learning_rate)
    if name == 'sgd':
        return tf.train.GradientDescentOptimizer(learning_rate)
    if name == 'adafactor':
        return adafactor.AdafactorOptimizer(learning_rate, **(adafactor_options or {}))
    raise ValueError(f'unknown optimizer {name!r}; known: {", ".join(OPTIMIZERS)}')


@dataclasses.dataclass
class Training:
    """The ops of one training step, from build_training. Feed tokens and lengths; see run_step.

    With accumulate_gradients 1, one step is `sess.run([train_op, loss], feed)`. With N > 1, a step is N runs of
    accumulate_op (each adds one micro-batch's summed gradients and target count to the accumulators) and one
    run of train_op (which applies their sum divided by the count and zeroes them). run_step does either."""
    tokens: tf.Tensor  # int32 [batch, seq <= seq_len], placeholder
    lengths: tf.Tensor  # int32 [batch], placeholder: tokens at positions >= length are padding
    loss: tf.Tensor  # float32 []: mean cross-entropy over the batch's real targets
    loss_sum: tf.Tensor  # float32 []: their sum
    target_count: tf.Tensor  # float32 []: how many real targets the batch has
    train_op: tf.Operation  # one optimizer update; adds 1 to global_step
    accumulate_op: tf.Operation  # None with accumulate_gradients 1
    micro_batch: tf.Tensor  # int32 [] placeholder with default 0: which micro-batch of the step (keys the noise)
    global_step: tf.Variable  # int64: updates made, saved with the checkpoints
    seed: tf.Variable  # int64: the run's seed, saved with the checkpoints so that a resumed run keeps it
    train_vars: list  # the variables the optimizer changes
    model_vars: list  # every model variable (the released checkpoint's)
    saved_vars: list  # what a run checkpoint holds: model, optimizer state and global_step
    accumulate_gradients: int
    learning_rate: object = None  # float32 [] tensor (or a float): the rate of the next update

    @property
    def batch_size(self):
        """Rows per (micro-)batch."""
        return int(self.tokens.shape[0])

    def run_step(self, sess, batches):
        """One optimizer update from accumulate_gradients micro-batches [(tokens, lengths), ...]
        -> the mean loss over all their real targets, before the update."""
        assert len(batches) == self.accumulate_gradients, (len(batches), self.accumulate_gradients)
        if self.accumulate_op is None:
            tokens, lengths = batches[0]
            _, loss = sess.run([self.train_op, self.loss], {self.tokens: tokens, self.lengths: lengths})
            return float(loss)
        total, count = 0.0, 0.0
        for i, (tokens, lengths) in enumerate(batches):
            feed = {self.tokens: tokens, self.lengths: lengths, self.micro_batch: i}
            _, loss_sum, n = sess.run([self.accumulate_op, self.loss_sum, self.target_count], feed)
            total, count = total + float(loss_sum), count + float(n)
        sess.run(self.train_op)
        return total / count


def build_training(hparams, *, batch_size, seq_len, optimizer='adam', learning_rate=2e-5, accumulate_gradients=1,
                   only_train_transformer_layers=False, memory_saving_gradients=False, noise=0.0, seed=0,
                   lr_schedule='constant', warmup_steps=0, total_steps=None, adafactor_options=None,
                   count_all=None, rows=None):
    """Build, in the default graph, the model and the ops of one training step -> Training.

    The model's variables are resource variables with the released names (model/h0/attn/c_attn/w, ...), so the
    base checkpoint restores into them and the sampling scripts load the run's checkpoints. Resource variables
    also make an update wait for every read of the old value (a reference variable could change under a
    gradient still being computed from it).

    hparams: model.HParams. batch_size: rows per micro-batch. seq_len: the longest row that will be fed (at most
    hparams.n_ctx); shorter rows are padded, and lengths says where each row's tokens end.
    optimizer: 'adam', 'sgd' or 'adafactor' (adafactor_options: AdafactorOptimizer's keywords), at learning_rate
    times the schedule's factor (gpt2/training/schedules.py: lr_schedule, warmup_steps, total_steps) at global_step.
    The loss is the mean cross-entropy of logits[:, :-1] against tokens[:, 1:] over the real (unpadded) targets:
    without padding, exactly the original's mean over the window.
    accumulate_gradients N: one update from N micro-batches, the gradient of their summed loss divided by their
    number of real targets: the same update as one batch of N times the rows.
    only_train_transformer_layers: the embeddings (wte, wpe) and ln_f stay as they are.
    memory_saving_gradients: recompute each block's activations in the backward pass (model.model(recompute=True)).
    noise p: each input token (not target) replaced at random with probability p, keyed by (seed, step,
    micro-batch), so a resumed run draws the same noise.
    count_all: under tf.distribute, a function of this replica's target count -> the count of all replicas
    (src/gpt2/training/distribute.py); each replica's loss is then its summed loss over that, so that the replicas' gradients,
    which the optimizer sums, add up to the gradient of the mean over every replica's targets. None: one device.
    rows (first, total): under tf.distribute, this replica's rows among all replicas' (for the noise).
    restore() initialises and restores the variables.
    """
    if not 1 <= seq_len <= hparams.n_ctx:
        raise ValueError(f'seq_len must be from 1 to n_ctx ({hparams.n_ctx}), got {seq_len}')
    tokens = tf.placeholder(tf.int32, [batch_size, None], name='tokens')
    lengths = tf.placeholder(tf.int32, [batch_size], name='lengths')
    micro_batch = tf.placeholder_with_default(tf.constant(0, tf.int32), [], name='micro_batch')
    with tf.variable_scope(tf.get_variable_scope(), use_resource=True):
        global_step = tf.get_variable('global_step', [], tf.int64, initializer=tf.zeros_initializer(),
                                      trainable=False)
        seed_var = tf.get_variable('train_seed', [], tf.int64, initializer=tf.constant_initializer(seed),
                                   trainable=False)
        key = tf.stack([seed_var, global_step * accumulate_gradients + tf.cast(micro_batch, tf.int64)])
        inputs = with_noise(tokens, noise, hparams.n_vocab, key, rows)
        output = model.model(hparams, inputs, recompute=memory_saving_gradients)
        if memory_saving_gradients:
            # By name, not from tf.global_variables(): under tf.distribute a replica's copy is not listed there.
            with tf.variable_scope('model', reuse=True):
                wte = tf.get_variable('wte')
            losses, real = chunked_token_losses(output['h'], wte, tokens, lengths)
        else:
            losses, real = token_losses(output['logits'], tokens, lengths)
        loss_sum = tf.reduce_sum(losses * real)
        target_count = tf.reduce_sum(real)
        count_all = count_all or (lambda count: count)
        loss = loss_sum / count_all(target_count)

        model_vars = [v for v in tf.global_variables() if v.name.startswith('model/')]
        train_vars = [v for v in model_vars if TRANSFORMER_LAYER.match(v.name) or not only_train_transformer_layers]
        rate = schedules.learning_rate(tf, learning_rate, lr_schedule, global_step, warmup_steps=warmup_steps,
                                       total_steps=total_steps)
        opt = make_optimizer(optimizer, rate, adafactor_options)
        if accumulate_gradients == 1:
            grads = opt.compute_gradients(loss, train_vars)
            accumulate_op, accumulators = None, []
            if memory_saving_gradients:
                grads = layer_by_layer(grads)
            train_op = opt.apply_gradients(grads, global_step=global_step)
        else:
            accumulate_op, train_op, accumulators = accumulating(opt, loss_sum, target_count, train_vars, global_step,
                                                                 count_all)
    saved = [v for v in tf.global_variables() if not any(v is a for a in accumulators)]
    return Training(tokens=tokens, lengths=lengths, loss=loss, loss_sum=loss_sum, target_count=target_count,
                    train_op=train_op, accumulate_op=accumulate_op, micro_batch=micro_batch, global_step=global_step,
                    seed=seed_var, train_vars=train_vars, model_vars=model_vars, saved_vars=saved,
                    accumulate_gradients=accumulate_gradients, learning_rate=rate)


def session_config(config=None):
    """The training session's settings (config: a ConfigProto to change, e.g. tf.distribute's): grappler's
    constant folding off. With it on, 774M with Adam and --memory_saving_gradients peaked at 15.7 GB against
    12.4 GB off, as fast (bench/bench_train.py, README: Memory); the folding happens when the step's graph is
    first optimised, and what it leaves behind stays resident."""
    config = config if config is not None else tf.ConfigProto()
    config.graph_options.rewrite_options.constant_folding = rewriter_config_pb2.RewriterConfig.OFF
    return config


def after_all(grads_and_vars):
    """The gradients, each available only once all are computed. With recompute, the backward pass reads the
    weights again; without this, a weight could be updated before a recomputation still to come has read it."""
    grads = tf.tuple([g for g, _ in grads_and_vars])
    return [(g, v) for g, (_, v) in zip(grads, grads_and_vars)]


def layer_by_layer(grads_and_vars):
    """The gradients of each transformer block available together, once all of that block's are computed, so that
    the optimizer updates a block, and frees its gradients, as soon as its backward pass is done, instead of
    holding all of them (3.1 GB at 774M) until the last is made (after_all). That is soon enough and not too
    soon: with recompute, every read of a block's weights in its backward pass feeds one of its gradients, so
    none comes after the update; the blocks below read only their own weights. The other variables (wte, wpe,
    ln_f), read only outside the blocks, are updated when their gradient is ready."""
    groups = {}
    for i, (g, v) in enumerate(grads_and_vars):
        match = TRANSFORMER_LAYER.match(v.op.name)
        groups.setdefault(match.group(0) if match else i, []).append(i)
    grads = [g for g, _ in grads_and_vars]
    for members in groups.values():
        if len(members) > 1:
            for i, g in zip(members, tf.tuple([grads[i] for i in members])):
                grads[i] = g
    return [(g, v) for g, (_, v) in zip(grads, grads_and_vars)]


def accumulating(opt, loss_sum, target_count, train_vars, global_step, count_all):
    """-> (accumulate_op, train_op, accumulators): accumulate_op adds the gradients of loss_sum and target_count
    to accumulators; train_op applies (summed gradients / summed count, of all replicas), then zeroes them."""
    # ON_READ: under tf.distribute each replica keeps its own sums (a plain variable's replicas would silently
    # diverge); on one device it changes nothing.
    local = dict(initializer=tf.zeros_initializer(), trainable=False,
                 synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.SUM)
    with tf.variable_scope('accumulate'):
        # v.name, not v.op.name: in a replica beyond the first, the op is its copy's ('model/wte/replica_1').
        sums = [tf.get_variable(v.name.split(':')[0], v.shape, v.dtype, **local) for v in train_vars]
        count = tf.get_variable('target_count', [], tf.float32, **local)
    grads = opt.compute_gradients(loss_sum, train_vars)
    accumulate_op = tf.group([s.assign_add(tf.convert_to_tensor(g)) for s, (g, _) in zip(sums, grads)]
                             + [count.assign_add(target_count)])
    total = count_all(count.read_value())
    mean = [(s.read_value() / total, v) for s, v in zip(sums, train_vars)]
    apply_op = opt.apply_gradients(mean, global_step=global_step)
    with tf.control_dependencies([apply_op]):
        train_op = tf.group([s.assign(tf.zeros_like(s)) for s in sums] + [count.assign(0.0)])
    return accumulate_op, train_op, sums + [count]


def build_validation(hparams, batch_size):
    """The model again, on the training graph's variables, for validation batches
    -> (tokens [batch, None], lengths [batch] placeholders, the loss summed over real targets, their count)."""
    tokens = tf.placeholder(tf.int32, [batch_size, None], name='val_tokens')
    lengths = tf.placeholder(tf.int32, [batch_size], name='val_lengths')
    logits = model.model(hparams, tokens, reuse=True)['logits']
    losses, real = token_losses(logits, tokens, lengths)
    return tokens, lengths, tf.reduce_sum(losses * real), tf.reduce_sum(real)


# ---------------------------------------------------------------------------------------------------------------
# The run folder
#
# CHECKPOINT_DIR/RUN_NAME is a model folder: hparams.json, encoder.json and vocab.bpe copied from the base model,
# checkpoints model-STEP.index and model-STEP.data-00000-of-00001, and the state file `checkpoint` that lists the
# kept checkpoints by file name (relative, so the folder can move), the latest last. The state file is the one
# truth: a checkpoint it does not list is not one, and its files are removed when a run starts or saves.
#
# A save writes the new checkpoint's files (TensorFlow writes each under a temporary name, NAME.tempstate..., and
# renames it when complete), then a new state file under a temporary name, renamed over the old one (an atomic
# replace), and only then removes the files of checkpoints no longer listed. A crash or SIGKILL at any moment
# leaves the old state file or the new one, each naming complete checkpoints.
# ---------------------------------------------------------------------------------------------------------------

CHECKPOINT_NAME = re.compile(r'^model-(\d+)$')
CHECKPOINT_FILE = re.compile(r'^(model-\d+)\.(index|data-\d+-of-\d+|meta)$')
TEMPORARY = '.tempstate'  # in the name of a file being written; ours and TensorFlow's


def checkpoint_name(step):
    return f'model-{step}'


class RunFolder:
    """A run's folder, CHECKPOINT_DIR/RUN_NAME (see above); the folder need not exist yet."""

    def __init__(self, path, *, checkpoint_size=0, free_space=None):
        """checkpoint_size: the bytes a save writes, checked against free_space(path) (memory.free_space by
        default) before each save."""
        self.path = Path(path)
        self.checkpoint_size = checkpoint_size
        self.free_space = free_space or (lambda folder: memory.free_space(folder))

    def checkpoints(self):
        """The kept checkpoints' names, oldest first."""
        return [n for n in checkpoint.read_state(self.path) if CHECKPOINT_NAME.match(n)]

    def latest(self):
        """The latest checkpoint's path prefix, or None."""
        kept = self.checkpoints()
        return str(self.path / kept[-1]) if kept else None

    def start(self, base_dir, *, discard=False):
        """Create the folder with the base model's hparams.json, encoder.json and vocab.bpe, or tidy an existing
        one: remove what a killed save left. discard: forget every checkpoint (--restore_from fresh
        --overwrite)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in checkpoint.MODEL_INFO_FILES:
            if not (self.path / name).exists():
                temporary = self.path / (name + TEMPORARY)
                shutil.copyfile(Path(base_dir) / name, temporary)
                os.replace(temporary, self.path / name)
        if discard:
            (self.path / checkpoint.STATE_FILE).unlink(missing_ok=True)
            (self.path / checkpoint.BEST_FILE).unlink(missing_ok=True)
        self.remove_unlisted()

    def save(self, sess, saver, step, max_checkpoints):
        """Save checkpoint model-STEP, make it the latest, and keep only the last max_checkpoints (and the best,
        see record_best) -> its path."""
        name = checkpoint_name(step)
        # The new checkpoint is written whole before any old one is removed: it needs its full size free.
        memory.check_disk(self.path, self.checkpoint_size, self.free_space)
        saver.save(sess, str(self.path / name), write_meta_graph=False, write_state=False)
        self.prune([n for n in self.checkpoints() if n != name] + [name], max_checkpoints)
        return self.path / name

    def prune(self, names, max_checkpoints):
        """Keep the last max_checkpoints of names (oldest first) and the best one, in their order."""
        if not names:
            return
        best = (checkpoint.read_best(self.path) or {}).get('checkpoint')
        self.write_state([n for i, n in enumerate(names) if i >= len(names) - max_checkpoints or n == best])
        self.remove_unlisted()

    def best(self):
        """The run's best.json as a dict (checkpoint.BEST_FILE), {} if none."""
        return checkpoint.read_best(self.path) or {}

    def record_best(self, max_checkpoints, **best):
        """Write best.json (checkpoint.best_text's keywords), replaced atomically; a checkpoint that was kept only
        as the best and is no longer is removed."""
        temporary = self.path / (checkpoint.BEST_FILE + TEMPORARY)
        with open(temporary, 'w', encoding='utf-8') as f:
            f.write(checkpoint.best_text(**best))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path / checkpoint.BEST_FILE)
        self.prune(self.checkpoints(), max_checkpoints)

    def write_state(self, names):
        """The state file, in TensorFlow's format, replaced atomically."""
        temporary = self.path / (checkpoint.STATE_FILE + TEMPORARY)
        with open(temporary, 'w', encoding='utf-8') as f:
            f.write(checkpoint.state_text(names))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path / checkpoint.STATE_FILE)

    def remove_unlisted(self):
        """Remove the files of checkpoints the state file does not list, and whatever a killed save left."""
        kept = set(self.checkpoints())
        for path in self.path.iterdir():
            match = CHECKPOINT_FILE.match(path.name)
            if TEMPORARY in path.name or (match and match.group(1) not in kept):
                path.unlink()
            elif path.is_dir() and CHECKPOINT_NAME.match(path.name.removesuffix('_temp')):
                shutil.rmtree(path)  # TensorFlow's sharded saves write in NAME_temp/


def checkpoint_vars(prefix):
    """The names of the variables the checkpoint at prefix holds."""
    return set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())


def restore(sess, training, prefix):
    """Restore what training saves from the checkpoint at prefix: from the base model only its weights (the
    optimizer starts fresh and the step at 0), from a run's checkpoint also the optimizer state and step. Not the
    run's seed: train_main has chosen it already (--seed, else the checkpoint's, else a random one). Every other
    variable is initialised: only those, since drawing random initial weights that the restore overwrites costs
    a second of start-up for 124M (bench/bench_train.py)."""
    found = checkpoint_vars(prefix)
    wanted = {v.op.name: v for v in training.saved_vars if v.op.name in found and v is not training.seed}
    tf.train.Saver(var_list=wanted).restore(sess, prefix)
    restored = {id(v) for v in wanted.values()}
    sess.run(tf.variables_initializer([v for v in tf.global_variables() if id(v) not in restored]))


# ---------------------------------------------------------------------------------------------------------------
# Where a run starts from
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Start:
    model_dir: Path  # the model folder whose hparams.json, encoder.json and vocab.bpe the run uses
    hparams: model.HParams
    enc: object  # encoder.Encoder
    prefix: str  # the checkpoint to restore
    seed: int | None  # the seed a resumed run had (it goes on with it), else None


def choose_start(run, *, restore_from, overwrite, model_name, models_dir):
    """-> Start, for --restore_from latest (the run's latest checkpoint, else the base model), fresh (the base
    model) or a checkpoint's path (a prefix such as checkpoint/run1/model-500, or a model folder)."""
    if restore_from == 'latest' and run.latest():
        model_dir, hparams, enc = loading.load_model(run.path.name, run.path.parent)
        return Start(model_dir, hparams, enc, run.latest(), saved_seed(run.latest()))
    if restore_from == 'fresh' and run.checkpoints() and not overwrite:
        raise flags.UsageError(f'{run.path} already holds checkpoints (the latest is {run.checkpoints()[-1]}); '
                             f'go on with --restore_from latest, start again with --overwrite, or choose another '
                             f'--run_name')
    model_dir, hparams, enc = loading.load_model(model_name, models_dir)
    check_same_model(run, model_dir)
    if restore_from in ('latest', 'fresh'):
        return Start(model_dir, hparams, enc, str(model_dir / checkpoint.current_checkpoint(model_dir)), None)
    prefix = checkpoint_prefix(restore_from)
    path = Path(prefix)
    checkpoint.check_checkpoint_index(path.parent, dataclasses.asdict(hparams), model_name, path.name)
    return Start(model_dir, hparams, enc, prefix, saved_seed(prefix))


def checkpoint_prefix(restore_from):
    """--restore_from PATH -> the checkpoint's path prefix: PATH itself, or a folder's current checkpoint."""
    path = Path(str(restore_from)).expanduser()
    if path.is_dir():
        path = path / checkpoint.current_checkpoint(path)
    if not Path(f'{path}.index').is_file():
        raise checkpoint.ModelError(f'--restore_from {restore_from}: no checkpoint there ({path}.index not found); '
                                    f'give a checkpoint such as checkpoint/run1/model-1000, or latest, or fresh')
    return str(path)


def check_same_model(run, model_dir):
    """A run folder holds one model's checkpoints; training another model into it would mix them."""
    ours = run.path / 'hparams.json'
    if ours.exists() and checkpoint.read_hparams(run.path) != checkpoint.read_hparams(model_dir):
        raise checkpoint.ModelError(f'{run.path} holds a run of another model (its hparams.json differs from '
                                    f'{model_dir}); choose another --run_name or --model_name')


def saved_seed(prefix):
    """The seed a run checkpoint was trained with, or None (the base model has none)."""
    reader = tf.train.load_checkpoint(prefix)
    return int(reader.get_tensor('train_seed')) if reader.has_tensor('train_seed') else None


# ---------------------------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------------------------

class StopRequest:
    """The first Ctrl-C asks the loop to save and stop after the current step; the second ends the process at once
    (SIGINT's default action), without saving: the run folder stays at its last checkpoint."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print('Interrupted: saving after this step (Ctrl-C again to stop at once, without saving)',
              file=sys.stderr, flush=True)


class Progress:
    """The original's progress line, `[step | seconds since start] loss=... avg=...`, avg a moving average over
    about the last 100 steps, plus the step's tokens per second."""

    def __init__(self):
        self.start = time.time()
        self.total, self.weight = 0.0, 0.0

    def elapsed(self):
        return time.time() - self.start

    def step(self, step, loss, tokens, seconds):
        self.total, self.weight = self.total * 0.99 + loss, self.weight * 0.99 + 1
        print(f'[{step} | {self.elapsed():.2f}] loss={loss:.2f} avg={self.total / self.weight:.2f} '
              f'tokens/s={tokens / seconds:.1f}', flush=True)


class Validation:
    """The loss over a fixed set of windows of the validation data, chosen once, so that it is comparable over a
    run; printed with its perplexity, exp(loss)."""

    def __init__(self, hparams, chunks, *, seq_len, batch_size, batch_count, seed):
        self.batches = corpus.Sampler(chunks, seq_len, seed).fixed_batches(batch_size, batch_count)
        self.tokens, self.lengths, self.loss_sum, self.count = build_validation(hparams, batch_size)

    def run(self, sess, step, progress):
        total, count = 0.0, 0.0
        for tokens, lengths in self.batches:
            loss_sum, n = sess.run([self.loss_sum, self.count], {self.tokens: tokens, self.lengths: lengths})
            total, count = total + float(loss_sum), count + float(n)
        loss = total / count
        print(f'[{step} | {progress.elapsed():.2f}] validation loss={loss:.4f} perplexity={np.exp(loss):.2f}',
              flush=True)
        return loss


class Best:
    """--keep_best and --early_stopping: after each validation, the run's best.json is brought up to date; with
    keep_best the checkpoint of a new lowest loss is saved (if it is not already) and never pruned, and with
    early_stopping N the run stops after N validations in a row without a new lowest loss. The record is in the
    run folder, so a resumed run goes on counting (a validation of the same step is not counted twice)."""

    def __init__(self, run, *, keep_best, early_stopping, max_checkpoints):
        self.run, self.keep_best, self.early_stopping = run, keep_best, early_stopping
        self.max_checkpoints = max_checkpoints

    def update(self, loss, step, save):
        """After a validation of loss at step; save() saves a checkpoint of step -> True to stop the run."""
        best = self.run.best()
        if best.get('last') == step:
            return False
        if best.get('loss') is None or loss < best['loss']:
            name = None
            if self.keep_best and step > 0:
                if checkpoint_name(step) not in self.run.checkpoints():
                    save()
                name = checkpoint_name(step)
            best = dict(checkpoint=name, loss=loss, step=step, since=0)
        else:
            best = dict(best, since=best.get('since', 0) + 1)
        best['last'] = step
        self.run.record_best(self.max_checkpoints, **{k: best.get(k) for k in ('checkpoint', 'loss', 'step',
                                                                               'since', 'last')})
        if self.early_stopping and best['since'] >= self.early_stopping:
            print(f'Stopping early: {best["since"]} validations without a loss below {best["loss"]:.4f} (step '
                  f'{best["step"]})', flush=True)
            return True
        return False


class Samples:
    """Unconditional samples from the weights being trained, printed and written to SAMPLE_DIR/RUN_NAME/
    samples-STEP. The sampling graph is built at the first samples, not before the first step (2 s for 124M)."""

    def __init__(self, hparams, enc, folder, *, length, count, batch_size, top_k, top_p):
        self.enc, self.folder, self.count = enc, folder, count
        self.rows = min(count, batch_size)
        self.options = dict(hparams=hparams, length=length, start_token=enc.encoder[checkpoint.ENDOFTEXT],
                            batch_size=self.rows, top_k=top_k, top_p=top_p, frozen_weights=False)
        self.output = None

    def run(self, sess, step):
        if self.output is None:
            with sess.graph.as_default():
                self.output = sample.sample_sequence(**self.options)
        texts = []
        while len(texts) < self.count:
            for tokens in sess.run(self.output)[:self.count - len(texts)]:
                texts.append(printing.sample_header(len(texts) + 1) + '\n' + printing.sample_text(self.enc, tokens[1:]))
        text = '\n'.join(texts) + '\n'
        print(text, end='', flush=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f'samples-{step}').write_text(text, encoding='utf-8', errors='replace')


def train_loop(sess, training, sampler, run, saver, *, steps, save_every, max_checkpoints, sample_every, samples,
               val_every, validation, best=None):
    """Train until `steps` more steps are done (0: until Ctrl-C), saving every save_every steps and at the end;
    samples every sample_every steps and at the end of `steps`. best: a Best, for --keep_best and
    --early_stopping. run None: save nothing (a worker not the chief)."""
    step = int(sess.run(training.global_step))
    sampler.draws = step * training.accumulate_gradients  # go on with the windows a straight run would draw
    last, saved = (step + steps if steps else None), step
    progress, stop = Progress(), StopRequest()

    def validate():
        """-> True to stop early."""
        nonlocal saved
        loss = validation.run(sess, step, progress)

        def save():
            nonlocal saved
            print(f'Saving {run.save(sess, saver, step, max_checkpoints)}', flush=True)
            saved = step
        return best is not None and best.update(loss, step, save)
    early = bool(validation) and validate()
    while not early and not stop.requested and (last is None or step < last):
        batches = [sampler.sample(training.batch_size) for _ in range(training.accumulate_gradients)]
        began = time.time()
        loss = training.run_step(sess, batches)
        step += 1
        progress.step(step, loss, sum(int(lengths.sum()) for _, lengths in batches), time.time() - began)
        if run and step % save_every == 0:
            print(f'Saving {run.save(sess, saver, step, max_checkpoints)}', flush=True)
            saved = step
        if samples and step % sample_every == 0:
            samples.run(sess, step)
        if validation and step % val_every == 0:
            early = validate()
    if run and step != saved:
        print(f'Saving {run.save(sess, saver, step, max_checkpoints)}', flush=True)
    if samples and not stop.requested and step % sample_every:
        samples.run(sess, step)  # a run of --steps ends with samples of the weights it leaves


# ---------------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------------

FLAGS = dict(
    dataset='the training text: a text file, a folder (all files in it, recursively), a glob, or a .npz of '
            'token arrays from encode.py. Required.',
    model_name='the base model to fine-tune, a folder in models_dir: 124M, 355M, 774M or 1558M.',
    models_dir=flags.COMMON_FLAGS['models_dir'],
    combine='gather text files into chunks of at least this many characters (training windows stay within a '
            'chunk).',
    encoding='the text files\' encoding.',
    batch_size='windows per step (per micro-batch with accumulate_gradients), on each device: the step\'s batch '
               'is this times the devices of all workers.',
    learning_rate='the optimizer\'s learning rate, above 0; by default 2e-5 for adam and sgd, 1e-3 for adafactor.',
    optimizer='adam, sgd, or adafactor (second moments factored per matrix, no first moment: the optimizer state '
              'is about 0.1% of the weights instead of Adam\'s 200%).',
    adafactor_beta1='with adafactor, keep a first moment with this decay (e.g. 0.9; more memory); by default none.',
    adafactor_relative_step='with adafactor, its own rate min(1e-2, 1/sqrt(step)) instead of --learning_rate.',
    adafactor_scale_parameter='with adafactor, scale each update by the RMS of its weight.',
    lr_schedule='constant, linear (down to 0 at total_steps) or cosine (half a cosine to 0 at total_steps), '
                'after warmup_steps of linear warmup from 0.',
    warmup_steps='updates of linear warmup from 0 to the learning rate.',
    total_steps='with linear or cosine: the update count at which the rate reaches 0 (counted over the whole run, '
                'resumes included).',
    accumulate_gradients='make each step from this many batches (the same update as one batch this many times '
                         'the size, in the memory of one).',
    memory_saving_gradients='recompute activations in the backward pass instead of keeping them: less memory, '
                            'slower steps.',
    only_train_transformer_layers='keep the embeddings (wte, wpe) and the final layer norm as they are.',
    noise='replace each input token with a random one with this probability, 0 to below 1 (a regulariser).',
    seq_len="tokens per window, 2 to the model's window (n_ctx, the default).",
    steps='train this many steps, then save and stop; 0 (the default) trains until Ctrl-C.',
    seed='a whole number that makes the run repeatable; by default a random one. A resumed run keeps its seed.',
    run_name='the run\'s name: its folder in checkpoint_dir and in sample_dir.',
    checkpoint_dir='the folder of run folders; a relative path is looked up in the working directory, then in '
                   'the repository. A run folder is a model folder: sample from it with --models_dir '
                   'CHECKPOINT_DIR --model_name RUN_NAME.',
    restore_from='latest (the run\'s latest checkpoint, else the base model), fresh (the base model), or the '
                 'path of a checkpoint (e.g. checkpoint/run1/model-1000) or model folder.',
    overwrite='with --restore_from fresh, discard the run\'s checkpoints instead of refusing.',
    save_every='save a checkpoint every this many steps (and always at the end and on Ctrl-C).',
    max_checkpoints='keep this many latest checkpoints in the run folder; older ones are removed.',
    sample_every='print and write samples every this many steps and at the end of --steps; 0 for none.',
    sample_length="tokens per sample, 1 to the model's window less one (the default).",
    sample_num='samples each time.',
    sample_dir='samples go to SAMPLE_DIR/RUN_NAME/samples-STEP; a relative path is looked up as checkpoint_dir '
               'is.',
    top_k='samples draw only from the k most likely tokens; 0 means no limit.',
    top_p='samples draw only from the most likely tokens whose probabilities add up to at most top_p; 1 or 0 '
          'means no limit.',
    val_dataset='validation text, in any form dataset takes (give the dataset itself to validate on the training '
                'text); needs val_every.',
    val_every='print the validation loss and perplexity every this many steps (and at the start); 0 for never.',
    val_batch_size='windows per validation batch.',
    val_batch_count='validation batches; the windows are chosen once, so the loss is comparable over the run.',
    keep_best='keep the checkpoint of the lowest validation loss (saved when it is reached) whatever '
              'max_checkpoints says; sample from it with --checkpoint best. Needs val_every.',
    early_stopping='stop after this many validations in a row without a new lowest loss; 0 for never. Needs '
                   'val_every.',
    devices='train on this many local devices at once, data-parallel (the GPUs, or with none CPU devices), or on '
            'a list of them such as /gpu:0,/gpu:2; 1 (the default) trains on one. With TF_CONFIG set, each '
            'worker uses its machine\'s GPUs (or its CPU) instead; see the README\'s Distributed training.',
    collective_timeout='with TF_CONFIG: seconds a step may wait for the other workers (a lost worker) before '
                       'this one exits with an error; longer than the chief\'s longest sampling, validation or '
                       'save.',
)


def check_flags(given):
    """Every flag whose range does not depend on the model; UsageError names the first bad one."""
    if given['dataset'] is None:
        raise flags.UsageError('--dataset is required: a text file, a folder, a glob or a .npz')
    for name in ('batch_size', 'accumulate_gradients', 'combine', 'save_every', 'max_checkpoints', 'sample_num',
                 'val_batch_size', 'val_batch_count'):
        flags.whole_number(name, given[name], 1)
    for name in ('steps', 'sample_every', 'val_every', 'top_k'):
        flags.whole_number(name, given[name], 0)
    flags.whole_number('seed', given['seed'], 0, 2**32 - 1, allow_none=True)
    if given['learning_rate'] is not None:
        flags.number('learning_rate', given['learning_rate'], 0, float('inf'), low_open=True,
                     what='a number above 0')
    check_optimizer_flags(given)
    flags.number('noise', given['noise'], 0, 1, what='a number from 0 to below 1')
    if given['noise'] == 1:
        raise flags.UsageError('--noise must be a number from 0 to below 1, got 1')
    flags.number('top_p', given['top_p'], 0, 1, what='a number from 0 to 1 (0 and 1 keep every token)')
    try:
        corpus.check_encoding(given['encoding'])
    except ValueError as err:
        raise flags.UsageError(err) from None
    for name in ('memory_saving_gradients', 'only_train_transformer_layers', 'overwrite'):
        if not isinstance(given[name], bool):
            raise flags.UsageError(f'--{name} takes no value (or true/false), got {given[name]!r}')
    for name in ('run_name', 'restore_from'):
        if not isinstance(given[name], str) or not given[name] or (name == 'run_name' and os.sep in given[name]):
            raise flags.UsageError(f'--{name} must be a {"name" if name == "run_name" else "path"}, got '
                                 f'{given[name]!r}')
    if bool(given['val_dataset']) != bool(given['val_every']):
        raise flags.UsageError('--val_dataset and --val_every go together: give both to validate, or neither')
    if not isinstance(given['keep_best'], bool):
        raise flags.UsageError(f'--keep_best takes no value (or true/false), got {given["keep_best"]!r}')
    flags.whole_number('early_stopping', given['early_stopping'], 0)
    for name in ('keep_best', 'early_stopping'):
        if given[name] and not given['val_every']:
            raise flags.UsageError(f'--{name} needs validation: give --val_dataset and --val_every')


def check_optimizer_flags(given):
    """--optimizer, its Adafactor settings and the learning-rate schedule."""
    if given['optimizer'] not in OPTIMIZERS:
        raise flags.UsageError(f'--optimizer must be one of {", ".join(OPTIMIZERS)}, got {given["optimizer"]!r}')
    for name in ('adafactor_relative_step', 'adafactor_scale_parameter'):
        if not isinstance(given[name], bool):
            raise flags.UsageError(f'--{name} takes no value (or true/false), got {given[name]!r}')
    if given['adafactor_beta1'] is not None:
        flags.number('adafactor_beta1', given['adafactor_beta1'], 0, 1, what='a number from 0 to below 1')
        if given['adafactor_beta1'] == 1:
            raise flags.UsageError('--adafactor_beta1 must be a number from 0 to below 1, got 1')
    adafactor_only = [n for n in ('adafactor_beta1', 'adafactor_relative_step', 'adafactor_scale_parameter')
                      if given[n] not in (None, False)]
    if adafactor_only and given['optimizer'] != 'adafactor':
        raise flags.UsageError(f'--{adafactor_only[0]} goes with --optimizer adafactor')
    if given['adafactor_relative_step'] and given['learning_rate'] is not None:
        raise flags.UsageError('--adafactor_relative_step sets its own rate: give it without --learning_rate')
    if given['adafactor_relative_step'] and (given['lr_schedule'] != 'constant' or given['warmup_steps']):
        raise flags.UsageError('--adafactor_relative_step sets its own rate: give it without --lr_schedule and '
                               '--warmup_steps')
    flags.whole_number('warmup_steps', given['warmup_steps'], 0)
    flags.whole_number('total_steps', given['total_steps'], 1, allow_none=True)
    try:
        schedules.check(given['lr_schedule'], given['warmup_steps'], given['total_steps'])
    except ValueError as err:
        raise flags.UsageError(err) from None


def adafactor_options(given):
    """AdafactorOptimizer's keywords from the flags, or None for another optimizer."""
    if given['optimizer'] != 'adafactor':
        return None
    return dict(beta1=given['adafactor_beta1'], relative_step=given['adafactor_relative_step'],
                scale_parameter=given['adafactor_scale_parameter'])


def check_model_flags(given, hparams):
    """The flags whose range is the model's window -> (seq_len, sample_length)."""
    seq_len = flags.whole_number('seq_len', given['seq_len'], 2, hparams.n_ctx, allow_none=True) or hparams.n_ctx
    sample_length = flags.whole_number('sample_length', given['sample_length'], 1, hparams.n_ctx - 1,
                                     allow_none=True) or hparams.n_ctx - 1
    return seq_len, sample_length


def report_memory(hparams, run, **settings):
    """Print the memory the run will need and its checkpoints' size; warn in one line when the machine has less
    memory available, or the disk less room than one checkpoint."""
    needed = memory.estimate(hparams, **settings)
    print(needed.line(batch_size=settings['batch_size'], seq_len=settings['seq_len']), flush=True)
    print(f'Checkpoints: {run.checkpoint_size / memory.GB:.2f} GB each (weights and optimizer state)', flush=True)
    gpu = memory.gpu_memory() if tf.config.list_physical_devices('GPU') else None
    if gpu is not None:
        warning = memory.memory_warning(needed.total - needed.runtime, gpu, where='each GPU')
    else:
        warning = memory.memory_warning(needed.total, memory.available_memory())
    if warning:
        print(warning, file=sys.stderr, flush=True)
    free = run.free_space(run.path)
    if free < run.checkpoint_size:
        print(f'warning: the disk of {run.path} has {free / memory.GB:.2f} GB free, less than one checkpoint',
              file=sys.stderr, flush=True)


def read_dataset(enc, path, **options):
    try:
        return corpus.load_dataset(enc, path, **options)
    except corpus.DatasetError as err:
        flags.fail(err, code=1)


@flags.script('Fine-tune GPT-2 on a dataset. The run folder CHECKPOINT_DIR/RUN_NAME is a model folder that the '
            'sampling scripts load.', **FLAGS)
def train_main(dataset=None, model_name='124M', models_dir='models', combine=50000, encoding='utf-8', batch_size=1,
               learning_rate=None, optimizer='adam', adafactor_beta1=None, adafactor_relative_step=False,
               adafactor_scale_parameter=False, lr_schedule='constant', warmup_steps=0, total_steps=None,
               accumulate_gradients=1, memory_saving_gradients=False,
               only_train_transformer_layers=False, noise=0.0, seq_len=None, steps=0, seed=None, run_name='run1',
               checkpoint_dir='checkpoint', restore_from='latest', overwrite=False, save_every=1000,
               max_checkpoints=5, sample_every=100, sample_length=None, sample_num=1, sample_dir='samples', top_k=40,
               top_p=1.0, val_dataset=None, val_every=0, val_batch_size=2, val_batch_count=40, keep_best=False,
               early_stopping=0, devices=1, collective_timeout=300):
    given = dict(locals())
    check_flags(given)
    cluster = distribute.choose(devices, os.environ.get('TF_CONFIG'), collective_timeout)  # None: one device
    chief = cluster is None or cluster.is_chief
    # Everything is checked before anything is written: the model, the flags that depend on it, the data.
    run = RunFolder(checkpoint.resolve_models_dir(checkpoint_dir) / run_name)
    start = choose_start(run, restore_from=restore_from, overwrite=overwrite, model_name=model_name,
                         models_dir=models_dir)
    seq_len, sample_length = check_model_flags(given, start.hparams)
    chunks = read_dataset(start.enc, dataset, combine=combine, encoding=encoding)
    val_chunks = read_dataset(start.enc, val_dataset, combine=combine, encoding=encoding) if val_dataset else None
    if seed is None:
        seed = start.seed if start.seed is not None else int.from_bytes(os.urandom(4), 'little')

    if chief:
        run.start(start.model_dir, discard=restore_from == 'fresh' and overwrite)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        if learning_rate is None:
            learning_rate = None if adafactor_relative_step else DEFAULT_LEARNING_RATE[optimizer]
        build = functools.partial(build_training, start.hparams, batch_size=batch_size, seq_len=seq_len,
                                  optimizer=optimizer, learning_rate=learning_rate,
                                  accumulate_gradients=accumulate_gradients,
                                  only_train_transformer_layers=only_train_transformer_layers,
                                  memory_saving_gradients=memory_saving_gradients, noise=noise, seed=seed,
                                  lr_schedule=lr_schedule, warmup_steps=warmup_steps, total_steps=total_steps,
                                  adafactor_options=adafactor_options(given))
        training = cluster.build(build, batch_size) if cluster else build()
        # Only the chief validates and samples (and saves).
        validation = chief and val_chunks and Validation(start.hparams, val_chunks, seq_len=seq_len,
                                                         batch_size=val_batch_size, batch_count=val_batch_count,
                                                         seed=seed)
        samples = chief and sample_every and Samples(start.hparams, start.enc,
                                                     checkpoint.resolve_models_dir(sample_dir) / run_name,
                                                     length=sample_length, count=sample_num, batch_size=batch_size,
                                                     top_k=top_k, top_p=top_p or 1)
        saver = tf.train.Saver(var_list={v.op.name: v for v in training.saved_vars}, max_to_keep=None)
        run.checkpoint_size = memory.checkpoint_bytes(training.saved_vars)
        if chief:
            report_memory(start.hparams, run, batch_size=batch_size, seq_len=seq_len, optimizer=optimizer,
                          memory_saving_gradients=memory_saving_gradients, accumulate_gradients=accumulate_gradients,
                          only_train_transformer_layers=only_train_transformer_layers,
                          adafactor_beta1=adafactor_beta1)
        best = chief and (keep_best or early_stopping) and Best(run, keep_best=keep_best,
                                                                early_stopping=early_stopping,
                                                                max_checkpoints=max_checkpoints) or None
        with cluster.session(session_config) if cluster else tf.Session(config=session_config()) as sess:
            if cluster:
                training.restore(sess, start.prefix)  # and every replica, every worker, takes the chief's values
            else:
                restore(sess, training, start.prefix)
            seed = int(sess.run(training.seed))  # the chief's, with TF_CONFIG: every worker draws the same batches
            where = f': {batch_size} on each of {cluster.describe()}' if cluster else ''
            print(f'Training {run.path} from {start.prefix} at step {int(sess.run(training.global_step))}, '
                  f'batch {training.batch_size}{where}', flush=True)
            train_loop(sess, training, corpus.Sampler(chunks, seq_len, seed), run if chief else None, saver,
                       steps=steps, save_every=save_every, max_checkpoints=max_checkpoints, sample_every=sample_every,
                       samples=samples, val_every=val_every, validation=validation, best=best)


if __name__ == '__main__':
    runtime.setup_process()
    fire.Fire(train_main, command=flags.check_argv(train_main))
