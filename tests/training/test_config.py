"""gpt2/training/config.py: TrainConfig holds exactly train.py's flags, and the settings it derives from them."""
import dataclasses
import inspect

import pytest

import train
from gpt2.training import config


def defaults(**changes):
    """A TrainConfig of train.py's defaults, with changes."""
    values = {name: p.default for name, p in inspect.signature(train.train_main).parameters.items()}
    return config.TrainConfig(**{**values, **changes})


def test_the_config_has_a_field_for_each_flag_in_the_order_of_the_signature():
    fields = [f.name for f in dataclasses.fields(config.TrainConfig)]
    assert fields == list(inspect.signature(train.train_main).parameters)
    assert fields == list(train.FLAGS)


@pytest.mark.parametrize('changes, rate', [
    ({}, 2e-5), ({'optimizer': 'sgd'}, 2e-5), ({'optimizer': 'adafactor'}, 1e-3),
    ({'optimizer': 'adafactor', 'adafactor_relative_step': True}, None), ({'learning_rate': 0.5}, 0.5),
])
def test_the_learning_rate_defaults_to_the_optimizers_own(changes, rate):
    assert defaults(**changes).rate() == rate


def test_adafactor_options_only_with_adafactor():
    assert defaults().adafactor_options() is None
    got = defaults(optimizer='adafactor', adafactor_beta1=0.9, adafactor_scale_parameter=True).adafactor_options()
    assert got == {'beta1': 0.9, 'relative_step': False, 'scale_parameter': True}


def test_resolved_fills_in_what_depends_on_the_model_and_leaves_the_rest():
    given = defaults(optimizer='adafactor', steps=7)
    done = given.resolved(seq_len=16, sample_length=15, seed=3)
    assert (done.seq_len, done.sample_length, done.seed, done.learning_rate) == (16, 15, 3, 1e-3)
    assert done.steps == 7 and given.seq_len is None and given.learning_rate is None
