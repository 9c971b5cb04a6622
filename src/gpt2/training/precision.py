"""Mixed-precision training (train.py --mixed_precision): the variables and the optimizer's state stay float32 (the
checkpoints are the same as a float32 run's), the model computes its products and activations in half precision
(model.model's dtype), and with float16 the loss is scaled so that small gradients do not underflow.

Dynamic loss scaling (as Keras' LossScaleOptimizer and PyTorch's GradScaler do it): the loss is multiplied by a
scale before the gradients are taken and the gradients divided by it after; a step whose gradients are not all
finite is skipped (no variable, optimizer slot or global_step changes) and halves the scale, and the scale doubles
after GROWTH_STEPS good steps in a row. bfloat16 has float32's exponent range and needs none of this.
"""
import dataclasses

import tensorflow.compat.v1 as tf

PRECISIONS = {'bfloat16': tf.bfloat16, 'float16': tf.float16}  # --mixed_precision's values -> the compute dtype
INITIAL_SCALE = 2.0 ** 15  # Keras' starting scale: the first few steps find the right one by halving
GROWTH_STEPS = 2000  # good steps in a row before the scale doubles (Keras' and PyTorch's default)


def compute_dtype(mixed_precision):
    """--mixed_precision (None, 'bfloat16' or 'float16') -> the dtype of the model's activations and products."""
    return PRECISIONS[mixed_precision] if mixed_precision else tf.float32


def unsupported(mixed_precision, *, gpu, cpu_bfloat16):
    """Why this machine cannot train in mixed_precision, in a sentence, or None when it can. gpu: a GPU is
    visible; cpu_bfloat16: the CPU multiplies bfloat16 in hardware (gpt2/base/system.py's cpu_has_bfloat16)."""
    if mixed_precision == 'float16' and not gpu:
        return ('--mixed_precision float16 needs a GPU: a CPU has no fast float16 products (on a CPU with '
                'AVX512_BF16 or AMX, use --mixed_precision bfloat16)')
    if mixed_precision == 'bfloat16' and not gpu and not cpu_bfloat16:
        return ('--mixed_precision bfloat16 needs a GPU or a CPU with bfloat16 instructions (AVX512_BF16 or AMX); '
                'this CPU has neither, and emulated bfloat16 products are slower than float32\'s')
    return None


def recast_linear(x, w, b):
    """model.linear for half-precision x [rows, k] and float32 w [k, n], b [n] -> [rows, n] in x's dtype, whose
    backward pass casts w again once the gradient is there, instead of holding the forward pass's half-precision
    copy of every weight from one pass to the other (0.17 GB at 124M)."""
    @tf.custom_gradient
    def product(x, w):
        def grad(dy):
            with tf.control_dependencies([dy]):
                again = tf.cast(w, dy.dtype)
            return tf.matmul(dy, again, transpose_b=True), tf.cast(tf.matmul(x, dy, transpose_a=True), w.dtype)
        return tf.matmul(x, tf.cast(w, x.dtype)), grad
    return product(x, w) + tf.cast(b, x.dtype)


@dataclasses.dataclass
class LossScale:
    """The loss scale of a float16 run: its variables, saved with the checkpoints so that a resumed run goes on
    with the same scale, and the ops that use and update it. Build with LossScale.build."""
    scale: tf.Variable  # float32 []: what the loss is multiplied by
    good_steps: tf.Variable  # int64 []: finite steps since the scale last changed
    skipped: tf.Variable  # int64 []: steps skipped for a non-finite gradient, over the whole run
    growth_steps: int

    @classmethod
    def build(cls, growth_steps=GROWTH_STEPS, initial=INITIAL_SCALE):
        """The variables, in the current variable scope (resource variables, not trained)."""
        def variable(name, dtype, value):
            return tf.get_variable(name, [], dtype, initializer=tf.constant_initializer(value), trainable=False)
        return cls(variable('loss_scale', tf.float32, initial), variable('loss_scale_good_steps', tf.int64, 0),
                   variable('skipped_steps', tf.int64, 0), growth_steps)

    def scaled(self, loss):
        """loss [] -> loss times the scale, whose gradients are the scale times loss's."""
        return loss * tf.cast(self.scale, loss.dtype)

    def apply(self, apply_gradients, grads_and_vars, divisor=1.0):
        """-> an op that divides the gradients of the scaled loss by the scale (and by divisor), and if every one
        is finite runs apply_gradients(those (gradient, variable) pairs), else skips it; then updates the scale."""
        inverse = 1.0 / (tf.cast(divisor, tf.float32) * self.scale)
        grads = [(tf.convert_to_tensor(g) * inverse, v) for g, v in grads_and_vars]
        finite = tf.reduce_all([tf.reduce_all(tf.is_finite(g)) for g, _ in grads])
        step = tf.cond(finite, lambda: tf.group(apply_gradients(grads)), tf.no_op)
        with tf.control_dependencies([step]):
            return self.update(finite)

    def update(self, finite):
        """finite: bool [] -> the op that updates the scale after a step: halved (and the step counted as
        skipped) when it was not finite, doubled after growth_steps finite steps in a row."""
        good = tf.where(finite, self.good_steps + 1, tf.zeros_like(self.good_steps))
        grow = good >= self.growth_steps
        scale = tf.where(finite, tf.where(grow, self.scale * 2, self.scale), self.scale / 2)
        return tf.group(self.scale.assign(scale),
                        self.good_steps.assign(tf.where(grow, tf.zeros_like(good), good)),
                        self.skipped.assign_add(tf.cast(tf.logical_not(finite), tf.int64)))
