#!/usr/bin/env python3
"""Zero-shot evaluation of GPT-2: LAMBADA on its own (gpt2/evaluation/lambada.py), or any task of
lm-evaluation-harness (the model: gpt2/evaluation/harness.py; the run: gpt2/evaluation/harness_tasks.py).

    python src/evaluate_tasks.py lambada lambada_test.jsonl --model_name 124M
    python src/evaluate_tasks.py harness --tasks lambada_openai,wikitext --model_name 124M
"""
from pathlib import Path

import fire

from gpt2.base import flags, runtime

if __name__ == '__main__':
    flags.check_script_early(__file__)  # a misspelled flag is refused before TensorFlow's seconds of loading
tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
from gpt2 import loading  # noqa: E402
from gpt2.evaluation import harness_tasks  # noqa: E402
from gpt2.evaluation import lambada  # noqa: E402


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
    result = lambada.evaluate_model(model_dir, hparams, enc, texts, batch_size=batch_size,
                                    last_token=bool(last_token), stop_words=bool(stop_words))
    print(lambada.report(result, as_json=json))


# ---------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness
# ---------------------------------------------------------------------------------------------------------------

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
    names = harness_tasks.task_names(tasks)
    flags.whole_number('batch_size', batch_size, 1, allow_none=True)
    if limit is not None:
        flags.number('limit', limit, 0, float('inf'), low_open=True, what='a number above 0')
    flags.whole_number('num_fewshot', num_fewshot, 0, allow_none=True)
    if include_path is not None and not Path(include_path).is_dir():
        raise flags.UsageError(f'--include_path {include_path} is not a folder; give a folder of task YAML files')
    results, table = harness_tasks.run(names, model_name=model_name, models_dir=models_dir, which=checkpoint,
                                       limit=limit, batch_size=batch_size, include_path=include_path,
                                       num_fewshot=num_fewshot)
    print(table)
    if output_path:
        print(f'results written to {harness_tasks.write_results(results, output_path)}')


if __name__ == '__main__':
    runtime.setup_process()
    commands = {'lambada': run_lambada, 'harness': run_harness}
    fire.Fire(commands, command=flags.check_argv(commands))
