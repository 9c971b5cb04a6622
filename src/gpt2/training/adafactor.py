"""Adafactor (Shazeer & Stern, 2018) as a tf.compat.v1 optimizer: the update of transformers.optimization.Adafactor,
whose recommended fine-tuning setting (relative_step=False, scale_parameter=False, warmup_init=False) is the
default here.

For each variable, at its t-th update (t from 1), with gradient g:
    beta2_t = 1 - t^-0.8
    a matrix (2 or more axes) keeps the mean of g^2 + eps1 over its last axis (row, shape[:-1]) and over its
    second last (col, shape[:-2] + shape[-1:]), each an exponential average with beta2_t; the second moment
    is estimated as row / mean(row) (over the last axis of row) times col, so a [1, nx, nf] weight needs
    nx + nf numbers instead of nx * nf;
    a vector keeps the average of g^2 + eps1 itself (v);
    u = g / sqrt(second moment), divided by max(1, RMS(u) / clip_threshold);
    u *= lr, where lr is the learning rate, or with relative_step min(1e-2, 1 / sqrt(t)), times max(eps2,
    RMS(weight)) with scale_parameter;
    with beta1, u is replaced by m = beta1 m + (1 - beta1) u;
    weight -= u.
Its state (the slots row, col, v, m and the step count t) lives in resource variables saved in the run's
checkpoints, so a resumed run goes on exactly.
"""
import tensorflow.compat.v1 as tf

EPS1, EPS2 = 1e-30, 1e-3
DECAY_RATE = -0.8
CLIP_THRESHOLD = 1.0
STEP_NAME = 'adafactor_step'


def rms(x):
    return tf.sqrt(tf.reduce_mean(tf.square(x)))


def factored(shape):
    return len(shape) >= 2


class AdafactorOptimizer(tf.train.Optimizer):
    """learning_rate: a float or a scalar tensor (a schedule); ignored with relative_step.
    beta1: None (no first moment, the default) or the first moment's decay, e.g. 0.9."""

    def __init__(self, learning_rate=1e-3, *, beta1=None, relative_step=False, scale_parameter=False,
                 clip_threshold=CLIP_THRESHOLD, eps=(EPS1, EPS2), name='Adafactor'):
        super().__init__(use_locking=False, name=name)
        self._lr = learning_rate
        self._beta1 = beta1
        self._relative_step = relative_step
        self._scale_parameter = scale_parameter
        self._clip_threshold = clip_threshold
        self._eps1, self._eps2 = eps

    def _create_slots(self, var_list):
        first = min(var_list, key=lambda v: v.name)
        self._create_non_slot_variable(initial_value=0.0, name=STEP_NAME, colocate_with=first)
        for v in var_list:
            shape = v.shape.as_list()
            if factored(shape):
                self._get_or_make_slot_with_initializer(v, tf.zeros_initializer(), tf.TensorShape(shape[:-1]),
                                                        v.dtype.base_dtype, 'row', self._name + '_row')
                self._get_or_make_slot_with_initializer(v, tf.zeros_initializer(),
                                                        tf.TensorShape(shape[:-2] + shape[-1:]),
                                                        v.dtype.base_dtype, 'col', self._name + '_col')
            else:
                self._zeros_slot(v, 'v', self._name + '_v')
            if self._beta1 is not None:
                self._zeros_slot(v, 'm', self._name + '_m')

    def _step(self):
        graph = None if tf.executing_eagerly() else tf.get_default_graph()
        return self._get_non_slot_variable(STEP_NAME, graph=graph)

    def _prepare(self):
        # t of this update: the count of updates made, plus one. Read before any update; _finish adds the 1.
        self._t = self._step().read_value() + 1.0
        if not self._relative_step:
            self._lr_t = tf.convert_to_tensor(self._lr, tf.float32, name='learning_rate')

    def _resource_apply_dense(self, grad, var):
        dtype = var.dtype.base_dtype
        t = tf.cast(self._t, dtype)
        beta2 = 1.0 - tf.pow(t, DECAY_RATE)
        updates = []
        # Few temporaries of the variable's size (the embeddings' is 0.3 GB at 1558M): the squares once, the
        # update, and one product at a time. mean(g^2 + eps1) is taken as mean(g^2) + eps1, and the clipping
        # and the rate are one scalar.
        if factored(var.shape.as_list()):
            row, col = self.get_slot(var, 'row'), self.get_slot(var, 'col')
            square = tf.square(grad)
            new_row = beta2 * row + (1.0 - beta2) * (tf.reduce_mean(square, axis=-1) + self._eps1)  # shape[:-1]
            new_col = beta2 * col + (1.0 - beta2) * (tf.reduce_mean(square, axis=-2) + self._eps1)
            updates += [row.assign(new_row), col.assign(new_col)]
            r = tf.math.rsqrt(new_row / tf.reduce_mean(new_row, axis=-1, keepdims=True))[..., tf.newaxis]
            c = tf.math.rsqrt(new_col)[..., tf.newaxis, :]
            u = (grad * r) * c
        else:
            v = self.get_slot(var, 'v')
            new_v = beta2 * v + (1.0 - beta2) * (tf.square(grad) + self._eps1)
            updates.append(v.assign(new_v))
            u = tf.math.rsqrt(new_v) * grad
        u = u * (self._learning_rate(var, t) / tf.maximum(rms(u) / self._clip_threshold, 1.0))
        if self._beta1 is not None:
            m = self.get_slot(var, 'm')
            u = self._beta1 * m + (1.0 - self._beta1) * u
            updates.append(m.assign(u))
        with tf.control_dependencies(updates):
            return tf.group(var.assign_sub(u), *updates)

    def _learning_rate(self, var, t):
        lr = tf.minimum(1e-2, tf.math.rsqrt(t)) if self._relative_step else tf.cast(self._lr_t, var.dtype.base_dtype)
        if self._scale_parameter:
            lr = lr * tf.maximum(self._eps2, rms(var.read_value()))
        return lr

    def _resource_apply_sparse(self, grad, var, indices):
        # The embedding's gradient as rows: Adafactor's row and column means need it whole.
        dense = tf.math.unsorted_segment_sum(grad, indices, tf.shape(var, out_type=indices.dtype)[0])
        return self._resource_apply_dense(dense, var)

    def _finish(self, update_ops, name_scope):
        step = self._step()
        with tf.control_dependencies(update_ops):
            count = step.assign_add(1.0, read_value=False)
        return tf.group(*update_ops, count, name=name_scope)
