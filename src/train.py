#!/usr/bin/env python3
"""Fine-tune GPT-2 on a text dataset; the run folder it writes is a model folder the sampling scripts load.

Sections: the training graph (build_training, which the benchmark uses too), then the run folder (checkpoints
that survive a crash at any moment), then the training loop and its command line.
"""
import cli  # first: it quiets TensorFlow's start-up logging before TensorFlow loads

import dataclasses
import re

import numpy as np
import tensorflow.compat.v1 as tf

import model

OPTIMIZERS = ('adam', 'sgd')
# The variables --only_train_transformer_layers trains: the blocks', not the embeddings' or ln_f's.
TRANSFORMER_LAYER = re.compile(r'^model/h\d+/')


# ---------------------------------------------------------------------------------------------------------------
# The training graph
# ---------------------------------------------------------------------------------------------------------------

def token_losses(logits, tokens, lengths):
    """logits [batch, seq, n_vocab], tokens [batch, seq], lengths [batch]
    -> cross-entropy of each next token [batch, seq - 1], and where it counts [batch, seq - 1] (1.0, or 0.0 for
    a target in a row's padding, at a position >= its length)."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens[:, 1:], logits=logits[:, :-1])
    target_positions = tf.range(1, tf.shape(tokens)[1])  # the position of each target in its row
    real = tf.cast(target_positions[tf.newaxis, :] < lengths[:, tf.newaxis], losses.dtype)
    return losses, real


def with_noise(tokens, p, n_vocab, key):
    """[batch, seq] -> the same, each token replaced by a uniformly random one with probability p, as a
    regulariser (nshepperd's --noise). The draw is stateless, keyed by key [2], so a resumed run draws the
    same noise as one that never stopped."""
    if not p:
        return tokens
    shape = tf.shape(tokens)
    replace = tf.random.stateless_uniform(shape, seed=key) < p
    random_tokens = tf.random.stateless_uniform(shape, seed=key + [0, 1 << 40], minval=0, maxval=n_vocab,
                                                dtype=tf.int64)
    return tf.where(replace, tf.cast(random_tokens, tokens.dtype), tokens)


def make_optimizer(name, learning_rate):
    if name == 'adam':
        return tf.train.AdamOptimizer(learning_rate)
    if name == 'sgd':
        return tf.train.GradientDescentOptimizer(learning_rate)
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
    train_vars: list  # the variables the optimizer changes
    model_vars: list  # every model variable (the released checkpoint's)
    saved_vars: list  # what a run checkpoint holds: model, optimizer state and global_step
    accumulate_gradients: int

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
                   only_train_transformer_layers=False, memory_saving_gradients=False, noise=0.0, seed=0):
    """Build, in the default graph, the model and the ops of one training step -> Training.

    The model's variables are resource variables with the released names (model/h0/attn/c_attn/w, ...), so the
    base checkpoint restores into them and the sampling scripts load the run's checkpoints. Resource variables
    also make an update wait for every read of the old value (a reference variable could change under a
    gradient still being computed from it).

    hparams: model.HParams. batch_size: rows per micro-batch. seq_len: the longest row that will be fed (at most
    hparams.n_ctx); shorter rows are padded, and lengths says where each row's tokens end.
    optimizer: 'adam' or 'sgd', at learning_rate.
    The loss is the mean cross-entropy of logits[:, :-1] against tokens[:, 1:] over the real (unpadded) targets:
    without padding, exactly the original's mean over the window.
    accumulate_gradients N: one update from N micro-batches, the gradient of their summed loss divided by their
    number of real targets: the same update as one batch of N times the rows.
    only_train_transformer_layers: the embeddings (wte, wpe) and ln_f stay as they are.
    memory_saving_gradients: recompute each block's activations in the backward pass (model.model(recompute=True)).
    noise p: each input token (not target) replaced at random with probability p, keyed by (seed, step,
    micro-batch), so a resumed run draws the same noise.
    Initialise with tf.global_variables_initializer() before restoring.
    """
    if not 1 <= seq_len <= hparams.n_ctx:
        raise ValueError(f'seq_len must be from 1 to n_ctx ({hparams.n_ctx}), got {seq_len}')
    tokens = tf.placeholder(tf.int32, [batch_size, None], name='tokens')
    lengths = tf.placeholder(tf.int32, [batch_size], name='lengths')
    micro_batch = tf.placeholder_with_default(tf.constant(0, tf.int32), [], name='micro_batch')
    with tf.variable_scope(tf.get_variable_scope(), use_resource=True):
        global_step = tf.get_variable('global_step', [], tf.int64, initializer=tf.zeros_initializer(),
                                      trainable=False)
        key = tf.stack([tf.constant(seed, tf.int64),
                        global_step * accumulate_gradients + tf.cast(micro_batch, tf.int64)])
        inputs = with_noise(tokens, noise, hparams.n_vocab, key)
        logits = model.model(hparams, inputs, recompute=memory_saving_gradients)['logits']
        losses, real = token_losses(logits, tokens, lengths)
        loss_sum = tf.reduce_sum(losses * real)
        target_count = tf.reduce_sum(real)
        loss = loss_sum / target_count

        model_vars = [v for v in tf.global_variables() if v.name.startswith('model/')]
        train_vars = [v for v in model_vars if TRANSFORMER_LAYER.match(v.name) or not only_train_transformer_layers]
        opt = make_optimizer(optimizer, learning_rate)
        if accumulate_gradients == 1:
            grads = opt.compute_gradients(loss, train_vars)
            accumulate_op, accumulators = None, []
            if memory_saving_gradients:
                grads = after_all(grads)
            train_op = opt.apply_gradients(grads, global_step=global_step)
        else:
            accumulate_op, train_op, accumulators = accumulating(opt, loss_sum, target_count, train_vars, global_step)
    saved = [v for v in tf.global_variables() if not any(v is a for a in accumulators)]
    return Training(tokens=tokens, lengths=lengths, loss=loss, loss_sum=loss_sum, target_count=target_count,
                    train_op=train_op, accumulate_op=accumulate_op, micro_batch=micro_batch,
                    global_step=global_step, train_vars=train_vars, model_vars=model_vars, saved_vars=saved,
                    accumulate_gradients=accumulate_gradients)


def after_all(grads_and_vars):
    """The gradients, each available only once all are computed. With recompute, the backward pass reads the
    weights again; without this, a weight could be updated before a recomputation still to come has read it."""
    grads = tf.tuple([g for g, _ in grads_and_vars])
    return [(g, v) for g, (_, v) in zip(grads, grads_and_vars)]


def accumulating(opt, loss_sum, target_count, train_vars, global_step):
    """-> (accumulate_op, train_op, accumulators): accumulate_op adds the gradients of loss_sum and target_count
    to accumulators; train_op applies (summed gradients / summed count), then zeroes them."""
    with tf.variable_scope('accumulate'):
        sums = [tf.get_variable(v.op.name, v.shape, v.dtype, initializer=tf.zeros_initializer(), trainable=False)
                for v in train_vars]
        count = tf.get_variable('target_count', [], tf.float32, initializer=tf.zeros_initializer(), trainable=False)
    grads = opt.compute_gradients(loss_sum, train_vars)
    accumulate_op = tf.group([s.assign_add(tf.convert_to_tensor(g)) for s, (g, _) in zip(sums, grads)]
                             + [count.assign_add(target_count)])
    mean = [(s.read_value() / count.read_value(), v) for s, v in zip(sums, train_vars)]
    apply_op = opt.apply_gradients(mean, global_step=global_step)
    with tf.control_dependencies([apply_op]):
        train_op = tf.group([s.assign(tf.zeros_like(s)) for s in sums] + [count.assign(0.0)])
    return accumulate_op, train_op, sums + [count]
