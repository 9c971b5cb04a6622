"""src/gpt2/training/adafactor.py against a NumPy implementation of the published update (transformers' Adafactor, written out
here from its definition), for weights of a released checkpoint's kinds of shapes."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from gpt2.training import adafactor

tf.disable_v2_behavior()

SHAPES = {'w': (1, 4, 6), 'wte': (5, 3), 'b': (7,)}  # a conv1d weight, a matrix, a vector
EMBEDDED = 'e'  # a [6, 3] matrix read through tf.gather: its gradient arrives as rows (IndexedSlices)
INDICES = np.array([0, 2, 2, 5])


def numpy_adafactor(params, grads_per_step, *, lr, beta1=None, relative_step=False, scale_parameter=False):
    """The update, step by step -> (params after every step, whether each step's update was clipped, per name)."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    state = {k: {} for k in p}
    clipped = []
    for t, grads in enumerate(grads_per_step, start=1):
        clipped.append({})
        for name, g in grads.items():
            g = g.astype(np.float64)
            s = state[name]
            beta2 = 1.0 - t ** -0.8
            sq = g * g + 1e-30
            if g.ndim >= 2:
                s['row'] = beta2 * s.get('row', 0.0) + (1 - beta2) * sq.mean(axis=-1)
                s['col'] = beta2 * s.get('col', 0.0) + (1 - beta2) * sq.mean(axis=-2)
                r = 1 / np.sqrt(s['row'] / s['row'].mean(axis=-1, keepdims=True))
                c = 1 / np.sqrt(s['col'])
                u = r[..., :, None] * c[..., None, :] * g
            else:
                s['v'] = beta2 * s.get('v', 0.0) + (1 - beta2) * sq
                u = g / np.sqrt(s['v'])
            u_rms = np.sqrt(np.mean(u * u))
            clipped[-1][name] = u_rms > 1.0
            u = u / max(1.0, u_rms / 1.0)
            step_lr = min(1e-2, 1 / np.sqrt(t)) if relative_step else lr
            if scale_parameter:
                step_lr *= max(1e-3, np.sqrt(np.mean(p[name] ** 2)))
            u = u * step_lr
            if beta1 is not None:
                s['m'] = beta1 * s.get('m', 0.0) + (1 - beta1) * u
                u = s['m']
            p[name] = p[name] - u
    return p, clipped


def gradient_sequence(steps, rng):
    """Gradients whose scale jumps from step to step, so that some updates are clipped and some are not."""
    scales = [1.0, 0.01, 30.0, 1.0, 0.1, 5.0][:steps]
    grads = []
    for scale in scales:
        step = {k: (scale * rng.standard_normal(shape) * rng.uniform(0.1, 3, shape)).astype(np.float32)
                for k, shape in SHAPES.items()}
        step[EMBEDDED] = (scale * rng.standard_normal((len(INDICES), 3))).astype(np.float32)
        grads.append(step)
    return grads


def dense(grads):
    """The embedded weight's gradient as a whole matrix: its rows' gradients summed into place."""
    out = {k: v for k, v in grads.items() if k != EMBEDDED}
    e = np.zeros((6, 3), np.float32)
    np.add.at(e, INDICES, grads[EMBEDDED])
    out[EMBEDDED] = e
    return out


def run_tf(params, grads_per_step, **options):
    with tf.Graph().as_default(), tf.Session() as sess:
        variables = {k: tf.get_variable(k, initializer=v, use_resource=True) for k, v in params.items()}
        feeds = {k: tf.placeholder(tf.float32, SHAPES.get(k, (len(INDICES), 3))) for k in params}
        # A loss whose gradient for each weight is its placeholder's value.
        loss = tf.add_n([tf.reduce_sum(variables[k] * feeds[k]) for k in SHAPES]
                        + [tf.reduce_sum(tf.gather(variables[EMBEDDED], INDICES) * feeds[EMBEDDED])])
        opt = adafactor.AdafactorOptimizer(**options)
        train_op = opt.minimize(loss, var_list=list(variables.values()))
        sess.run(tf.global_variables_initializer())
        for grads in grads_per_step:
            sess.run(train_op, {feeds[k]: v for k, v in grads.items()})
        slots = {v.op.name for v in tf.global_variables()} - set(params)
        return sess.run(variables), slots


@pytest.mark.parametrize('options', [
    dict(learning_rate=1e-3),
    dict(learning_rate=0.05, beta1=0.9),
    dict(learning_rate=None, relative_step=True, scale_parameter=True),
])
def test_several_steps_equal_the_published_update(options):
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in SHAPES.items()}
    params[EMBEDDED] = rng.standard_normal((6, 3)).astype(np.float32)
    grads = gradient_sequence(6, rng)
    lr = options.get('learning_rate')
    want, clipped = numpy_adafactor(params, [dense(g) for g in grads], lr=lr,
                                    **{k: v for k, v in options.items() if k != 'learning_rate'})
    got, slots = run_tf(params, grads, **{k: v for k, v in options.items() if v is not None})
    for name in params:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=1e-6, err_msg=name)
        assert not np.allclose(got[name], params[name]), name  # it moved
    # Both sides of the clip are exercised, for a factored and an unfactored weight.
    for name in ('w', 'b'):
        assert {c[name] for c in clipped} == {True, False}, name
    # Factored weights keep a row and a column, a vector keeps all of its second moment.
    assert {'w/Adafactor_row', 'w/Adafactor_col', 'wte/Adafactor_row', 'b/Adafactor_v'} <= slots
    assert not any(s.startswith('w/') and s.endswith('_v') for s in slots)
    assert any(s.endswith('_m') for s in slots) == ('beta1' in options)


def test_the_factored_state_has_the_shapes_of_a_row_and_a_column():
    with tf.Graph().as_default():
        w = tf.get_variable('w', [1, 1280, 5120], use_resource=True)
        opt = adafactor.AdafactorOptimizer(1e-3)
        opt.minimize(tf.reduce_sum(w), var_list=[w])
        assert opt.get_slot(w, 'row').shape.as_list() == [1, 1280]
        assert opt.get_slot(w, 'col').shape.as_list() == [1, 5120]
        assert {type(v).__name__ for v in tf.global_variables()} == {'ResourceVariable'}
