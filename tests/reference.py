"""An independent NumPy GPT-2 forward pass, written from the paper's maths, to check the TensorFlow code against.

`rounded`, where a function takes it, is applied to every result that mixed-precision training holds in half
precision (the products' inputs and results, the activations; not the layer norms' statistics, nor the softmax,
nor the loss): bfloat16 below models a bfloat16 step, None (the default) is float64 throughout."""
import numpy as np


def exact(x):
    return x


def bfloat16(x):
    """x rounded to the nearest bfloat16 (ties to even), as float64: float32's sign, exponent and top 7 of its 23
    mantissa bits (8 significant bits with the implicit one; the unit roundoff is 2**-8)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def layer_norm(x, g, b, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


def linear(x, p, name):
    return x @ p[name + '/w'][0] + p[name + '/b']


def attention(x, p, name, n_head, r=exact):
    """x [seq, n_embd] -> [seq, n_embd], causal. r: see rounded_linear."""
    seq, n_embd = x.shape
    q, k, v = np.split(rounded_linear(x, p, name + '/c_attn', r), 3, axis=-1)
    heads = []
    causal = np.tril(np.ones((seq, seq), dtype=bool))
    for qh, kh, vh in zip(*(np.split(t, n_head, axis=-1) for t in (q, k, v))):
        if r is exact:
            scores = qh @ kh.T / np.sqrt(qh.shape[-1])
        else:  # as the model scales them: the queries, by the scale in half precision
            scores = r(r(qh * r(1 / np.sqrt(qh.shape[-1]))) @ kh.T)
        scores = np.where(causal, scores, -np.inf)
        heads.append(r(r(softmax(scores)) @ vh))
    return rounded_linear(np.concatenate(heads, axis=-1), p, name + '/c_proj', r)


def embed(p, tokens):
    """tokens [seq] -> the token plus position embeddings [seq, n_embd]."""
    return p['model/wte'][tokens].astype(np.float64) + p['model/wpe'][np.arange(len(tokens))]


def rounded_linear(x, p, name, r):
    """linear with its inputs, weights and result rounded by r (the product and its bias sum rounded once)."""
    if r is exact:
        return linear(x, p, name)
    return r(linear(r(x), {name + '/w': r(p[name + '/w']), name + '/b': r(p[name + '/b'])}, name))


def hidden_states(p, hparams, tokens, rounded=None):
    """tokens [seq] -> [n_layer + 1, seq, n_embd], in float64: the embeddings (token + position), each block's
    output but the last's, and the last block's output after the final layer norm (Hugging Face's convention)."""
    r = rounded or exact
    x = r(embed(p, tokens).astype(np.float64))
    p = {k: v.astype(np.float64) for k, v in p.items()}
    states = [x]
    for i in range(hparams['n_layer']):
        h = f'model/h{i}'
        a = attention(r(layer_norm(x, p[h + '/ln_1/g'], p[h + '/ln_1/b'])), p, h + '/attn', hparams['n_head'], r)
        x = r(x + a)
        m = r(gelu(rounded_linear(r(layer_norm(x, p[h + '/ln_2/g'], p[h + '/ln_2/b'])), p, h + '/mlp/c_fc', r)))
        x = r(x + rounded_linear(m, p, h + '/mlp/c_proj', r))
        states.append(x)
    states[-1] = r(layer_norm(x, p['model/ln_f/g'], p['model/ln_f/b']))
    return np.stack(states)


def logits(p, hparams, tokens, rounded=None):
    """tokens [seq] -> logits [seq, n_vocab], in float64: the final hidden state times the token embeddings."""
    r = rounded or exact
    return r(hidden_states(p, hparams, tokens, rounded)[-1] @ r(p['model/wte'].astype(np.float64)).T)


def greedy(p, hparams, tokens, length):
    """Extend tokens by length argmax tokens."""
    tokens = list(tokens)
    for _ in range(length):
        tokens.append(int(np.argmax(logits(p, hparams, np.array(tokens))[-1])))
    return tokens


def next_token_losses(p, hparams, tokens, rounded=None):
    """tokens [seq] -> the cross-entropy of each next token [seq - 1]: -log softmax(logits[i])[tokens[i + 1]]."""
    z = logits(p, hparams, tokens, rounded)[:-1]
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -log_probs[np.arange(len(tokens) - 1), tokens[1:]]


def loss(p, hparams, rows, rounded=None):
    """rows: token sequences, of any lengths -> the mean cross-entropy over all their next-token targets."""
    return np.concatenate([next_token_losses(p, hparams, np.asarray(r), rounded) for r in rows]).mean()


def penalised(logits, sequence, *, repetition=1.0, presence=0.0, frequency=0.0, no_repeat_ngram=0):
    """One row's logits [n_vocab] after the tokens of sequence, from the published definitions."""
    logits = np.array(logits, np.float64)
    for token in set(sequence):
        if repetition != 1:  # CTRL, as transformers' RepetitionPenaltyLogitsProcessor
            logits[token] = logits[token] / repetition if logits[token] > 0 else logits[token] * repetition
    for token in set(sequence):  # OpenAI's API
        logits[token] -= presence + frequency * sequence.count(token)
    n = no_repeat_ngram
    if n and len(sequence) >= n - 1:  # transformers' NoRepeatNGramLogitsProcessor
        tail = tuple(sequence[len(sequence) - n + 1:]) if n > 1 else ()
        for start in range(len(sequence) - n + 1):
            if tuple(sequence[start:start + n - 1]) == tail:
                logits[sequence[start + n - 1]] = -np.inf
    return logits


def penalised_greedy(p, hparams, prompt, length, **knobs):
    """Extend prompt by length argmax tokens of the penalised logits (see penalised)."""
    tokens = list(prompt)
    for _ in range(length):
        tokens.append(int(np.argmax(penalised(logits(p, hparams, np.array(tokens))[-1], tokens, **knobs))))
    return tokens


def sliding_greedy(p, hparams, prompt, length, keep):
    """Greedy past the window, by hand: each token is predicted from the tokens before it, from `start` on; when
    those are more than n_ctx, start moves so that the last `keep` remain."""
    tokens, start = list(prompt), 0
    for _ in range(length):
        if len(tokens) - start > hparams['n_ctx']:
            start = len(tokens) - keep
        tokens.append(int(np.argmax(logits(p, hparams, np.array(tokens[start:]))[-1])))
    return tokens


def finite_difference(p, hparams, rows, name, index, eps=1e-4):
    """d loss(rows) / d p[name][index] by central differences, in float64."""
    losses = []
    for sign in (1, -1):
        params = {k: v.astype(np.float64) for k, v in p.items()}
        params[name][index] += sign * eps
        losses.append(loss(params, hparams, rows))
    return (losses[0] - losses[1]) / (2 * eps)
