"""The Generator on the tiny model, loaded once per test module."""
import pytest

from gpt2.sampling import generator


@pytest.fixture(scope='module')
def gen(tiny_model):
    with generator.Generator(tiny_model.name, tiny_model.models_dir) as g:
        yield g
