"""gpt2.base.atomic: a file or folder appears whole under its name, or not at all."""
import pytest

from gpt2.base import atomic


def test_a_file_appears_only_when_complete_and_replaces_the_old_one(tmp_path):
    path = tmp_path / 'out.json'
    path.write_text('old')
    with atomic.atomic_file(path) as f:
        f.write('new')
        assert path.read_text() == 'old'  # the reader still sees the old file while the new one is written
    assert path.read_text() == 'new'
    assert [p.name for p in tmp_path.iterdir()] == ['out.json']


def test_an_error_while_writing_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / 'out.bin'
    path.write_bytes(b'old')
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_file(path, 'wb', sync=True) as f:
            f.write(b'half')
            raise KeyboardInterrupt
    assert path.read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['out.bin']


def test_a_folder_appears_only_when_complete(tmp_path):
    out = tmp_path / 'model'
    with atomic.atomic_folder(out, overwrite=False) as folder:
        (folder / 'a').write_text('x')
        assert not out.exists()
    assert (out / 'a').read_text() == 'x'
    with pytest.raises(RuntimeError):
        with atomic.atomic_folder(out, overwrite=True) as folder:
            (folder / 'a').write_text('y')
            raise RuntimeError
    assert (out / 'a').read_text() == 'x'
    assert [p.name for p in tmp_path.iterdir()] == ['model']
