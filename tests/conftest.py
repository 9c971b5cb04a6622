"""Shared set-up: the import paths, TensorFlow's v1 behaviour (set once, here, as the scripts do), and the fixtures
of the tiny random-weight GPT-2 (tests/support.py), which is written once per test session."""
import shutil
import sys
import uuid
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent / 'src'))
sys.path.insert(0, str(TESTS))

from gpt2.base import runtime  # noqa: E402

tf = runtime.import_tensorflow()
tf.disable_v2_behavior()

from support import REPO, TinyModel, write_tiny_model, write_tiny_run  # noqa: E402


@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory):
    tiny = TinyModel(tmp_path_factory.mktemp('models'), 'tiny')
    write_tiny_model(tiny.dir, tiny.hparams, tiny.params, tiny.vocab)
    return tiny


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    """A run folder of the tiny model's shape with checkpoints model-1, model-2 (best) and model-3 (latest),
    each of other random weights: {step: TinyModel with that checkpoint's weights}, models_dir and name shared."""
    return write_tiny_run(tmp_path_factory.mktemp('runs'), 'run', steps=(1, 2, 3), best=2)


@pytest.fixture()
def model_copy(tiny_model, tmp_path):
    """A copy of the tiny model that a test may damage."""
    shutil.copytree(tiny_model.dir, tmp_path / 'models' / tiny_model.name)
    copy = TinyModel(tmp_path / 'models', tiny_model.name)
    return copy


@pytest.fixture(scope='session')
def repo_model(tiny_model):
    """The tiny model inside the repo's own models/ folder, where the scripts look by default; removed after."""
    name = f'pytest-tiny-{uuid.uuid4().hex[:8]}'
    target = REPO / 'models' / name
    shutil.copytree(tiny_model.dir, target)
    yield name
    shutil.rmtree(target, ignore_errors=True)
