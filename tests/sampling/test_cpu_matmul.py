"""The CPU products (src/gpt2/sampling/cpu_matmul.py) against NumPy, the check of the packed kernel, and the memory guard."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from gpt2.sampling import cpu_matmul


def run(fn, *arrays):
    with tf.Graph().as_default(), tf.Session() as sess:
        return sess.run(fn(*(tf.constant(a) for a in arrays)))


def operands(rows, k, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32),
            rng.standard_normal(n).astype(np.float32))


@pytest.mark.parametrize('n, parts, expected', [(10, 2, [5, 5]), (7, 3, [3, 2, 2]), (2, 3, [1, 1, 0])])
def test_sizes_are_near_equal_parts(n, parts, expected):
    assert cpu_matmul.sizes(n, parts) == expected


@pytest.mark.parametrize('splits', [1, 2, 3])
@pytest.mark.parametrize('packed', [False, True])
@pytest.mark.parametrize('one_token', [True, False, 'tensor true', 'tensor false'])
def test_linear_equals_numpy(splits, packed, one_token):
    """Every product a step can take: split in uneven parts, packed or not, chosen when built or when run."""
    plan = cpu_matmul.Products(splits=splits, packed=packed and cpu_matmul.packed_kernel_works())
    x, w, b = operands(3, 7, 5)

    def linear(*args):
        chosen = tf.constant(one_token == 'tensor true') if isinstance(one_token, str) else one_token
        return plan.linear(chosen)(*args)
    np.testing.assert_allclose(run(linear, x, w, b), x @ w + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('splits', [1, 2, 3])
@pytest.mark.parametrize('packed', [False, True])
def test_logits_equal_numpy(splits, packed):
    packed = packed and cpu_matmul.packed_kernel_works()
    h, wte, _ = operands(4, 6, 11, seed=1)
    wte = wte.T.copy()  # [n_vocab, n_embd]
    got = run(cpu_matmul.Products(splits=splits, packed=packed).logits, h, wte)
    np.testing.assert_allclose(got, h @ wte.T, rtol=1e-5, atol=1e-5)


def test_packed_kernel_on_x86_builds():
    """TensorFlow's x86 builds have oneDNN's fused MatMul (if a release drops it, this says so first)."""
    if os.uname().machine in ('x86_64', 'AMD64'):
        assert cpu_matmul.packed_kernel_works()


@pytest.mark.parametrize('op', ['NoSuchOpAnywhere', 'MatMul'])
def test_packed_kernel_check_refuses_an_unknown_op_or_one_without_the_onednn_kernel(op):
    assert not cpu_matmul.packed_kernel_works(op)


def test_packed_kernel_check_refuses_a_kernel_that_multiplies_wrong(monkeypatch):
    real = cpu_matmul.packed_matmul
    monkeypatch.setattr(cpu_matmul, 'packed_matmul', lambda *args, **kwargs: real(*args, **kwargs) * 1.01)
    cpu_matmul.packed_kernel_works.cache_clear()
    try:
        assert not cpu_matmul.packed_kernel_works()
    finally:
        cpu_matmul.packed_kernel_works.cache_clear()


@pytest.mark.parametrize('available, room', [(None, True), (10**12, True), (2 * 10**9, False)])
def test_room_for_packed_copy_compares_memory_with_the_weights(monkeypatch, capsys, available, room):
    """1 GB of weights needs room for them and their copy; when there is none, one line on stderr says why."""
    monkeypatch.setattr(cpu_matmul, 'available_memory', lambda: available)
    assert cpu_matmul.room_for_packed_copy(10**9) == room
    err = capsys.readouterr().err.splitlines()
    assert err == [] if room else (len(err) == 1 and err[0].startswith('note: ') and '2.0 GB available' in err[0])
