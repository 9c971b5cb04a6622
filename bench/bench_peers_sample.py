"""Sampling speed side by side with the CPU peers, in one run: this project in float32 and int8, CTranslate2 in
float32 and int8, llama.cpp in f32 and q8_0, transformers (float32), on one random-weight model of a released
shape (124M by default), top_k 40, decode tokens/s:

    python bench/bench_peers_sample.py --peers_python /tmp/peers/bin/python --llama_source LLAMA_CPP_PYTHON_SRC
    python bench/bench_peers_sample.py --batch_sizes=1 --prompt_lengths=1 --engines=ours,ours_int8,ct2_int8

The peers (../shared/PEERS.md: ctranslate2, llama-cpp-python, torch, transformers) live in a Python of their own;
each configuration runs in a fresh process (ours: bench/measure_config.py, as bench_sample.py; the peers:
bench/peer_sample.py). The model goes out once with `convert.py to_hf`, then CTranslate2's converter (with and
without int8) and llama.cpp's convert_hf_to_gguf.py (from llama-cpp-python's source archive, --llama_source:
its unpacked folder; f32 and q8_0) make the peers' copies, cached in bench/.cache/peers/. Every engine samples
the same prompt of random tokens for every row and is made to draw exactly decode_tokens tokens.
llama-cpp-python samples one sequence at a time, so it has no batch-8 figure here.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import fire

import bench_sample  # noqa: E402  (bench/, on the path as the script's folder)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS_DIR = BENCH / '.cache' / 'peers'
VOCAB = REPO / 'tests' / 'data' / 'gpt2_vocab'
# engine name -> (peer_sample.py engine, the converted copy it reads); ours are bench_sample's configurations.
PEERS = {'ct2_float32': ('ct2', 'ct2-float32'), 'ct2_int8': ('ct2', 'ct2-int8'), 'llama_f32': ('llama', 'f32.gguf'),
         'llama_q8_0': ('llama', 'q8_0.gguf'), 'hf': ('hf', 'hf')}
OURS = {'ours': '.', 'ours_int8': '.+precision=int8'}
ENGINES = ('ours', 'ours_int8', 'ct2_float32', 'ct2_int8', 'llama_f32', 'llama_q8_0', 'hf')


def run(args, **kwargs):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f'{args[0]} {args[1]} failed:\n{done.stderr[-3000:]}')
    return done.stdout


def convert(name, model_dir, peers_python, llama_source):
    """The peers' copies of the model, made once -> {engine: path}."""
    out = PEERS_DIR / name
    hf = out / 'hf'
    if not (hf / 'config.json').exists():
        run([sys.executable, REPO / 'src' / 'convert.py', 'to_hf', model_dir, hf, '--overwrite'])
        # The real GPT-2 vocabulary instead of the random model's synthetic one (the same size): llama.cpp's
        # converter knows a tokenizer by what it makes of a test text. The times do not depend on it.
        shutil.copyfile(VOCAB / 'encoder.json', hf / 'vocab.json')
        shutil.copyfile(VOCAB / 'vocab.bpe', hf / 'merges.txt')
        config = json.loads((hf / 'config.json').read_text())
        (hf / 'config.json').write_text(json.dumps(dict(config, n_ctx=config.get('n_positions', 1024))))
    for quantization in ('float32', 'int8'):
        folder = out / f'ct2-{quantization}'
        if not (folder / 'model.bin').exists():
            run([peers_python, '-c', 'import sys, ctranslate2; ctranslate2.converters.TransformersConverter('
                 'sys.argv[1]).convert(sys.argv[2], quantization=sys.argv[3], force=True)', hf, folder, quantization])
    if llama_source:
        llama = Path(llama_source) / 'vendor' / 'llama.cpp'
        for outtype in ('f32', 'q8_0'):
            path = out / f'{outtype}.gguf'
            if not path.exists():
                run([peers_python, llama / 'convert_hf_to_gguf.py', hf, '--outtype', outtype, '--outfile', path],
                    env=dict(os.environ, PYTHONPATH=str(llama / 'gguf-py')))
    return {engine: out / copy for engine, (_, copy) in PEERS.items()}


def measure(engine, batch, prompt, options, paths, model_dir):
    """One configuration in a fresh process -> its result."""
    if engine in OURS:
        _, settings = bench_sample.parse_config(OURS[engine], options['defaults'])
        return bench_sample.measure_config(bench_sample.child_settings(
            settings, model_dir, REPO / 'src', batch, prompt, options['repeats'], False))
    peer, _ = PEERS[engine]
    settings = {'engine': peer, 'path': str(paths[engine]), 'batch_size': batch, 'prompt_len': prompt,
                'decode_tokens': options['decode_tokens'], 'repeats': options['repeats'],
                'top_k': options['top_k'], 'threads': os.cpu_count()}
    out = run([options['peers_python'], BENCH / 'peer_sample.py', json.dumps(settings)])
    return json.loads(out.strip().splitlines()[-1])


def table(rows, engines):
    """Median decode tokens/s per (batch, prompt) and engine, and each engine's ratio to ours."""
    print('\n| batch | prompt | ' + ' | '.join(engines) + ' |')
    print('|--:|--:|' + '--:|' * len(engines))
    for key in sorted({(r['batch_size'], r['prompt_len']) for r in rows}):
        cells = []
        for engine in engines:
            rates = [r['decode_tokens_per_s'] for r in rows if (r['batch_size'], r['prompt_len']) == key
                     and r['engine'] == engine]
            cells.append(f'{statistics.median(rates):.1f}' if rates else '')
        print(f'| {key[0]} | {key[1]} | ' + ' | '.join(cells) + ' |')
    print('\npeak RSS, MB (median): ' + ', '.join(
        f'{e} {statistics.median([r["peak_rss_mb"] for r in rows if r["engine"] == e]):.0f}'
        for e in engines if any(r['engine'] == e for r in rows)))


def main(peers_python='/tmp/peers/bin/python', llama_source=None, engines=ENGINES, batch_sizes=(1, 8),
         prompt_lengths=(1, 512), decode_tokens=64, repeats=3, rounds=1, top_k=40, n_layer=12, n_embd=768,
         n_head=12):
    """Measure sampling with this project and its peers side by side; print one JSON line per run and a table.

    peers_python: the Python that has ctranslate2, llama_cpp, torch and transformers (../shared/PEERS.md)
    llama_source: llama-cpp-python's unpacked source archive (for convert_hf_to_gguf.py); without it, no llama.cpp
    engines: which to run, of ours, ours_int8, ct2_float32, ct2_int8, llama_f32, llama_q8_0, hf
    batch_sizes: batch sizes (llama.cpp runs batch 1 only)
    prompt_lengths: prompt lengths in tokens
    decode_tokens: tokens each row draws after the prompt
    repeats: timed runs per configuration (after one warm-up); medians
    rounds: every configuration this many times, every other round in the reverse order
    top_k: top-k of every sampler
    n_layer: model depth (with n_embd and n_head: 12/768/12 is 124M)
    n_embd: model width
    n_head: attention heads
    """
    engines = [engines] if isinstance(engines, str) else list(engines)
    if not llama_source:
        engines = [e for e in engines if not e.startswith('llama')]
    name, model_dir = bench_sample.ensure_model(n_layer, n_embd, n_head)
    paths = convert(name, model_dir, peers_python, llama_source)
    defaults = dict(top_k=top_k, top_p=1.0, temperature=1.0, decode_tokens=decode_tokens, distinct_prompts=False,
                    mixed_lengths=False, singles=False, stop=[], repetition_penalty=1.0, presence_penalty=0.0,
                    frequency_penalty=0.0, no_repeat_ngram_size=0, context_keep=0, precision='float32')
    options = dict(defaults=defaults, repeats=repeats, decode_tokens=decode_tokens, top_k=top_k,
                   peers_python=peers_python)
    rows = []
    for round_ in range(rounds):
        for batch in bench_sample.as_list(batch_sizes):
            for prompt in bench_sample.as_list(prompt_lengths):
                for engine in engines if round_ % 2 == 0 else engines[::-1]:
                    if engine.startswith('llama') and batch != 1:
                        continue
                    load = os.getloadavg()[0]
                    result = measure(engine, batch, prompt, options, paths, model_dir)
                    row = {'engine': engine, 'round': round_, 'model': name, 'batch_size': batch,
                           'prompt_len': prompt, 'load': load, 'time': time.strftime('%H:%M:%S'), **result}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    table(rows, engines)


if __name__ == '__main__':
    fire.Fire(main)
