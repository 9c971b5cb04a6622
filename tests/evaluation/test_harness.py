"""The harness model class on the tiny model: its answers to the three kinds of request against the NumPy
reference, and whole harness runs of local task definitions over data files written here (offline)."""
import json
import math
import os

import numpy as np
import pytest

os.environ.setdefault('HF_DATASETS_OFFLINE', '1')  # no test may need the network

import encoder  # noqa: E402
import reference  # noqa: E402
from support import TINY_HPARAMS, brute_force, reference_logprobs, write_tasks  # noqa: E402

import evaluate_tasks  # noqa: E402
from gpt2.evaluation import harness
from lm_eval.api.instance import Instance  # noqa: E402

N_CTX = TINY_HPARAMS['n_ctx']


@pytest.fixture(scope='module')
def lm(tiny_model):
    model = harness.HarnessModel(model_name=tiny_model.name, models_dir=str(tiny_model.models_dir), batch_size=3)
    yield model
    model.sess.close()


@pytest.fixture(scope='module')
def enc(tiny_model):
    return encoder.read_vocabulary(tiny_model.dir)


def instance(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


LONG = 'the hall and all the others went in, and the hall went well. ' * 4


def expected_loglikelihood(tiny_model, enc, context, continuation):
    """The harness's rule written out: trailing spaces move to the continuation, the continuation's ids are the
    whole text's after the context's; an empty context is <|endoftext|>; the last n_ctx + 1 tokens are kept."""
    if context == '':
        context_ids, continuation_ids = [tiny_model.endoftext], enc.encode(continuation)
    else:
        stripped = context.rstrip()
        continuation = context[len(stripped):] + continuation
        context_ids = enc.encode(stripped)
        continuation_ids = enc.encode(stripped + continuation)[len(context_ids):]
    tokens = (context_ids + continuation_ids)[-(N_CTX + 1):]
    logprobs = reference_logprobs(tiny_model, tokens)[-len(continuation_ids):]
    greedy = reference.logits(tiny_model.params, tiny_model.hparams, np.array(tokens[:-1])).argmax(-1)
    return logprobs.sum(), bool((greedy[-len(continuation_ids):] == continuation_ids).all())


def test_loglikelihood_equals_the_reference(lm, tiny_model, enc):
    pairs = [('the hall', ' and all'), ('the hall ', 'and all'), ('', 'the hall'), (LONG, ' went'), ('in', 'q')]
    answers = lm.loglikelihood([instance('loglikelihood', *p) for p in pairs], disable_tqdm=True)
    for pair, (logprob, greedy) in zip(pairs, answers):
        want_logprob, want_greedy = expected_loglikelihood(tiny_model, enc, *pair)
        assert logprob == pytest.approx(want_logprob, abs=5e-4), pair
        assert greedy == want_greedy, pair


def test_loglikelihood_rolling_equals_the_reference(lm, tiny_model, enc):
    texts = [LONG, 'the hall']
    totals = lm.loglikelihood_rolling([instance('loglikelihood_rolling', t) for t in texts], disable_tqdm=True)
    for text, total in zip(texts, totals):
        assert total == pytest.approx(brute_force(tiny_model, enc.encode(text), N_CTX).sum(), abs=1e-3)


def test_generate_until_is_greedy_and_stops_at_until(lm, tiny_model, enc):
    context = 'hello world'
    ids = enc.encode(context)
    new = reference.greedy(tiny_model.params, tiny_model.hparams, ids, 6)[len(ids):]
    full = enc.decode(new)
    stop = enc.decode(new[3:4])
    answers = lm.generate_until([instance('generate_until', context, {'until': ['\u2603'], 'max_gen_toks': 6}),
                                 instance('generate_until', context, {'until': [stop], 'max_gen_toks': 6})],
                                disable_tqdm=True)
    assert answers == [full, full.split(stop)[0]]
    assert len(answers[1]) < len(full)


# ---------------------------------------------------------------------------------------------------------------
# Whole harness runs over local tasks
# ---------------------------------------------------------------------------------------------------------------

TASKS = {
    'tiny_ll': """
task: tiny_ll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{target}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    'tiny_rolling': """
task: tiny_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
""",
}
LL_DOCS = [{'context': 'hello world', 'target': 'q'}, {'context': 'the hall', 'target': ' and all'},
           {'context': LONG, 'target': ' went'}]
ROLLING_DOCS = [{'text': LONG}, {'text': 'the hall and all'}]


@pytest.fixture(scope='module')
def tasks_folder(tmp_path_factory):
    """One folder for the module, so that the harness indexes its tasks once (harness_tasks.task_manager)."""
    return write_tasks(tmp_path_factory.mktemp('tasks'), {
        'tiny_ll': (TASKS['tiny_ll'], LL_DOCS), 'tiny_rolling': (TASKS['tiny_rolling'], ROLLING_DOCS)})


def test_a_harness_run_of_local_tasks_reports_the_reference_figures(capsys, tiny_model, enc, tmp_path, tasks_folder):
    evaluate_tasks.run_harness(tasks='tiny_ll,tiny_rolling', models_dir=str(tiny_model.models_dir),
                         model_name=tiny_model.name, include_path=str(tasks_folder),
                         output_path=str(tmp_path / 'out'), batch_size=2)
    assert 'tiny_ll' in capsys.readouterr().out
    results = json.loads((tmp_path / 'out' / 'results.json').read_text(encoding='utf-8'))['results']
    answers = [expected_loglikelihood(tiny_model, enc, d['context'], d['target']) for d in LL_DOCS]
    assert results['tiny_ll']['acc,none'] == pytest.approx(np.mean([g for _, g in answers]))
    assert results['tiny_ll']['perplexity,none'] == pytest.approx(math.exp(-np.mean([lp for lp, _ in answers])),
                                                                  rel=1e-3)
    nll = -sum(brute_force(tiny_model, enc.encode(d['text']), N_CTX).sum() for d in ROLLING_DOCS)
    words = sum(len(d['text'].split()) + d['text'].endswith(' ') for d in ROLLING_DOCS)  # re.split(r'\s+')
    assert results['tiny_rolling']['word_perplexity,none'] == pytest.approx(math.exp(nll / words), rel=1e-3)


def test_checkpoint_picks_the_run_checkpoint_as_model_args_give_it(tiny_run, enc):
    pair = ('the hall', ' and all')
    for args, step in (('', 3), (',checkpoint=best', 2), (',checkpoint=1', 1)):
        lm = harness.HarnessModel.create_from_arg_string(
            f'model_name={tiny_run[1].name},models_dir={tiny_run[1].models_dir}{args}')
        try:
            [(logprob, _)] = lm.loglikelihood([instance('loglikelihood', *pair)], disable_tqdm=True)
        finally:
            lm.sess.close()
        assert logprob == pytest.approx(expected_loglikelihood(tiny_run[step], enc, *pair)[0], abs=5e-4), args


def test_harness_bad_flags_fail_with_one_line(capsys, tiny_model, tmp_path, tasks_folder):
    model = {'models_dir': str(tiny_model.models_dir), 'model_name': tiny_model.name}
    for flags, word in [({'tasks': 'no_such_task', 'include_path': str(tasks_folder)}, 'unknown task'),
                        ({}, '--tasks'),
                        ({'tasks': 'tiny_ll', 'include_path': str(tmp_path / 'none')}, '--include_path'),
                        ({'tasks': 'tiny_ll', 'limit': 0}, '--limit'),
                        ({'tasks': 'tiny_ll', 'include_path': str(tasks_folder), 'checkpoint': 'first'},
                         '--checkpoint')]:
        with pytest.raises(SystemExit) as exit_:
            evaluate_tasks.run_harness(**flags, **model)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and word in err[0], (flags, err)
