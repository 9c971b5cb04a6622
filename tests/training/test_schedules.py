"""src/gpt2/training/schedules.py: the factors at hand-checkable steps, and the graph's rate at those steps."""
import math

import pytest
import tensorflow.compat.v1 as tf

from gpt2.training import schedules

tf.disable_v2_behavior()

# (schedule, warmup, total, step, factor), worked out by hand: warmup 10 then 100 steps of decay to step 110.
CASES = [
    ('constant', 0, None, 0, 1.0), ('constant', 0, None, 10**6, 1.0),
    ('constant', 10, None, 0, 0.0), ('constant', 10, None, 4, 0.4), ('constant', 10, None, 10, 1.0),
    ('constant', 10, None, 500, 1.0),
    ('linear', 10, 110, 0, 0.0), ('linear', 10, 110, 5, 0.5), ('linear', 10, 110, 10, 1.0),
    ('linear', 10, 110, 35, 0.75), ('linear', 10, 110, 60, 0.5), ('linear', 10, 110, 110, 0.0),
    ('linear', 10, 110, 200, 0.0), ('linear', 0, 4, 0, 1.0), ('linear', 0, 4, 3, 0.25),
    ('cosine', 10, 110, 5, 0.5), ('cosine', 10, 110, 10, 1.0), ('cosine', 10, 110, 60, 0.5),
    ('cosine', 10, 110, 35, (1 + math.sqrt(0.5)) / 2), ('cosine', 10, 110, 85, (1 - math.sqrt(0.5)) / 2),
    ('cosine', 10, 110, 110, 0.0), ('cosine', 10, 110, 300, 0.0),
]


@pytest.mark.parametrize('name, warmup, total, step, want', CASES)
def test_factor_at_known_steps(name, warmup, total, step, want):
    assert schedules.factor(name, step, warmup_steps=warmup, total_steps=total) == pytest.approx(want, abs=1e-12)


def test_the_graph_gives_the_same_rates_at_every_known_step():
    base = 3e-4
    with tf.Graph().as_default(), tf.Session() as sess:
        step = tf.placeholder(tf.int64, [])
        rates = {(name, warmup, total): schedules.learning_rate(tf, base, name, step, warmup_steps=warmup,
                                                                total_steps=total)
                 for name, warmup, total, _, _ in CASES if (name, warmup) != ('constant', 0)}
        for name, warmup, total, at, want in CASES:
            if (name, warmup) == ('constant', 0):
                # The default builds no schedule at all: the plain rate, as before schedules existed.
                assert schedules.learning_rate(tf, base, name, step) == base
                continue
            got = sess.run(rates[name, warmup, total], {step: at})
            assert got == pytest.approx(base * want, rel=1e-6, abs=1e-12), (name, warmup, total, at)


@pytest.mark.parametrize('name, warmup, total, words', [
    ('step', 0, None, ['--lr_schedule', 'constant, linear, cosine']),
    ('linear', 0, None, ['--total_steps']), ('cosine', 20, 10, ['--total_steps', '--warmup_steps']),
])
def test_bad_settings_are_named(name, warmup, total, words):
    with pytest.raises(ValueError) as err:
        schedules.check(name, warmup, total)
    for word in words:
        assert word in str(err.value)
