#!/usr/bin/env python3
"""Zero-shot evaluation of GPT-2: LAMBADA on its own (gpt2/evaluation/lambada.py), or any task of lm-evaluation-harness
(gpt2/evaluation/harness.py).

    python src/evaluate_tasks.py lambada lambada_test.jsonl --model_name 124M
    python src/evaluate_tasks.py harness --tasks lambada_openai,wikitext --model_name 124M
"""
import functools
import json
import os
from pathlib import Path

import fire

from gpt2.base import runtime

tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
from gpt2 import loading  # noqa: E402
from gpt2.base import checkpoint  # noqa: E402
from gpt2.base import flags  # noqa: E402
from gpt2.evaluation import lambada  # noqa: E402
from gpt2.evaluation import scoring  # noqa: E402

EVAL_REQUIREMENTS = 'requirements-eval.txt'


# ---------------------------------------------------------------------------------------------------------------
# LAMBADA
# ---------------------------------------------------------------------------------------------------------------

@flags.script(
    "LAMBADA accuracy and last-word perplexity, as lm-evaluation-harness's lambada_openai computes them.",
    path="OpenAI's lambada_test.jsonl, or any file of one {\"text\": ...} per line.",
    batch_size='examples scored at once; default: as many windows as 1 GiB of activations holds (10 at 124M).',
    last_token='predict only the last BPE token of each text, not the whole last word (a variant some '
               'reproductions of the paper used).',
    stop_words="predict the word's first token among tokens that are no stop word (NLTK's English list): an "
               "approximation of the paper's unpublished stop-word filter.",
    json='print {"examples": N, "accuracy": ..., "accuracy_stderr": ..., "perplexity": ...}.')
def run_lambada(path, model_name='124M', models_dir='models', batch_size=None, last_token=False,
                stop_words=False, json=False, checkpoint='latest'):
    flags.whole_number('batch_size', batch_size, 1, allow_none=True)
    try:
        texts = lambada.read_examples(path)
    except lambada.LambadaError as err:
        flags.fail(err, code=1)
    model_dir, hparams, enc = loading.load_model(model_name, models_dir, checkpoint)
    with tf.Graph().as_default(), tf.Session(config=scoring.session_config()) as sess:
        restored = loading.start_restore(sess, model_dir, hparams)
        scorer = scoring.Scorer(sess, hparams)
        restored()
        result = lambada.evaluate(scorer.score, enc, texts, n_ctx=hparams.n_ctx, n_vocab=hparams.n_vocab,
                                  batch_size=batch_size or scoring.default_batch_size(hparams),
                                  last_token=bool(last_token), stop_words=bool(stop_words))
    if json:
        print_json(result)
    else:
        print(f"{result['examples']} examples: accuracy {result['accuracy']:.4f} "
              f"± {result['accuracy_stderr']:.4f}, perplexity {result['perplexity']:.2f}")


def print_json(result):
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness
# ---------------------------------------------------------------------------------------------------------------

def import_harness():
    """-> (lm_eval, harness), or a one-line error if lm_eval is not installed."""
    try:
        import lm_eval
        import lm_eval.tasks
    except ImportError:
        raise checkpoint.ModelError(f'the harness needs lm-evaluation-harness; install it with '
                                    f'pip install -r {EVAL_REQUIREMENTS}') from None
    from gpt2.evaluation import harness
    return lm_eval, harness


@functools.lru_cache(maxsize=4)
def task_manager(include_path):
    """The harness's index of tasks (it reads every task definition it has: seconds), once per include_path."""
    import lm_eval.tasks
    return lm_eval.tasks.TaskManager(include_path=include_path)


def task_names(tasks):
    names = tasks.split(',') if isinstance(tasks, str) else list(tasks or [])
    names = [str(n).strip() for n in names if str(n).strip()]
    if not names:
        raise flags.UsageError('--tasks must name at least one task, e.g. --tasks lambada_openai,wikitext')
    return names


def write_results(results, output_path):
    """results as JSON to output_path (a .json file, or a folder for results.json), written then renamed."""
    path = Path(output_path)
    if path.suffix != '.json':
        path = path / 'results.json'
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + checkpoint.PARTIAL_SUFFIX)
        partial.write_text(json.dumps(results, indent=2, default=str), encoding='utf-8')
        os.replace(partial, path)
    except OSError as err:
        raise flags.UsageError(f'--output_path cannot write {path} ({err.strerror or err}); give a writable path')
    return path


@flags.script(
    "Run tasks of EleutherAI's lm-evaluation-harness on this model (needs requirements-eval.txt).",
    tasks='comma-separated task names, e.g. lambada_openai,wikitext (the harness fetches their data).',
    limit='at most this many examples per task (a fraction below 1: that share); default all.',
    batch_size='windows scored at once; default: as many as 1 GiB of activations holds (10 windows at 124M).',
    output_path='write the results as JSON to this .json file, or to results.json in this folder.',
    include_path='a folder of local task definitions (YAML) to add to the known tasks.',
    num_fewshot='examples of the task shown before each one; default the task\'s own (zero-shot).')
def run_harness(tasks=None, model_name='124M', models_dir='models', limit=None, batch_size=None, output_path=None,
                include_path=None, num_fewshot=None, checkpoint='latest'):
    names = task_names(tasks)
    flags.whole_number('batch_size', batch_size, 1, allow_none=True)
    if limit is not None:
        flags.number('limit', limit, 0, float('inf'), low_open=True, what='a number above 0')
    flags.whole_number('num_fewshot', num_fewshot, 0, allow_none=True)
    if include_path is not None and not Path(include_path).is_dir():
        raise flags.UsageError(f'--include_path {include_path} is not a folder; give a folder of task YAML files')
    lm_eval, harness = import_harness()
    manager = task_manager(str(include_path) if include_path else None)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise flags.UsageError(f'unknown task {", ".join(unknown)}; see lm_eval --tasks list for the names, or '
                               f'give --include_path with its definition')
    model = harness.HarnessModel(model_name=model_name, models_dir=models_dir, batch_size=batch_size,
                                 checkpoint=checkpoint)
    results = lm_eval.simple_evaluate(model=model, tasks=names, limit=limit, num_fewshot=num_fewshot,
                                      task_manager=manager, torch_random_seed=None, log_samples=False)
    print(lm_eval.utils.make_table(results))
    if output_path:
        print(f'results written to {write_results(results, output_path)}')


if __name__ == '__main__':
    runtime.setup_process()
    commands = {'lambada': run_lambada, 'harness': run_harness}
    fire.Fire(commands, command=flags.check_argv(commands))
