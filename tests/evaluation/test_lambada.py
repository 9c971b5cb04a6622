"""LAMBADA on the tiny model: figures by hand and against the NumPy reference, the variants, bad files."""
import json
import math

import numpy as np
import pytest

import reference

import evaluate_tasks  # noqa: E402
from gpt2.evaluation import lambada
from support import decode  # noqa: E402

# 'hello world' is followed greedily by 'q' in the tiny model, so the last token of 'hello worldq' is predicted.
EXAMPLES = ['hello worldq', 'the hall and all the hall', 'and the other hello world', 'in the hall, or\tall the hell']


def test_figures_by_hand():
    result = lambada.figures([1.0, 0.0, 1.0, 1.0], [-1.0, -2.0, -3.0, -2.0])
    # mean 0.75; sample variance (3 * 0.25^2 + 0.75^2) / 3 = 0.25; stderr sqrt(0.25) / sqrt(4) = 0.25
    assert result == {'examples': 4, 'accuracy': 0.75, 'accuracy_stderr': pytest.approx(0.25),
                      'perplexity': pytest.approx(math.exp(2.0))}


def test_examples_split_at_the_last_space_as_lambada_openai():
    assert lambada.split_example('He said hello world') == ('He said hello', ' world')
    assert lambada.split_example('a tab\tthen word') == ('a tab\tthen', ' word')


def test_stop_word_filter_bans_the_whole_stop_words_after_a_space(tiny_model):
    import encoder
    enc = encoder.read_vocabulary(tiny_model.dir)
    banned = np.flatnonzero(lambada.banned_tokens(enc, tiny_model.hparams['n_vocab']))
    # The tiny vocabulary's words after a space: ' t', ' the', ' a', ' an', ' and' are NLTK stop words, ' wor' not.
    assert sorted(banned) == sorted(tiny_model.vocab[t] for t in ('Ġt', 'Ġthe', 'Ġa', 'Ġan', 'Ġand'))


def expected(tiny_model, texts, *, last_token=False, stop_words=False):
    """The figures from the reference model, with the split and the ban written out here."""
    import encoder
    enc = encoder.read_vocabulary(tiny_model.dir)
    banned = [tiny_model.vocab[t] for t in ('Ġt', 'Ġthe', 'Ġa', 'Ġan', 'Ġand')]
    correct, logprobs = [], []
    for text in texts:
        if last_token:
            ids = enc.encode(text)
            context, target = ids[:-1], ids[-1:]
        else:
            cut = text.rindex(' ')
            context = enc.encode(text[:cut])
            target = enc.encode(text)[len(context):]
        z = reference.logits(tiny_model.params, tiny_model.hparams, np.array(context + target[:-1]))[-len(target):]
        z = z - z.max(axis=-1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        guesses = lp.argmax(axis=-1)
        if stop_words:
            first = lp[0].copy()
            first[banned] = -np.inf
            guesses[0] = first.argmax()
        correct.append(float((guesses == target).all()))
        logprobs.append(lp[np.arange(len(target)), target].sum())
    return lambada.figures(correct, logprobs)


@pytest.mark.parametrize('variant', [{}, {'last_token': True}, {'stop_words': True}])
def test_lambada_equals_the_reference(capsys, tiny_model, tmp_path, variant):
    path = tmp_path / 'lambada_test.jsonl'
    path.write_text(''.join(json.dumps({'text': t}) + '\n' for t in EXAMPLES), encoding='utf-8')
    evaluate_tasks.run_lambada(str(path), models_dir=str(tiny_model.models_dir), model_name=tiny_model.name, json=True,
                         batch_size=3, **variant)
    result = json.loads(capsys.readouterr().out)
    want = expected(tiny_model, EXAMPLES, **variant)
    assert set(result) == {'examples', 'accuracy', 'accuracy_stderr', 'perplexity'}
    assert result['examples'] == 4 and result['accuracy'] == want['accuracy']
    assert result['accuracy_stderr'] == pytest.approx(want['accuracy_stderr'])
    assert result['perplexity'] == pytest.approx(want['perplexity'], rel=1e-4)
    if variant == {'last_token': True}:
        assert result['accuracy'] == 0.25  # 'hello worldq'
        assert decode(tiny_model, [tiny_model.vocab['q']]) == 'q'


def test_checkpoint_picks_the_run_checkpoint_evaluated(capsys, tiny_run, tmp_path):
    path = tmp_path / 'lambada_test.jsonl'
    path.write_text(''.join(json.dumps({'text': t}) + '\n' for t in EXAMPLES), encoding='utf-8')
    run_model = {'models_dir': str(tiny_run[1].models_dir), 'model_name': tiny_run[1].name}
    perplexities = set()
    for which, step in (('latest', 3), ('best', 2), (1, 1)):
        evaluate_tasks.run_lambada(str(path), json=True, checkpoint=which, **run_model)
        result = json.loads(capsys.readouterr().out)
        assert result['perplexity'] == pytest.approx(expected(tiny_run[step], EXAMPLES)['perplexity'], rel=1e-4)
        perplexities.add(round(result['perplexity'], 3))
    assert len(perplexities) == 3  # the checkpoints differ in what they score
    with pytest.raises(SystemExit) as exit_:
        evaluate_tasks.run_lambada(str(path), checkpoint=9, **run_model)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and '--checkpoint 9' in err[0], err


def test_bad_lambada_files_fail_with_one_line(capsys, tiny_model, tmp_path):
    model = {'models_dir': str(tiny_model.models_dir), 'model_name': tiny_model.name}
    cases = {'not_json.jsonl': '{"text": "a b"}\nnot json\n', 'no_text.jsonl': '{"passage": "a b"}\n',
             'one_word.jsonl': '{"text": "word"}\n', 'empty.jsonl': '', 'list.jsonl': '["a b"]\n'}
    for name, content in cases.items():
        (tmp_path / name).write_text(content, encoding='utf-8')
    for name, words in [('not_json.jsonl', ['line 2']), ('no_text.jsonl', ['line 1']), ('one_word.jsonl', ['line 1']),
                        ('empty.jsonl', ['no examples']), ('list.jsonl', ['line 1']), ('missing.jsonl', ['cannot read'])]:
        with pytest.raises(SystemExit) as exit_:
            evaluate_tasks.run_lambada(str(tmp_path / name), **model)
        assert exit_.value.code == 1, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and all(w in err[0] for w in words), (name, err)
    with pytest.raises(SystemExit) as exit_:
        evaluate_tasks.run_lambada(str(tmp_path / 'no_text.jsonl'), batch_size=0, **model)
    assert exit_.value.code == 2 and '--batch_size' in capsys.readouterr().err
