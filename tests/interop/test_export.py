"""src/export.py: the tiny model as a SavedModel, loaded in a fresh TensorFlow 2 process the way a server or a user
does (tf.saved_model.load(...).signatures['serving_default']), against the Session's sampling and the NumPy
reference."""
import json
import subprocess
import sys

import pytest
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import saved_model_pb2

import export
from gpt2.interop import saved_model
import reference
import sample
from support import restore

PROMPTS = [[9, 3, 4], [2, 7, 1]]
LENGTH = 8
MAX_LENGTH = 20
# A fresh process: TensorFlow 2 as installed, eager, nothing of this project imported. Each call is a JSON object of
# the signature's inputs; prints each call's tokens, or its error's message.
SERVE = '''
import json, sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']
results = []
for call in json.loads(sys.argv[2]):
    inputs = dict(prompt=tf.constant(call['prompt'], tf.int32), length=tf.constant(call['length'], tf.int32),
                  temperature=tf.constant(call['temperature'], tf.float32), top_k=tf.constant(call['top_k'], tf.int32),
                  top_p=tf.constant(call['top_p'], tf.float32), seed=tf.constant(call['seed'], tf.int64))
    try:
        results.append(serve(**inputs)['tokens'].numpy().tolist())
    except tf.errors.InvalidArgumentError as err:
        results.append(err.message)
# As TensorFlow Serving loads it (the C++ SavedModel loader, a Session on the graph), the first call again.
with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    signature = tf.compat.v1.saved_model.loader.load(sess, ['serve'], sys.argv[1]).signature_def['serving_default']
    call = json.loads(sys.argv[2])[0]
    feed = {signature.inputs[k].name: v for k, v in call.items()}
    results.append(sess.run(signature.outputs['tokens'].name, feed).tolist())
print(json.dumps(results))
'''


def knobs(temperature=1.0, top_k=0, top_p=1.0, seed=0, prompt=PROMPTS, length=LENGTH):
    return dict(prompt=prompt, length=length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)


CALLS = {
    'greedy': knobs(temperature=0),
    'top_k 1': knobs(temperature=1, top_k=1, seed=3),
    'greedy, top_p 0.3': knobs(temperature=0, top_p=0.3, seed=4),
    'greedy, top_k 5 top_p 0.5': knobs(temperature=0, top_k=5, top_p=0.5, seed=5),
    'seed 7': knobs(seed=7),
    'seed 7 again': knobs(seed=7),
    'seed 8': knobs(seed=8),
    'top_k 3 top_p 0.9 temperature 0.8 seed 11': knobs(temperature=0.8, top_k=3, top_p=0.9, seed=11),
    'one row, 2 tokens': knobs(temperature=0, prompt=PROMPTS[:1], length=2),
    'too long': knobs(length=MAX_LENGTH),
    'top_p 0': knobs(top_p=0.0),
    'id beyond the vocabulary': knobs(prompt=[[100000]]),
}


def session_samples(tiny_model, calls):
    """sample.sample_sequence in a Session, the knobs fed, the seed [seed, 0] -> the drawn tokens of each call."""
    results = []
    with tf.Graph().as_default():
        temperature, top_p = tf.placeholder(tf.float32, []), tf.placeholder(tf.float32, [])
        top_k, seed = tf.placeholder(tf.int32, []), tf.placeholder(tf.int64, [2])
        context = tf.placeholder(tf.int32, [None, None])
        out = sample.sample_sequence(hparams=tiny_model.hparams_object(), context=context, length=LENGTH,
                                     temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, device='/CPU:0')
        with tf.Session() as sess:
            restore(sess, tiny_model)
            for call in calls:
                feed = {context: call['prompt'], temperature: call['temperature'], top_k: call['top_k'],
                        top_p: call['top_p'], seed: [call['seed'], 0]}
                results.append(sess.run(out, feed)[:, len(call['prompt'][0]):].tolist())
    return results


@pytest.fixture(scope='module')
def exported(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp('export') / 'gpt2' / '1'
    assert call_export(tiny_model.dir, out, max_length=MAX_LENGTH) == 0
    return out


@pytest.fixture(scope='module')
def served(exported):
    """Every call of CALLS, answered by the SavedModel in a fresh process."""
    done = subprocess.run([sys.executable, '-c', SERVE, str(exported), json.dumps(list(CALLS.values()))],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return dict(zip([*CALLS, 'first call in a Session'], results))


def call_export(*args, **flags):
    try:
        export.export_main(*map(str, args), **flags)
    except SystemExit as exit_info:
        return exit_info.code
    return 0


def test_greedy_from_the_saved_model_equals_the_sessions_and_the_reference(served, tiny_model):
    expected = [reference.greedy(tiny_model.params, tiny_model.hparams, p, LENGTH)[len(p):] for p in PROMPTS]
    assert served['greedy'] == expected
    assert served['first call in a Session'] == expected
    assert served['greedy'] == session_samples(tiny_model, [CALLS['greedy']])[0]
    assert served['one row, 2 tokens'] == [expected[0][:2]]


def test_knobs_given_at_call_time_take_effect(served):
    greedy = served['greedy']
    assert served['top_k 1'] == greedy
    assert served['greedy, top_p 0.3'] == greedy and served['greedy, top_k 5 top_p 0.5'] == greedy
    assert served['seed 7'] == served['seed 7 again'] != served['seed 8']
    assert served['seed 7'] != greedy


def test_sampled_tokens_for_a_seed_equal_the_sessions(served, tiny_model):
    names = ['seed 7', 'top_k 3 top_p 0.9 temperature 0.8 seed 11']
    assert [served[n] for n in names] == session_samples(tiny_model, [CALLS[n] for n in names])


def test_bad_inputs_are_errors_that_name_them(served):
    assert 'max_length' in served['too long']
    assert 'top_p' in served['top_p 0']
    assert 'n_vocab' in served['id beyond the vocabulary']


def test_the_export_holds_one_signature_and_only_portable_ops(exported):
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((exported / 'saved_model.pb').read_bytes())
    (graph,) = saved.meta_graphs
    signature = graph.signature_def[saved_model.SIGNATURE]
    assert {k: v.dtype for k, v in signature.inputs.items()} == {
        'prompt': tf.int32.as_datatype_enum, 'length': tf.int32.as_datatype_enum,
        'temperature': tf.float32.as_datatype_enum, 'top_k': tf.int32.as_datatype_enum,
        'top_p': tf.float32.as_datatype_enum, 'seed': tf.int64.as_datatype_enum}
    assert list(signature.outputs) == ['tokens']
    ops = {n.op for n in graph.graph_def.node}
    ops |= {n.op for f in graph.graph_def.library.function for n in f.node_def}
    assert 'While' in ops or 'StatelessWhile' in ops or 'Enter' in ops  # the loop is in the graph
    assert not [op for op in ops if op.startswith('_') or 'PyFunc' in op]
    assert not [n.device for n in graph.graph_def.node if n.device]  # the server places it


@pytest.mark.parametrize('flags, code, word', [
    ({'max_length': 1}, 2, '--max_length'), ({'max_length': 33}, 2, '--max_length'),
    ({'max_length': 'x'}, 2, '--max_length'), ({'overwrite': 'yes'}, 2, '--overwrite'),
])
def test_bad_flags_are_one_line_and_write_nothing(tiny_model, tmp_path, capsys, flags, code, word):
    assert call_export(tiny_model.dir, tmp_path / 'out', **flags) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and word in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_a_missing_model_or_an_existing_out_dir_is_refused(tiny_model, exported, tmp_path, capsys):
    assert call_export(tmp_path / 'nowhere', tmp_path / 'out') == 1
    assert 'nowhere' in capsys.readouterr().err
    assert call_export(tiny_model.dir, exported) == 1
    assert 'exists' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

