"""The training graph: the model and the ops of one training step (build_training, which the benchmark and the
distributed step use too), the validation loss on the same variables, and the session's settings."""
import dataclasses
import re

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

import model
from gpt2.training import adafactor
from gpt2.training import losses
from gpt2.training import precision
from gpt2.training import schedules

OPTIMIZERS = ('adam', 'sgd', 'adafactor')  # what make_optimizer makes
# The variables --only_train_transformer_layers trains: the blocks', not the embeddings' or ln_f's.
TRANSFORMER_LAYER = re.compile(r'^model/h\d+/')


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
    # int64 [] variable with float16's loss scaling (precision.LossScale): steps skipped for a non-finite
    # gradient, which global_step does not count; else None
    skipped: tf.Variable = None

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
                   count_all=None, rows=None, mixed_precision=None, loss_scale_growth=precision.GROWTH_STEPS):
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
    (gpt2/training/distribute.py); each replica's loss is then its summed loss over that, so that the replicas'
    gradients, which the optimizer sums, add up to the gradient of the mean over every replica's targets. None: one
    device. rows (first, total): under tf.distribute, this replica's rows among all replicas' (for the noise).
    mixed_precision: None (float32), 'bfloat16' or 'float16': the model's products and activations in that dtype,
    the variables and optimizer state float32 (gpt2/training/precision.py); float16 scales the loss
    (loss_scale_growth: good steps before its scale doubles) and skips a step whose gradient is not finite,
    holding all gradients until they are checked (so --memory_saving_gradients is not lean with it), on one
    device only.
    start.restore() initialises and restores the variables.
    """
    if not 1 <= seq_len <= hparams.n_ctx:
        raise ValueError(f'seq_len must be from 1 to n_ctx ({hparams.n_ctx}), got {seq_len}')
    tokens = tf.placeholder(tf.int32, [batch_size, None], name='tokens')
    lengths = tf.placeholder(tf.int32, [batch_size], name='lengths')
    micro_batch = tf.placeholder_with_default(tf.constant(0, tf.int32), [], name='micro_batch')
    if mixed_precision == 'float16' and count_all is not None:
        raise ValueError('float16 loss scaling is for one device, not tf.distribute')
    count_all = count_all or (lambda count: count)
    with tf.variable_scope(tf.get_variable_scope(), use_resource=True):
        global_step = tf.get_variable('global_step', [], tf.int64, initializer=tf.zeros_initializer(),
                                      trainable=False)
        seed_var = tf.get_variable('train_seed', [], tf.int64, initializer=tf.constant_initializer(seed),
                                   trainable=False)
        key = tf.stack([seed_var, global_step * accumulate_gradients + tf.cast(micro_batch, tf.int64)])
        inputs = with_noise(tokens, noise, hparams.n_vocab, key, rows)
        loss_sum, target_count = summed_loss(hparams, inputs, tokens, lengths, memory_saving_gradients,
                                             precision.compute_dtype(mixed_precision))
        scaling = precision.LossScale.build(loss_scale_growth) if mixed_precision == 'float16' else None
        loss = loss_sum / count_all(target_count)

        model_vars = [v for v in tf.global_variables() if v.name.startswith('model/')]
        train_vars = [v for v in model_vars if TRANSFORMER_LAYER.match(v.name) or not only_train_transformer_layers]
        rate = schedules.learning_rate(tf, learning_rate, lr_schedule, global_step, warmup_steps=warmup_steps,
                                       total_steps=total_steps)
        opt = make_optimizer(optimizer, rate, adafactor_options)
        if accumulate_gradients == 1:
            accumulate_op, accumulators = None, []
            train_op = updating(opt, loss, train_vars, global_step, memory_saving_gradients, scaling)
        else:
            accumulate_op, train_op, accumulators = accumulating(opt, loss_sum, target_count, train_vars, global_step,
                                                                 count_all, scaling)
    saved = [v for v in tf.global_variables() if not any(v is a for a in accumulators)]
    return Training(tokens=tokens, lengths=lengths, loss=loss, loss_sum=loss_sum, target_count=target_count,
                    train_op=train_op, accumulate_op=accumulate_op, micro_batch=micro_batch, global_step=global_step,
                    seed=seed_var, train_vars=train_vars, model_vars=model_vars, saved_vars=saved,
                    accumulate_gradients=accumulate_gradients, learning_rate=rate,
                    skipped=scaling.skipped if scaling else None)


def summed_loss(hparams, inputs, tokens, lengths, memory_saving_gradients, dtype=tf.float32):
    """The model on inputs [batch, seq] (the tokens, with noise), its activations in dtype -> (the cross-entropy,
    in float32, of its predictions of tokens [batch, seq] summed over the real targets [], their count [])."""
    half = dtype != tf.float32 and not memory_saving_gradients  # recomputed blocks hold no copies anyway
    output = model.model(hparams, inputs, recompute=memory_saving_gradients, dtype=dtype,
                         linear=precision.recast_linear if half else model.linear)
    if memory_saving_gradients:
        # By name, not from tf.global_variables(): under tf.distribute a replica's copy is not listed there.
        with tf.variable_scope('model', reuse=True):
            wte = tf.get_variable('wte')
        per_token, real = losses.chunked_token_losses(output['h'], wte, tokens, lengths)
    else:
        per_token, real = losses.token_losses(output['logits'], tokens, lengths)
    return tf.reduce_sum(per_token * real), tf.reduce_sum(real)


def updating(opt, loss, train_vars, global_step, memory_saving_gradients, scaling=None):
    """-> train_op: one update of train_vars from the gradient of loss; with recompute, block by block as each
    block's gradients are done (layer_by_layer). scaling: a precision.LossScale, whose finiteness check needs
    every gradient before any update."""
    if scaling is not None:
        grads = opt.compute_gradients(scaling.scaled(loss), train_vars)
        return scaling.apply(lambda unscaled: opt.apply_gradients(unscaled, global_step=global_step), grads)
    grads = opt.compute_gradients(loss, train_vars)
    if memory_saving_gradients:
        grads = layer_by_layer(grads)
    return opt.apply_gradients(grads, global_step=global_step)


def session_config(proto=None):
    """The training session's settings (proto: a ConfigProto to change, e.g. tf.distribute's): grappler's
    constant folding off. With it on, 774M with Adam and --memory_saving_gradients peaked at 15.7 GB against
    12.4 GB off, as fast (bench/bench_train.py, docs/memory.md); the folding happens when the step's graph is
    first optimised, and what it leaves behind stays resident."""
    proto = proto if proto is not None else tf.ConfigProto()
    proto.graph_options.rewrite_options.constant_folding = rewriter_config_pb2.RewriterConfig.OFF
    return proto


def layer_by_layer(grads_and_vars):
    """The gradients of each transformer block available together, once all of that block's are computed, so that
    the optimizer updates a block, and frees its gradients, as soon as its backward pass is done, instead of
    holding all of them (3.1 GB at 774M) until the last is made. That is soon enough and not too
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


def accumulating(opt, loss_sum, target_count, train_vars, global_step, count_all, scaling=None):
    """-> (accumulate_op, train_op, accumulators): accumulate_op adds the gradients of loss_sum and target_count
    to accumulators; train_op applies (summed gradients / summed count, of all replicas), then zeroes them.
    scaling: a precision.LossScale; the sums are then of the scaled loss's gradients."""
    # ON_READ: under tf.distribute each replica keeps its own sums (a plain variable's replicas would silently
    # diverge); on one device it changes nothing.
    local = dict(initializer=tf.zeros_initializer(), trainable=False,
                 synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.SUM)
    with tf.variable_scope('accumulate'):
        # v.name, not v.op.name: in a replica beyond the first, the op is its copy's ('model/wte/replica_1').
        sums = [tf.get_variable(v.name.split(':')[0], v.shape, v.dtype, **local) for v in train_vars]
        count = tf.get_variable('target_count', [], target_count.dtype, **local)
    grads = opt.compute_gradients(scaling.scaled(loss_sum) if scaling else loss_sum, train_vars)
    accumulate_op = tf.group([s.assign_add(tf.convert_to_tensor(g)) for s, (g, _) in zip(sums, grads)]
                             + [count.assign_add(target_count)])
    total = count_all(count.read_value())
    if scaling is not None:
        apply_op = scaling.apply(lambda mean: opt.apply_gradients(mean, global_step=global_step),
                                 [(s.read_value(), v) for s, v in zip(sums, train_vars)], divisor=total)
    else:
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
    per_token, real = losses.token_losses(logits, tokens, lengths)
    return tokens, lengths, tf.reduce_sum(per_token * real), tf.reduce_sum(real)
