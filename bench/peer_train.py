"""One training configuration of a peer, Hugging Face transformers' GPT2LMHeadModel on PyTorch (CPU), run in a
fresh process by bench_train.py with the peers' Python (torch and transformers are no dependency of this project):

    /tmp/peers/bin/python bench/peer_train.py '<json settings>'

settings: n_layer, n_embd, n_head, n_vocab, n_ctx, batch_size, seq_len, steps, learning_rate, launched (the parent's
time.time() before it started this process), attn ('eager': attention weights materialised, the same maths as
GPT-2's; 'sdpa': PyTorch's fused attention, transformers' default), dropout (GPT-2 trains without; transformers'
default config has 0.1), autocast (true: the forward pass and the loss under torch.autocast('cpu',
dtype=torch.bfloat16), PyTorch's mixed precision: its products in bfloat16, the weights, their gradients and
Adam's state float32). Random weights: their values do not change the time. Prints one JSON line of results.
"""
import contextlib
import json
import resource
import statistics
import sys
import time


def cpu_seconds():
    """CPU time of this process so far, over all its threads: on a loaded machine it stays near what the work
    costs, where the time on the clock grows with the others' load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(settings):
    launched = settings['launched']
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    imported = time.time()

    torch.manual_seed(0)
    p = settings['dropout']
    config = GPT2Config(vocab_size=settings['n_vocab'], n_positions=settings['n_ctx'], n_embd=settings['n_embd'],
                        n_layer=settings['n_layer'], n_head=settings['n_head'], resid_pdrop=p, embd_pdrop=p,
                        attn_pdrop=p, attn_implementation=settings['attn'])
    model = GPT2LMHeadModel(config)
    assert model.config._attn_implementation == settings['attn'], model.config._attn_implementation
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings['learning_rate'])
    built = time.time()

    tokens = torch.randint(0, settings['n_vocab'], (settings['batch_size'], settings['seq_len']),
                           generator=torch.Generator().manual_seed(0))

    def autocast():
        if settings.get('autocast'):
            return torch.autocast('cpu', dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        optimizer.zero_grad(set_to_none=True)
        # labels=tokens: transformers shifts them, the mean cross-entropy of logits [:, :-1] against tokens [:, 1:]
        with autocast():
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()  # outside autocast, as PyTorch's recipe has it: the backward ops run in their forward's dtype
        optimizer.step()
        return loss

    step()
    first_step, first_step_cpu = time.time(), cpu_seconds()
    times = []
    for _ in range(settings['steps']):
        start = time.time()
        loss = step()
        times.append(time.time() - start)
    step_s = statistics.median(times)
    step_cpu_s = (cpu_seconds() - first_step_cpu) / settings['steps']
    result = {
        'loop': f'hf-{settings["attn"]}' + ('+autocast' if settings.get('autocast') else ''),
        'import_s': imported - launched, 'build_s': built - imported,
        'first_step_s': first_step - launched, 'step_s': step_s,
        'first_step_cpu_s': first_step_cpu, 'step_cpu_s': step_cpu_s, 'step_times': [round(t, 2) for t in times],
        'tokens_per_s': settings['batch_size'] * settings['seq_len'] / step_s,
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'loss': float(loss),
        'torch': torch.__version__, 'threads': torch.get_num_threads(),
    }
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == '__main__':
    print(json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
