"""Hugging Face's `evaluate` package inside lm_eval, as `python src/evaluate_tasks.py harness` runs it.

lm_eval takes every metric it does not define itself from HF `evaluate` (lm_eval.api.registry.get_metric:
`import evaluate as hf_evaluate; hf_evaluate.load(name)`), and answers None, with a logged error only, when that
fails. A script named src/evaluate.py once stood first on sys.path: lm_eval imported it instead, and every such
metric (e.g. the f1 of the afrimmlu tasks, `hf_evaluate: true`) silently became None."""
import json
import os
import subprocess
import sys
from pathlib import Path

from support import REPO

# A local copy of a Hub metric: evaluate.load(name) looks for NAME/NAME.py in the working directory first, so the
# test needs no network. Binary F1, 2 tp / (2 tp + fp + fn).
F1_METRIC = '''
import datasets
import evaluate


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description='binary F1', citation='', features=datasets.Features(
            {'predictions': datasets.Value('int32'), 'references': datasets.Value('int32')}))

    def _compute(self, predictions, references):
        pairs = list(zip(predictions, references))
        tp = sum(p == 1 and r == 1 for p, r in pairs)
        wrong = sum(p != r for p, r in pairs)
        return {'f1': 2 * tp / (2 * tp + wrong)}
'''

# A fresh Python with src/ first on sys.path, as `python src/evaluate_tasks.py` has it, and the script's own
# imports done first.
PROBE = '''
import json, sys
sys.path.insert(0, {src!r})
import evaluate_tasks
import lm_eval.api.registry
compute = lm_eval.api.registry.get_metric('f1', hf_evaluate_metric=True)
print(json.dumps({{'evaluate': sys.modules['evaluate'].__file__,
                   'f1': None if compute is None else compute(predictions=[1, 0, 1], references=[1, 1, 1])}}))
'''


def test_lm_eval_gets_hugging_faces_evaluate_and_its_metrics(tmp_path):
    (tmp_path / 'f1').mkdir()
    (tmp_path / 'f1' / 'f1.py').write_text(F1_METRIC, encoding='utf-8')
    env = {**os.environ, 'HF_HOME': str(tmp_path / 'hf_home'), 'HF_HUB_OFFLINE': '1', 'HF_EVALUATE_OFFLINE': '1',
           'HF_DATASETS_OFFLINE': '1'}
    done = subprocess.run([sys.executable, '-c', PROBE.format(src=str(REPO / 'src'))], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    package = Path(found['evaluate']).resolve()
    assert package.parts[-2:] == ('evaluate', '__init__.py'), package
    assert not package.is_relative_to(REPO / 'src'), package
    assert found['f1'] == {'f1': 0.8}  # tp 2, fp 0, fn 1: 4 / 5
