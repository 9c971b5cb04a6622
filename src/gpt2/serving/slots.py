"""The server's decoding loop: a cache of `rows` slots that requests join and leave while it runs (continuous
batching), driven step by step by the host.

One tf.while_loop runs for as long as there is work. Each iteration first asks the host (a Python callback,
gpt2/serving/scheduler.py) what to do, handing it the tokens just drawn; the host answers with every row's state
for the next step: whether it is live, the token it feeds and at which position, its knobs and its random key,
and at most one new prompt to take into a free row. The iteration then runs that prompt into its row of the
cache (all its tokens but the last, at batch 1) and one decoding step for the live rows, each drawing with its
own knobs (gpt2/sampling/per_row.py). So a request starts at the next step, whatever runs, and a finished one
frees its row at once. When the host says stop (nothing to do for a while, or the server closing), the loop ends.

The cache has `rows` rows of n_ctx slots: per layer a k and a v buffer, written in place as decoding.py's are, a
row's position its slot. A step computes either the one live row (at batch 1) or all
rows (at batch `rows`, with the packed products where they pay: cpu_matmul.py), so that the shapes in the graph
are two, fixed, and one request alone runs at the speed of a batch-1 sample. Attention reads each row's slots up
to its position (all rows: up to the longest), not the whole window. The graph is built once: requests change
only the values the host hands in.
"""
import dataclasses
import functools

import tensorflow.compat.v1 as tf

import model
import sample

from gpt2.sampling import decoding
from gpt2.sampling import penalties as penalties_lib
from gpt2.sampling import per_row

# The host's answer, as arrays: INTS [rows, 8] int32 (logprobs: 1 where they are asked for), FLOATS [rows, 5] float32, CONTROL [2] int32 (go, the row
# that takes the new prompt or -1), and the new prompt's tokens [length] int32.
INTS = ('live', 'token', 'position', 'top_k', 'no_repeat_ngram', 'key0', 'key1', 'logprobs')
FLOATS = ('temperature', 'top_p', 'repetition', 'presence', 'frequency')
# Log-probabilities handed back per row and step: the drawn token's and the TOP most likely (OpenAI's limit).
TOP = 5


@dataclasses.dataclass
class Control:
    """The host's answer for one iteration (tensors)."""
    go: object  # scalar bool: False ends the loop
    admit: object  # scalar int32: the row that takes the new prompt, or -1
    prompt: object  # [length] int32
    row: dict  # name in INTS or FLOATS -> [rows]


@dataclasses.dataclass(frozen=True)
class Shape:
    """What every piece of the loop's graph uses."""
    hparams: object
    rows: int
    scope: object  # the model's variables, read once per run (decoding.read_once_scope)
    one: object  # cpu_matmul.Products for a step of one row
    many: object  # for a step of every row


def build(hparams, *, rows, host, device=None, precision='float32'):
    """The loop's graph -> the tensor to run (it ends when host says stop). host(tokens [rows] int32, logprobs [rows]
    float32, top values [rows, TOP] float32, top tokens [rows, TOP] int32) -> the four arrays above. precision:
    the products' (sample.products_for's); with int8 both paths share one quantized copy of the weights, made as
    the loop starts."""
    device = device or sample.default_device()
    with tf.name_scope('slots'), tf.device(device):
        many = sample.products_for(device, batch=rows, frozen_weights=True, hparams=hparams, precision=precision)
        one = dataclasses.replace(sample.products_for(device, batch=1, frozen_weights=True, hparams=hparams),
                                  int8=many.int8)
        shape = Shape(hparams=hparams, rows=rows, scope=decoding.read_once_scope(), one=one, many=many)
        n_ctx, n_vocab = hparams.n_ctx, hparams.n_vocab
        nothing = (tf.zeros([rows], tf.int32), tf.zeros([rows]), tf.zeros([rows, TOP]),
                   tf.zeros([rows, TOP], tf.int32))  # the results before the first step
        state = (empty_cache(hparams, rows), tf.zeros([rows, n_vocab]),
                 tf.fill([rows, n_ctx], penalties_lib.NO_TOKEN))

        # The host is asked at the end of each iteration, so that its answer decides whether the loop goes on (a
        # tf.cond around the step instead costs every weight a Switch op at every step).
        def body(answer, state):
            results, state = iteration(shape, control(answer), state)
            return ask(host, results, rows), state

        answer, _ = tf.while_loop(lambda answer, state: control(answer).go, body, (ask(host, nothing, rows), state),
                                  back_prop=False, parallel_iterations=1)
        return answer[2]


def ask(host, results, rows):
    """The host's answer to the last iteration's results: its four arrays (see control())."""
    with tf.device(decoding.HOST):
        answer = tf.numpy_function(host, list(results), [tf.int32, tf.float32, tf.int32, tf.int32], stateful=True)
    for array, shape in zip(answer, ([rows, len(INTS)], [rows, len(FLOATS)], [2], [None])):
        array.set_shape(shape)
    return tuple(answer)


def control(answer):
    """The host's four arrays -> Control."""
    ints, floats, go_admit, prompt = answer
    row = {name: ints[:, i] for i, name in enumerate(INTS)}
    row.update({name: floats[:, i] for i, name in enumerate(FLOATS)})
    return Control(go=go_admit[0] > 0, admit=go_admit[1], prompt=prompt, row=row)


def iteration(shape, control, state):
    """Take in the new prompt, if any, then one step of the live rows -> (results, state)."""
    state = tf.cond(control.admit >= 0, lambda: admit(shape, control, state), lambda: state)
    live = tf.cast(control.row['live'], tf.bool)
    alone = tf.equal(tf.reduce_sum(tf.cast(live, tf.int32)), 1)
    everyone = tf.range(shape.rows)
    return tf.cond(alone, lambda: step(shape, control, state, first_live(live), shape.one, alone=True),
                   lambda: step(shape, control, state, everyone, shape.many, alone=False))


def first_live(live):
    """[rows] bool -> [1] int32: the first live row (static shape [1], for the products at one row)."""
    return tf.reshape(tf.argmax(tf.cast(live, tf.int32), output_type=tf.int32), [1])


# ---------------------------------------------------------------------------------------------------------------
# The cache: per layer, k and v buffers [rows * head * n_ctx, head_dim], slot t of row r's head h at
# (r * head + h) * n_ctx + t. A row's heads are consecutive, and so are a head's slots: the first slots of one
# row, or of every row, are a slice of runs of whole slots, already in heads-first order.
# ---------------------------------------------------------------------------------------------------------------

def empty_cache(hparams, rows):
    """n_layer pairs (k, v) of zeroed buffers (zeroed: a masked score times a NaN of fresh memory stays NaN)."""
    shape = [rows * hparams.n_head * hparams.n_ctx, hparams.n_embd // hparams.n_head]
    return [tuple(tf.raw_ops.Empty(shape=shape, dtype=tf.float32, init=True) for _ in 'kv')
            for _ in range(hparams.n_layer)]


def write(past, at, k, v):
    """The buffers, with k and v [rows in order of at, head_dim] written in place at their rows `at`."""
    return tuple(tf.raw_ops.InplaceUpdate(x=buf, i=at, v=new) for buf, new in zip(past, (k, v)))


def first_slots(hparams, buf, span, row=None):
    """The first span slots of one row, [head, span, head_dim], or of every row (row None), [rows, head, span,
    head_dim]: a slice, copied in runs of whole slots."""
    n_head, n_ctx = hparams.n_head, hparams.n_ctx
    head_dim = hparams.n_embd // n_head
    heads = tf.reshape(buf, [-1, n_ctx, head_dim])  # [rows * head, n_ctx, head_dim]
    if row is None:
        return tf.reshape(tf.slice(heads, [0, 0, 0], tf.stack([-1, span, -1])), [-1, n_head, span, head_dim])
    return tf.reshape(tf.slice(heads, tf.stack([row * n_head, 0, 0]), tf.stack([n_head, span, head_dim])),
                      [n_head, -1, head_dim])  # (the shape of a slice by tensors is unknown to the graph)


def step_rows(hparams, which, positions):
    """The buffers' rows [m * head] of the rows `which` [m] at their positions [m], in (row, head) order."""
    heads = tf.cast(which, tf.int32)[:, tf.newaxis] * hparams.n_head + tf.range(hparams.n_head)[tf.newaxis]
    return tf.reshape(heads * hparams.n_ctx + positions[:, tf.newaxis], [-1])


def prompt_attn(x, hparams, past, *, row):
    """A new row's prompt, x [1, seq, n_embd] after c_attn: its keys and values written into the row, and causal
    attention among its own tokens (a new row has nothing before them) -> a [1, seq, n_embd], the buffers."""
    n_head = hparams.n_head
    q, k, v = (model.split_heads(t, n_head) for t in tf.split(x, 3, axis=2))  # [1, head, seq, head_dim]
    seq = model.shape_list(x)[1]
    at = tf.reshape((row * n_head + tf.range(n_head))[:, tf.newaxis] * hparams.n_ctx + tf.range(seq), [-1])
    head_dim = hparams.n_embd // n_head
    present = write(past, at, tf.reshape(k, [-1, head_dim]), tf.reshape(v, [-1, head_dim]))
    return model.merge_heads(model.multihead_attn(q, k, v, model.attention_mask(seq, seq, dtype=x.dtype))), present


def one_row_attn(x, hparams, past, *, row, position):
    """The one live row's step, x [1, 1, n_embd] after c_attn -> a [1, 1, n_embd], the buffers. It attends to
    its slots 0 .. position, all of them seen: no mask."""
    n_head, n_embd = hparams.n_head, hparams.n_embd
    q, k, v = (tf.reshape(t, [n_head, -1]) for t in tf.split(x, 3, axis=2))  # [head, head_dim]
    present = write(past, step_rows(hparams, row[tf.newaxis], position[tf.newaxis]), k, v)
    keys, values = (first_slots(hparams, buf, position + 1, row) for buf in present)
    w = tf.nn.softmax(tf.matmul(model.scale_queries(q[:, tf.newaxis]), keys, transpose_b=True), axis=-1)
    return tf.reshape(tf.matmul(w, values), [1, 1, n_embd]), present


def all_rows_attn(x, hparams, past, *, positions):
    """Every row's step, x [rows, 1, n_embd] after c_attn, row b at positions[b] -> a [rows, 1, n_embd], the
    buffers. Each row attends to its slots up to the longest live row's, those after its own masked."""
    rows = model.shape_list(x)[0]
    n_head, n_embd = hparams.n_head, hparams.n_embd
    q, k, v = (tf.reshape(t, [rows, n_head, 1, -1]) for t in tf.split(x, 3, axis=2))
    present = write(past, step_rows(hparams, tf.range(rows), positions), tf.reshape(k, [rows * n_head, -1]),
                    tf.reshape(v, [rows * n_head, -1]))
    span = tf.reduce_max(positions) + 1
    keys, values = (first_slots(hparams, buf, span) for buf in present)  # [rows, head, span, head_dim]
    mask = tf.cast(tf.range(span)[tf.newaxis, :] <= positions[:, tf.newaxis], x.dtype)  # [rows, slots]
    a = model.multihead_attn(q, keys, values, mask[:, tf.newaxis, tf.newaxis, :])  # [rows, head, 1, head_dim]
    return tf.reshape(a, [rows, 1, n_embd]), present


def slot_attn(x, scope, n_state, *, past, hparams, linear, attend):
    """model.attn's signature (model.block calls it) over the slots: attend is one of the three above, its
    keywords bound."""
    with tf.variable_scope(scope):
        c = model.conv1d(x, 'c_attn', n_state * 3, linear=linear)
        a, present = attend(c, hparams, past)
        return model.conv1d(a, 'c_proj', n_state, linear=linear), present


def blocks(shape, h, cache, linear, attend):
    """The blocks over the slots -> (the last hidden state, before ln_f, the new cache)."""
    new = []
    for layer, past in enumerate(cache):
        attention = functools.partial(slot_attn, attend=attend)
        h, past = model.block(h, f'h{layer}', past=past, hparams=shape.hparams, attention=attention, linear=linear)
        new.append(past)
    return h, new


def admit(shape, control, state):
    """A new prompt into row control.admit: all its tokens but the last into the cache (the first step feeds the
    last), its token counts and history for the penalties."""
    cache, counts, history = state
    row, prompt = control.admit, control.prompt
    length = tf.shape(prompt)[0]

    def prefill():
        tokens = prompt[:-1]
        with tf.variable_scope(shape.scope):
            wpe, wte = model.embeddings(shape.hparams)
            h = shape.one.embed(tokens[tf.newaxis], tf.range(length - 1), wpe, wte)
            attend = functools.partial(prompt_attn, row=row)
            return blocks(shape, h, cache, shape.one.linear(False), attend)[1]

    cache = tf.cond(length > 1, prefill, lambda: cache)
    n_vocab = shape.hparams.n_vocab
    seen = tf.math.unsorted_segment_sum(tf.ones_like(prompt, tf.float32), prompt, n_vocab)
    counts = tf.tensor_scatter_nd_update(counts, [[row]], seen[tf.newaxis])
    written = tf.pad(prompt, [[0, shape.hparams.n_ctx - length]], constant_values=penalties_lib.NO_TOKEN)
    history = tf.tensor_scatter_nd_update(history, [[row]], written[tf.newaxis])
    return cache, counts, history


# ---------------------------------------------------------------------------------------------------------------
# A step
# ---------------------------------------------------------------------------------------------------------------

def step(shape, control, state, which, products, alone):
    """One token for the rows `which` [m]: the one live row (alone) or every row -> (results [rows] for the
    host, state)."""
    cache, counts, history = state
    hparams = shape.hparams
    pick = lambda name: tf.gather(control.row[name], which)
    tokens, positions = pick('token'), pick('position')
    with tf.variable_scope(shape.scope):
        wpe, wte = model.embeddings(hparams)
        if alone:
            attend = functools.partial(one_row_attn, row=which[0], position=positions[0])
        else:
            attend = functools.partial(all_rows_attn, positions=positions)
        h = products.embed(tokens[:, tf.newaxis], positions[:, tf.newaxis], wpe, wte)
        h, cache = blocks(shape, h, cache, products.linear(True), attend)
        logits = products.logits(model.norm(h, 'ln_f')[:, 0], wte)  # [m, n_vocab]
    knobs = {name: pick(name) for name in ('temperature', 'top_k', 'top_p', 'repetition', 'presence',
                                           'frequency', 'no_repeat_ngram')}
    filled = positions + 1
    penalised = per_row.penalise(logits, knobs, lambda: tf.gather(counts, which),
                                 lambda: tf.gather(history, which), filled)
    keys = tf.stack([pick('key0'), pick('key1')], axis=1)
    drawn = per_row.draw(penalised, knobs, keys)
    m = model.shape_list(logits)[0]
    logprob, top_values, top_ids = tf.cond(
        tf.reduce_any(pick('logprobs') > 0), lambda: per_row.model_logprobs(logits, drawn, TOP),
        lambda: (tf.zeros([m]), tf.zeros([m, TOP]), tf.zeros([m, TOP], tf.int32)))
    counts, history = remember(counts, history, knobs, which, drawn, filled, hparams.n_ctx)
    results = [spread(x, which, shape.rows) for x in (drawn, logprob, top_values, top_ids)]
    return tuple(results), (cache, counts, history)


def remember(counts, history, knobs, which, drawn, filled, n_ctx):
    """The penalties' state with the drawn tokens added, kept only while some row asks for it (a row's state is
    set afresh when it takes a prompt)."""
    counted = tf.reduce_any(tf.logical_or(tf.not_equal(knobs['repetition'], 1), tf.logical_or(
        tf.not_equal(knobs['presence'], 0), tf.not_equal(knobs['frequency'], 0))))
    at = tf.stack([tf.cast(which, tf.int32), drawn], axis=1)
    counts = tf.cond(counted, lambda: tf.tensor_scatter_nd_add(counts, at, tf.ones_like(drawn, tf.float32)),
                     lambda: counts)
    column = tf.minimum(filled, n_ctx - 1)  # a row at the window's end has drawn its last token
    at = tf.stack([tf.cast(which, tf.int32), column], axis=1)
    history = tf.cond(tf.reduce_any(knobs['no_repeat_ngram'] > 0),
                      lambda: tf.tensor_scatter_nd_update(history, at, drawn), lambda: history)
    return counts, history


def spread(x, which, rows):
    """[m, ...] for the rows `which` -> [rows, ...], zeros elsewhere."""
    shape = tf.concat([[rows], tf.shape(x)[1:]], axis=0)
    return tf.scatter_nd(tf.cast(which, tf.int32)[:, tf.newaxis], x, shape)
