"""Half-precision sampling and scoring (gpt2/sampling/half.py), run on this machine's CPU through the library
(the scripts refuse half precision on a CPU, where it is slower), against the NumPy GPT-2 (tests/reference.py)
with every product's matrix rounded to the half type.

The bound: the graph rounds more than the weights. On the path to a logit, each block rounds the inputs and the
outputs of its four products (8), the attention scores, the attention weights and attention's output (3); the
logits' product rounds its input and its output (2). Each rounding is off by at most u = 2**-p of its value (p:
the type's significand bits, the implicit one included: 11 for float16, 8 for bfloat16); counted once each at
the logit's own scale, sum_i |h_i| |wte_ji| (the layer norms keep the residual stream's scale from compounding),
|logit_j - reference_j| <= (11 n_layer + 2) u sum_i |h_i| |wte_ji|.
"""
import ml_dtypes
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import reference
import sample
from gpt2.evaluation import scoring
from gpt2.sampling import decoding
from gpt2.sampling import half
from support import assert_clean_error, restore, run_script, tiny_flags

SIGNIFICAND_BITS = {'float16': 11, 'bfloat16': 8}
NUMPY_TYPES = {'float16': np.float16, 'bfloat16': ml_dtypes.bfloat16}
# The blocks' matrices; wte is rounded for the logits only (the embedding reads float32 rows).
MATRICES = ('/c_attn/w', '/c_proj/w', '/c_fc/w')
PROMPT = [9, 3, 4, 1]
# A prompt after which the tiny model's greedy choices clear bfloat16's bound for three steps (few do: its random
# logits are close together at bfloat16's scale).
CLEAR_PROMPT = [261]


def half_reference(tiny_model, precision, tokens):
    """tokens [seq] -> (logits [seq, n_vocab] of the NumPy GPT-2 with the matrices rounded to precision's type,
    the bound on each logit's distance from them, as the module's docstring derives it)."""
    to_half = lambda w: w.astype(NUMPY_TYPES[precision]).astype(np.float64)
    params = {k: (to_half(w) if k.endswith(MATRICES) else w) for k, w in tiny_model.params.items()}
    h = reference.hidden_states(params, tiny_model.hparams, np.asarray(tokens))[-1]
    wte = to_half(tiny_model.params['model/wte'])
    roundings = 11 * tiny_model.hparams['n_layer'] + 2
    return h @ wte.T, roundings * 2.0 ** -SIGNIFICAND_BITS[precision] * (np.abs(h) @ np.abs(wte).T)


def margin_greedy(tiny_model, precision, prompt, length):
    """The reference's greedy tokens after prompt, as far as each step's best logit beats the next by more
    than both their bounds: past a closer step, the half graph may rightly choose otherwise."""
    tokens = list(prompt)
    for _ in range(length):
        logits, bound = half_reference(tiny_model, precision, tokens)
        second, best = np.argsort(logits[-1])[-2:]
        if logits[-1, best] - logits[-1, second] <= bound[-1, best] + bound[-1, second]:
            break
        tokens.append(int(best))
    return tokens


@pytest.mark.parametrize('precision', ['float16', 'bfloat16'])
def test_half_logits_are_the_rounded_references_within_the_mantissas_bound(tiny_model, precision):
    tokens = PROMPT + [200, 17, 44, 5, 6, 7, 8, 9]
    hparams = tiny_model.hparams_object()
    with tf.Graph().as_default(), tf.device('/CPU:0'):
        X = tf.placeholder(tf.int32, [1, None])
        cache = decoding.empty_cache(hparams, 1, len(tokens), half.DTYPES[precision])
        logits, cache = decoding.decode_step(hparams, X, cache, 0, scope=decoding.read_once_scope(),
                                             products=half.products(precision))
        assert {k.dtype for pair in cache for k in pair} == {half.DTYPES[precision]}
        with tf.Session() as sess:
            restore(sess, tiny_model)
            got = sess.run(logits, {X: [tokens]})[0]
    expected, bound = half_reference(tiny_model, precision, tokens)
    assert (np.abs(got - expected) <= bound).all()
    # Half precision indeed: float32 would be within a thousandth of the bound.
    assert np.abs(got - reference.logits(tiny_model.params, tiny_model.hparams, np.asarray(tokens))).max() > \
        bound.max() / 1000


@pytest.mark.parametrize('batch_size', [1, 3])
@pytest.mark.parametrize('precision', ['float16', 'bfloat16'])
def test_half_greedy_tokens_are_the_rounded_references_where_the_margin_allows(tiny_model, precision, batch_size):
    """Batch 1 feeds the prompt through the loop; batch 3 runs it once and shares its half-precision cache."""
    expected = margin_greedy(tiny_model, precision, CLEAR_PROMPT, 8)
    assert len(expected) >= len(CLEAR_PROMPT) + 3, expected  # enough tokens beyond doubt to compare
    with tf.Graph().as_default():
        context = tf.placeholder(tf.int32, [1, None])
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=context, batch_size=batch_size,
                                     length=8, top_k=1, frozen_weights=True, device='/CPU:0', precision=precision)
        with tf.Session(config=sample.session_config()) as sess:
            restore(sess, tiny_model)
            got = sess.run(out, {context: [CLEAR_PROMPT]})
    assert got[:, :len(expected)].tolist() == [expected] * batch_size


def test_the_generator_built_for_a_gpu_samples_the_rounded_references_where_soft_placement_runs_it_here(tiny_model):
    """Generator(precision='float16', device='/GPU:0'), run on this machine's CPU as a GPU machine would run its
    host ops: its graph takes prompts of different lengths (left padding), a path of its own."""
    from gpt2.sampling import generator
    expected = margin_greedy(tiny_model, 'float16', CLEAR_PROMPT, 6)[len(CLEAR_PROMPT):]
    assert len(expected) >= 3
    with generator.Generator(tiny_model.name, tiny_model.models_dir, precision='float16', device='/GPU:0') as gen:
        first, _ = gen.generate([' an', ' the hello'], length=6, temperature=0)  # ' an' is token 261
    assert first.tokens[:len(expected)] == expected


@pytest.mark.parametrize('precision', ['float16', 'bfloat16'])
def test_half_scorer_logprobs_are_the_rounded_references_within_the_bound(tiny_model, precision):
    """The Scorer's products in half precision, attention in float32 (fewer roundings than sampling's)."""
    tokens = np.array([tiny_model.endoftext] + PROMPT + [200, 17, 44, 5], np.int32)
    with tf.Graph().as_default(), tf.device('/CPU:0'), tf.Session() as sess:
        scorer = scoring.restored_scorer(sess, tiny_model.dir, tiny_model.hparams_object(), precision)
        (logprobs, _), = scorer.score([(tokens, len(tokens) - 1)])
    logits, bound = half_reference(tiny_model, precision, tokens[:-1])
    z = logits - logits.max(axis=-1, keepdims=True)
    expected = (z - np.log(np.exp(z).sum(axis=-1, keepdims=True)))[np.arange(len(tokens) - 1), tokens[1:]]
    # log p = z_target - logsumexp(z): each moves by at most the largest bound of the row.
    assert (np.abs(logprobs - expected) <= 2 * bound.max(axis=-1)).all()


# ---------------------------------------------------------------------------------------------------------------
# Where half precision runs: a GPU
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('script, precision', [('generate_unconditional_samples.py', 'float16'),
                                               ('interactive_conditional_samples.py', 'bfloat16'),
                                               ('score.py', 'float16')])
def test_half_precision_on_a_cpu_is_one_line_saying_it_is_for_a_gpu(tiny_model, tmp_path, script, precision):
    (tmp_path / 'text.txt').write_text('the hello', encoding='utf-8')
    files = [tmp_path / 'text.txt'] if script == 'score.py' else []
    done = run_script(script, *files, f'--models_dir={tiny_model.models_dir}', f'--model_name={tiny_model.name}',
                      f'--precision={precision}')
    assert done.returncode == 2 and done.out == ''
    assert_clean_error(done, f'--precision {precision}', 'GPU', 'float32')


def test_an_unknown_precision_names_the_four(tiny_model):
    done = run_script('generate_unconditional_samples.py', *tiny_flags(tiny_model, precision='float64'))
    assert done.returncode == 2
    assert_clean_error(done, '--precision', 'float32', 'int8', 'float16', 'bfloat16')


def test_the_generator_refuses_half_precision_on_a_cpu_with_a_value_error(tiny_model):
    from gpt2.sampling import generator
    with pytest.raises(ValueError, match='precision bfloat16 is for a GPU'):
        generator.Generator(tiny_model.name, tiny_model.models_dir, precision='bfloat16', device='/CPU:0')


def test_products_for_a_gpu_in_half_precision_are_plain_half_products():
    products = sample.products_for('/GPU:0', batch=8, frozen_weights=True, hparams=None, precision='float16')
    assert isinstance(products, half.Products) and products.splits == 1 and not products.packed
    assert half.cache_dtype(products) == tf.float16
