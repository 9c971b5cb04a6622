"""src/convert.py and src/gpt2/interop/hf.py: Hugging Face GPT-2 folders in and out, and a run's weights without its optimizer.

The Hugging Face folders here are written by the test itself, with the safetensors package and the names of
transformers' GPT-2 spelled out below (no PyTorch, no transformers); logits are checked against the NumPy GPT-2 of
tests/reference.py. The check against transformers itself is bench/peer_convert.py, beside the suite."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from safetensors.numpy import load_file, save_file

from gpt2.base import checkpoint
import support
import convert
import model
import reference
from gpt2.training import graph
from gpt2.training.run_folder import RunFolder
from gpt2.training.start import restore
from support import decode

REPO = support.REPO

# transformers' GPT-2 names of one block's tensors, and the released names of the same weights.
BLOCK_NAMES = {
    'ln_1.weight': 'ln_1/g', 'ln_1.bias': 'ln_1/b',
    'attn.c_attn.weight': 'attn/c_attn/w', 'attn.c_attn.bias': 'attn/c_attn/b',
    'attn.c_proj.weight': 'attn/c_proj/w', 'attn.c_proj.bias': 'attn/c_proj/b',
    'ln_2.weight': 'ln_2/g', 'ln_2.bias': 'ln_2/b',
    'mlp.c_fc.weight': 'mlp/c_fc/w', 'mlp.c_fc.bias': 'mlp/c_fc/b',
    'mlp.c_proj.weight': 'mlp/c_proj/w', 'mlp.c_proj.bias': 'mlp/c_proj/b',
}
TOP_NAMES = {'wte.weight': 'wte', 'wpe.weight': 'wpe', 'ln_f.weight': 'ln_f/g', 'ln_f.bias': 'ln_f/b'}


def hf_names(n_layer):
    """Hugging Face name (without transformer.) -> released name."""
    names = {hf: f'model/{ours}' for hf, ours in TOP_NAMES.items()}
    for i in range(n_layer):
        names.update({f'h.{i}.{hf}': f'model/h{i}/{ours}' for hf, ours in BLOCK_NAMES.items()})
    return names


def as_hf(params, n_layer, prefix='transformer.'):
    """Released weights -> Hugging Face's: Conv1D weights lose their leading axis of 1."""
    return {prefix + hf: params[ours][0] if ours.endswith('/w') else params[ours]
            for hf, ours in hf_names(n_layer).items()}


def from_hf_file(tensors, n_layer):
    tensors = {k.removeprefix('transformer.'): v for k, v in tensors.items()}
    return {ours: tensors[hf][np.newaxis] if ours.endswith('/w') else tensors[hf]
            for hf, ours in hf_names(n_layer).items()}


def gpt2_config(hparams, **changes):
    """config.json as transformers writes it for GPT-2 (the published gpt2's keys)."""
    config = {'activation_function': 'gelu_new', 'architectures': ['GPT2LMHeadModel'], 'attn_pdrop': 0.1,
              'bos_token_id': hparams['n_vocab'] - 1, 'embd_pdrop': 0.1, 'eos_token_id': hparams['n_vocab'] - 1,
              'initializer_range': 0.02, 'layer_norm_epsilon': 1e-05, 'model_type': 'gpt2',
              'n_ctx': hparams['n_ctx'], 'n_embd': hparams['n_embd'], 'n_head': hparams['n_head'],
              'n_layer': hparams['n_layer'], 'n_positions': hparams['n_ctx'], 'resid_pdrop': 0.1,
              'vocab_size': hparams['n_vocab']}
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


def write_hf_folder(folder, tiny, *, config=None, tensors=None, tokenizer='files', shards=1):
    """A Hugging Face GPT-2 folder of the tiny model's weights, as old files have them: with each layer's mask
    buffers and lm_head.weight (= wte)."""
    folder.mkdir(parents=True)
    if tensors is None:
        tensors = as_hf(tiny.params, tiny.hparams['n_layer'])
        n_ctx = tiny.hparams['n_ctx']
        for i in range(tiny.hparams['n_layer']):
            tensors[f'transformer.h.{i}.attn.bias'] = np.tril(np.ones((n_ctx, n_ctx), np.float32))[None, None]
            tensors[f'transformer.h.{i}.attn.masked_bias'] = np.array(-1e4, np.float32)
        tensors['lm_head.weight'] = tiny.params['model/wte']
    (folder / 'config.json').write_text(json.dumps(config or gpt2_config(tiny.hparams)))
    if shards == 1:
        save_file(tensors, str(folder / 'model.safetensors'), metadata={'format': 'pt'})
    else:
        names = sorted(tensors)
        weight_map = {}
        for s in range(shards):
            part = f'model-{s + 1:05d}-of-{shards:05d}.safetensors'
            save_file({n: tensors[n] for n in names[s::shards]}, str(folder / part), metadata={'format': 'pt'})
            weight_map.update({n: part for n in names[s::shards]})
        (folder / 'model.safetensors.index.json').write_text(json.dumps({'weight_map': weight_map}))
    merges = [f'{a} {b}' for a, b in support.TINY_MERGES]
    if tokenizer == 'files':
        (folder / 'vocab.json').write_text(json.dumps(tiny.vocab, ensure_ascii=False), encoding='utf-8')
        (folder / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(merges) + '\n', encoding='utf-8')
    else:  # tokenizer.json, with the newer list form of merges and <|endoftext|> only among the added tokens
        vocab = {t: i for t, i in tiny.vocab.items() if t != checkpoint.ENDOFTEXT}
        data = {'version': '1.0', 'added_tokens': [{'id': tiny.endoftext, 'content': checkpoint.ENDOFTEXT,
                                                   'special': True}],
                'model': {'type': 'BPE', 'vocab': vocab, 'merges': [m.split(' ') for m in merges]}}
        (folder / 'tokenizer.json').write_text(json.dumps(data), encoding='utf-8')
    return folder


def call(function, *args, **flags):
    """Run a command in this process -> (exit code, stderr): 0 when it returns."""
    try:
        function(*map(str, args), **flags)
    except SystemExit as exit_info:
        return exit_info.code
    return 0


def released_weights(folder):
    reader = tf.train.load_checkpoint(str(folder / checkpoint.current_checkpoint(folder)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def tf_logits(folder, hparams, tokens):
    """The project's model on the folder's checkpoint: tokens [seq] -> logits [seq, n_vocab]."""
    with tf.Graph().as_default(), tf.Session() as sess:
        logits = model.model(model.default_hparams().override_from_dict(hparams), tokens[np.newaxis])['logits']
        tf.train.Saver().restore(sess, str(folder / checkpoint.current_checkpoint(folder)))
        return sess.run(logits)[0]


def nothing_written(parent, name):
    return not (parent / name).exists() and not [p for p in parent.iterdir() if p.name.startswith(f'.{name}.')]


@pytest.fixture(scope='module')
def hf_folder(tiny_model, tmp_path_factory):
    return write_hf_folder(tmp_path_factory.mktemp('hf') / 'tiny-hf', tiny_model)


@pytest.fixture(scope='module')
def converted(hf_folder, tmp_path_factory):
    """The Hugging Face folder converted in, from the command line."""
    out = tmp_path_factory.mktemp('in') / 'tiny'
    done = subprocess.run([sys.executable, str(REPO / 'src' / 'convert.py'), 'from_hf', str(hf_folder), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == '', done.stderr
    assert done.stdout.startswith(f'Wrote {out}')
    return out


# ---------------------------------------------------------------------------------------------------------------
# from_hf
# ---------------------------------------------------------------------------------------------------------------

def test_from_hf_gives_a_released_folder_whose_logits_equal_the_reference(converted, tiny_model):
    assert sorted(p.name for p in converted.iterdir()) == sorted(checkpoint.MODEL_FILES)
    assert checkpoint.check_model_dir(converted) == tiny_model.hparams
    assert json.loads((converted / 'encoder.json').read_text(encoding='utf-8')) == tiny_model.vocab
    assert (converted / 'vocab.bpe').read_text(encoding='utf-8') == (tiny_model.dir / 'vocab.bpe').read_text(
        encoding='utf-8')
    tokens = np.array([tiny_model.endoftext, 5, 80, 260, 3, 99, 261])
    expected = reference.logits(tiny_model.params, tiny_model.hparams, tokens)
    np.testing.assert_allclose(tf_logits(converted, tiny_model.hparams, tokens), expected, atol=1e-4, rtol=1e-4)


def test_the_sampling_script_runs_greedy_on_a_converted_folder(converted, tiny_model):
    done = subprocess.run([sys.executable, str(REPO / 'src' / 'generate_unconditional_samples.py'),
                           f'--models_dir={converted.parent}', f'--model_name={converted.name}', '--nsamples=1',
                           '--length=8', '--temperature=0', '--seed=0'], capture_output=True, text=True,
                          timeout=120, env={**os.environ, 'PYTHONIOENCODING': 'utf-8'})
    assert done.returncode == 0, done.stderr
    tokens = reference.greedy(tiny_model.params, tiny_model.hparams, [tiny_model.endoftext], 8)[1:]
    assert done.stdout.split('\n', 1)[1] == decode(tiny_model, tokens) + '\n'


def test_unprefixed_sharded_tokenizer_json_folder_converts_to_the_same_model(converted, tiny_model, tmp_path):
    tensors = as_hf(tiny_model.params, tiny_model.hparams['n_layer'], prefix='')
    source = write_hf_folder(tmp_path / 'hf', tiny_model, tensors=tensors, tokenizer='json', shards=3)
    assert call(convert.from_hf, source, tmp_path / 'out') == 0
    assert json.loads((tmp_path / 'out' / 'encoder.json').read_text(encoding='utf-8')) == tiny_model.vocab
    for name in ('vocab.bpe', 'hparams.json'):
        assert (tmp_path / 'out' / name).read_bytes() == (converted / name).read_bytes()
    ours, theirs = released_weights(tmp_path / 'out'), released_weights(converted)
    assert sorted(ours) == sorted(theirs) == sorted(tiny_model.params)
    assert all(np.array_equal(ours[n], theirs[n]) for n in ours)


def test_round_trip_in_out_in_is_bit_identical(hf_folder, converted, tiny_model, tmp_path):
    assert call(convert.to_hf, converted, tmp_path / 'hf') == 0
    out = load_file(str(tmp_path / 'hf' / 'model.safetensors'))
    source = load_file(str(hf_folder / 'model.safetensors'))
    # Weights only: no mask buffers, and no lm_head, which transformers ties to wte.
    assert sorted(out) == sorted(f'transformer.{n}' for n in hf_names(tiny_model.hparams['n_layer']))
    assert all(out[n].dtype == np.float32 and np.array_equal(out[n], source[n]) for n in out)
    config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    expected = gpt2_config(tiny_model.hparams, n_ctx=None)  # only old files have n_ctx beside n_positions
    assert {k: config[k] for k in expected} == expected
    assert config['tie_word_embeddings'] is True
    assert json.loads((tmp_path / 'hf' / 'vocab.json').read_text(encoding='utf-8')) == tiny_model.vocab
    assert (tmp_path / 'hf' / 'merges.txt').read_bytes() == (hf_folder / 'merges.txt').read_bytes()

    assert call(convert.from_hf, tmp_path / 'hf', tmp_path / 'again') == 0
    for name in checkpoint.MODEL_FILES:
        assert (tmp_path / 'again' / name).read_bytes() == (converted / name).read_bytes(), name


# ---------------------------------------------------------------------------------------------------------------
# A training run out
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def run_folder(converted, tiny_model, tmp_path_factory):
    """A training run of the tiny model converted in from Hugging Face's layout, saved as train.py saves one: two
    Adam steps, a checkpoint after each."""
    run = RunFolder(tmp_path_factory.mktemp('run') / 'run1')
    run.start(converted)
    tokens = np.random.default_rng(0).integers(tiny_model.hparams['n_vocab'], size=(2, 8)).astype(np.int32)
    with tf.Graph().as_default():
        training = graph.build_training(tiny_model.hparams_object(), batch_size=2, seq_len=8, learning_rate=0.01)
        saver = tf.train.Saver(var_list={v.op.name: v for v in training.saved_vars})
        with tf.Session() as sess:
            restore(sess, training, str(converted / 'model.ckpt'))
            start = sess.run({v.op.name: v for v in training.model_vars})
            assert all(np.array_equal(start[n], tiny_model.params[n]) for n in tiny_model.params)
            for step in (1, 2):
                training.run_step(sess, [(tokens, np.full(2, 8, np.int32))])
                run.save(sess, saver, step, max_checkpoints=5)
    return run.path


def test_a_run_converts_out_with_its_latest_weights_only(run_folder, tiny_model, tmp_path):
    stored = released_weights(run_folder)
    assert 'global_step' in stored and 'train_seed' in stored and any(n.endswith('/Adam') for n in stored)
    assert call(convert.to_hf, run_folder, tmp_path / 'hf') == 0
    out = from_hf_file(load_file(str(tmp_path / 'hf' / 'model.safetensors')), tiny_model.hparams['n_layer'])
    assert sorted(out) == sorted(tiny_model.params)
    assert all(np.array_equal(out[n], stored[n]) for n in out)
    assert not np.array_equal(out['model/wte'], tiny_model.params['model/wte'])  # trained, not the base model


def test_weights_writes_the_runs_checkpoint_without_optimizer_step_or_seed(run_folder, tiny_model, tmp_path):
    assert call(convert.weights, run_folder, tmp_path / 'w') == 0
    assert call(convert.weights, run_folder, tmp_path / 'w1', step=1) == 0
    assert sorted(p.name for p in (tmp_path / 'w').iterdir()) == sorted(checkpoint.MODEL_FILES)
    assert checkpoint.check_model_dir(tmp_path / 'w') == tiny_model.hparams
    latest, first = released_weights(tmp_path / 'w'), released_weights(tmp_path / 'w1')
    run_latest = released_weights(run_folder)
    reader = tf.train.load_checkpoint(str(run_folder / 'model-1'))
    assert sorted(latest) == sorted(first) == sorted(tiny_model.params)
    assert all(np.array_equal(latest[n], run_latest[n]) for n in latest)
    assert all(np.array_equal(first[n], reader.get_tensor(n)) for n in first)
    assert not np.array_equal(first['model/wte'], latest['model/wte'])
    data = 'model.ckpt.data-00000-of-00001'
    assert os.path.getsize(tmp_path / 'w' / data) * 2.5 < os.path.getsize(run_folder / 'model-2.data-00000-of-00001')


# ---------------------------------------------------------------------------------------------------------------
# Refusals: each is one error line, and nothing is written
# ---------------------------------------------------------------------------------------------------------------

def changed_tensors(tiny, change):
    tensors = as_hf(tiny.params, tiny.hparams['n_layer'])
    change(tensors)
    return tensors


REFUSED_CONFIGS = [
    ({'activation_function': 'relu'}, 'activation_function'),
    ({'activation_function': 'gelu'}, 'activation_function'),
    ({'layer_norm_epsilon': 1e-6}, 'layer_norm_epsilon'),
    ({'scale_attn_by_inverse_layer_idx': True}, 'scale_attn_by_inverse_layer_idx'),
    ({'reorder_and_upcast_attn': True}, 'reorder_and_upcast_attn'),
    ({'scale_attn_weights': False}, 'scale_attn_weights'),
    ({'add_cross_attention': True}, 'add_cross_attention'),
    ({'model_type': 'gpt_neo'}, 'model_type'),
    ({'n_inner': 48}, 'n_inner'),
    ({'n_layer': None}, 'n_layer'),
]


@pytest.mark.parametrize('changes, word', REFUSED_CONFIGS)
def test_a_config_that_is_not_gpt2_is_refused(tiny_model, tmp_path, capsys, changes, word):
    source = write_hf_folder(tmp_path / 'hf', tiny_model, config=gpt2_config(tiny_model.hparams, **changes))
    assert call(convert.from_hf, source, tmp_path / 'out') == 1
    assert_refused(capsys, tmp_path, word)


def assert_refused(capsys, tmp_path, *words):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert all(w in lines[0] for w in words), lines[0]
    assert nothing_written(tmp_path, 'out')


def other_head(tensors):
    tensors['lm_head.weight'] = tensors['transformer.wte.weight'] + 1


REFUSED_TENSORS = [
    (other_head, {}, 'lm_head.weight'),
    (other_head, {'tie_word_embeddings': False}, 'lm_head.weight'),
    (lambda t: None, {'tie_word_embeddings': False}, 'tie_word_embeddings'),
    (lambda t: t.pop('transformer.h.1.attn.c_proj.bias'), {}, 'h.1.attn.c_proj.bias'),
    (lambda t: t.pop('transformer.h.0.mlp.c_fc.bias'), {}, 'h.0.mlp.c_fc.bias'),
    (lambda t: t.update({'transformer.h.0.crossattention.c_attn.weight': np.zeros((16, 48), np.float32)}), {},
     'crossattention'),
    (lambda t: t.update({'transformer.wpe.weight': np.zeros((16, 16), np.float32)}), {}, 'wpe.weight'),
    (lambda t: t.update({'transformer.wte.weight': t['transformer.wte.weight'].astype(np.int32)}), {}, 'int32'),
]


@pytest.mark.parametrize('change, config, word', REFUSED_TENSORS)
def test_weights_that_are_not_gpt2_are_refused(tiny_model, tmp_path, capsys, change, config, word):
    source = write_hf_folder(tmp_path / 'hf', tiny_model, tensors=changed_tensors(tiny_model, change),
                             config=gpt2_config(tiny_model.hparams, **config))
    assert call(convert.from_hf, source, tmp_path / 'out') == 1
    assert_refused(capsys, tmp_path, word)


def test_an_untied_config_whose_head_is_wte_converts(tiny_model, tmp_path):
    tensors = changed_tensors(tiny_model, lambda t: t.update({'lm_head.weight': t['transformer.wte.weight']}))
    source = write_hf_folder(tmp_path / 'hf', tiny_model, tensors=tensors,
                             config=gpt2_config(tiny_model.hparams, tie_word_embeddings=False))
    assert call(convert.from_hf, source, tmp_path / 'out') == 0


def write_bfloat16_safetensors(path, tensors):
    """A .safetensors file of bfloat16 tensors, written by hand from the format (the safetensors package's NumPy
    API has no bfloat16): the upper halves of the float32 values, which are those values where the lower are 0."""
    header, data, offset = {}, b'', 0
    for name, value in tensors.items():
        halves = (value.astype(np.float32).view(np.uint32) >> 16).astype('<u2').tobytes()
        header[name] = {'dtype': 'BF16', 'shape': list(value.shape), 'data_offsets': [offset, offset + len(halves)]}
        data, offset = data + halves, offset + len(halves)
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, 'little') + text + data)


def test_bfloat16_weights_convert_exactly(tiny_model, tmp_path):
    exact = {n: (v.view(np.uint32) & 0xFFFF0000).view(np.float32) for n, v in tiny_model.params.items()}
    source = write_hf_folder(tmp_path / 'hf', tiny_model, tensors=as_hf(exact, tiny_model.hparams['n_layer']))
    write_bfloat16_safetensors(source / 'model.safetensors', as_hf(exact, tiny_model.hparams['n_layer']))
    assert call(convert.from_hf, source, tmp_path / 'out') == 0
    converted = released_weights(tmp_path / 'out')
    assert all(converted[n].dtype == np.float32 and np.array_equal(converted[n], exact[n]) for n in exact)


def test_a_truncated_safetensors_file_is_a_clear_error_and_nothing_is_written(hf_folder, tmp_path, capsys):
    import shutil
    source = tmp_path / 'hf'
    shutil.copytree(hf_folder, source)
    weights = source / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:-1000])
    assert call(convert.from_hf, source, tmp_path / 'out') == 1
    assert_refused(capsys, tmp_path, 'model.safetensors', 'truncated')


def test_a_pytorch_file_without_pytorch_says_what_to_do(hf_folder, tmp_path, capsys, monkeypatch):
    import shutil
    source = tmp_path / 'hf'
    shutil.copytree(hf_folder, source)
    (source / 'model.safetensors').rename(source / 'pytorch_model.bin')
    monkeypatch.setitem(sys.modules, 'torch', None)  # import torch fails, as where it is not installed
    assert call(convert.from_hf, source, tmp_path / 'out') == 1
    assert_refused(capsys, tmp_path, 'pytorch_model.bin', 'pip install torch')


def test_a_folder_without_tokenizer_or_weights_is_refused(hf_folder, tmp_path, capsys):
    import shutil
    for missing, word in (('vocab.json', 'tokenizer'), ('model.safetensors', 'model.safetensors')):
        source = tmp_path / f'no-{missing}'
        shutil.copytree(hf_folder, source)
        (source / missing).unlink()
        assert call(convert.from_hf, source, tmp_path / 'out') == 1
        assert_refused(capsys, tmp_path, word)


def test_an_existing_out_folder_is_kept_unless_overwrite(converted, hf_folder, run_folder, tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'mine.txt').write_text('keep')
    assert call(convert.from_hf, hf_folder, out) == 1
    assert 'exists' in capsys.readouterr().err and (out / 'mine.txt').exists()
    assert call(convert.weights, run_folder, out, overwrite=True) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(checkpoint.MODEL_FILES)
    assert [p.name for p in tmp_path.iterdir()] == ['out']  # no temporary folder left


@pytest.mark.parametrize('step, code, word', [(7, 1, 'steps: 1, 2'), (-1, 2, '--step'), ('x', 2, '--step')])
def test_a_step_the_run_has_not_is_refused(run_folder, tmp_path, capsys, step, code, word):
    assert call(convert.weights, run_folder, tmp_path / 'out', step=step) == code
    assert_refused(capsys, tmp_path, word)


def test_a_tokenizer_with_ids_past_the_embeddings_is_refused(tiny_model, tmp_path, capsys):
    n_vocab = tiny_model.hparams['n_vocab'] - 1  # <|endoftext|>, the last id, has no embedding
    source = write_hf_folder(tmp_path / 'hf', tiny_model, config=gpt2_config(tiny_model.hparams, vocab_size=n_vocab))
    assert call(convert.from_hf, source, tmp_path / 'out') == 1
    assert_refused(capsys, tmp_path, f'ids up to {n_vocab}', f'only {n_vocab} embeddings')


def test_a_relative_out_folder_is_written_in_the_working_directory(tiny_model, tmp_path):
    """OUT_FOLDER is taken from where the user stands, as any command-line tool takes it, never from the
    repository, even when the script is run from elsewhere."""
    work = tmp_path / 'work'
    work.mkdir()
    name = f'converted-{tmp_path.name}'
    done = subprocess.run([sys.executable, str(REPO / 'src' / 'convert.py'), 'weights', str(tiny_model.dir), name],
                          capture_output=True, text=True, timeout=120, cwd=work)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (work / name).iterdir()) == sorted(checkpoint.MODEL_FILES)
    assert not (REPO / name).exists() and not (REPO / 'src' / name).exists()
    assert released_weights(work / name).keys() == tiny_model.params.keys()
