"""The fixture of train.py's runs, for the script's and the distributed tests."""
import pytest

from support import TEXT


@pytest.fixture()
def setup(tiny_model, tmp_path):
    """-> a function that makes the command line of a training run on the tiny model, in tmp_path."""
    (tmp_path / 'data.txt').write_text(TEXT)

    def flags(**overrides):
        values = {'dataset': tmp_path / 'data.txt', 'models_dir': tiny_model.models_dir,
                  'model_name': tiny_model.name, 'checkpoint_dir': tmp_path / 'ck', 'sample_dir': tmp_path / 'samples',
                  'seq_len': 16, 'sample_every': 0, 'seed': 1, 'learning_rate': 0.01, 'steps': 2, **overrides}
        return [f'--{k}={v}' for k, v in values.items() if v is not None]
    flags.run_dir = lambda name='run1': tmp_path / 'ck' / name
    flags.tmp = tmp_path
    return flags
