"""Generator.embed and Generator.hidden_states against the NumPy reference model's hidden states."""
import numpy as np
import pytest

import reference

# Inputs of different lengths in one call, so that rows are padded: text, token ids, <|endoftext|> alone.
INPUTS = ['hello the world', [32, 262, 263, 264, 45, 7, 9], ' and', [268]]


def reference_tokens(tiny_model, value):
    """An input of INPUTS -> its token ids by the tiny vocabulary (text: its merges, by hand)."""
    v = tiny_model.vocab
    by_hand = {'hello the world': [v['he'], v['ll'], v['o'], v['Ġthe'], v['Ġ'], v['w'], v['or'], v['l'], v['d']],
               ' and': [v['Ġand']]}
    return by_hand[value] if isinstance(value, str) else value


def reference_states(tiny_model, value):
    tokens = np.array(reference_tokens(tiny_model, value))
    return reference.hidden_states(tiny_model.params, tiny_model.hparams, tokens)


def test_hidden_states_are_the_references_layer_by_layer(gen, tiny_model):
    for value in INPUTS[:2]:
        got = gen.hidden_states(value)
        expected = reference_states(tiny_model, value)
        assert got.dtype == np.float32 and got.shape == (tiny_model.hparams['n_layer'] + 1, len(expected[0]), 16)
        np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize('pooling', ['mean', 'last'])
def test_pooled_embeddings_are_the_references(gen, tiny_model, pooling):
    """Every input as if alone, whatever else is in its run (batch_size 3: two runs, rows padded)."""
    got = gen.embed(INPUTS, pooling=pooling, batch_size=3)
    final = [reference_states(tiny_model, value)[-1] for value in INPUTS]  # [seq, n_embd] each
    expected = [f.mean(axis=0) if pooling == 'mean' else f[-1] for f in final]
    assert got.dtype == np.float32 and got.shape == (len(INPUTS), 16)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert not np.allclose(got[0], got[1], atol=1e-2)  # different inputs, different embeddings


def test_one_input_is_a_batch_of_one_and_endoftext_is_its_token(gen, tiny_model):
    ids = [tiny_model.vocab['Ġthe'], tiny_model.endoftext]
    by_text = gen.embed(' the<|endoftext|>')
    assert by_text.shape == (1, 16)
    np.testing.assert_allclose(by_text, gen.embed([ids]), atol=1e-6)
    np.testing.assert_allclose(by_text, gen.embed(ids), atol=1e-6)


def test_an_input_of_the_whole_window_is_embedded(gen, tiny_model):
    tokens = list(np.arange(32) % 200)
    expected = reference.hidden_states(tiny_model.params, tiny_model.hparams, np.array(tokens))[-1].mean(axis=0)
    np.testing.assert_allclose(gen.embed([tokens])[0], expected, atol=1e-4)


def test_repeated_calls_build_nothing(gen):
    """Other batch sizes, lengths and poolings, and hidden states: the one graph built on the first call."""
    gen.embed(['one'])
    ops = len(gen.graph.get_operations())
    gen.embed(['a longer input', 'b', 'c d e'], pooling='last')
    gen.embed([list(range(20))] * 9, batch_size=4)
    gen.hidden_states('some words')
    assert len(gen.graph.get_operations()) == ops


@pytest.mark.parametrize('args, kwargs, words', [
    (['x'], {'pooling': 'max'}, 'pooling'),
    (['x'], {'batch_size': 0}, 'batch_size'),
    ([''], {}, 'input 0 is empty'),
    ([[]], {}, 'at least one input'),
    ([['x', []]], {}, 'input 1 is empty'),
    ([['x', [5, 10 ** 6]]], {}, '1000000 is outside the vocabulary'),
    ([[[1] * 33]], {}, 'window of 32'),
    ([[3.5]], {}, 'neither a string nor'),
], ids=['pooling', 'batch_size', 'empty text', 'no input', 'empty ids', 'token id', 'too long', 'float'])
def test_bad_inputs_raise(gen, args, kwargs, words):
    with pytest.raises(ValueError, match=words):
        gen.embed(*args, **kwargs)


def test_hidden_states_take_one_input(gen):
    with pytest.raises(ValueError, match='one input'):
        gen.hidden_states(['a', 'b'])
    with pytest.raises(ValueError, match='window'):
        gen.hidden_states([1] * 33)
