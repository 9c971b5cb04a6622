"""Learning-rate schedules: the factor the base learning rate is multiplied by at each update, as
transformers' get_constant_schedule_with_warmup, get_linear_schedule_with_warmup and
get_cosine_schedule_with_warmup (half a cosine) define them, except that after total_steps the rate stays 0
(transformers' cosine would rise again).

The factor of an update is a function of the count of updates made before it (global_step, 0 for the first),
which the run's checkpoints hold, so a resumed run goes on with the same rates. As in transformers, with warmup
the first update's factor is 0.
"""
import math

SCHEDULES = ('constant', 'linear', 'cosine')


def factor(name, step, *, warmup_steps=0, total_steps=None):
    """The factor at `step` updates made, in plain Python (floats): the definition the graph's follows."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if name == 'constant':
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if name == 'linear':
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def check(name, warmup_steps, total_steps):
    """ValueError naming the first bad setting."""
    if name not in SCHEDULES:
        raise ValueError(f'--lr_schedule must be one of {", ".join(SCHEDULES)}, got {name!r}')
    if name != 'constant' and total_steps is None:
        raise ValueError(f'--lr_schedule {name} needs --total_steps, the update at which the rate reaches 0')
    if total_steps is not None and total_steps < warmup_steps:
        raise ValueError(f'--total_steps ({total_steps}) must be at least --warmup_steps ({warmup_steps})')


def learning_rate(tf, base, name, global_step, *, warmup_steps=0, total_steps=None):
    """The learning rate of the update about to be made, as a float32 tensor from global_step (int64 []): base
    times factor(...), computed in float64 as in Python. The plain float base for a constant rate without
    warmup, so that default runs build the same graph as before."""
    if name == 'constant' and not warmup_steps:
        return base
    step = tf.cast(global_step, tf.float64)
    warm = step / max(1, warmup_steps)
    if name == 'constant':
        after = tf.constant(1.0, tf.float64)
    else:
        progress = tf.minimum((step - warmup_steps) / max(1, total_steps - warmup_steps), 1.0)
        if name == 'linear':
            after = tf.maximum(1.0 - progress, 0.0)
        else:
            after = tf.maximum(0.5 * (1.0 + tf.cos(math.pi * progress)), 0.0)
    value = tf.where(step < warmup_steps, warm, after)
    return tf.cast(base * value, tf.float32, name='learning_rate')
