"""One sampling configuration of a peer, run in a fresh process by bench_peers_sample.py with the peers' Python
(CTranslate2, llama-cpp-python and transformers are no dependency of this project):

    /tmp/peers/bin/python bench/peer_sample.py '<json settings>'

settings: engine ('ct2': CTranslate2's Generator on a converted folder, float32 or int8 as converted; 'llama':
llama.cpp through llama-cpp-python on a GGUF file, f32 or q8_0 as converted; 'hf': transformers'
GPT2LMHeadModel), path, batch_size, prompt_len, decode_tokens, repeats, top_k, threads, seed. Random weights:
their values do not change the time. Every engine samples with top-k at temperature 1 and is made to draw
exactly decode_tokens tokens. Prints one JSON line: decode tokens/s (every row's tokens after the first, over
the time after the first), the time to the first token, peak RSS (the process's own VmHWM).

Decode rate: llama.cpp and CTranslate2 at batch 1 stream their tokens, so the first token's time is taken off
directly; CTranslate2 at batch > 1 and transformers return whole batches, so a run of one token is timed as well
and its time (the prompt and the first token) taken off the full run's.
"""
import json
import statistics
import sys
import time


def peak_rss_mb():
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) for line in status if line.startswith('VmHWM')) / 1024


def prompts(settings, n_vocab=50257):
    import random
    rng = random.Random(settings.get('seed', 0))
    row = [rng.randrange(n_vocab) for _ in range(settings['prompt_len'])]
    return [row] * settings['batch_size']  # one prompt for every row, as bench_sample.py's default


def streamed(tokens_iter, count):
    """(seconds to the first token, seconds from it to the last) of the first `count` tokens of an iterator."""
    start = time.perf_counter()
    first = None
    for i, _ in zip(range(count), tokens_iter):
        if i == 0:
            first = time.perf_counter()
    return first - start, time.perf_counter() - first


def ct2_engine(settings):
    import ctranslate2
    gen = ctranslate2.Generator(settings['path'], device='cpu', inter_threads=1, intra_threads=settings['threads'])
    vocabulary = ct2_vocabulary(settings['path'])
    rows = [[vocabulary[t] for t in row] for row in prompts(settings)]
    n = settings['decode_tokens']

    def batch_run(length):
        start = time.perf_counter()
        gen.generate_batch(rows, max_length=length, min_length=length, sampling_topk=settings['top_k'],
                           sampling_temperature=1.0, include_prompt_in_result=False)
        return time.perf_counter() - start

    if settings['batch_size'] == 1:
        def once():
            steps = gen.generate_tokens(rows[0], max_length=n, min_length=n, sampling_topk=settings['top_k'],
                                        sampling_temperature=1.0)
            return streamed(steps, n)
    else:
        def once():
            full, first = batch_run(n), batch_run(1)
            return first, full - first
    return once


def ct2_vocabulary(path):
    """CTranslate2 takes token strings: its folder's vocabulary, id -> string."""
    import json as json_lib
    from pathlib import Path
    folder = Path(path)
    for name in ('vocabulary.json', 'vocabulary.txt'):
        if (folder / name).exists():
            text = (folder / name).read_text(encoding='utf-8')
            return json_lib.loads(text) if name.endswith('.json') else text.splitlines()
    raise FileNotFoundError(f'no vocabulary in {folder}')


def llama_engine(settings):
    from llama_cpp import Llama
    llm = Llama(model_path=settings['path'], n_ctx=1024, n_threads=settings['threads'], n_batch=512,
                verbose=False, seed=settings.get('seed', 0))
    row = prompts(settings)[0]
    n = settings['decode_tokens']
    if settings['batch_size'] != 1:
        raise ValueError("llama-cpp-python's Python API samples one sequence at a time")

    def once():
        llm.reset()
        return streamed(llm.generate(row, top_k=settings['top_k'], top_p=1.0, temp=1.0, reset=True), n)
    return once


def hf_engine(settings):
    import torch
    from transformers import GPT2LMHeadModel
    torch.set_num_threads(settings['threads'])
    hf = GPT2LMHeadModel.from_pretrained(settings['path']).eval()
    rows = torch.tensor(prompts(settings))
    n = settings['decode_tokens']

    def run(length):
        start = time.perf_counter()
        with torch.no_grad():
            hf.generate(rows, attention_mask=torch.ones_like(rows), do_sample=True, top_k=settings['top_k'],
                        max_new_tokens=length, min_new_tokens=length, pad_token_id=0)
        return time.perf_counter() - start

    def once():
        full, first = run(n), run(1)
        return first, full - first
    return once


ENGINES = {'ct2': ct2_engine, 'llama': llama_engine, 'hf': hf_engine}


def measure(settings):
    launched = time.time()
    once = ENGINES[settings['engine']](settings)
    loaded = time.time()
    once()  # warm-up
    firsts, decodes = zip(*[once() for _ in range(settings['repeats'])])
    decode = statistics.median(decodes)
    tokens = settings['batch_size'] * (settings['decode_tokens'] - 1)
    return {'load_s': round(loaded - launched, 3), 'first_token_s': round(statistics.median(firsts), 4),
            'decode_tokens_per_s': round(tokens / decode, 2),
            'decode_step_ms': round(1000 * decode / (settings['decode_tokens'] - 1), 3),
            'peak_rss_mb': round(peak_rss_mb())}


if __name__ == '__main__':
    print(json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
