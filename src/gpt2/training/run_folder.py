"""A training run's folder, written so that it survives a crash at any moment.

CHECKPOINT_DIR/RUN_NAME is a model folder: hparams.json, encoder.json and vocab.bpe copied from the base model,
checkpoints model-STEP.index and model-STEP.data-00000-of-00001, and the state file `checkpoint` that lists the
kept checkpoints by file name (relative, so the folder can move), the latest last. The state file is the one
truth: a checkpoint it does not list is not one, and its files are removed when a run starts or saves. Reading
such a folder (the names model-STEP, the kept checkpoints) is gpt2/base/checkpoint.py's, which convert.py and the
sampling scripts use too.

A save writes the new checkpoint's files (TensorFlow writes each under a temporary name, NAME.tempstate..., and
renames it when complete), then a new state file under a temporary name (NAME.part, gpt2/base/atomic.py), renamed
over the old one (an atomic replace), and only then removes the files of checkpoints no longer listed. A crash or
SIGKILL at any moment leaves the old state file or the new one, each naming complete checkpoints.
"""
import re
import shutil
from pathlib import Path

from gpt2.base import atomic
from gpt2.base import checkpoint
from gpt2.base import system

CHECKPOINT_FILE = re.compile(r'^(model-\d+)\.(index|data-\d+-of-\d+|meta)$')
TENSORFLOW_TEMPORARY = '.tempstate'  # in the name of a checkpoint file TensorFlow is writing
# What a killed write of our own files leaves: atomic_file's NAME.part.
OUR_PARTIALS = {name + checkpoint.PARTIAL_SUFFIX
                for name in (checkpoint.STATE_FILE, checkpoint.BEST_FILE, *checkpoint.MODEL_INFO_FILES)}


class RunFolder:
    """A run's folder, CHECKPOINT_DIR/RUN_NAME (see above); the folder need not exist yet."""

    def __init__(self, path, *, checkpoint_size=0, free_space=None):
        """checkpoint_size: the bytes a save writes, checked against free_space(path) (system.free_space by
        default) before each save."""
        self.path = Path(path)
        self.checkpoint_size = checkpoint_size
        self.free_space = free_space or (lambda folder: system.free_space(folder))

    def checkpoints(self):
        """The kept checkpoints' names, oldest first."""
        return checkpoint.run_checkpoints(self.path)

    def latest(self):
        """The latest checkpoint's path prefix, or None."""
        kept = self.checkpoints()
        return str(self.path / kept[-1]) if kept else None

    def start(self, base_dir, *, discard=False):
        """Create the folder with the base model's hparams.json, encoder.json and vocab.bpe, or tidy an existing
        one: remove what a killed save left. discard: forget every checkpoint (--restore_from fresh
        --overwrite)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in checkpoint.MODEL_INFO_FILES:
            if not (self.path / name).exists():
                with open(Path(base_dir) / name, 'rb') as source, atomic.atomic_file(self.path / name, 'wb') as f:
                    shutil.copyfileobj(source, f)
        if discard:
            (self.path / checkpoint.STATE_FILE).unlink(missing_ok=True)
            (self.path / checkpoint.BEST_FILE).unlink(missing_ok=True)
        self.remove_unlisted()

    def save(self, sess, saver, step, max_checkpoints):
        """Save checkpoint model-STEP, make it the latest, and keep only the last max_checkpoints (and the best,
        see record_best) -> its path."""
        name = checkpoint.checkpoint_name(step)
        # The new checkpoint is written whole before any old one is removed: it needs its full size free.
        system.check_disk(self.path, self.checkpoint_size, self.free_space)
        saver.save(sess, str(self.path / name), write_meta_graph=False, write_state=False)
        self.prune([n for n in self.checkpoints() if n != name] + [name], max_checkpoints)
        return self.path / name

    def prune(self, names, max_checkpoints):
        """Keep the last max_checkpoints of names (oldest first) and the best one, in their order."""
        if not names:
            return
        best = (checkpoint.read_best(self.path) or {}).get('checkpoint')
        self.write_state([n for i, n in enumerate(names) if i >= len(names) - max_checkpoints or n == best])
        self.remove_unlisted()

    def best(self):
        """The run's best.json as a dict (checkpoint.BEST_FILE), {} if none."""
        return checkpoint.read_best(self.path) or {}

    def record_best(self, max_checkpoints, **best):
        """Write best.json (checkpoint.best_text's keywords), replaced atomically; a checkpoint that was kept only
        as the best and is no longer is removed."""
        with atomic.atomic_file(self.path / checkpoint.BEST_FILE, sync=True) as f:
            f.write(checkpoint.best_text(**best))
        self.prune(self.checkpoints(), max_checkpoints)

    def write_state(self, names):
        """The state file, in TensorFlow's format, replaced atomically."""
        with atomic.atomic_file(self.path / checkpoint.STATE_FILE, sync=True) as f:
            f.write(checkpoint.state_text(names))

    def remove_unlisted(self):
        """Remove the files of checkpoints the state file does not list, and whatever a killed save left."""
        kept = set(self.checkpoints())
        for path in self.path.iterdir():
            match = CHECKPOINT_FILE.match(path.name)
            if TENSORFLOW_TEMPORARY in path.name or path.name in OUR_PARTIALS or (match and match.group(1) not in kept):
                path.unlink()
            elif path.is_dir() and checkpoint.RUN_CHECKPOINT.match(path.name.removesuffix('_temp')):
                shutil.rmtree(path)  # TensorFlow's sharded saves write in NAME_temp/
