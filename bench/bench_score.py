"""Benchmark of scoring (src/gpt2/evaluation/scoring.py, as src/score.py runs it) on a random-weight model of
the 124M shape, with Hugging Face transformers' GPT2LMHeadModel (PyTorch, CPU) side by side on the same windows.

    python bench/bench_score.py                                   # strides 1024 and 512, batch 1, 4096 tokens
    python bench/bench_score.py --strides=1024 --batch_size=4 --tokens=8192
    python bench/bench_score.py --peers_python=''                 # this project only

Each measurement runs in a fresh process (this file, with the settings as JSON), so peak memory is its own; the
peer runs with --peers_python, an environment with torch and transformers (no dependency of this project). The
document is random token ids; both sides score it by the windows of scoring.py (the peer's loop is the Hugging
Face perplexity guide's, with the same window starts and scored tokens) and batch windows of one length.
Tokens/s counts scored tokens over the scoring time, after one warm-up window; CPU ms/token (all threads) moves
less with the load of a shared machine; every row notes the load average when it started.
"""
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_PEERS_PYTHON = '/tmp/peers/bin/python'
N_CTX, N_VOCAB, ENDOFTEXT = 1024, 50257, 50256


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def document(tokens, seed=0):
    import numpy as np
    return np.random.default_rng(seed).integers(0, N_VOCAB - 1, size=tokens).tolist()


# ---------------------------------------------------------------------------------------------------------------
# One measurement, in its own process
# ---------------------------------------------------------------------------------------------------------------

def measure_tf(settings):
    sys.path.insert(0, str(REPO / 'src'))
    from gpt2.base import runtime
    tf = runtime.import_tensorflow()  # first, as in the scripts
    tf.disable_v2_behavior()
    from gpt2 import loading
    from gpt2.evaluation import scoring
    import bench_sample
    name, model_dir = bench_sample.ensure_model(12, 768, 12)
    model_dir, hparams, _ = loading.load_model(name, model_dir.parent)
    doc = document(settings['tokens'])
    with tf.Graph().as_default(), tf.Session(config=scoring.session_config()) as sess:
        restored = loading.start_restore(sess, model_dir, hparams)
        scorer = scoring.Scorer(sess, hparams)
        restored()
        scorer.score([(doc[:N_CTX + 1], 1)])  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        scored = sum(len(ids) for _, ids, _, _ in scoring.score_documents(
            scorer.score, [(0, [doc])], first=ENDOFTEXT, n_ctx=N_CTX, stride=settings['stride'],
            batch_size=settings['batch_size']))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {'tokens': scored, 'seconds': seconds, 'cpu_seconds': cpu, 'peak_rss_mib': peak_rss_mib()}


def peer_windows(doc, stride):
    """The windows of scoring.py over [<|endoftext|>] + doc, written as the Hugging Face perplexity guide's loop:
    (begin, end, scored) per window, whose inputs are seq[begin:end] and targets seq[begin + 1:end + 1]."""
    seq, windows, previous_end = [ENDOFTEXT] + doc, [], 0
    end = min(N_CTX, len(doc))
    while True:
        windows.append((max(0, end - N_CTX), end, end - previous_end))
        previous_end = end
        if end == len(doc):
            return seq, windows
        end = min(end + stride, len(doc))


def measure_hf(settings):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=N_VOCAB, n_positions=N_CTX, n_embd=768, n_layer=12, n_head=12,
                        attn_implementation=settings.get('attn', 'sdpa'))
    model = GPT2LMHeadModel(config).eval()
    seq, windows = peer_windows(document(settings['tokens']), settings['stride'])
    batch = settings['batch_size']

    def run(part):
        """The windows' logits, then the log-probabilities of their scored targets (log_softmax, gather)."""
        inputs = torch.tensor([seq[b:e] for b, e, _ in part])  # [batch, seq]: a group has one length
        targets = torch.tensor([seq[b + 1:e + 1] for b, e, _ in part])
        logprobs = torch.log_softmax(model(inputs).logits, dim=-1).gather(2, targets[..., None])[..., 0]
        return [row[len(row) - k:] for row, (_, _, k) in zip(logprobs, part)]

    with torch.inference_mode():
        run([(0, min(N_CTX, len(seq) - 1), 1)])  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        groups = {}
        for w in windows:
            groups.setdefault(w[1] - w[0], []).append(w)
        for same_length in groups.values():
            for i in range(0, len(same_length), batch):
                run(same_length[i:i + batch])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {'tokens': sum(k for _, _, k in windows), 'seconds': seconds, 'cpu_seconds': cpu,
            'peak_rss_mib': peak_rss_mib()}


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------

def in_child(python, settings):
    load = os.getloadavg()[0]
    done = subprocess.run([python, str(Path(__file__)), '--child', json.dumps(settings)], capture_output=True,
                          text=True, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f'{settings} failed:\n{done.stderr[-3000:]}')
    return dict(json.loads(done.stdout.strip().splitlines()[-1]), load=load)


def main(strides=(1024, 512), batch_size=1, tokens=4096, peers_python=DEFAULT_PEERS_PYTHON):
    strides = [strides] if isinstance(strides, int) else list(strides)
    print(f'124M shape, random weights, a document of {tokens} tokens, batch {batch_size}, '
          f'{os.cpu_count()} cores', flush=True)
    print('| stride | scorer | tokens/s | CPU ms/token | peak RSS (MiB) | load at start |')
    print('|---|---|---|---|---|---|')
    for stride in strides:
        sides = [('this project (TF)', sys.executable, 'tf')]
        if peers_python:
            sides.append(('HF transformers (PyTorch)', peers_python, 'hf'))
        for label, python, side in sides:
            r = in_child(python, {'side': side, 'stride': stride, 'batch_size': batch_size, 'tokens': tokens})
            print(f"| {stride} | {label} | {r['tokens'] / r['seconds']:.0f} | "
                  f"{1000 * r['cpu_seconds'] / r['tokens']:.1f} | {r['peak_rss_mib']:.0f} | {r['load']:.2f} |",
                  flush=True)


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == '--child':
        settings = json.loads(sys.argv[2])
        sys.path.insert(0, str(BENCH))
        print(json.dumps((measure_tf if settings['side'] == 'tf' else measure_hf)(settings)))
    else:
        import fire
        fire.Fire(main)
