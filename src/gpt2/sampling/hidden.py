"""Hidden states and pooled embeddings: the model's forward pass over whole inputs, kept layer by layer.

One graph serves every call: the tokens are a placeholder [batch, seq] of any size, the rows right-padded to the
longest. Padding after a row's tokens changes nothing of them, since attention is causal (a position sees only
itself and the positions before it), and every row starts at position 0: a row's states are those of that input
alone. The pieces are model.py's (embeddings, embed, block, norm) under the checkpoint's variable names, so the
graph shares the weights already in the session.
"""
import tensorflow.compat.v1 as tf

import model as model_lib

from gpt2.sampling import cpu_matmul

POOLINGS = ('mean', 'last')


def hidden_states(hparams, tokens, scope='model', products=cpu_matmul.Products()):
    """tokens [batch, seq] -> [n_layer + 1, batch, seq, n_embd], Hugging Face transformers' convention: entry 0
    the embeddings' output (token + position), entry i for 1 <= i < n_layer block i - 1's output (the residual
    stream after block i - 1), entry n_layer the last block's output after ln_f (model.model's 'h', from which
    the logits are made). The last block's output before ln_f is not among them. products: how to multiply
    and embed (a cpu_matmul.Products: float32, or int8 for a model whose weights are stored in int8)."""
    with tf.variable_scope(scope, reuse=True):  # the variables exist already: never make new ones
        wpe, wte = model_lib.embeddings(hparams)
        h = products.embed(tokens, tf.range(tf.shape(tokens)[1]), wpe, wte)  # [batch, seq, n_embd]
        states = [h]
        for layer in range(hparams.n_layer):
            h, _ = model_lib.block(h, f'h{layer}', past=None, hparams=hparams, linear=products.linear(False))
            states.append(h)
        states[-1] = model_lib.norm(h, 'ln_f')
        return tf.stack(states)


def mean_pool(h, lengths):
    """h [batch, seq, n_embd], lengths [batch] -> the mean over each row's first `length` positions [batch, n_embd]"""
    mask = tf.sequence_mask(lengths, tf.shape(h)[1], dtype=h.dtype)[:, :, None]  # [batch, seq, 1]
    return tf.reduce_sum(h * mask, axis=1) / tf.cast(lengths, h.dtype)[:, None]


def last_pool(h, lengths):
    """h [batch, seq, n_embd], lengths [batch] -> each row's state at its last token [batch, n_embd]"""
    return tf.gather(h, lengths - 1, axis=1, batch_dims=1)


class Graph:
    """The placeholders and outputs, built once in the model's graph (under graph.as_default())."""

    def __init__(self, hparams, device=None, products=cpu_matmul.Products()):
        with tf.name_scope('hidden'), tf.device(device):
            self.tokens = tf.placeholder(tf.int32, [None, None], 'tokens')  # [batch, seq], right-padded
            self.lengths = tf.placeholder(tf.int32, [None], 'lengths')  # [batch]: each row's own tokens
            self.states = hidden_states(hparams, self.tokens, products=products)  # [n_layer + 1, batch, seq, n_embd]
            final = self.states[-1]  # [batch, seq, n_embd]
            self.pooled = {'mean': mean_pool(final, self.lengths), 'last': last_pool(final, self.lengths)}

    def feed(self, rows):
        """Token id lists (none empty) -> the feed of their batch, right-padded with token 0."""
        longest = max(map(len, rows))
        return {self.tokens: [list(r) + [0] * (longest - len(r)) for r in rows],
                self.lengths: [len(r) for r in rows]}
