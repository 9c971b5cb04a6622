"""Greedy samples with each penalty against Hugging Face transformers' `generate`, beside the suite (torch and
transformers are no dependency of this project, so no test may need them):

    python bench/peer_generate.py [--peers_python /tmp/peers/bin/python] [--length 48]

A random-weight GPT-2 in the released layout, with the real GPT-2 vocabulary (tests/data/gpt2_vocab) and its
matrices 3.5 times GPT-2's initial scale (so that greedy text varies instead of repeating one token), goes out
with `convert.py to_hf`; transformers loads it (GPT2LMHeadModel) and samples greedily with each knob it shares
with this project: repetition_penalty and no_repeat_ngram_size, alone and together, and several prompts of
different lengths in one left-padded batch. This project samples the same prompts two ways: as the scripts
build the graph (sample.sample_sequence, every knob a Python number) and with generator.Generator (every knob a
placeholder fed per call). Each must equal transformers token for token.

transformers has no presence or frequency penalty (OpenAI's API's; its generate takes neither), so those are
checked against greedy decoding of the NumPy reference model (tests/reference.py) with the definitions applied in
NumPy, as are all the knobs together. Prints one line per check and exits 1 if any fails. Build the peers with
`python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torch transformers safetensors numpy`.
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / 'src'), str(ROOT / 'tests')]

from gpt2.base import runtime  # noqa: E402

tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
import fire  # noqa: E402
import numpy as np  # noqa: E402

import convert  # noqa: E402
import encoder  # noqa: E402
import model  # noqa: E402
import reference  # noqa: E402  (tests/)
import sample  # noqa: E402
from gpt2 import loading  # noqa: E402
from gpt2.base import checkpoint  # noqa: E402
from gpt2.sampling import generator  # noqa: E402
from gpt2.sampling import penalties as penalties_lib  # noqa: E402

sys.path.insert(0, str(ROOT / 'bench'))
import bench_sample  # noqa: E402

HPARAMS = {'n_vocab': 50257, 'n_ctx': 128, 'n_embd': 64, 'n_head': 4, 'n_layer': 2}
SCALE = 3.5  # times GPT-2's initial 0.02
PROMPTS = ['The quick brown fox', 'In a hole in the ground there lived a hobbit. Not a nasty, dirty, wet hole',
           'Hello']
# name -> (the project's penalties.Penalties fields, transformers' generate keywords); None: no transformers
# equivalent, checked against NumPy only.
CASES = {
    'no knob': ({}, {}),
    'repetition_penalty 1.3': ({'repetition': 1.3}, {'repetition_penalty': 1.3}),
    'repetition_penalty 2.0': ({'repetition': 2.0}, {'repetition_penalty': 2.0}),
    'repetition_penalty 0.8 (rewards repeats)': ({'repetition': 0.8}, {'repetition_penalty': 0.8}),
    'no_repeat_ngram_size 1': ({'no_repeat_ngram': 1}, {'no_repeat_ngram_size': 1}),
    'no_repeat_ngram_size 2': ({'no_repeat_ngram': 2}, {'no_repeat_ngram_size': 2}),
    'no_repeat_ngram_size 3': ({'no_repeat_ngram': 3}, {'no_repeat_ngram_size': 3}),
    'repetition_penalty 1.2 + no_repeat_ngram_size 2': ({'repetition': 1.2, 'no_repeat_ngram': 2},
                                                         {'repetition_penalty': 1.2, 'no_repeat_ngram_size': 2}),
    'presence_penalty 0.5': ({'presence': 0.5}, None),
    'frequency_penalty 0.3': ({'frequency': 0.3}, None),
    'presence 0.4 + frequency 0.2 + repetition 1.2 + no_repeat_ngram 3': (
        {'presence': 0.4, 'frequency': 0.2, 'repetition': 1.2, 'no_repeat_ngram': 3}, None),
}
MIXED = 'no knob, the three prompts in one batch'


def random_params(hparams, seed=0):
    """GPT-2's initialisation with the matrices SCALE times larger (bench_sample.random_params)."""
    return bench_sample.random_params(hparams, seed, scale=SCALE)


# ---------------------------------------------------------------------------------------------------------------
# NumPy: the penalties' definitions on the reference model's logits
# ---------------------------------------------------------------------------------------------------------------

def numpy_penalised(logits, seen, knobs):
    """The next token's logits after the knobs, from their published definitions; seen: the tokens so far."""
    logits = logits.copy()
    counts = np.bincount(seen, minlength=len(logits)).astype(np.float64)
    r = knobs.get('repetition', 1.0)
    if r != 1.0:  # CTRL: a seen token's logit divided by r if positive, multiplied by r if not
        logits = np.where(counts > 0, np.where(logits > 0, logits / r, logits * r), logits)
    # OpenAI: minus presence once per seen token, minus frequency per time seen
    logits = logits - knobs.get('presence', 0.0) * (counts > 0) - knobs.get('frequency', 0.0) * counts
    n = knobs.get('no_repeat_ngram', 0)
    if n:  # no n-gram twice: ban each token that follows an earlier occurrence of the last n - 1 tokens
        tail = tuple(seen[len(seen) - n + 1:]) if n > 1 else ()
        for i in range(len(seen) - n + 1):
            if tuple(seen[i:i + n - 1]) == tail:
                logits[seen[i + n - 1]] = -np.inf
    return logits


def numpy_greedy(params, prompt, length, knobs):
    """-> (the new tokens, the smallest gap between the two largest penalised logits at any step)."""
    tokens, gap = list(prompt), np.inf
    for _ in range(length):
        z = numpy_penalised(reference.logits(params, HPARAMS, np.array(tokens))[-1], tokens, knobs)
        top2 = np.sort(z)[-2:]
        gap = min(gap, top2[1] - top2[0])
        tokens.append(int(np.argmax(z)))
    return tokens[len(prompt):], float(gap)


# ---------------------------------------------------------------------------------------------------------------
# This project
# ---------------------------------------------------------------------------------------------------------------

def scripts_way(folder, prompts, length, knobs):
    """Greedy samples as the scripts build the graph: the knobs Python numbers; several prompts left-padded."""
    with tf.Graph().as_default(), tf.Session(config=sample.session_config()) as sess:
        hparams = model.default_hparams().override_from_dict(checkpoint.read_hparams(folder))
        restored = loading.start_restore(sess, folder, hparams)  # as the scripts: before the graph is built
        context = tf.placeholder(tf.int32, [len(prompts), None])
        lengths = tf.placeholder(tf.int32, [len(prompts)]) if len(prompts) > 1 else None
        output = sample.sample_sequence(hparams=hparams, length=length, context=context, context_lengths=lengths,
                                        temperature=0, penalties=penalties_lib.Penalties(**knobs),
                                        frozen_weights=True)
        restored()
        padded, n = sample.left_pad(prompts)
        out = sess.run(output, {context: padded, **({lengths: n} if lengths is not None else {})})
        return [row[padded.shape[1]:].tolist() for row in out]


GENERATOR_KEYWORDS = {'repetition': 'repetition_penalty', 'presence': 'presence_penalty',
                      'frequency': 'frequency_penalty', 'no_repeat_ngram': 'no_repeat_ngram_size'}


def generator_way(gen, texts, length, knobs):
    """Greedy samples from generator.Generator (the knobs fed per call)."""
    samples = gen.generate(texts, length=length, temperature=0, seed=0,
                           **{GENERATOR_KEYWORDS[k]: v for k, v in knobs.items()})
    return [s.tokens for s in samples]


def report(name, ok, detail):
    print(f'{"ok  " if ok else "FAIL"} {name}: {detail}', flush=True)
    return ok


def agreement(ours, theirs):
    """'n/total tokens equal' over all rows, and whether all are."""
    equal = sum(a == b for o, t in zip(ours, theirs) for a, b in zip(o, t))
    total = sum(len(t) for t in theirs)
    same = equal == total and [len(o) for o in ours] == [len(t) for t in theirs]
    return same, f'{equal}/{total} tokens equal'


def first_difference(ours, theirs):
    for row, (o, t) in enumerate(zip(ours, theirs)):
        for i, (a, b) in enumerate(zip(o, t)):
            if a != b:
                return f'; row {row} differs first at token {i}: {a} vs {b}'
    return ''


def main(peers_python='/tmp/peers/bin/python', length=48):
    """Args:
      peers_python: the Python of a virtual environment with torch and transformers.
      length: tokens sampled per prompt (prompt + length must fit the window, 128)."""
    tf.disable_v2_behavior()
    tmp = Path(tempfile.mkdtemp(prefix='peer_generate.'))
    ours = tmp / 'models' / 'random'
    params = random_params(HPARAMS)
    checkpoint.save_checkpoint(ours, HPARAMS, params)
    for name in ('encoder.json', 'vocab.bpe'):
        shutil.copyfile(ROOT / 'tests' / 'data' / 'gpt2_vocab' / name, ours / name)
    try:
        convert.to_hf(str(ours), str(tmp / 'hf'))
    except SystemExit as exit_info:
        if exit_info.code:
            raise
    enc = encoder.read_vocabulary(ours)
    prompts = [enc.encode(p) for p in PROMPTS]

    cases = [{'name': name, 'prompts': [p], 'length': length, 'knobs': hf_knobs, 'prompt': i}
             for name, (_, hf_knobs) in CASES.items() if hf_knobs is not None for i, p in enumerate(prompts)]
    cases.append({'name': MIXED, 'prompts': prompts, 'length': length, 'knobs': {}})
    settings = {'hf': str(tmp / 'hf'), 'cases': [dict(c, name=f'{c["name"]}#{c.get("prompt", "all")}')
                                                 for c in cases], 'out': str(tmp / 'peer.json')}
    done = subprocess.run([peers_python, str(ROOT / 'bench' / 'peer_generate_hf.py'), json.dumps(settings)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f'the peer failed:\n{done.stderr[-3000:]}')
    peer = json.loads((tmp / 'peer.json').read_text())
    print(f'transformers {peer["transformers"]}, torch {peer["torch"]}; {len(PROMPTS)} prompts of '
          f'{[len(p) for p in prompts]} tokens, {length} greedy tokens each; model {HPARAMS}, matrices x{SCALE}')

    results = []
    with generator.Generator('random', str(tmp / 'models')) as gen:
        for name, (knobs, hf_knobs) in CASES.items():
            if hf_knobs is not None:
                theirs = [peer['cases'][f'{name}#{i}']['tokens'][0] for i in range(len(prompts))]
                gap = min(peer['cases'][f'{name}#{i}']['min_gap'] for i in range(len(prompts)))
                peer_name = 'transformers'
            else:
                theirs, gaps = zip(*(numpy_greedy(params, p, length, knobs) for p in prompts))
                theirs, gap = list(theirs), min(gaps)
                peer_name = 'NumPy'
            distinct = len({t for row in theirs for t in row})
            for way, got in (('scripts', [scripts_way(ours, [p], length, knobs)[0] for p in prompts]),
                             ('Generator', generator_way(gen, PROMPTS, length, knobs))):
                same, detail = agreement(got, theirs)
                results.append(report(f'{name} [{way} = {peer_name}]', same,
                                      f'{detail}; {distinct} distinct tokens; smallest top-2 gap {gap:.2g}'
                                      + first_difference(got, theirs)))
        theirs = peer['cases'][f'{MIXED}#all']['tokens']
        for way, got in (('scripts', scripts_way(ours, prompts, length, {})),
                         ('Generator', generator_way(gen, PROMPTS, length, {}))):
            same, detail = agreement(got, theirs)
            results.append(report(f'{MIXED} [{way} = transformers, left-padded with an attention mask]', same,
                                  detail + first_difference(got, theirs)))
    shutil.rmtree(tmp)
    print(f'{sum(results)}/{len(results)} checks agree')
    sys.exit(0 if all(results) else 1)


if __name__ == '__main__':
    fire.Fire(main)
