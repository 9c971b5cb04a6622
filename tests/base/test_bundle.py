"""gpt2/base/bundle.py reads a checkpoint's tensors from its files as TensorFlow's own reader does."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from gpt2.base import bundle


def test_every_tensor_and_any_block_of_rows_is_tensorflows(tiny_model):
    prefix = str(tiny_model.dir / 'model.ckpt')
    expected = tf.train.load_checkpoint(prefix)
    reader = bundle.Reader(prefix)
    assert set(reader.entries) == set(expected.get_variable_to_shape_map())
    for name in reader.entries:
        value = expected.get_tensor(name)
        rows = value.reshape(value.shape[0], -1)
        np.testing.assert_array_equal(reader.rows(name, 0, len(rows)), rows)
    wte = expected.get_tensor('model/wte')
    np.testing.assert_array_equal(reader.rows('model/wte', 3, 11), wte[3:11])


def test_what_it_does_not_read_is_a_bundle_error(tiny_model, tmp_path):
    prefix = str(tiny_model.dir / 'model.ckpt')
    with pytest.raises(bundle.BundleError, match='not a whole float32 tensor'):
        bundle.Reader(prefix).rows('model/nothing', 0, 1)
    index = (tiny_model.dir / 'model.ckpt.index').read_bytes()
    footer = index[-bundle.FOOTER_BYTES:]
    _, i = bundle.varint(footer, bundle.varint(footer, 0)[1])  # the metaindex block's handle
    offset, i = bundle.varint(footer, i)  # the index block's: its trailer's first byte says compressed
    size, _ = bundle.varint(footer, i)
    (tmp_path / 'x.index').write_bytes(index[:offset + size] + b'\x01' + index[offset + size + 1:])
    with pytest.raises(bundle.BundleError, match='compressed'):
        bundle.Reader(str(tmp_path / 'x'))
