"""Running tasks of EleutherAI's lm-evaluation-harness on this project's GPT-2 (harness.HarnessModel), for
src/evaluate_tasks.py harness: the harness imported only when wanted (it is optional: requirements-eval.txt), its
index of tasks, the run, and its results written as JSON."""
import functools
import json
from pathlib import Path

from gpt2.base import atomic
from gpt2.base import checkpoint
from gpt2.base import flags

EVAL_REQUIREMENTS = 'requirements-eval.txt'


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
    """--tasks, a comma-separated string or a list (fire makes one of a,b) -> the task names."""
    names = tasks.split(',') if isinstance(tasks, str) else list(tasks or [])
    names = [str(n).strip() for n in names if str(n).strip()]
    if not names:
        raise flags.UsageError('--tasks must name at least one task, e.g. --tasks lambada_openai,wikitext')
    return names


def run(names, *, model_name, models_dir, which, limit, batch_size, include_path, num_fewshot):
    """The harness's results of the tasks names (after checking that it knows each) on the model (which: its
    checkpoint, as --checkpoint) -> (results, the results as a table of text)."""
    lm_eval, harness = import_harness()
    manager = task_manager(str(include_path) if include_path else None)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise flags.UsageError(f'unknown task {", ".join(unknown)}; see lm_eval --tasks list for the names, or '
                               f'give --include_path with its definition')
    model = harness.HarnessModel(model_name=model_name, models_dir=models_dir, batch_size=batch_size,
                                 checkpoint=which)
    results = lm_eval.simple_evaluate(model=model, tasks=names, limit=limit, num_fewshot=num_fewshot,
                                      task_manager=manager, torch_random_seed=None, log_samples=False)
    return results, lm_eval.utils.make_table(results)


def write_results(results, output_path):
    """results as JSON to output_path (a .json file, or a folder for results.json), written at once
    (atomic.atomic_file) -> the file's path."""
    path = Path(output_path)
    if path.suffix != '.json':
        path = path / 'results.json'
    text = json.dumps(results, indent=2, default=str)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_file(path) as f:
            f.write(text)
    except OSError as err:
        raise flags.UsageError(f'--output_path cannot write {path} ({err.strerror or err}); give a writable path')
    return path
