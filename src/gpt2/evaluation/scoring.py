"""Scoring text with GPT-2: the windows a long document is cut into, and the log-probabilities of their targets.

A document x_1..x_N is scored after the <|endoftext|> token x_0, so that its first token is scored too. A model
sees at most n_ctx tokens at once, so a longer document is scored in windows (stride S, 1 to n_ctx):

- the first window takes x_0..x_{n_ctx-1} as input and scores all its targets x_1..x_{n_ctx};
- each later window moves on by S tokens and scores only the S targets no window has scored yet, its last ones,
  so each of them sees at least n_ctx + 1 - S tokens before it;
- the last window ends just before the document's last token, and is as long as the document allows.

Every token is scored exactly once. At S = n_ctx this is lm-evaluation-harness's `loglikelihood_rolling`
(disjoint windows); a smaller S gives each token more context for more work (S = 512 at n_ctx 1024 is the
sliding window of the Hugging Face perplexity guide).

A window is written (tokens, k): tokens [L + 1] are its input (all but the last) and its targets (all but the
first), and it scores the last k targets. The model's logits are reduced to the targets' log-probabilities inside
the graph: a window of 1024 positions has 200 MB of logits at the 124M model's vocabulary, and 4 KB of results.
"""
import contextlib

import numpy as np
import tensorflow.compat.v1 as tf

import model

from gpt2 import loading
from gpt2.sampling import cpu_matmul, half, int8

# Bytes of activations a batch of windows may take: the default batch size.
ACTIVATION_BUDGET = 1 << 30
MAX_DEFAULT_BATCH = 64
# Scored positions whose logits are made at once (see reduced): 51 MB at the released vocabulary.
CHUNK_ROWS = 256


# ---------------------------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------------------------

def windows(chunks, first, n_ctx, stride):
    """The windows of one document whose tokens arrive as chunks (lists or arrays of ids, of any sizes), after
    the token `first`. Yields (tokens [L + 1] int32 array, k), in order; only the tokens a later window needs are
    kept, so a document longer than memory can be scored. A document without tokens has no windows."""
    if not 1 <= stride <= n_ctx:
        raise ValueError(f'stride must be from 1 to n_ctx {n_ctx}, got {stride}')
    chunks = iter(chunks)
    buffer = [first]  # tokens from absolute position `start` on (x_0 is position 0)
    start, scored = 0, 0  # x_1..x_scored are scored
    exhausted = False
    while True:
        wanted = scored + (n_ctx if scored == 0 else stride)  # the last target of the next window, if there
        while not exhausted and start + len(buffer) <= wanted:
            chunk = next(chunks, None)
            if chunk is None:
                exhausted = True
            else:
                buffer.extend(int(t) for t in chunk)
        end = min(wanted, start + len(buffer) - 1)  # the window's last target x_end
        if end <= scored:
            return
        low = max(0, end - n_ctx)  # its first input
        yield np.asarray(buffer[low - start:end + 1 - start], dtype=np.int32), end - scored
        scored = end
        # The next window's first input is at least x_{end + 1 - n_ctx}.
        keep = max(0, end + 1 - n_ctx)
        del buffer[:keep - start]
        start = max(start, keep)


def session_config():
    """Scoring runs a few large products at a time, so each op gets every core (TensorFlow's default), unlike
    sampling's many small ones (sample.session_config); soft placement and GPU memory taken as needed as there."""
    config = tf.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    return config


def default_batch_size(hparams):
    """Windows scored at once: as many full windows as ACTIVATION_BUDGET holds of the largest activations, a
    layer's attention scores and weights, 2 x n_head x n_ctx^2 floats a window (10 at 124M, 5 at 1558M)."""
    per_window = 2 * hparams.n_head * hparams.n_ctx ** 2 * 4
    return max(1, min(MAX_DEFAULT_BATCH, ACTIVATION_BUDGET // per_window))


# ---------------------------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------------------------

def final_hidden(hparams, tokens, linear=model.linear, embed=model.embed):
    """tokens [batch, seq] -> (the last layer norm's output [batch, seq, n_embd], wte [n_vocab, n_embd]):
    model.model without its unembedding, so that logits are made only for the positions scored, a chunk at a
    time. The model's variables are reused if they exist (loading.start_restore creates them). linear and
    embed: the blocks' product and the embeddings (model.py's, or int8's)."""
    with tf.variable_scope('model', reuse=tf.AUTO_REUSE):
        wpe, wte = model.embeddings(hparams)
        h = embed(tokens, model.positions_for(tokens, 0), wpe, wte)
        for layer in range(hparams.n_layer):
            h, _ = model.block(h, f'h{layer}', past=None, hparams=hparams, linear=linear)
        return model.norm(h, 'ln_f'), wte


def reduced(h, wte, targets, banned, int8_weights=None, half_products=None):
    """h [rows, n_embd], targets [rows], banned [n_vocab] bool -> (log p(target) [rows], whether each target is
    the argmax [rows], whether it is the argmax of the tokens not banned [rows]). int8_weights: an int8.Weights
    for int8 logits, or None; half_products: a half.Products for logits from wte in half precision, or None.

    The logits are made CHUNK_ROWS rows at a time, one chunk after the other, and reduced at once: log softmax at
    the target only, logit[target] - logsumexp(logits). A full window of the 124M model would otherwise hold
    200 MB of logits and as much again for the softmax (bench/bench_score.py measures the peak)."""
    rows = tf.shape(h)[0]
    chunks = (rows + CHUNK_ROWS - 1) // CHUNK_ROWS
    pad = chunks * CHUNK_ROWS - rows
    h = tf.reshape(tf.pad(h, [[0, pad], [0, 0]]), [chunks, CHUNK_ROWS, h.shape[-1]])
    targets = tf.reshape(tf.pad(targets, [[0, pad]]), [chunks, CHUNK_ROWS])
    penalty = tf.where(banned, tf.fill(tf.shape(banned), tf.float32.min), tf.zeros(tf.shape(banned)))

    def chunk(args):
        h, targets = args
        if half_products is not None:
            logits = half_products.logits(h, wte)  # float32
        elif int8_weights is None:
            logits = tf.matmul(h, wte, transpose_b=True)  # [CHUNK_ROWS, n_vocab]
        else:
            logits = int8.matmul(h, int8_weights.get(wte, transpose=True))
        chosen = tf.gather(logits, targets, axis=1, batch_dims=1)
        argmax = lambda z: tf.argmax(z, axis=-1, output_type=tf.int32)
        return (chosen - tf.reduce_logsumexp(logits, axis=-1), tf.equal(argmax(logits), targets),
                tf.equal(argmax(logits + penalty), targets))

    out = tf.map_fn(chunk, (h, targets), fn_output_signature=(tf.float32, tf.bool, tf.bool), parallel_iterations=1,
                    back_prop=False)
    return [tf.reshape(o, [-1])[:rows] for o in out]


class Scorer:
    """Scores windows in a session whose graph holds the model's variables (restored, or about to be)."""

    def __init__(self, sess, hparams, precision='float32'):
        """precision: float32, or int8 on a CPU: every product as int8 sampling makes it (gpt2/sampling/int8.py);
        float32, said on stderr, where TensorFlow's int8 kernel does not work. float16 or bfloat16 (for a GPU):
        every product's weights in half precision, as half-precision sampling makes them (gpt2/sampling/half.py);
        attention, the layer norms and the log-probabilities stay float32."""
        self.sess = sess
        self.hparams = hparams
        self.inputs = tf.placeholder(tf.int32, [None, None], name='score_inputs')  # [batch, seq]
        self.scored = tf.placeholder(tf.int32, [None], name='score_positions')  # [rows] in batch * seq
        self.targets = tf.placeholder(tf.int32, [None], name='score_targets')  # [rows]
        # Tokens the argmax may not take, for gpt2/evaluation/lambada.py's stop-word filter; none unless fed.
        self.banned = tf.placeholder_with_default(tf.zeros([hparams.n_vocab], tf.bool), [hparams.n_vocab])
        # One op per product, on every core (session_config): one column slice per weight.
        weights = int8.weights_if_kernel_works(1, 'scoring') if precision == 'int8' else None
        halves = half.products(precision) if precision in half.PRECISIONS else None
        products = halves or cpu_matmul.Products(int8=weights)
        h, wte = final_hidden(hparams, self.inputs, products.linear(False), products.embed)
        h = tf.gather(tf.reshape(h, [-1, hparams.n_embd]), self.scored)  # [rows, n_embd]
        self.logprobs, self.greedy, self.allowed_greedy = reduced(h, wte, self.targets, self.banned, weights,
                                                                  halves)

    def score(self, batch, banned=None):
        """batch: windows (tokens [L + 1], k) -> for each, (log-probabilities [k] float64, greedy [k] bool) of its
        last k targets, and with banned ([n_vocab] bool) a third array: greedy among the tokens not banned. The
        windows are padded on the right to the longest: a causal model's earlier positions never see the
        padding."""
        longest = max(len(tokens) for tokens, _ in batch) - 1
        rows = np.zeros([len(batch), longest + 1], dtype=np.int32)
        for row, (tokens, _) in zip(rows, batch):
            row[:len(tokens)] = tokens
        # The flat positions of the scored targets: the last k of each window's L.
        scored = np.concatenate([n * longest + np.arange(len(tokens) - 1 - k, len(tokens) - 1)
                                 for n, (tokens, k) in enumerate(batch)])
        feed = {self.inputs: rows[:, :-1], self.scored: scored, self.targets: rows[:, 1:].reshape(-1)[scored]}
        fetches = [self.logprobs, self.greedy]
        if banned is not None:
            feed[self.banned] = banned
            fetches.append(self.allowed_greedy)
        arrays = self.sess.run(fetches, feed)
        results, start = [], 0
        for _, k in batch:
            part = [a[start:start + k] for a in arrays]
            results.append((part[0].astype(np.float64), *part[1:]))
            start += k
        return results


def restored_scorer(sess, model_dir, hparams, precision='float32'):
    """A Scorer in sess, with model_dir's weights restored: the restore (loading.start_restore) runs while the
    scoring graph is built."""
    restored = loading.start_restore(sess, model_dir, hparams, precision)
    scorer = Scorer(sess, hparams, precision)
    restored()
    return scorer


@contextlib.contextmanager
def scorer_session(model_dir, hparams, precision='float32'):
    """Yield a restored Scorer in a graph and session of its own, closed when the block ends."""
    with tf.Graph().as_default(), tf.Session(config=session_config()) as sess:
        yield restored_scorer(sess, model_dir, hparams, precision)


def score_windows(score, windows, batch_size, **options):
    """Score windows in batches of similar lengths (longest first, as lm-evaluation-harness orders its requests,
    so a batch pads little); -> score's results in the order of windows."""
    order = sorted(range(len(windows)), key=lambda n: -len(windows[n][0]))
    results = [None] * len(windows)
    for start in range(0, len(order), batch_size):
        part = order[start:start + batch_size]
        for n, result in zip(part, score([windows[n] for n in part], **options)):
            results[n] = result
    return results


# ---------------------------------------------------------------------------------------------------------------
# A continuation after a context, as lm-evaluation-harness scores it
# ---------------------------------------------------------------------------------------------------------------

def encode_pair(enc, context, continuation):
    """-> (context ids, continuation ids) as lm-evaluation-harness tokenises a loglikelihood request: spaces at
    the end of the context move to the start of the continuation, and the continuation's ids are those of the
    whole text after the context's own ids (so BPE sees the text whole)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = enc.encode(context + continuation)
    context_ids = enc.encode(context)
    return context_ids, whole[len(context_ids):]


def continuation_window(context_ids, continuation_ids, n_ctx):
    """-> the window (tokens, k) that scores the continuation: the last n_ctx + 1 tokens of both, the context
    cut from the left when too long (as the harness does)."""
    tokens = np.asarray(list(context_ids) + list(continuation_ids), dtype=np.int32)[-(n_ctx + 1):]
    return tokens, len(continuation_ids)


def score_documents(score, documents, *, first, n_ctx, stride, batch_size):
    """Score many documents, batching the windows of consecutive documents together.

    score: Scorer.score or any function of the same kind; documents: (key, chunks) pairs, chunks as windows()
    takes them. Yields (key, target ids [k], log-probabilities [k], last) per window, in document order; `last`
    marks a document's last window. A document without tokens yields nothing."""
    pending = []  # (key, tokens, k, last)

    def flush():
        results = score([(tokens, k) for _, tokens, k, _ in pending])
        for (key, tokens, k, last), (logprobs, _) in zip(pending, results):
            yield key, tokens[len(tokens) - k:], logprobs, last
        pending.clear()

    for key, chunks in documents:
        previous = None
        for window in windows(chunks, first, n_ctx, stride):
            if previous is not None:
                pending.append((key, *previous, False))
                if len(pending) == batch_size:
                    yield from flush()
            previous = window
        if previous is not None:
            pending.append((key, *previous, True))
            if len(pending) == batch_size:
                yield from flush()
    if pending:
        yield from flush()
