"""Every script but the sampling two (tests/sampling/test_sampling_scripts.py) refuses a misspelled flag or
command as a user types it: one line naming it and the nearest real one, exit 2, before TensorFlow loads, with
nothing written (each runs in an empty folder, its outputs relative to it)."""
import subprocess
import sys

import pytest

from support import REPO, run_reporting_tensorflow

# script, its command line with one mistake, the line it must answer.
CASES = [
    ('src/train.py', ['--dataset', 'd.txt', '--stpes', '1'], 'error: unknown flag --stpes; did you mean --steps?'),
    ('src/train.py', ['--dataset=d.txt', '--sample-evry', '5'],
     'error: unknown flag --sample-evry; did you mean --sample_every?'),
    ('src/encode.py', ['in.txt', 'out.npz', '--modle_name', '124M'],
     'error: unknown flag --modle_name; did you mean --model_name?'),
    ('src/score.py', ['a.txt', 'b.txt', '--jsn'], 'error: unknown flag --jsn; did you mean --json?'),
    ('src/convert.py', ['to_hf', 'model', 'out', '--stpe', '3'], 'error: unknown flag --stpe; did you mean --step?'),
    ('src/convert.py', ['to_hff', 'model', 'out'],
     'error: unknown command to_hff; did you mean to_hf? (the commands: from_hf, to_hf, weights)'),
    ('src/export.py', ['model', 'out', '--max_lenght', '5'],
     'error: unknown flag --max_lenght; did you mean --max_length?'),
    ('src/evaluate_tasks.py', ['lambada', 'data.jsonl', '--batch', '4'],
     'error: unknown flag --batch; did you mean --batch_size?'),
    ('src/evaluate_tasks.py', ['harness', '--task', 'lambada_openai'],
     'error: unknown flag --task; did you mean --tasks?'),
    ('src/evaluate_tasks.py', ['lambda', 'data.jsonl'],
     'error: unknown command lambda; did you mean lambada? (the commands: lambada, harness)'),
    ('download_model.py', ['124M', '--model_dir', 'models'],
     'error: unknown flag --model_dir; did you mean --models_dir?'),
]

def case_id(case):
    script, argv, _ = case
    return ' '.join([script.rsplit('/', 1)[-1], *argv])


@pytest.mark.parametrize('script, argv, line', CASES, ids=map(case_id, CASES))
def test_a_misspelled_flag_is_one_line_exit_2_and_nothing_else(tmp_path, script, argv, line):
    done = subprocess.run([sys.executable, str(REPO / script), *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (2, '', line + '\n')
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('script, argv, line', CASES, ids=map(case_id, CASES))
def test_the_flag_is_refused_before_tensorflow_loads(tmp_path, script, argv, line):
    done = run_reporting_tensorflow(REPO / script, *argv, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (2, 'tensorflow not loaded\n', line + '\n')
