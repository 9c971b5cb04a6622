"""A TensorFlow checkpoint's float32 tensors read in slices of rows from its files, without TensorFlow.

TensorFlow's own restore (RestoreV2) reads a whole tensor even when asked for a slice of it, into memory that
its allocator then keeps for later tensors: restoring wte to quantize it (gpt2/sampling/int8.py) would cost the
process 154 MB for 124M and 321 MB for 1558M for good. Here the tensor's bytes are read from the data file a
block of rows at a time, so only that block is ever in memory.

The format: `<prefix>.index` is a table of the LevelDB kind (Google's sorted string table): data blocks of
prefix-compressed entries, an index block of handles to them, a 48-byte footer with the index block's handle.
Each entry maps a tensor's name to a BundleEntryProto (dtype, shape, shard, offset, size), the entry '' to the
BundleHeaderProto (how many shards). The tensor's bytes are at that offset of `<prefix>.data-SSSSS-of-NNNNN`,
little-endian, row-major. Anything else (a compressed block, a sliced tensor) is a BundleError, and the caller
restores with TensorFlow instead.
"""
import struct

import numpy as np

FOOTER_BYTES = 48
FLOAT32 = 1  # tensorflow.DataType.DT_FLOAT


class BundleError(ValueError):
    """A checkpoint this reader does not handle."""


def varint(data, i):
    """The unsigned LEB128 integer at data[i:] -> (its value, the index after it)."""
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7f) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def block_entries(data, offset, size):
    """The (key, value) pairs of the table block at data[offset:offset + size]."""
    if data[offset + size] != 0:  # the block's trailer: 0 for no compression
        raise BundleError('compressed index block')
    block = data[offset:offset + size]
    restarts = struct.unpack('<I', block[-4:])[0]
    end, i, key = len(block) - 4 * (restarts + 1), 0, b''
    while i < end:
        shared, i = varint(block, i)
        unshared, i = varint(block, i)
        length, i = varint(block, i)
        key = key[:shared] + block[i:i + unshared]
        i += unshared
        yield key, block[i:i + length]
        i += length


def entries(prefix):
    """The checkpoint at prefix -> (number of shards, {tensor name: BundleEntryProto})."""
    from tensorflow.core.protobuf import tensor_bundle_pb2  # imported when needed: it loads TensorFlow
    with open(f'{prefix}.index', 'rb') as file:
        data = file.read()
    footer = data[-FOOTER_BYTES:]
    _, i = varint(footer, varint(footer, 0)[1])  # the metaindex block's handle, unused
    index_offset, i = varint(footer, i)
    index_size, _ = varint(footer, i)
    found, shards = {}, 1
    for _, handle in block_entries(data, index_offset, index_size):
        offset, i = varint(handle, 0)
        for key, value in block_entries(data, offset, varint(handle, i)[0]):
            if key == b'':
                shards = tensor_bundle_pb2.BundleHeaderProto.FromString(value).num_shards
            else:
                found[key.decode()] = tensor_bundle_pb2.BundleEntryProto.FromString(value)
    return shards, found


class Reader:
    """Rows of a checkpoint's float32 matrices, each block read from the file on its own."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.shards, self.entries = entries(prefix)

    def rows(self, name, start, stop):
        """Rows start .. stop - 1 of the float32 tensor `name`, seen as [rows, -1] -> a float32 array (a copy)."""
        entry = self.entries.get(name)
        if entry is None or entry.dtype != FLOAT32 or entry.slices:
            raise BundleError(f'{name}: not a whole float32 tensor in {self.prefix}')
        dims = [d.size for d in entry.shape.dim]
        width = int(np.prod(dims[1:]))
        if int(np.prod(dims)) * 4 != entry.size:
            raise BundleError(f'{name}: {entry.size} bytes for the shape {dims}')
        with open(f'{self.prefix}.data-{entry.shard_id:05d}-of-{self.shards:05d}', 'rb') as file:
            file.seek(entry.offset + 4 * width * start)
            block = np.fromfile(file, dtype='<f4', count=(stop - start) * width)
        return block.astype(np.float32, copy=False).reshape(stop - start, width)
