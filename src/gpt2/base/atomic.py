"""Writing a file or a folder all at once: under a temporary name beside its real one, renamed when complete, so
that a reader never finds a half-written file or model under the real name, and an interrupted write leaves the
old one (or nothing) in place."""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from gpt2.base import checkpoint
from gpt2.base import flags


@contextlib.contextmanager
def atomic_file(path, mode='w', *, encoding='utf-8', sync=False):
    """Yield a file open for writing at PATH.part (checkpoint.PARTIAL_SUFFIX) beside path; when the block ends
    without an error, close it (and flush it to the disk with sync, for files a crash must not lose) and rename
    it to path, replacing any old one at once; otherwise remove it (Ctrl-C included). mode: 'w' or 'wb'."""
    path = Path(path)
    partial = path.with_name(path.name + checkpoint.PARTIAL_SUFFIX)
    try:
        with open(partial, mode, encoding=None if 'b' in mode else encoding) as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(out_folder, overwrite):
    """Yield a new empty folder beside out_folder; rename it to out_folder when the block ends without an error,
    remove it otherwise (Ctrl-C included)."""
    out = Path(out_folder)
    if out.exists() and not overwrite:
        raise checkpoint.ModelError(f'{out} exists; give a new OUT_FOLDER, or --overwrite to replace it')
    if out.exists() and not out.is_dir():
        raise checkpoint.ModelError(f'{out} is a file, not a folder; give another OUT_FOLDER')
    out.parent.mkdir(parents=True, exist_ok=True)
    # In the same parent, so the rename is atomic; hidden, so a half-written folder never looks like a model.
    temporary = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.partial', dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o777 & ~umask)  # mkdtemp makes it private; the folder should be like any other
    try:
        yield temporary
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.old', dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(temporary, out)
            shutil.rmtree(old)
        else:
            os.replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


# The folder flags of convert.py and export.py.

def existing_folder(name, value):
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise flags.UsageError(f'{name.upper()} must be a folder, got {value!r}')
    path = Path(value).expanduser()
    if not path.is_dir():
        raise checkpoint.ModelError(f'{name.upper()} {path} is not a folder')
    return path


def out_path(value):
    """The folder to write: a relative path is taken from the working directory, as any command-line tool takes
    it, never from the repository (checkpoint.resolve_models_dir's fallback is for finding existing models)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise flags.UsageError(f'OUT_FOLDER must be a path, got {value!r}')
    return Path(value).expanduser()
