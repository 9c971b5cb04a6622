"""The checks written once in gpt2.base and used by every script: a flag that takes no value, and a tokenizer
that fits the model's embeddings."""
import pytest

from gpt2.base import checkpoint
from gpt2.base import flags


def test_a_switch_is_true_or_false_and_anything_else_is_named_in_one_message():
    assert flags.switch('overwrite', True) is True
    assert flags.switch('overwrite', False) is False
    for value in ('yes', 1, 0, None, 'False'):  # what fire hands over for --overwrite yes, --overwrite 1, ...
        with pytest.raises(flags.UsageError) as err:
            flags.switch('keep_best', value)
        assert str(err.value) == f'--keep_best takes no value (or true/false), got {value!r}'


def test_a_tokenizer_fits_when_every_id_has_an_embedding():
    checkpoint.check_vocabulary_fits(range(10), 10, 'encoder.json in m')
    with pytest.raises(checkpoint.ModelError) as err:
        checkpoint.check_vocabulary_fits(range(10), 9, 'encoder.json in m', 'run this')
    assert str(err.value) == 'encoder.json in m: the tokenizer has ids up to 9, the model only 9 embeddings; run this'
    with pytest.raises(checkpoint.ModelError, match='only 5 embeddings$'):
        checkpoint.check_vocabulary_fits([-1, 0, 1], 5, 'hf')
