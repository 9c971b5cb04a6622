"""The sampling graph built for a GPU, checked op by op on a machine without one.

TensorFlow's Linux wheel is built with CUDA, so its GPU kernels are registered whether or not a GPU is present:
the test reads the registry (tensorflow.python.framework.kernels, TensorFlow's own list) to check that every op
of the loop has a GPU kernel for its dtypes, or is host work placed on the CPU on purpose, and that nothing the
size of a weight matrix crosses between the host and the GPU on a step.
"""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from tensorflow.python.framework import kernels

from tensorflow.python.ops import control_flow_util

from gpt2.base import checkpoint
from gpt2.evaluation import scoring
from gpt2.sampling import cpu_matmul
from gpt2.sampling import half
import reference
import sample
from support import restore

LOOP = 'sample_sequence/while/'
# Host work by design, in these name scopes: handing each step's tokens to the callback and the int32 token array
# (sample.record), the decoder's int32 index arithmetic (decoding.decode_hidden), the stop strings' bytes
# (stops.advance) and the sliding window's bookkeeping (sample.slide).
HOST_SCOPES = ('/record/', '/cache_index/', '/stop_strings', '/slide')


def gpu_kernel(op):
    """The GPU kernel TensorFlow would run op with: registered for its type attributes and its label, or None."""
    label = op.get_attr('_kernel').decode() if '_kernel' in op.node_def.attr else ''
    registered = kernels.get_registered_kernels_for_op(op.type).kernel
    # DEFAULT kernels run on any device; TensorFlow prefers a GPU one.
    for kernel in sorted(registered, key=lambda k: k.device_type != 'GPU'):
        if kernel.device_type not in ('GPU', 'DEFAULT') or kernel.label != label:
            continue
        if all(op.get_attr(c.name).as_datatype_enum in c.allowed_values.list.type for c in kernel.constraint):
            return kernel
    return None


def args(op, names):
    """The input and output tensors of op's arguments with these names (as a kernel's host_memory_arg lists)."""
    found = []
    for specs, tensors in ((op.op_def.input_arg, list(op.inputs)), (op.op_def.output_arg, list(op.outputs))):
        start = 0
        for spec in specs:
            count = (op.get_attr(spec.number_attr) if spec.number_attr else
                     len(op.get_attr(spec.type_list_attr)) if spec.type_list_attr else 1)
            if spec.name in names:
                found += tensors[start:start + count]
            start += count
    return found


def step_elements(tensor):
    """Elements of tensor on a step of one token per row: the dimensions unknown when the graph is built are the
    prompt's length (1 after the first step) and lengths that follow from it."""
    if tensor.shape.rank is None:
        return 1
    return int(np.prod([d if d is not None else 1 for d in tensor.shape.as_list()]))


def device_type(op):
    return tf.DeviceSpec.from_string(op.device).device_type if op.device else None


def build(tiny_model, batch_size, *, prompt, filters, precision='float32'):
    """The sampling graph of a script, built for a GPU: generate_unconditional_samples.py (prompt False) or
    interactive_conditional_samples.py (prompt True), with streaming and the stop token on."""
    hparams = tiny_model.hparams_object()
    kwargs = dict(hparams=hparams, length=8, batch_size=batch_size, temperature=0.9, **filters,
                  stop_token=tiny_model.endoftext, on_token=lambda tokens: None, frozen_weights=True,
                  device='/GPU:0', precision=precision)
    if prompt:
        return sample.sample_sequence(context=tf.placeholder(tf.int32, [1, None]), **kwargs)
    return sample.sample_sequence(start_token=tiny_model.endoftext, **kwargs)


@pytest.mark.parametrize('filters', [{'top_k': 40}, {'top_p': 0.9}, {'top_k': 40, 'top_p': 0.9}])
@pytest.mark.parametrize('batch_size', [1, 8])
@pytest.mark.parametrize('prompt', [False, True])
def test_every_op_of_the_loop_runs_on_the_gpu_or_is_host_work_on_the_cpu(tiny_model, batch_size, prompt,
                                                                          filters):
    assert any(k.device_type == 'GPU' for k in kernels.get_registered_kernels_for_op('MatMul').kernel), \
        'this TensorFlow is a CPU-only build: the check needs a CUDA build, such as the Linux x86_64 wheel'
    with tf.Graph().as_default() as graph:
        build(tiny_model, batch_size, prompt=prompt, filters=filters)
    problems = placement_problems(graph, tiny_model)
    assert not problems, '\n'.join(problems)


def placement_problems(graph, tiny_model):
    """What is wrong with where the loop's ops of graph run: a line per problem."""
    loop = [op for op in graph.get_operations() if op.name.startswith(LOOP)]
    assert loop
    # Nothing crossing may be as large as the smallest weight matrix (c_proj of attention: n_embd x n_embd).
    limit = tiny_model.hparams['n_embd'] ** 2
    problems = []
    for op in loop:
        where = device_type(op)
        if where == 'GPU':
            kernel = gpu_kernel(op)
            if kernel is None:
                problems.append(f'{op.name} ({op.type}): no GPU kernel for its dtypes')
                continue
            # A kernel's host-memory arguments are copied between the GPU and the host.
            crossing = args(op, set(kernel.host_memory_arg))
        elif where == 'CPU':
            crossing = [t for t in op.inputs if device_type(t.op) == 'GPU']
            if not any(scope in op.name for scope in HOST_SCOPES):
                problems.append(f'{op.name} ({op.type}): on the host, but not host work')
        else:
            problems.append(f'{op.name} ({op.type}): no device')
            continue
        crossing += [t for t in op.outputs for user in t.consumers() if device_type(user) not in (where, None)]
        problems += [f'{op.name} ({op.type}): {t.name} {t.shape} crosses between host and GPU'
                     for t in crossing if step_elements(t) >= limit]
    return problems


@pytest.mark.parametrize('feature', ['stops', 'penalties', 'fed knobs', 'mixed lengths', 'sliding window'])
def test_the_new_sampling_features_run_on_the_gpu_or_are_host_work(tiny_model, feature):
    from gpt2.sampling import penalties
    from gpt2.sampling import stops
    hparams = tiny_model.hparams_object()
    with tf.Graph().as_default() as graph:
        extra = {
            'stops': lambda: dict(stops=stops.stop_array(['ab', '\n']),
                                  token_bytes=np.zeros([hparams.n_vocab, 3], np.int32)),
            'penalties': lambda: dict(penalties=penalties.Penalties(1.2, 0.1, 0.1, 2)),
            'fed knobs': lambda: dict(temperature=tf.placeholder(tf.float32, []), top_k=tf.placeholder(tf.int32, []),
                                      top_p=tf.placeholder(tf.float32, []), seed=tf.placeholder(tf.int32, [2])),
            'mixed lengths': lambda: dict(context_lengths=tf.placeholder(tf.int32, [4])),
            'sliding window': lambda: dict(context_keep=10),
        }[feature]()
        sample.sample_sequence(hparams=hparams, length=8, context=tf.placeholder(tf.int32, [4, None]),
                               on_token=lambda tokens: None, frozen_weights=True, device='/GPU:0',
                               **{'temperature': 0.9, **extra})
    problems = placement_problems(graph, tiny_model)
    assert not problems, '\n'.join(problems)


def test_the_gpu_graph_has_plain_products_and_attention_in_one_piece(tiny_model):
    """Packed products are CPU-only kernels and the split products and attention are for two CPU cores."""
    with tf.Graph().as_default() as graph:
        build(tiny_model, 8, prompt=False, filters={'top_k': 40})
    types = [op.type for op in graph.get_operations() if op.name.startswith(LOOP)]
    assert cpu_matmul.PACKED_OP not in types
    assert 'AddN' not in types  # the split products' sums
    layers = tiny_model.hparams['n_layer']
    # Per block: c_attn, c_proj, c_fc, mlp c_proj; and the logits.
    assert types.count('MatMul') == 4 * layers + 1


def test_session_config_places_softly_and_grows_gpu_memory():
    config = sample.session_config()
    assert config.allow_soft_placement and config.gpu_options.allow_growth


def test_default_device_is_the_cpu_without_a_gpu():
    assert sample.default_device() == ('/GPU:0' if tf.config.list_physical_devices('GPU') else '/CPU:0')


@pytest.mark.parametrize('batch_size', [1, 3])
def test_the_gpu_graph_samples_the_reference_tokens_where_soft_placement_runs_it_on_the_cpu(tiny_model,
                                                                                         batch_size):
    """Built for a GPU and run on this machine's CPU (as a GPU machine would run its host ops): greedy tokens are
    the NumPy ones, the callback sees every step in order, prompts of other lengths in one session."""
    seen = []
    with tf.Graph().as_default():
        context = tf.placeholder(tf.int32, [1, None])
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=context, batch_size=batch_size,
                                     length=6, top_k=1, on_token=lambda t: seen.append(t.tolist()),
                                     frozen_weights=True, device='/GPU:0')
        with tf.Session(config=sample.session_config()) as sess:
            restore(sess, tiny_model)
            for prompt in ([9, 3, 4, 1], [2]):
                seen.clear()
                got = sess.run(out, {context: [prompt]}).tolist()
                expected = reference.greedy(tiny_model.params, tiny_model.hparams, prompt, 6)
                assert got == [expected] * batch_size
                assert np.array(seen).T.tolist() == [expected[len(prompt):]] * batch_size


# ---------------------------------------------------------------------------------------------------------------
# Half precision (gpt2/sampling/half.py)
# ---------------------------------------------------------------------------------------------------------------

def half_problems(graph, dtype):
    """What is wrong with the ops of graph that take or make dtype tensors, wherever they are (the weights'
    casts, the cache's buffers, a shared prompt's step, the loop): a line for each without a GPU kernel for its
    dtypes or placed on the host, and for each half tensor that a host op reads."""
    problems = []
    for op in graph.get_operations():
        tensors = list(op.inputs) + list(op.outputs)
        if not any(t.dtype.base_dtype == dtype for t in tensors):
            continue
        if device_type(op) != 'GPU' or gpu_kernel(op) is None:
            problems.append(f'{op.name} ({op.type}): carries {dtype.name} but has no GPU kernel or is on the host')
        problems += [f'{op.name} ({op.type}): {t.name} read on the host by {user.name}'
                     for t in op.outputs if t.dtype.base_dtype == dtype for user in t.consumers()
                     if device_type(user) == 'CPU']
    return problems


@pytest.mark.parametrize('precision', half.PRECISIONS)
@pytest.mark.parametrize('batch_size', [1, 8])
@pytest.mark.parametrize('prompt', [False, True])
def test_half_precision_sampling_runs_on_the_gpu_with_its_weights_and_cache_in_half(tiny_model, batch_size, prompt,
                                                                                   precision):
    dtype = half.DTYPES[precision]
    with tf.Graph().as_default() as graph:
        build(tiny_model, batch_size, prompt=prompt, filters={'top_k': 40, 'top_p': 0.9}, precision=precision)
    problems = placement_problems(graph, tiny_model) + half_problems(graph, dtype)
    assert not problems, '\n'.join(problems)
    ops = graph.get_operations()
    loop = [op for op in ops if op.name.startswith(LOOP)]
    # Every product of a step, attention's included, in half precision; the cache written in half.
    products = [op for op in loop if op.type in ('MatMul', 'BatchMatMulV2')]
    assert products and {op.get_attr('T') for op in products} == {dtype}
    assert {op.get_attr('T') for op in loop if op.type == 'InplaceUpdate'} == {dtype}
    # Each matrix cast once a run, outside the loop: the blocks' four and wte.
    casts = [op for op in ops if op.type == 'Cast' and op.get_attr('DstT') == dtype
             and not control_flow_util.IsInWhileLoop(op) and op.inputs[0].op.type == 'Reshape'
             and op.outputs[0].shape.is_fully_defined()]
    assert len(casts) == 4 * tiny_model.hparams['n_layer'] + 1


@pytest.mark.parametrize('precision', half.PRECISIONS)
def test_half_precision_scoring_runs_on_the_gpu_with_its_products_in_half(tiny_model, precision):
    """score.py's graph, built for a GPU: every op that takes or makes a float array has a GPU kernel, so only
    the int32 and bool bookkeeping of the chunks' loop (tf.map_fn's arrays of targets and results, whose float
    "flow" scalars only order them) runs on the host, and no float array crosses."""
    hparams = tiny_model.hparams_object()
    with tf.Graph().as_default() as graph, tf.device('/GPU:0'):
        for name, shape in checkpoint.variable_shapes(hparams).items():  # as loading.start_restore makes them
            tf.get_variable(name, shape, initializer=tf.zeros_initializer())
        scoring.Scorer(None, hparams, precision)
    problems = [f'{op.name} ({op.type}): a float without a GPU kernel' for op in graph.get_operations()
                if '/Initializer/' not in op.name and gpu_kernel(op) is None
                and any(t.dtype.is_floating and t.shape.rank != 0 for t in list(op.inputs) + list(op.outputs))]
    assert not problems, '\n'.join(problems)
    products = [op for op in graph.get_operations() if op.type == 'MatMul']
    assert len(products) == 4 * hparams.n_layer + 1  # the blocks' and the logits'
    assert {op.get_attr('T') for op in products} == {half.DTYPES[precision]}
