"""The training loss: the cross-entropy of each next token, over the real (unpadded) targets of a batch, either
from the model's logits or, to save memory, chunk by chunk from its last hidden states (chunked_token_losses)."""
import tensorflow.compat.v1 as tf

import model
from gpt2.training import memory


def token_losses(logits, tokens, lengths):
    """logits [batch, seq, n_vocab], tokens [batch, seq], lengths [batch]
    -> cross-entropy of each next token [batch, seq - 1], and where it counts [batch, seq - 1] (1.0, or 0.0 for
    a target in a row's padding, at a position >= its length)."""
    # Every position's cross-entropy, the last one's against a stand-in target and then dropped: the same losses
    # as logits[:, :-1] against tokens[:, 1:], without copying the logits (206 MB at 1024 tokens) for the slice
    # and again for its gradient (bench/bench_train.py).
    next_tokens = tf.concat([tokens[:, 1:], tokens[:, :1]], axis=1)
    # In float32 whatever the logits' dtype (half precision in mixed-precision training): the softmax's sum.
    logits = tf.cast(logits, tf.float32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=next_tokens, logits=logits)[:, :-1]
    target_positions = tf.range(1, tf.shape(tokens)[1])  # the position of each target in its row
    real = tf.cast(target_positions[tf.newaxis, :] < lengths[:, tf.newaxis], losses.dtype)
    return losses, real


# Tokens per piece of the chunked cross-entropy: its logits are 128 x 50257 floats, 26 MB, where the whole
# window's are 206 MB, and as much again for their gradient and for the softmax.
LOSS_CHUNK = memory.LOSS_CHUNK


def chunked_token_losses(h, wte, tokens, lengths, chunk=LOSS_CHUNK):
    """token_losses(unembed(h, wte), tokens, lengths) without the logits [batch, seq, n_vocab] at full size: h
    [batch, seq, n_embd] (after ln_f), wte [n_vocab, n_embd]. The forward pass makes the logits of `chunk` tokens
    at a time and keeps none of them; the backward pass makes them again, chunk by chunk, and adds each chunk's
    share of the embeddings' gradient to one sum. The same losses and gradients (up to the order of float
    additions), for one more product of the logits."""
    batch, seq, n_embd = model.shape_list(h)
    next_tokens = tf.concat([tokens[:, 1:], tokens[:, :1]], axis=1)  # the last position's target is dropped
    flat_losses = chunked_cross_entropy(tf.reshape(h, [-1, n_embd]), tf.convert_to_tensor(wte),
                                        tf.reshape(next_tokens, [-1]), chunk)
    losses = tf.reshape(flat_losses, [batch, seq])[:, :-1]
    target_positions = tf.range(1, tf.shape(tokens)[1])
    real = tf.cast(target_positions[tf.newaxis, :] < lengths[:, tf.newaxis], losses.dtype)
    return losses, real


def chunked_cross_entropy(h, wte, targets, chunk):
    """h [tokens, n_embd], wte [n_vocab, n_embd], targets [tokens] -> cross-entropy of each token's logits
    h @ wte^T against its target [tokens], `chunk` tokens at a time (see chunked_token_losses). The products are
    in h's dtype (wte cast to it: half precision in mixed-precision training), the losses, their gradient and
    the sum of wte's gradient in float32."""
    n = tf.shape(h)[0]
    pieces = (n + chunk - 1) // chunk

    def part(i):
        return slice(i * chunk, tf.minimum((i + 1) * chunk, n))

    @tf.custom_gradient
    def run(h, wte):
        wte_h = tf.cast(wte, h.dtype)

        def body(i, losses):
            logits = tf.cast(tf.matmul(h[part(i)], wte_h, transpose_b=True), tf.float32)  # [chunk, n_vocab]
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets[part(i)], logits=logits)
            return i + 1, losses.write(i, loss)
        array = tf.TensorArray(tf.float32, size=pieces, infer_shape=False, element_shape=tf.TensorShape([None]))
        # One chunk at a time: each iteration's logits are freed before the next one's are made.
        _, array = tf.while_loop(lambda i, _: i < pieces, body, [0, array], back_prop=False, parallel_iterations=1)

        def grad(dlosses):
            with tf.control_dependencies([dlosses]):
                h_after = tf.identity(h)  # the logits are made again only once the backward pass is here
                wte_after = tf.cast(wte, h.dtype)  # cast again rather than held since the forward pass

            def body(i, dh, dwte):
                rows = part(i)
                logits = tf.cast(tf.matmul(h_after[rows], wte_after, transpose_b=True), tf.float32)
                _, softmax_less_target = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
                    features=logits, labels=targets[rows])  # d loss / d logits, [chunk, n_vocab]
                dlogits = tf.cast(softmax_less_target * dlosses[rows][:, tf.newaxis], h.dtype)
                dwte = dwte + tf.cast(tf.matmul(dlogits, h_after[rows], transpose_a=True), dwte.dtype)
                return i + 1, dh.write(i, tf.matmul(dlogits, wte_after)), dwte
            dh = tf.TensorArray(h.dtype, size=pieces, infer_shape=False,
                                element_shape=tf.TensorShape([None, h.shape[-1]]))
            _, dh, dwte = tf.while_loop(lambda i, *_: i < pieces, body, [0, dh, tf.zeros_like(wte)],
                                        back_prop=False, parallel_iterations=1)
            return dh.concat(), dwte
        return array.concat(), grad
    return run(h, wte)
