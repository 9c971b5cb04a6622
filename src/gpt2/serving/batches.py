"""Running one batch on the engine thread: the rows' prompts through the Generator's sampling graph, then each
row's choice (its text cut at a stop, why it ended) and, when asked, its log-probabilities.

The log-probabilities are the model's own, before temperature, the filters and the penalties (as vLLM's by
default): log p(x_i | x_<i) by one forward pass over prompt and completion, as src/score.py computes them for a
document (gpt2/evaluation/scoring.py), reduced in the graph to the chosen token's and the top 5 per position.
"""
import dataclasses

import numpy as np
import tensorflow.compat.v1 as tf

import model as model_lib
import sample

from gpt2.base import checkpoint
from gpt2.sampling import generator as generator_lib
from gpt2.serving import parsing

# Always a stop: the end of a document ends a completion (finish_reason "stop"), as for OpenAI's and vLLM's.
ALWAYS_STOP = checkpoint.ENDOFTEXT


@dataclasses.dataclass
class Choice:
    index: int
    text: str
    finish_reason: str  # 'stop' or 'length'
    logprobs: object  # {tokens, token_logprobs, top_logprobs, text_offset} or None
    prompt_tokens: int
    completion_tokens: int


class Model:
    """The Generator, and the graph of log-probabilities beside it in its session. Engine thread only."""

    def __init__(self, model_name, models_dir, checkpoint_name, max_batch_size):
        self.gen = generator_lib.Generator(model_name, models_dir, checkpoint=checkpoint_name)
        self.max_batch_size = max_batch_size
        self.sink = None  # the running batch's on_token: tokens [batch] -> None
        with self.gen.graph.as_default():
            self.tokens = tf.placeholder(tf.int32, [1, None], 'score_tokens')  # [1, seq]
            logits = model_lib.model(self.gen.hparams, self.tokens, reuse=tf.AUTO_REUSE)['logits']
            logp = tf.nn.log_softmax(logits[0])  # [seq, n_vocab]
            self.top = tf.nn.top_k(logp, parsing.MAX_LOGPROBS)  # values, indices [seq, 5]
            # log p(tokens[i + 1] | tokens[:i + 1]) [seq - 1]
            self.chosen = tf.gather(logp[:-1], self.tokens[0, 1:], axis=1, batch_dims=1)
        self.gen.graph_for(1, False, on_token=self.on_token)  # built now, so that the first request is not slow
        self.gen.hidden_graph()  # POST /v1/embeddings' graph, too

    def on_token(self, tokens):
        if self.sink is not None:
            self.sink(tokens)

    def close(self):
        self.gen.close()

    def logprobs(self, sequence):
        """token ids [seq] -> (log p(x_i | x_<i) for i >= 1 [seq - 1], top values [seq, 5], top ids [seq, 5]):
        row i of the top is the distribution after x_0..x_i."""
        chosen, top = self.gen.sess.run([self.chosen, self.top], {self.tokens: [sequence]})
        return chosen, top.values, top.indices


def batch_size(model, rows):
    """The graph's batch for `rows` rows: the next power of two, at most max_batch_size, so that a server
    builds a few graphs, not one per number of rows."""
    size = 1
    while size < rows:
        size *= 2
    return max(rows, min(size, model.max_batch_size))


def run(model, pieces, *, seed):
    """The pieces of a batch (engine.Piece: a job and some of its rows, all with the same knobs) -> for each
    piece, {choice index: Choice}. seed: the pair of int32 the batch draws with."""
    rows = [(piece, row) for piece in pieces for row in piece.rows]
    request = pieces[0].job.request
    stops = request.stop + [ALWAYS_STOP]
    if request.max_tokens:
        new = generate(model, rows, request, stops, seed)
    else:
        new = [[] for _ in rows]
    out = [{} for _ in pieces]
    for (piece, (index, _, ids)), tokens in zip(rows, new):
        out[pieces.index(piece)][index] = choice(model, index, ids, tokens, piece.job.request, stops)
    return out


def generate(model, rows, request, stops, seed):
    """Every row's drawn tokens (up to max_tokens; fewer once every row has stopped)."""
    gen = model.gen
    prompts = [ids for _, (_, _, ids) in rows]
    size = batch_size(model, len(prompts))
    padded, lengths = sample.left_pad(prompts + [prompts[-1]] * (size - len(prompts)))  # copies fill the batch
    context, lengths_in, output = gen.graph_for(size, False, on_token=model.on_token)
    feed = gen.feed(length=request.max_tokens, seed=seed, stop=stops, context_keep=gen.hparams.n_ctx // 2,
                    **request.knobs)
    streamed = [(r, piece.job, index) for r, (piece, (index, _, _)) in enumerate(rows) if piece.job.request.stream]

    def sink(tokens):  # tokens [size], on TensorFlow's thread, as each step draws them
        for r, job, index in streamed:
            job.post('token', index, int(tokens[r]))

    model.sink = sink if streamed else None
    try:
        out = gen.sess.run(output, {**feed, context: padded, lengths_in: lengths})
    finally:
        model.sink = None
    return [row[padded.shape[1]:] for row in out[:len(prompts)]]


def choice(model, index, prompt, drawn, request, stops):
    """One row's Choice: its text cut before the first stop, finish_reason, log-probabilities if asked."""
    gen = model.gen
    if len(drawn):
        done = gen.finish(drawn, stops)
        tokens, text = done.tokens, done.text
        reason = 'stop' if text != gen.enc.decode(tokens) else 'length'
    else:
        tokens, text, reason = [], '', 'length'
    prompt_text = gen.enc.decode(prompt) if request.echo else ''
    logprobs = None
    if request.logprobs is not None:
        logprobs = token_logprobs(model, prompt, tokens, request.logprobs, echo=request.echo)
    return Choice(index=index, text=prompt_text + text, finish_reason=reason, logprobs=logprobs,
                  prompt_tokens=len(prompt), completion_tokens=len(tokens))


def token_logprobs(model, prompt, completion, top, *, echo):
    """OpenAI's logprobs object for the completion's tokens (with echo, the prompt's first: its first token has
    no context, so null): each token's text, log-probability, the `top` most likely tokens there
    ({text: logprob}; OpenAI's form, without the chosen token added as vLLM adds it), and each token's offset
    into the choice's text."""
    enc = model.gen.enc
    sequence = list(prompt) + [int(t) for t in completion]
    chosen, values, ids = model.logprobs(sequence)
    first = 0 if echo else len(prompt)
    positions = range(first, len(sequence))
    pieces = [enc.decode([sequence[i]]) for i in positions]
    logps = [None if i == 0 else float(chosen[i - 1]) for i in positions]
    tops = [None if i == 0 else {enc.decode([int(t)]): float(v) for t, v in zip(ids[i - 1][:top], values[i - 1])}
            for i in positions]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])[:-1]]).astype(int).tolist()
    return {'tokens': pieces, 'token_logprobs': logps, 'top_logprobs': tops, 'text_offset': offsets[:len(pieces)]}
