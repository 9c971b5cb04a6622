import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import model
from gpt2.sampling import cpu_matmul
import reference
import sample
from support import restore


def sample_tokens(tiny_model, context, seed=0, **kwargs):
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=tf.constant(context, tf.int32),
                                     **kwargs)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            return sess.run(out)


def run_filter(fn, logits, arg):
    with tf.Graph().as_default(), tf.Session() as sess:
        return sess.run(fn(tf.constant(logits, tf.float32), arg))


@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('how', [{'top_k': 1}, {'temperature': 0}])
def test_greedy_sampling_equals_numpy_argmax_decoding(tiny_model, batch, how):
    context = np.random.default_rng(batch).integers(0, tiny_model.hparams['n_vocab'], size=(batch, 3))
    out = sample_tokens(tiny_model, context, length=8, **how)
    assert out.shape == (batch, 11)
    for row in range(batch):
        assert out[row].tolist() == reference.greedy(tiny_model.params, tiny_model.hparams, context[row], 8)


def test_sample_fills_the_whole_window(tiny_model):
    n_ctx = tiny_model.hparams['n_ctx']
    out = sample_tokens(tiny_model, [[5, 6]], length=n_ctx - 2, top_k=1)
    assert out[0].tolist() == reference.greedy(tiny_model.params, tiny_model.hparams, [5, 6], n_ctx - 2)


def test_start_token_gives_unconditional_samples(tiny_model):
    with tf.Graph().as_default():
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), length=4, start_token=7, batch_size=2,
                                     top_k=1)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            tokens = sess.run(out)
    expected = reference.greedy(tiny_model.params, tiny_model.hparams, [7], 4)
    assert tokens.tolist() == [expected, expected]


def test_same_seed_same_samples_and_other_seed_differs(tiny_model):
    context = [[1, 2, 3]] * 4
    a = sample_tokens(tiny_model, context, seed=1, length=12)
    b = sample_tokens(tiny_model, context, seed=1, length=12)
    c = sample_tokens(tiny_model, context, seed=2, length=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stop_token_ends_the_loop_once_every_row_has_it(tiny_model):
    greedy = reference.greedy(tiny_model.params, tiny_model.hparams, [4], 10)
    stop = greedy[4]  # the greedy continuation's 4th new token
    first_stop = greedy.index(stop, 1)
    out = sample_tokens(tiny_model, [[4], [4]], length=10, top_k=1, stop_token=stop)
    assert out.tolist() == [greedy[:first_stop + 1]] * 2


def test_on_token_sees_every_step_in_order(tiny_model):
    seen = []
    out = sample_tokens(tiny_model, [[1, 2], [3, 4]], length=6, top_k=1, on_token=lambda t: seen.append(t.tolist()))
    assert np.array(seen).T.tolist() == out[:, 2:].tolist()


def test_top_k_keeps_exactly_the_k_largest_per_row():
    logits = np.array([[1.0, 5.0, 3.0, 2.0, 4.0], [9.0, 0.0, 8.0, 7.0, -1.0]], np.float32)
    out = run_filter(sample.top_k_logits, logits, 2)
    assert (out > -1e9).tolist() == [[False, True, False, False, True], [True, False, True, False, False]]
    np.testing.assert_array_equal(out[out > -1e9], logits[out > -1e9])
    np.testing.assert_array_equal(run_filter(sample.top_k_logits, logits, 0), logits)
    np.testing.assert_array_equal(run_filter(sample.top_k_logits, logits, 5), logits)


def test_top_p_is_computed_per_row_at_batch_above_one():
    # Row 0: probabilities 0.5, 0.3, 0.2; row 1: 0.9, 0.05, 0.05 (as log-probabilities).
    logits = np.log(np.array([[0.5, 0.2, 0.3], [0.05, 0.9, 0.05]], np.float32))
    out = run_filter(sample.top_p_logits, logits, 0.85)
    assert (out > -1e9).tolist() == [[True, False, True], [False, True, False]]
    # p below the top probability still keeps the most likely token; p = 1 keeps everything.
    assert (run_filter(sample.top_p_logits, logits, 0.01) > -1e9).sum(axis=1).tolist() == [1, 1]
    np.testing.assert_array_equal(run_filter(sample.top_p_logits, logits, 1), logits)


def numpy_kept(logits, k, p):
    """Which tokens may be drawn after top-k then top-p, from the definitions."""
    kept = np.ones_like(logits, dtype=bool)
    if k:
        kept &= logits >= np.sort(logits, axis=-1)[:, -k][:, None]
    masked = np.where(kept, logits, -np.inf)
    probs = np.exp(masked - masked.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    order = np.argsort(-probs, axis=-1, kind='stable')
    cum = np.cumsum(np.take_along_axis(probs, order, -1), -1)
    n = np.maximum((cum <= p).sum(-1), 1)
    for row in range(len(logits)):
        kept[row, order[row, n[row]:]] = False
    return kept


@pytest.mark.parametrize('k, p', [(3, 0.5), (10, 0.9), (1, 0.3), (0, 0.7), (4, 1.0)])
def test_top_k_and_top_p_together_draw_only_allowed_tokens(k, p):
    logits = np.random.default_rng(k).standard_normal((6, 20)).astype(np.float32) * 2
    allowed = numpy_kept(logits, k, p)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        drawn = sample.draw(tf.tile(tf.constant(logits), [50, 1]), temperature=1, top_k=k, top_p=p)
        with tf.Session() as sess:
            tokens = sess.run(drawn).reshape(50, 6)
    for row in range(6):
        assert set(tokens[:, row]) <= set(np.flatnonzero(allowed[row]))
    if k == 1:
        assert all(len(set(tokens[:, row])) == 1 for row in range(6))
    kept = run_filter(lambda x, _: sample.filter_logits(x, top_k=k, top_p=p), logits, None) > -1e9
    assert kept.tolist() == allowed.tolist()


def numpy_top_p_kept(logits, p):
    """The original's rule, in NumPy: sort each row, keep the tokens whose running total of probability stays
    within p (at least one), then everything at or above the last kept logit, so ties with it too."""
    kept = []
    for row in logits.astype(np.float64):
        ordered = np.sort(row)[::-1]
        running = np.cumsum(np.exp(ordered - np.logaddexp.reduce(row)))
        last = max(int((running <= p).sum()) - 1, 0)
        kept.append(row >= ordered[last])
    return np.array(kept)


@pytest.mark.parametrize('bins', [1, 3, 1024])
@pytest.mark.parametrize('p', [0.05, 0.3, 0.6, 0.95])
def test_top_p_cuts_where_the_sorted_definition_does(bins, p):
    """Whatever the number of bins (1: the whole row is sorted), with ties, and with rows where top-k masked
    some logits already."""
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((6, 40)).astype(np.float32)
    logits[0] *= 6  # peaked: the nucleus is a few tokens for small p
    logits[1] = np.round(logits[1] * 2)  # many ties
    logits[2, :30] = sample.MASKED  # masked before top-p
    logits[3, :] = 0.5  # all equal: all kept
    kept = run_filter(lambda x, p: sample.top_p_logits(x, p, bins=bins), logits, p) > -1e9
    assert kept.tolist() == numpy_top_p_kept(logits, p).tolist()


@pytest.mark.parametrize('p', [0.4, 0.7, 0.9])
def test_top_k_then_top_p_counts_the_ties_with_the_kth_logit(p):
    """top-k keeps every token tied with its k-th logit, so they share the probability top-p divides up."""
    logits = np.array([[3, 2, 2, 2, 0], [1, 5, 1, 1, 4]], np.float32)
    after_k = np.where(logits >= np.sort(logits)[:, -2][:, None], logits, sample.MASKED)
    kept = run_filter(lambda x, _: sample.filter_logits(x, top_k=2, top_p=p), logits, None) > -1e9
    assert kept.tolist() == numpy_top_p_kept(after_k, p).tolist()


def test_low_temperature_sharpens_towards_argmax():
    logits = np.array([[1.0, 1.5, 0.5]] * 200, np.float32)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        cold = sample.draw(tf.constant(logits), temperature=0.05, top_k=0, top_p=1)
        hot = sample.draw(tf.constant(logits), temperature=1.0, top_k=0, top_p=1)
        with tf.Session() as sess:
            cold, hot = sess.run([cold, hot])
    assert (cold == 1).mean() > 0.99
    assert 0.2 < (hot == 1).mean() < 0.8


def test_exactly_one_of_context_and_start_token():
    hparams = model.default_hparams().override_from_dict({'n_vocab': 5, 'n_ctx': 4, 'n_embd': 4, 'n_head': 1,
                                                           'n_layer': 1})
    with tf.Graph().as_default(), pytest.raises(ValueError, match='exactly one'):
        sample.sample_sequence(hparams=hparams, length=2, start_token=1, context=[[1]], batch_size=1)


def test_repeated_runs_in_one_session_equal_the_reference(tiny_model):
    """The cache is written in place and the prompt goes through the same loop as the tokens after it: runs with
    other prompts, of other lengths, in one session (as the scripts do) each give the NumPy greedy tokens."""
    with tf.Graph().as_default():
        context = tf.placeholder(tf.int32, [1, None])
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=context, length=5, top_k=1)
        with tf.Session(config=sample.session_config()) as sess:
            restore(sess, tiny_model)
            for prompt in ([9, 3, 4, 1], [2], [7, 7]):
                got = sess.run(out, {context: [prompt]})[0].tolist()
                assert got == reference.greedy(tiny_model.params, tiny_model.hparams, prompt, 5)


def test_length_one_draws_from_the_prompt_alone(tiny_model):
    out = sample_tokens(tiny_model, [[3, 1, 4]], length=1, top_k=1)
    assert out[0].tolist() == reference.greedy(tiny_model.params, tiny_model.hparams, [3, 1, 4], 1)


def packed_ops(graph):
    return [op for op in graph.get_operations() if op.type == cpu_matmul.PACKED_OP]


@pytest.mark.parametrize('prompts', [[[4], [9]], [[9, 3, 4, 1], [2, 2, 5, 0]]])
def test_frozen_weights_at_batch_above_one_equal_the_reference(tiny_model, prompts):
    """With frozen_weights, the steps of one token per row go through the kernel that keeps its weights; runs in
    one session (first prompts of one token, then longer ones, then one token again) give the NumPy tokens."""
    with tf.Graph().as_default() as graph:
        context = tf.placeholder(tf.int32, [2, None])
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=context, length=6, top_k=1,
                                     frozen_weights=True)
        assert bool(packed_ops(graph)) == cpu_matmul.packed_kernel_works()
        with tf.Session(config=sample.session_config()) as sess:
            restore(sess, tiny_model)
            for batch in (prompts, [[3, 1, 4], [1, 5, 9]], prompts):
                got = sess.run(out, {context: batch}).tolist()
                assert got == [reference.greedy(tiny_model.params, tiny_model.hparams, p, 6) for p in batch]


def test_frozen_weights_unconditional_at_batch_two_equal_the_reference(tiny_model):
    """A one-token start has fixed shapes in the loop, so every product of every step is packed."""
    with tf.Graph().as_default() as graph:
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), start_token=3, batch_size=2, length=6,
                                     top_k=1, frozen_weights=True)
        assert bool(packed_ops(graph)) == cpu_matmul.packed_kernel_works()
        with tf.Session(config=sample.session_config()) as sess:
            restore(sess, tiny_model)
            got = sess.run(out).tolist()
    assert got == [reference.greedy(tiny_model.params, tiny_model.hparams, [3], 6)] * 2


def test_packed_products_only_with_frozen_weights_and_more_than_one_row(tiny_model):
    for batch, frozen, expected in ((2, False, False), (1, True, False), (2, True, cpu_matmul.packed_kernel_works())):
        with tf.Graph().as_default() as graph:
            sample.sample_sequence(hparams=tiny_model.hparams_object(), start_token=0, batch_size=batch, length=2,
                                   frozen_weights=frozen)
            assert bool(packed_ops(graph)) == expected


def test_without_frozen_weights_new_values_are_used_in_the_same_session(tiny_model):
    """Sampling while training: weights assigned between two runs of one graph take effect."""
    changed = {name: value * 1.5 for name, value in tiny_model.params.items()}
    prompts = [[4, 2], [7, 1]]
    with tf.Graph().as_default():
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=tf.constant(prompts), length=6,
                                     top_k=1)
        with tf.Session(config=sample.session_config()) as sess:
            restore(sess, tiny_model)
            first = sess.run(out).tolist()
            for variable in tf.global_variables():
                variable.load(changed[variable.op.name], sess)
            second = sess.run(out).tolist()
    assert first == [reference.greedy(tiny_model.params, tiny_model.hparams, p, 6) for p in prompts]
    assert second == [reference.greedy(changed, tiny_model.hparams, p, 6) for p in prompts]
    assert first != second


@pytest.mark.parametrize('why', ['no packed kernel', 'no room for the packed copy'])
def test_frozen_weights_fall_back_to_plain_products(tiny_model, monkeypatch, capsys, why):
    """Without the packed kernel (see sampling/test_cpu_matmul.py for the ways it can be missing or wrong), or without
    memory for its copy of the weights, sampling with frozen weights takes the plain products and stays right."""
    if why == 'no packed kernel':
        monkeypatch.setattr(cpu_matmul, 'packed_kernel_works', lambda: False)
    else:
        monkeypatch.setattr(cpu_matmul, 'packed_kernel_works', lambda: True)
        monkeypatch.setattr(cpu_matmul, 'available_memory', lambda: 1000)
    prompts = [[4, 2], [7, 1]]
    with tf.Graph().as_default() as graph:
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=tf.constant(prompts), length=4,
                                     top_k=1, frozen_weights=True, device='/CPU:0')
        assert not packed_ops(graph)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            got = sess.run(out).tolist()
    assert got == [reference.greedy(tiny_model.params, tiny_model.hparams, p, 4) for p in prompts]
    notes = capsys.readouterr().err.splitlines()
    if why == 'no packed kernel':
        assert notes == []
    else:
        assert len(notes) == 1 and notes[0].startswith('note: ') and 'packed copy of the weights' in notes[0]


@pytest.mark.parametrize('frozen', [False, True])
def test_one_prompt_for_every_row_equals_the_reference(tiny_model, frozen):
    """A one-row context with batch_size 3: the prompt runs once and the rows share its cache. Greedy rows are the
    NumPy greedy tokens, over prompts of other lengths in one session, with and without packed weights."""
    with tf.Graph().as_default() as graph:
        context = tf.placeholder(tf.int32, [1, None])
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=context, batch_size=3, length=6,
                                     top_k=1, frozen_weights=frozen)
        assert bool(packed_ops(graph)) == (frozen and cpu_matmul.packed_kernel_works())
        with tf.Session(config=sample.session_config()) as sess:
            restore(sess, tiny_model)
            for prompt in ([9, 3, 4, 1], [2], [7, 7]):
                got = sess.run(out, {context: [prompt]}).tolist()
                assert got == [reference.greedy(tiny_model.params, tiny_model.hparams, prompt, 6)] * 3


def test_rows_sharing_a_prompt_are_drawn_independently(tiny_model):
    """Each row draws its own tokens from the first one on, and is its own sequence from then on: a row's tokens
    are all allowed by top-k 3 of the NumPy logits of that row's sequence."""
    prompt, k = [5, 1, 8], 3
    out = sample_tokens(tiny_model, [prompt], seed=3, length=8, batch_size=6, top_k=k)
    assert out.shape == (6, 11)
    assert (out[:, :3] == prompt).all()
    assert len({tuple(row) for row in out[:, 3:5].tolist()}) > 1  # not one draw copied to every row
    for row in out:
        logits = reference.logits(tiny_model.params, tiny_model.hparams, row[:-1])
        for t in range(3, 11):
            assert row[t] in np.argsort(logits[t - 1])[-k:]


def test_shared_prompt_length_one_stop_token_and_on_token(tiny_model):
    greedy = reference.greedy(tiny_model.params, tiny_model.hparams, [4, 2], 10)
    out = sample_tokens(tiny_model, [[4, 2]], length=1, batch_size=2, top_k=1)
    assert out.tolist() == [greedy[:3]] * 2
    seen = []
    stop = greedy[5]
    out = sample_tokens(tiny_model, [[4, 2]], length=10, batch_size=2, top_k=1, stop_token=stop,
                        on_token=lambda t: seen.append(t.tolist()))
    first_stop = greedy.index(stop, 2)
    assert out.tolist() == [greedy[:first_stop + 1]] * 2
    assert np.array(seen).T.tolist() == out[:, 2:].tolist()


def test_context_rows_must_be_one_or_batch_size():
    hparams = model.default_hparams().override_from_dict({'n_vocab': 10, 'n_ctx': 8, 'n_embd': 4, 'n_head': 1,
                                                           'n_layer': 1})
    with tf.Graph().as_default(), pytest.raises(ValueError, match='context has 2 rows and batch_size is 3'):
        sample.sample_sequence(hparams=hparams, length=2, context=[[1], [2]], batch_size=3)


# ---------------------------------------------------------------------------------------------------------------
# Knobs fed per run
# ---------------------------------------------------------------------------------------------------------------

def fed_knobs():
    return (tf.placeholder(tf.float32, []), tf.placeholder(tf.int32, []), tf.placeholder(tf.float32, []),
            tf.placeholder(tf.int32, [2]))


def test_fed_knobs_choose_greedy_or_sampling_per_run(tiny_model):
    """One graph with temperature, top_k, top_p and seed as placeholders: temperature 0 or top_k 1 is the NumPy
    greedy decoding; the same fed seed repeats its samples, another seed differs."""
    prompts = [[9, 3, 4], [2, 7, 1]]
    expected = [reference.greedy(tiny_model.params, tiny_model.hparams, p, 8) for p in prompts]
    with tf.Graph().as_default():
        temperature, top_k, top_p, seed = fed_knobs()
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=tf.constant(prompts), length=8,
                                     temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            run = lambda t, k, p, s: sess.run(out, {temperature: t, top_k: k, top_p: p, seed: s}).tolist()
            assert run(0, 0, 1, [0, 0]) == expected
            assert run(1, 1, 1, [0, 5]) == expected
            assert run(0, 40, 0.5, [1, 2]) == expected  # greedy ignores the filters
            first, again, other = run(1, 0, 1, [3, 4]), run(1, 0, 1, [3, 4]), run(1, 0, 1, [3, 5])
    assert first == again and first != other


@pytest.mark.parametrize('k, p', [(3, 0.5), (1, 0.3), (0, 0.7), (4, 1.0), (0, 1.0)])
def test_fed_top_k_and_top_p_draw_only_allowed_tokens(k, p):
    logits = np.random.default_rng(k + 7).standard_normal((6, 20)).astype(np.float32) * 2
    allowed = numpy_kept(logits, k, p)
    with tf.Graph().as_default():
        temperature, top_k, top_p, seed = fed_knobs()
        drawn = sample.draw(tf.tile(tf.constant(logits), [60, 1]), temperature=temperature, top_k=top_k,
                            top_p=top_p, seed=seed)
        with tf.Session() as sess:
            tokens = sess.run(drawn, {temperature: 1, top_k: k, top_p: p, seed: [1, 2]}).reshape(60, 6)
    for row in range(6):
        assert set(tokens[:, row]) <= set(np.flatnonzero(allowed[row]))
        if k == 0 and p == 1:
            assert len(set(tokens[:, row])) > 3  # nothing filtered: many tokens drawn


def test_without_callback_or_frozen_weights_the_graph_has_only_public_ops(tiny_model):
    """No Python callback and no oneDNN-internal op (their names start with an underscore), so the graph can be
    exported; fed knobs included."""
    with tf.Graph().as_default() as graph:
        temperature, top_k, top_p, seed = fed_knobs()
        sample.sample_sequence(hparams=tiny_model.hparams_object(), context=tf.placeholder(tf.int32, [4, None]),
                               length=4, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                               device='/CPU:0')
        types = {op.type for op in graph.get_operations()}
    assert not [t for t in types if t.startswith('_') or 'PyFunc' in t]


# ---------------------------------------------------------------------------------------------------------------
# Prompts of different lengths in one batch
# ---------------------------------------------------------------------------------------------------------------

MIXED = [[9, 3, 4, 1, 8, 2], [2], [7, 7, 5]]


def test_mixed_length_prompts_in_one_batch_equal_each_alone_greedy(tiny_model):
    """Left-padded rows, their own positions, their padding masked: greedy rows are each prompt's NumPy greedy
    tokens, token for token, over two batches in one session (the second with other lengths)."""
    with tf.Graph().as_default():
        context, lengths = tf.placeholder(tf.int32, [3, None]), tf.placeholder(tf.int32, [3])
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=context, context_lengths=lengths,
                                     length=7, temperature=0)
        with tf.Session(config=sample.session_config()) as sess:
            restore(sess, tiny_model)
            for prompts in (MIXED, [[1, 2], [3, 4, 5, 6, 7], [8]]):
                padded, n = sample.left_pad(prompts)
                got = sess.run(out, {context: padded, lengths: n})
                for row, prompt in enumerate(prompts):
                    assert got[row, padded.shape[1] - len(prompt):].tolist() == \
                        reference.greedy(tiny_model.params, tiny_model.hparams, prompt, 7)


def test_mixed_length_rows_draw_from_their_own_distribution(tiny_model):
    """Seeded, top_k 3: every drawn token is among the 3 largest NumPy logits of its own row's sequence."""
    padded, n = sample.left_pad(MIXED)
    with tf.Graph().as_default():
        tf.set_random_seed(5)
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=tf.constant(padded),
                                     context_lengths=tf.constant(n), length=8, top_k=3)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            got = sess.run(out)
    for row, prompt in enumerate(MIXED):
        tokens = got[row, padded.shape[1] - len(prompt):]
        logits = reference.logits(tiny_model.params, tiny_model.hparams, tokens[:-1])
        for t in range(len(prompt), len(tokens)):
            assert tokens[t] in np.argsort(logits[t - 1])[-3:]


# ---------------------------------------------------------------------------------------------------------------
# Past the window
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('prompt, length, keep', [([3, 1, 4], 45, 16), ([7], 40, 31), ([2, 5], 34, 1),
                                                  (list(range(40)), 6, 20), ([6], 40, 32)])
def test_past_the_window_follows_the_rule_computed_by_hand(tiny_model, prompt, length, keep):
    """Windows cut several times, to half, to all but one, to one token, a prompt longer than the window, and a
    window of n_ctx that moves on every step; at batch 2 from one prompt."""
    out = sample_tokens(tiny_model, [prompt], length=length, temperature=0, batch_size=2, context_keep=keep)
    expected = reference.sliding_greedy(tiny_model.params, tiny_model.hparams, prompt, length, keep)
    assert out.tolist() == [expected, expected]


def test_past_the_window_starts_as_today_for_a_fed_seed(tiny_model):
    """Sampled with one stateless seed: the tokens while the window is not yet full are those of a sample that
    fits it; the keep may be fed too."""
    n_ctx = tiny_model.hparams['n_ctx']
    with tf.Graph().as_default():
        seed, keep = tf.placeholder(tf.int32, [2]), tf.placeholder(tf.int32, [])
        kwargs = dict(hparams=tiny_model.hparams_object(), context=tf.constant([[3, 1]] * 2), seed=seed, top_k=5)
        fits = sample.sample_sequence(length=n_ctx - 1, **kwargs)
        longer = sample.sample_sequence(length=60, context_keep=keep, **kwargs)
        with tf.Session() as sess:
            restore(sess, tiny_model)
            a, b = sess.run([fits, longer], {seed: [4, 2], keep: 8})
    assert b.shape == (2, 62)
    np.testing.assert_array_equal(a, b[:, :n_ctx + 1])
