import pytest

import reference
from support import decode


def ids(gen, text):
    return gen.enc.encode(text)


def test_greedy_samples_of_different_prompts_equal_the_numpy_model(gen, tiny_model):
    prompts = ['hello the', 'a', ' the and hello']
    got = gen.generate(prompts, length=9, temperature=0)
    for prompt, result in zip(prompts, got):
        p = ids(gen, prompt)
        expected = reference.greedy(tiny_model.params, tiny_model.hparams, p, 9)[len(p):]
        assert result.tokens == expected and result.text == decode(tiny_model, expected)


def test_a_second_call_builds_nothing(gen):
    """Other knobs, lengths, stops, penalties and prompts of other lengths, at the same batch size: no new op."""
    gen.generate(['one', 'two'], length=5, temperature=0)
    ops = len(gen.graph.get_operations())
    gen.generate(['a longer prompt', 'b'], length=11, temperature=0.7, top_k=5, top_p=0.9, stop=['e', 'xyz'],
                 seed=3, repetition_penalty=1.3, presence_penalty=0.1, frequency_penalty=0.2, no_repeat_ngram_size=2)
    gen.generate('single', length=3)  # a batch of one: one more graph, once
    ops_one = len(gen.graph.get_operations())
    gen.generate('other', length=8, top_k=2)
    assert len(gen.graph.get_operations()) == ops_one
    gen.generate(['x', 'y'], length=4)
    assert len(gen.graph.get_operations()) == ops_one and ops_one > ops


def test_the_same_seed_gives_the_same_samples(gen):
    a, b, c = (gen.generate(['the', 'and'], length=12, seed=s) for s in (5, 5, 6))
    assert [r.tokens for r in a] == [r.tokens for r in b] != [r.tokens for r in c]


def test_stop_strings_cut_text_and_tokens(gen, tiny_model):
    full = gen.generate(['hello'], length=14, temperature=0)[0]
    stop = full.text[5:7]
    got = gen.generate(['hello'], length=14, temperature=0, stop=[stop, 'never'])[0]
    assert got.text == full.text[:full.text.index(stop)]
    assert decode(tiny_model, got.tokens).find(stop) >= 0 and stop not in decode(tiny_model, got.tokens[:-1])
    assert got.tokens == full.tokens[:len(got.tokens)]


def test_past_the_window_slides_by_the_rule(gen, tiny_model):
    got = gen.generate('the', length=45, temperature=0, context_keep=10)
    p = ids(gen, 'the')
    assert got.tokens == reference.sliding_greedy(tiny_model.params, tiny_model.hparams, p, 45, 10)[len(p):]


@pytest.mark.parametrize('kwargs', [{'stop': ''}, {'repetition_penalty': 0}, {'context_keep': 0}, {'length': 0},
                                    {'temperature': -1}, {'top_k': -1}, {'top_p': 0}, {'seed': -1},
                                    {'no_repeat_ngram_size': 1.5}, {'context_keep': 10 ** 6}])
def test_bad_knobs_raise(gen, kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match='stop string' if name == 'stop' else f'^{name} must'):
        gen.generate('x', **kwargs)
