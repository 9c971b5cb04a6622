"""The src/ folder of a git revision, to benchmark code side by side with this checkout's (bench_sample.py
--configs, bench_train.py's tf@REV): `git archive` of the revision's src/, exported once to
bench/.cache/src/COMMIT/ (git-ignored) and reused; and its modules, imported by their path in this checkout
whichever layout the revision has.

Two layouts: the flat src/ of the revisions before the gpt2 package (164f79d and older: checkpoint.py, cli.py,
penalties.py, ... beside model.py) and the gpt2 package since. Every choice between them is made here, by load
and training, so a benchmark names a module once, as this checkout has it."""
import importlib
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SRC_CACHE = BENCH / '.cache' / 'src'
HERE = '.'  # the name of this checkout's own src/ (its working tree, uncommitted changes included)

# A module of the gpt2 package -> the flat module that held the same functions before it: the quiet TensorFlow
# import was checkpoint.import_tensorflow, load_model and start_restore were cli's.
FLAT = {
    'gpt2.base.checkpoint': 'checkpoint',
    'gpt2.base.runtime': 'checkpoint',
    'gpt2.loading': 'cli',
    'gpt2.sampling.penalties': 'penalties',
    'gpt2.sampling.stops': 'stops',
}
# The modules that hold the internals of train.py a benchmark builds its step with, looked up in this order;
# a revision without one of them (before the gpt2 package) takes each name from the next: its train.py.
TRAINING_MODULES = ('gpt2.training.graph', 'gpt2.training.start', 'train')
# What bench_train's measure_train.py takes from them: the training graph (gpt2.training.graph.Training: tokens, lengths,
# train_op, loss), the session's settings, and the restore of the weights with the initialisation of the rest.
TRAINING_NAMES = ('build_training', 'session_config', 'restore')


def src_of(revision):
    """The src/ folder of a git revision, exported once to bench/.cache/src/COMMIT/; None or HERE: this
    checkout's."""
    if revision in (None, HERE):
        return REPO / 'src'
    commit = subprocess.run(['git', 'rev-parse', '--verify', f'{revision}^{{commit}}'], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.strip()
    folder = SRC_CACHE / commit
    if not (folder / 'src').is_dir():
        archive = subprocess.run(['git', 'archive', commit, 'src'], cwd=REPO, check=True, capture_output=True).stdout
        partial = folder.with_name(folder.name + '.part')
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(partial, filter='data')
        partial.rename(folder)
    return folder / 'src'


def use(src):
    """Put src first on sys.path, where load and training find its modules (once per process: two revisions'
    modules of one name cannot live in one interpreter)."""
    sys.path.insert(0, str(src))


def has_package(src):
    return (Path(src) / 'gpt2').is_dir()


def load(src, name):
    """The module `name`, as this checkout calls it (e.g. 'gpt2.loading', 'model'), from src (see use): itself
    where src has the gpt2 package, else the flat module of the older layout that held the same functions."""
    return importlib.import_module(name if has_package(src) else FLAT.get(name, name))


def import_tensorflow(src):
    """tensorflow.compat.v1, loaded quietly by src's own code: call it before importing src's other modules."""
    return load(src, 'gpt2.base.runtime').import_tensorflow()


def training(src):
    """src's training internals (TRAINING_NAMES) as one namespace, each from the first of TRAINING_MODULES that
    src has and that defines it; a name that no module defines is absent (an old revision's train.py)."""
    found = {}
    for module_name in TRAINING_MODULES:
        if len(found) == len(TRAINING_NAMES):
            break
        if not (Path(src) / (module_name.replace('.', '/') + '.py')).exists():
            continue
        module = importlib.import_module(module_name)
        found.update({n: getattr(module, n) for n in TRAINING_NAMES if n not in found and hasattr(module, n)})
    return SimpleNamespace(**found)
