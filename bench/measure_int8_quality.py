"""What int8 costs in quality: perplexity and greedy text with --precision int8 against float32, and CTranslate2's
int8 on the same weights, in one command.

    python bench/measure_int8_quality.py        # the model bench/quality_model.py trains here, its held-out text
    python bench/measure_int8_quality.py --models_dir models --model_name 124M --text some.txt  # released weights
    python bench/measure_int8_quality.py --peers=False    # without CTranslate2
    python bench/measure_int8_quality.py --help

1. Perplexity: src/score.py TEXT --json --precision float32, then int8, as a user runs it (each file one
   document, disjoint windows of the model's full width). The gap is int8's perplexity over float32's, less 1.
   Per token (--per_token): the mean and largest |log p int8 - log p float32|.
2. Greedy text: --prompts prompts, each --prompt_tokens tokens of TEXT's tokens at evenly spaced places,
   continued --length tokens with top_k 1 by generator.Generator in float32 and in int8 (one batch each). Two
   shares of agreement, over all prompts x length positions:
     prefix: tokens before a prompt's first disagreement (after it the two continue different texts);
     positionwise: positions where the two tokens are the same, divergences included.
3. CTranslate2 (with --peers_python, bench/peer_int8_quality.py): `src/convert.py to_hf` of the same weights,
   converted with quantization float32 and int8, scoring exactly score.py's windows of the same token ids.
   Its float32 figure should equal ours: that checks the windows and the conversion. Per token as ours.

Prints a table and writes every figure to bench/.cache/int8-quality/MODEL_NAME/results.json (git-ignored).
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import fire
import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / 'src'))

from gpt2.base import runtime  # noqa: E402

QUALITY = BENCH / '.cache' / 'quality'
PRECISIONS = ('float32', 'int8')
DEFAULT_PEERS_PYTHON = '/tmp/peers/bin/python'


# ---------------------------------------------------------------------------------------------------------------
# Perplexity: score.py, as a user runs it
# ---------------------------------------------------------------------------------------------------------------

def run_script(args, what):
    """Run a script of src/ or bench/ -> its stdout; its stderr passes through; a failure ends this one."""
    proc = subprocess.run(args, cwd=REPO, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    if proc.returncode:
        sys.exit(f'error: {what} failed (exit {proc.returncode}): {" ".join(map(str, args))}')
    return proc.stdout.decode()


def score(text, models_dir, model_name, precision, work):
    """src/score.py TEXT --json --per_token --precision P -> (its total figures and seconds, the per-token
    lines: {ids, logprobs} a document)."""
    per_token = work / f'per_token-{precision}.jsonl'
    start = time.time()
    out = run_script([sys.executable, str(REPO / 'src' / 'score.py'), str(text), '--models_dir', str(models_dir),
                      '--model_name', model_name, '--json', '--per_token', str(per_token), '--precision',
                      precision], f'score.py --precision {precision}')
    total = json.loads(out.strip().splitlines()[-1])['total']
    total['seconds'] = round(time.time() - start, 1)
    lines = [json.loads(line) for line in per_token.read_text(encoding='utf-8').splitlines()]
    return total, lines


def per_token_gap(ours, theirs):
    """Two runs' per-token lines of the same text -> the mean and the largest |difference| of log p."""
    a = np.concatenate([line['logprobs'] for line in ours])
    b = np.concatenate([line['logprobs'] for line in theirs])
    assert [line['ids'] for line in ours] == [line['ids'] for line in theirs], 'the two runs scored other tokens'
    diff = np.abs(a - b)
    return {'mean_abs_logprob_diff': float(diff.mean()), 'max_abs_logprob_diff': float(diff.max())}


# ---------------------------------------------------------------------------------------------------------------
# Greedy text: generator.Generator, float32 against int8
# ---------------------------------------------------------------------------------------------------------------

def prompt_texts(enc, lines, prompts, prompt_tokens, length):
    """prompts texts of prompt_tokens tokens each, at evenly spaced places in the scored tokens (all documents'
    in a row), leaving room for length tokens after each."""
    ids = [t for line in lines for t in line['ids']]
    last = len(ids) - prompt_tokens - length
    if last < 0:
        sys.exit(f'error: the text has {len(ids)} tokens, fewer than --prompt_tokens + --length')
    starts = np.linspace(0, last, prompts).astype(int)
    return [enc.decode(ids[s:s + prompt_tokens]) for s in starts]


def greedy(models_dir, model_name, precision, prompts, length):
    """-> each prompt's length greedy tokens, and the seconds taken (one batch, the Generator's)."""
    from gpt2.sampling import generator
    with generator.Generator(model_name, str(models_dir), precision=precision) as gen:
        start = time.time()
        samples = gen.generate(prompts, length=length, top_k=1, seed=1)
        seconds = time.time() - start
    return [s.tokens for s in samples], round(seconds, 1)


def agreement(ours, theirs):
    """Two sets of continuations of the same prompts -> the shares of tokens that agree (module docstring)."""
    prefixes, same, total = [], 0, 0
    for a, b in zip(ours, theirs):
        n = min(len(a), len(b))
        equal = [a[i] == b[i] for i in range(n)]
        prefixes.append(equal.index(False) if False in equal else n)
        same += sum(equal)
        total += max(len(a), len(b))
    return {'prefix_share': sum(prefixes) / total, 'positionwise_share': same / total,
            'identical_continuations': sum(p == len(a) == len(b) for p, a, b in zip(prefixes, ours, theirs)),
            'median_first_divergence': statistics.median(prefixes), 'continuations': len(ours),
            'tokens': total}


# ---------------------------------------------------------------------------------------------------------------
# CTranslate2 on the same weights and windows
# ---------------------------------------------------------------------------------------------------------------

def score_windows(lines, eot, n_ctx):
    """score.py's windows of the scored tokens at its default stride (the whole window) -> {windows: lists of
    ids, scored: how many of each window's last targets are scored} (only a document's last window, which
    reaches back for context, scores fewer than all)."""
    from gpt2.evaluation import scoring
    out = {'windows': [], 'scored': []}
    for line in lines:
        for tokens, k in scoring.windows([line['ids']], eot, n_ctx, n_ctx):
            out['windows'].append([int(t) for t in tokens])
            out['scored'].append(int(k))
    assert sum(out['scored']) == sum(len(line['ids']) for line in lines)
    return out


def ctranslate2_figures(peers_python, models_dir, model_name, lines, enc, n_ctx, work):
    """convert.py to_hf, then bench/peer_int8_quality.py in the peers' Python -> its figures."""
    hf = work / 'hf'
    run_script([sys.executable, str(REPO / 'src' / 'convert.py'), 'to_hf', str(Path(models_dir) / model_name),
                str(hf), '--overwrite'], 'convert.py to_hf')
    windows = work / 'windows.json'
    eot = enc.encoder['<|endoftext|>']
    windows.write_text(json.dumps(score_windows(lines, eot, n_ctx)))
    out = run_script([peers_python, str(BENCH / 'peer_int8_quality.py'), str(hf), str(windows), str(work)],
                     'bench/peer_int8_quality.py')
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------

def gap(figure, base):
    return figure['perplexity'] / base['perplexity'] - 1


def print_report(results):
    ppl, greedy_figures = results['perplexity'], results['greedy']
    base = ppl['float32']
    print(f"\nmodel {results['model']}, text {results['text']}: {base['tokens']} tokens scored "
          f"(load average {results['load_average']})")
    print('| | perplexity | vs float32 | seconds (score.py, from launch) |')
    print('|---|--:|--:|--:|')
    rows = [(f'this project, {p}', ppl[p]) for p in PRECISIONS]
    rows += [(f"CTranslate2 {results['ctranslate2']['ctranslate2']}, {q} ({f['compute_type']})", f)
             for q, f in results.get('ctranslate2', {}).items() if isinstance(f, dict)]
    for name, figure in rows:
        print(f"| {name} | {figure['perplexity']:.4f} | {100 * gap(figure, base):+.3f}% | "
              f"{figure.get('seconds', '')} |")
    gaps = [('this project', ppl['per_token'])]
    if 'ctranslate2' in results:
        gaps.append(('CTranslate2', results['ctranslate2']['int8']['per_token']))
    for name, figure in gaps:
        print(f"per token, {name}'s int8 against its float32: mean |d log p| "
              f"{figure['mean_abs_logprob_diff']:.2e}, largest {figure['max_abs_logprob_diff']:.2e}")
    g = greedy_figures['agreement']
    print(f"greedy, {g['continuations']} prompts of {results['settings']['prompt_tokens']} tokens x "
          f"{results['settings']['length']} tokens: prefix agreement {100 * g['prefix_share']:.2f}%, "
          f"positionwise {100 * g['positionwise_share']:.2f}%, identical continuations "
          f"{g['identical_continuations']}/{g['continuations']}, median first divergence "
          f"{g['median_first_divergence']}")


def main(models_dir=str(QUALITY / 'runs'), model_name='trained', text=str(QUALITY / 'heldout.txt'), prompts=50,
         prompt_tokens=64, length=32, peers=True, peers_python=DEFAULT_PEERS_PYTHON):
    """models_dir, model_name: the model (default: bench/quality_model.py's); text: the text scored, where the
    prompts come from (default: its held-out text); prompts, prompt_tokens, length: the greedy check; peers:
    CTranslate2 too, run by peers_python."""
    from gpt2.base import checkpoint
    # Absolute paths: the scripts run from the repository's root, wherever this one was started.
    models_dir, text = checkpoint.resolve_models_dir(models_dir).resolve(), Path(text).resolve()
    model_dir = models_dir / model_name
    for path in (text, model_dir / 'hparams.json'):
        if not path.is_file():
            sys.exit(f'error: {path} not found (python bench/quality_model.py builds the default model and text)')
    runtime.setup_process()
    import encoder
    hparams = checkpoint.read_hparams(model_dir)
    enc = encoder.get_encoder(model_name, models_dir)
    work = BENCH / '.cache' / 'int8-quality' / model_name
    work.mkdir(parents=True, exist_ok=True)
    results = {'model': f'{model_dir} ({hparams})', 'text': str(text), 'load_average': os.getloadavg()[0],
               'settings': {'prompts': prompts, 'prompt_tokens': prompt_tokens, 'length': length}}
    scored = {p: score(text, models_dir, model_name, p, work) for p in PRECISIONS}
    results['perplexity'] = {p: total for p, (total, _) in scored.items()}
    results['perplexity']['per_token'] = per_token_gap(scored['float32'][1], scored['int8'][1])
    texts = prompt_texts(enc, scored['float32'][1], prompts, prompt_tokens, length)
    runs = {p: greedy(models_dir, model_name, p, texts, length) for p in PRECISIONS}
    results['greedy'] = {'agreement': agreement(runs['float32'][0], runs['int8'][0]),
                         'seconds': {p: s for p, (_, s) in runs.items()}}
    if peers:
        results['ctranslate2'] = ctranslate2_figures(peers_python, models_dir, model_name, scored['float32'][1],
                                                     enc, hparams['n_ctx'], work)
    results['load_average_after'] = os.getloadavg()[0]
    (work / 'results.json').write_text(json.dumps(results, indent=2) + '\n', encoding='utf-8')
    print_report(results)


if __name__ == '__main__':
    fire.Fire(main)
