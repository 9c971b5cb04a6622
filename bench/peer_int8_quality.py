"""CTranslate2's perplexity on the windows score.py scored, in float32 and int8, run by measure_int8_quality.py
with the peers' Python (ctranslate2 and transformers are no dependency of this project):

    /tmp/peers/bin/python bench/peer_int8_quality.py HF_FOLDER WINDOWS_JSON WORK_FOLDER

HF_FOLDER is `convert.py to_hf`'s output. TransformersConverter writes it into WORK_FOLDER twice, with
quantization float32 and int8, and ctranslate2.Generator (CPU, 2 threads, compute_type default: the stored
type) scores each window with score_batch. WINDOWS_JSON: {"windows": [[token id, ...], ...], "scored": [k, ...]},
score.py's windows (its stride of the full window): each window's first token is context only, and its last k
tokens are the targets it scores, each target of the text once. Prints one JSON line: for each quantization the
targets, their negative log-likelihood in nats, the perplexity, and the compute type the Generator ran; for int8
also the mean and largest |log p int8 - log p float32| per token.
"""
import json
import math
import sys
from pathlib import Path

import ctranslate2
from transformers import AutoTokenizer

QUANTIZATIONS = ('float32', 'int8')


def converted(hf_folder, work, quantization):
    """HF_FOLDER -> a CTranslate2 model folder of that quantization (written anew each time: a few seconds)."""
    out = Path(work) / f'ct2-{quantization}'
    converter = ctranslate2.converters.TransformersConverter(str(hf_folder))
    converter.convert(str(out), quantization=quantization, force=True)
    return out


def score(model_dir, windows, scored, quantization):
    """-> {tokens, nll, perplexity, compute_type} over the scored targets of the windows (token strings, as
    CTranslate2 takes them)."""
    generator = ctranslate2.Generator(str(model_dir), device='cpu', inter_threads=1, intra_threads=2)
    results = generator.score_batch(windows, max_batch_size=16, max_input_length=0)
    logprobs = []  # of every scored target, in order
    for window, k, result in zip(windows, scored, results):
        assert len(result.log_probs) == len(window) - 1, (len(result.log_probs), len(window))
        logprobs.extend(result.log_probs[len(result.log_probs) - k:])
    nll = -math.fsum(logprobs)
    return {'tokens': len(logprobs), 'nll': nll, 'perplexity': math.exp(nll / len(logprobs)),
            'compute_type': generator.compute_type, 'quantization': quantization}, logprobs


def per_token_gap(ours, theirs):
    """-> the mean and the largest |difference| of two runs' log-probabilities of the same targets."""
    diffs = [abs(a - b) for a, b in zip(ours, theirs)]
    return {'mean_abs_logprob_diff': math.fsum(diffs) / len(diffs), 'max_abs_logprob_diff': max(diffs)}


def main(hf_folder, windows_json, work):
    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    given = json.loads(Path(windows_json).read_text())
    windows = [tokenizer.convert_ids_to_tokens(window) for window in given['windows']]
    runs = {q: score(converted(hf_folder, work, q), windows, given['scored'], q) for q in QUANTIZATIONS}
    figures = {q: figure for q, (figure, _) in runs.items()}
    figures['int8']['per_token'] = per_token_gap(runs['int8'][1], runs['float32'][1])
    print(json.dumps({'ctranslate2': ctranslate2.__version__, **figures}))


if __name__ == '__main__':
    main(*sys.argv[1:])
