"""The src/ folder of a git revision, to benchmark code side by side with this checkout's (bench_sample.py
--revisions, bench_train.py's tf@REV): `git archive` of the revision's src/, exported once to
bench/.cache/src/COMMIT/ (git-ignored) and reused."""
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SRC_CACHE = BENCH / '.cache' / 'src'
HERE = '.'  # the name of this checkout's own src/ (its working tree, uncommitted changes included)


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
