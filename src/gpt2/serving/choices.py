"""What a finished row answers: its Choice (the text cut at a stop, why it ended) and, when asked, OpenAI's
logprobs object.

The log-probabilities are the model's own, before temperature, the filters and the penalties (as vLLM's by
default). The completion's come from the decoding loop as each token is drawn (gpt2/serving/slots.py); the
prompt's, with echo, from one forward pass over it, as src/score.py computes them for a document
(gpt2/evaluation/scoring.py), reduced in the graph to each token's and the top 5 per position (Scorer).
"""
import dataclasses

import numpy as np
import tensorflow.compat.v1 as tf

import model as model_lib

from gpt2.base import checkpoint
from gpt2.sampling import hidden as hidden_lib
from gpt2.serving import slots


@dataclasses.dataclass
class Choice:
    index: int
    text: str
    finish_reason: str  # 'stop' or 'length'
    logprobs: object  # {tokens, token_logprobs, top_logprobs, text_offset} or None
    prompt_tokens: int
    completion_tokens: int


class Scorer:
    """log p(x_i | x_<i) of a sequence, by one forward pass: the graph, in the Generator's session."""

    def __init__(self, gen):
        self.sess = gen.sess
        with gen.graph.as_default():
            self.tokens = tf.placeholder(tf.int32, [1, None], 'score_tokens')  # [1, seq]
            if gen.precision == 'int8':  # the weights are int8 copies only: the int8 model's products
                products = gen.whole_products()
                h = hidden_lib.hidden_states(gen.hparams, self.tokens, products=products)[-1, 0]  # [seq, n_embd]
                with tf.variable_scope('model', reuse=True):
                    logits = products.logits(h, model_lib.embeddings(gen.hparams)[1])[tf.newaxis]
            else:
                logits = model_lib.model(gen.hparams, self.tokens, reuse=tf.AUTO_REUSE)['logits']
            logp = tf.nn.log_softmax(logits[0])  # [seq, n_vocab]
            self.top = tf.nn.top_k(logp, slots.TOP)  # values, indices [seq, TOP]
            # log p(tokens[i + 1] | tokens[:i + 1]) [seq - 1]
            self.chosen = tf.gather(logp[:-1], self.tokens[0, 1:], axis=1, batch_dims=1)

    def __call__(self, sequence):
        """token ids [seq] -> (log p(x_i | x_<i) for i >= 1 [seq - 1], top values [seq, TOP], top ids [seq, TOP]):
        row i of the top is the distribution after x_0..x_i."""
        chosen, top = self.sess.run([self.chosen, self.top], {self.tokens: [sequence]})
        return chosen, top.values, top.indices


def choice(gen, scorer, *, index, prompt, request, tokens=(), logprobs=()):
    """One row's Choice. tokens: what it drew; logprobs: per drawn token (its log-probability, top values, top
    ids), from the loop."""
    stops = request.stop + [checkpoint.ENDOFTEXT]
    if len(tokens):
        done = gen.finish(tokens, stops)
        kept, text = done.tokens, done.text
        reason = 'stop' if text != gen.enc.decode(kept) else 'length'
    else:
        kept, text, reason = [], '', 'length'
    prompt_text = gen.enc.decode(prompt) if request.echo else ''
    entries = None
    if request.logprobs is not None:
        entries = logprobs_object(gen.enc, scorer, prompt, kept, list(logprobs)[:len(kept)], request.logprobs,
                                  echo=request.echo)
    return Choice(index=index, text=prompt_text + text, finish_reason=reason, logprobs=entries,
                  prompt_tokens=len(prompt), completion_tokens=len(kept))


def top_tokens(enc, values, ids, top):
    """The `top` most likely tokens at a position, {text: log-probability}, from the top values and ids."""
    return {enc.decode([int(t)]): float(v) for t, v in zip(ids[:top], values)}


class StreamedLogprobs:
    """A streamed choice's logprobs, one object per drawn token (as vLLM streams them), its offset counted on
    over the tokens' texts."""

    def __init__(self, enc, top):
        self.enc = enc
        self.top = top
        self.offset = 0

    def add(self, token, drawn):
        """token id, drawn (its log-probability, top values, top ids) -> the logprobs object of its chunk."""
        logp, values, ids = drawn
        piece = self.enc.decode([int(token)])
        entry = {'tokens': [piece], 'token_logprobs': [logp], 'top_logprobs': [top_tokens(self.enc, values, ids,
                                                                                          self.top)],
                 'text_offset': [self.offset]}
        self.offset += len(piece)
        return entry


def logprobs_object(enc, scorer, prompt, completion, drawn, top, *, echo):
    """OpenAI's logprobs object for the completion's tokens (with echo, the prompt's first: its first token has
    no context, so null): each token's text, log-probability, the `top` most likely tokens there
    ({text: logprob}; OpenAI's form, without the chosen token added as vLLM adds it), and each token's offset
    into the choice's text."""
    entries = []  # (token id, its log-probability or None, top values, top ids or None)
    if echo:
        chosen, values, ids = scorer(prompt) if len(prompt) > 1 else ([], None, None)
        entries.append((prompt[0], None, None, None))
        entries += [(prompt[i], float(chosen[i - 1]), values[i - 1], ids[i - 1]) for i in range(1, len(prompt))]
    entries += [(token, logp, values, ids) for token, (logp, values, ids) in zip(completion, drawn)]
    pieces = [enc.decode([int(token)]) for token, *_ in entries]
    tops = [None if ids is None else top_tokens(enc, values, ids, top) for _, _, values, ids in entries]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])[:-1]]).astype(int).tolist()
    return {'tokens': pieces, 'token_logprobs': [logp for _, logp, _, _ in entries], 'top_logprobs': tops,
            'text_offset': offsets[:len(pieces)]}
