"""Both sampling scripts end to end, as subprocesses on the tiny model, as a user runs them."""
import importlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

import reference
import support
from support import INTERACTIVE, UNCONDITIONAL, assert_clean_error, decode, run_script as run, tiny_flags

REPO = support.REPO
HEADER = re.compile(r'^={40} SAMPLE (\d+) ={40}$', re.M)
SEPARATOR = '=' * 80




def in_process(capsys, script, **flags):
    """A script's main function called here, as fire calls it, for a run that ends with an error before it
    samples (a bad flag, a broken model folder): -> its exit code, stdout and stderr, like run's."""
    module = importlib.import_module(script[:-len('.py')])
    main = module.sample_model if script == UNCONDITIONAL else module.interact_model
    with pytest.raises(SystemExit) as exit_info:
        main(**flags)
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=exit_info.value.code, out=out, err=err)


def tiny_kwargs(tiny_model, **flags):
    return {'models_dir': str(tiny_model.models_dir), 'model_name': tiny_model.name, 'seed': 1, **flags}




def sample_numbers(out):
    return [int(n) for n in HEADER.findall(out)]



# ---------------------------------------------------------------------------------------------------------------
# Output as the original scripts printed it
# ---------------------------------------------------------------------------------------------------------------

def test_unconditional_greedy_text_equals_reference_decoding(tiny_model):
    """Two samples from a full batch of 2, the third from the first row of a last batch of 2, numbered without
    gaps; top_k 1."""
    done = run(UNCONDITIONAL, *tiny_flags(tiny_model, nsamples=3, batch_size=2, length=10, top_k=1))
    assert done.returncode == 0 and done.err == ''  # no TensorFlow start-up noise
    tokens = reference.greedy(tiny_model.params, tiny_model.hparams, [tiny_model.endoftext], 10)[1:]
    sample = '=' * 40 + ' SAMPLE {} ' + '=' * 40 + '\n' + decode(tiny_model, tokens) + '\n'
    assert done.out == sample.format(1) + sample.format(2) + sample.format(3)


def test_streamed_sample_at_batch_1_is_the_greedy_text_at_temperature_zero(tiny_model):
    """Streamed token by token (batch 1), temperature 0 is greedy: the reference's text, as top_k 1 above."""
    done = run(UNCONDITIONAL, *tiny_flags(tiny_model, length=12, temperature=0, seed=3, nsamples=2, batch_size=1))
    tokens = reference.greedy(tiny_model.params, tiny_model.hparams, [tiny_model.endoftext], 12)[1:]
    sample = '=' * 40 + ' SAMPLE {} ' + '=' * 40 + '\n' + decode(tiny_model, tokens) + '\n'
    assert done.out == sample.format(1) + sample.format(2)


def test_same_seed_same_output_and_other_seed_differs(tiny_model):
    first = run(UNCONDITIONAL, *tiny_flags(tiny_model, nsamples=3, batch_size=2, length=8, seed=7))
    again = run(UNCONDITIONAL, *tiny_flags(tiny_model, nsamples=3, batch_size=2, length=8, seed=7))
    other = run(UNCONDITIONAL, *tiny_flags(tiny_model, nsamples=3, batch_size=2, length=8, seed=8))
    assert first.out == again.out
    assert first.out != other.out


@pytest.mark.parametrize('nsamples, batch_size, rows', [(1, 8, 1), (3, 8, 3), (20, 8, 8), (0, 8, 8), (0, 1, 1)])
def test_the_graph_never_has_more_rows_than_samples_wanted(nsamples, batch_size, rows):
    """Every batch is sampled at the graph's batch size; with fewer samples wanted, a smaller graph."""
    from gpt2.sampling import rules
    flags = dict(temperature=1, top_k=0, top_p=1, seed=None)
    assert rules.check_sampling_flags(nsamples=nsamples, batch_size=batch_size, **flags) == rows


def test_interactive_over_a_pipe_answers_each_prompt_until_end_of_input(tiny_model):
    done = run(INTERACTIVE, *tiny_flags(tiny_model, nsamples=3, batch_size=2, length=5),
               stdin=b'hello there\n\nthe and\n')
    assert done.returncode == 0, done.err
    assert done.out.count('Model prompt >>> ') == 4  # two prompts, the empty line, and the end of input
    assert 'Prompt should not be empty!' in done.out
    assert done.out.count(SEPARATOR + '\n') == 2
    assert sample_numbers(done.out) == [1, 2, 3, 1, 2, 3]


def test_interactive_greedy_continuation_equals_reference(tiny_model):
    """Three samples at batch 2 (batch 1: the run folder's test below)."""
    nsamples = 3
    done = run(INTERACTIVE, *tiny_flags(tiny_model, length=7, top_k=1, nsamples=nsamples, batch_size=2),
               stdin=b' the hello\n')
    prompt = [258, ord(' '), 257, 263, ord('o')]
    tokens = reference.greedy(tiny_model.params, tiny_model.hparams, prompt, 7)[len(prompt):]
    for number in range(1, nsamples + 1):
        assert f'SAMPLE {number} {"=" * 40}\n{decode(tiny_model, tokens)}\n' in done.out
    assert sample_numbers(done.out) == list(range(1, nsamples + 1))
    assert done.out.count(SEPARATOR + '\n') == 1


@pytest.mark.parametrize('script, stdin, from_src', [(UNCONDITIONAL, b'', False), (INTERACTIVE, b'hi\n', True)])
def test_default_models_dir_found_from_root_and_from_src(repo_model, script, stdin, from_src):
    done = run(script, f'--model_name={repo_model}', '--nsamples=1', '--length=4', stdin=stdin, from_src=from_src)
    assert done.returncode == 0, done.err
    assert sample_numbers(done.out) == [1]


@pytest.mark.parametrize('script', [UNCONDITIONAL, INTERACTIVE])
def test_help_is_the_manual_with_a_line_per_flag(script):
    done = run(script, '--help')
    assert done.returncode == 0
    for flag in ['model_name', 'seed', 'nsamples', 'batch_size', 'length', 'temperature', 'top_k', 'top_p',
                 'models_dir', 'stop_at_endoftext']:
        block = (done.out + done.err).split(f'--{flag}=', 1)[1].split('\n    -', 1)[0]
        assert len(block.splitlines()) >= 3, block  # the flag, its default, and a line of explanation


# ---------------------------------------------------------------------------------------------------------------
# Bad flags and broken model folders: one line, non-zero exit, nothing touched
# ---------------------------------------------------------------------------------------------------------------

def test_bad_flag_from_the_command_line_is_one_line_and_exit_2(tiny_model):
    done = run(UNCONDITIONAL, *tiny_flags(tiny_model, length='abc'))
    assert_clean_error(done, '--length')
    assert done.returncode == 2 and done.out == ''


@pytest.mark.parametrize('flag, value', [
    ('length', 0), ('context_keep', 33), ('nsamples', -1), ('batch_size', 0), ('temperature', -0.5),
    ('top_k', -1), ('top_k', 2.5), ('top_p', 0), ('top_p', 1.5), ('top_p', 'x'), ('seed', 'abc'),
])
def test_bad_flag_names_the_flag(tiny_model, capsys, flag, value):
    """As fire hands the values over (the command line's one case above)."""
    done = in_process(capsys, UNCONDITIONAL, **tiny_kwargs(tiny_model, **{flag: value}))
    assert_clean_error(done, f'--{flag}')
    assert done.returncode == 2 and done.out == ''


def test_interactive_needs_a_sample_per_prompt(tiny_model, capsys):
    assert_clean_error(in_process(capsys, INTERACTIVE, **tiny_kwargs(tiny_model, nsamples=0)), '--nsamples')


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def break_missing_file(m):
    (m.dir / 'model.ckpt.index').unlink()


def break_interrupted_download(m):
    data = m.dir / 'model.ckpt.data-00000-of-00001'
    data.rename(data.with_name(data.name + '.part'))


def break_truncated_weights(m):
    data = m.dir / 'model.ckpt.data-00000-of-00001'
    data.write_bytes(data.read_bytes()[:1000])


def break_corrupt_weights(m):
    data = m.dir / 'model.ckpt.data-00000-of-00001'
    data.write_bytes(b'\x00' * len(data.read_bytes()))


def break_hparams_json(m):
    (m.dir / 'hparams.json').write_text('{"n_vocab": 280,')


def break_hparams_shapes(m):
    (m.dir / 'hparams.json').write_text('{"n_vocab": 269, "n_ctx": 32, "n_embd": 32, "n_head": 2, "n_layer": 2}')


def break_encoder_missing(m):
    (m.dir / 'encoder.json').unlink()


def break_encoder_json(m):
    (m.dir / 'encoder.json').write_bytes(b'\xff\xfe not json')


def break_vocab_missing(m):
    (m.dir / 'vocab.bpe').unlink()


def break_vocabulary_size(m):
    """A token past the model's embeddings, as in another model's encoder.json."""
    (m.dir / 'encoder.json').write_text(json.dumps({**m.vocab, 'Ġzz': len(m.vocab)}), encoding='utf-8')


@pytest.mark.parametrize('damage, words', [
    (break_missing_file, ['model.ckpt.index', 'download_model.py']),
    (break_interrupted_download, ['interrupted', 'download_model.py']),
    (break_truncated_weights, ['truncated']),
    (break_hparams_json, ['hparams.json', 'JSON']),
    (break_hparams_shapes, ['hparams.json', 'n_embd'.replace('n_embd', 'model/')]),
    (break_encoder_missing, ['encoder.json']),
    (break_encoder_json, ['encoder.json']),
    (break_vocab_missing, ['vocab.bpe']),
    (break_vocabulary_size, ['encoder.json', f'ids up to {len(support.tiny_vocabulary())}', 'embeddings']),
])
@pytest.mark.parametrize('script', [UNCONDITIONAL, INTERACTIVE])
def test_broken_model_folder_gives_one_line_and_changes_nothing(model_copy, capsys, damage, words, script):
    """In this process: the folder is checked before TensorFlow builds anything (the command line: below)."""
    damage(model_copy)
    before = snapshot(model_copy.dir)
    done = in_process(capsys, script, **tiny_kwargs(model_copy, nsamples=1, length=4))
    assert_clean_error(done, *words)
    assert done.returncode == 1 and done.out == ''
    assert snapshot(model_copy.dir) == before


@pytest.mark.parametrize('script, damage, words', [(UNCONDITIONAL, break_interrupted_download, ['interrupted']),
                                                   (INTERACTIVE, break_encoder_json, ['encoder.json'])])
def test_broken_model_folder_from_the_command_line(model_copy, script, damage, words):
    damage(model_copy)
    before = snapshot(model_copy.dir)
    done = run(script, *tiny_flags(model_copy, nsamples=1, length=4), stdin=b'hi\n')
    assert_clean_error(done, *words)
    assert done.returncode == 1 and done.out == ''
    assert snapshot(model_copy.dir) == before


def test_corrupt_weights_of_the_right_size_fail_cleanly(model_copy):
    break_corrupt_weights(model_copy)
    done = run(UNCONDITIONAL, *tiny_flags(model_copy, nsamples=1, length=4))
    assert_clean_error(done, 'cannot restore', 'Checksum does not match', 'download_model.py')


@pytest.mark.parametrize('flags', [{'models_dir': '/nonexistent/models'}, {'model_name': '774M'}])
def test_missing_model_says_how_to_download_it(tiny_model, capsys, flags):
    done = in_process(capsys, UNCONDITIONAL, **tiny_kwargs(tiny_model, **flags))
    assert_clean_error(done, 'not found', 'download_model.py')


# ---------------------------------------------------------------------------------------------------------------
# Real use: long prompts, end of text, greedy, encodings, Ctrl-C
# ---------------------------------------------------------------------------------------------------------------

def test_long_prompt_keeps_its_last_tokens_and_says_so(tiny_model):
    words = 60  # longer than the window, and so than the room that --length leaves
    prompt = ' the' * words  # one token per word
    done = run(INTERACTIVE, *tiny_flags(tiny_model, length=28, temperature=0), stdin=prompt.encode() + b'\n')
    assert done.returncode == 0, done.err
    assert f'the prompt is {words} tokens and only 4 fit' in done.err
    assert f'the first {words - 4} were dropped' in done.err
    expected = reference.greedy(tiny_model.params, tiny_model.hparams, [258] * 4, 28)[4:]
    assert decode(tiny_model, expected) + '\n' + SEPARATOR in done.out


@pytest.fixture(scope='module')
def chatty_model(tiny_model, tmp_path_factory):
    """The tiny model with <|endoftext|> made likely: the final layer norm's bias points along its embedding."""
    params = dict(tiny_model.params)
    eot = params['model/wte'][tiny_model.endoftext]
    params['model/ln_f/b'] = (eot / np.linalg.norm(eot) * 8).astype(np.float32)  # about 15% per step
    chatty = support.TinyModel(tmp_path_factory.mktemp('chatty'), 'chatty')
    support.write_tiny_model(chatty.dir, tiny_model.hparams, params, tiny_model.vocab)
    return chatty


def test_stop_at_endoftext_ends_samples_before_the_token(chatty_model):
    """Streamed (batch 1) and per batch (4); the same seed without the flag shows the token."""
    plain = run(UNCONDITIONAL, *tiny_flags(chatty_model, nsamples=8, batch_size=4, length=30))
    assert '<|endoftext|>' in plain.out  # the model does produce it
    for batch_size in (1, 4):
        stopped = run(UNCONDITIONAL, *tiny_flags(chatty_model, nsamples=8, batch_size=batch_size, length=30),
                      '--stop_at_endoftext')
        assert '<|endoftext|>' not in stopped.out
        assert sample_numbers(stopped.out) == list(range(1, 9))
        assert len(stopped.out) < len(plain.out)


def test_unencodable_output_is_replaced_not_fatal(tiny_model):
    done = run(UNCONDITIONAL, *tiny_flags(tiny_model, nsamples=2, length=20), env={'PYTHONIOENCODING': 'ascii'})
    assert done.returncode == 0, done.err
    assert done.stdout.isascii() and b'?' in done.stdout


def test_invalid_utf8_on_stdin_is_replaced_not_fatal(tiny_model):
    done = run(INTERACTIVE, *tiny_flags(tiny_model, length=4), stdin=b'caf\xe9 \xff\xfe ok\n')
    assert done.returncode == 0, done.err
    assert sample_numbers(done.out) == [1]


def read_until(fd, text, timeout=60):
    seen, end = b'', time.time() + timeout
    while text.encode() not in seen and time.time() < end:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen.decode('utf-8', 'replace')


def spawn_in_terminal(script, args):
    """Run a script with a pseudo-terminal as its stdin, stdout and stderr, as from an interactive shell."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, f'src/{script}', *args], stdin=follower, stdout=follower,
                            stderr=follower, cwd=REPO, start_new_session=True)
    os.close(follower)
    return proc, leader


def test_interactive_from_a_terminal(tiny_model):
    proc, fd = spawn_in_terminal(INTERACTIVE, tiny_flags(tiny_model, length=5))
    try:
        assert 'Model prompt >>> ' in read_until(fd, 'Model prompt >>> ')
        os.write(fd, b'hello\n')
        out = read_until(fd, 'Model prompt >>> ')
        assert 'SAMPLE 1' in out and SEPARATOR in out
        os.write(fd, b'\x04')  # Ctrl-D: end of input
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        os.close(fd)


@pytest.mark.parametrize('script, ready', [(UNCONDITIONAL, 'SAMPLE 2 '), (INTERACTIVE, 'Model prompt >>> ')])
def test_ctrl_c_ends_promptly_and_quietly(tiny_model, script, ready):
    # Sampling forever (nsamples 0), or waiting at the prompt.
    proc, fd = spawn_in_terminal(script, tiny_flags(tiny_model, nsamples=0 if script == UNCONDITIONAL else 1))
    try:
        assert ready in read_until(fd, ready)
        os.killpg(proc.pid, signal.SIGINT)
        started = time.time()
        proc.wait(timeout=10)
        assert time.time() - started < 5
        assert proc.returncode in (-signal.SIGINT, 130)
        assert 'Traceback' not in read_until(fd, 'Traceback', timeout=1)
    finally:
        proc.kill()
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# A training run's folder is a model folder
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def trained_run(tiny_model, tmp_path_factory):
    """A run folder after 3 steps of train.py -> (its models_dir, its name, its latest weights)."""
    import tensorflow.compat.v1 as tf
    tmp = tmp_path_factory.mktemp('train')
    (tmp / 'data.txt').write_text('the hello and the world in hell or the and world\n' * 40)
    done = subprocess.run([sys.executable, 'src/train.py', f'--dataset={tmp / "data.txt"}',
                           f'--models_dir={tiny_model.models_dir}', f'--model_name={tiny_model.name}',
                           f'--checkpoint_dir={tmp / "checkpoint"}', '--run_name=r1', '--steps=3', '--seq_len=16',
                           '--learning_rate=0.05', '--sample_every=0', '--seed=1'],
                          capture_output=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    reader = tf.train.load_checkpoint(str(tmp / 'checkpoint' / 'r1' / 'model-3'))
    weights = {name: reader.get_tensor(name) for name in tiny_model.params}
    assert not np.array_equal(weights['model/wte'], tiny_model.params['model/wte'])  # it did train
    return tmp / 'checkpoint', 'r1', weights


def test_unconditional_greedy_sample_from_a_run_is_the_trained_weights_continuation(tiny_model, trained_run):
    models_dir, name, weights = trained_run
    done = run(UNCONDITIONAL, *tiny_flags(tiny_model, models_dir=models_dir, model_name=name, nsamples=1,
                                          length=10, temperature=0))
    assert done.returncode == 0, done.err
    tokens = reference.greedy(weights, tiny_model.hparams, [tiny_model.endoftext], 10)[1:]
    assert done.out == '=' * 40 + ' SAMPLE 1 ' + '=' * 40 + '\n' + decode(tiny_model, tokens) + '\n'


def test_interactive_greedy_continuation_from_a_run_is_the_trained_weights(tiny_model, trained_run):
    models_dir, name, weights = trained_run
    done = run(INTERACTIVE, *tiny_flags(tiny_model, models_dir=models_dir, model_name=name, length=6,
                                        temperature=0), stdin=b' the\n')
    assert done.returncode == 0, done.err
    prompt = [tiny_model.vocab['Ġthe']]
    tokens = reference.greedy(weights, tiny_model.hparams, prompt, 6)[1:]
    assert decode(tiny_model, tokens) + '\n' + SEPARATOR in done.out


# ---------------------------------------------------------------------------------------------------------------
# Stop strings
# ---------------------------------------------------------------------------------------------------------------

def greedy_text(tiny_model, prompt, length):
    return decode(tiny_model, reference.greedy(tiny_model.params, tiny_model.hparams, prompt, length)[len(prompt):])


def first_cut(text, stop_strings):
    """The text before the first stop string, from the definition."""
    return text[:min([text.index(s) for s in stop_strings if s in text] or [len(text)])]


@pytest.mark.parametrize('batch_size', [1, 2])
def test_unconditional_stop_strings_end_each_sample_before_them(tiny_model, batch_size):
    """Two stop strings, one taken from the middle of the greedy sample (so it may span tokens), one never
    produced; streamed (batch 1) or printed per batch, the text ends before the first."""
    text = greedy_text(tiny_model, [tiny_model.endoftext], 16)
    stop = text[7:9]
    flags = tiny_flags(tiny_model, nsamples=2, batch_size=batch_size, length=16, temperature=0)
    done = run(UNCONDITIONAL, *flags, '--stop', stop, '--stop=@@never@@')
    assert done.returncode == 0, done.err
    sample = '=' * 40 + ' SAMPLE {} ' + '=' * 40 + '\n' + first_cut(text, [stop]) + '\n'
    assert done.out == sample.format(1) + sample.format(2)
    assert len(first_cut(text, [stop])) <= 7


def test_interactive_stop_string_in_the_prompt_is_not_a_stop(tiny_model):
    prompt = ' the hello'
    text = greedy_text(tiny_model, [258, ord(' '), 257, 263, ord('o')], 12)
    stop = text[4:6]
    done = run(INTERACTIVE, *tiny_flags(tiny_model, length=12, temperature=0), f'--stop={stop}',
               f'--stop={prompt[1:4]}', stdin=(prompt + '\n').encode())
    assert done.returncode == 0, done.err
    expected = first_cut(text, [stop, prompt[1:4]])
    assert f'SAMPLE 1 {"=" * 40}\n{expected}\n{SEPARATOR}\n' in done.out


def test_stop_escapes_stand_for_newline_and_tab():
    from gpt2.sampling import rules
    assert rules.check_stops(['a\\nb', '\\t', 'c\\\\n', 5]) == ['a\nb', '\t', 'c\\n', '5']
    assert rules.gather_repeated(['--stop', 'x', '--seed=1', '--stop=5'], 'stop') == ["--stop=['x', '5']", '--seed=1']


def test_empty_stop_string_is_a_flag_error(tiny_model, capsys):
    done = run(UNCONDITIONAL, *tiny_flags(tiny_model, length=4), '--stop=')
    assert_clean_error(done, '--stop')
    assert done.returncode == 2 and done.out == ''
    done = in_process(capsys, INTERACTIVE, **tiny_kwargs(tiny_model, length=4, stop=['x', '']))
    assert_clean_error(done, '--stop')
    assert done.returncode == 2 and done.out == ''


# ---------------------------------------------------------------------------------------------------------------
# Misspelled flags: refused at once, not sampled with the defaults
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('script', [UNCONDITIONAL, INTERACTIVE])
@pytest.mark.parametrize('more', [[], ['--nsamples', '1']])
def test_a_misspelled_flag_is_one_line_exit_2_before_tensorflow_loads(tmp_path, script, more):
    """--lenght 5 used to sample 1,024-token texts forever (fire binds what it can, complains after); with
    --nsamples 1 fire's usage text came after the samples. The flag is refused before TensorFlow loads."""
    done = support.run_reporting_tensorflow(REPO / 'src' / script, '--lenght', '5', *more, cwd=tmp_path,
                                            stdin='a prompt\n')
    assert (done.returncode, done.stdout) == (2, 'tensorflow not loaded\n')
    assert done.stderr == 'error: unknown flag --lenght; did you mean --length?\n'
    plain = subprocess.run([sys.executable, str(REPO / 'src' / script), '--temprature=0.5', '--top-k', '3'],
                           input='a prompt\n', cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (plain.returncode, plain.stdout) == (2, '')
    assert plain.stderr == 'error: unknown flag --temprature; did you mean --temperature?\n'
    assert list(tmp_path.iterdir()) == []


def test_a_stop_string_that_looks_like_a_flag_is_still_a_stop_string(tiny_model):
    """--stop takes the next argument whatever it looks like (rules.gather_repeated); the check before
    TensorFlow loads leaves it alone, the one after reads it as gathered."""
    done = run(UNCONDITIONAL, *tiny_flags(tiny_model, nsamples=1, length=3, top_k=1), '--stop', '-Q')
    assert done.returncode == 0 and done.err == '', done.err
    assert sample_numbers(done.out) == [1]


def test_help_after_other_flags_is_the_manual_not_a_run(tiny_model):
    """One script as a user runs it; the rule itself for every script: tests/base/test_flags.py."""
    done = run(UNCONDITIONAL, *tiny_flags(tiny_model, nsamples=1, length=3), '--help')
    assert done.returncode == 0
    assert '--length' in done.out + done.err and 'SAMPLE' not in done.out


# ---------------------------------------------------------------------------------------------------------------
# Penalties
# ---------------------------------------------------------------------------------------------------------------

def test_penalty_flags_give_the_numpy_penalised_greedy_text(tiny_model):
    """All four at once from the unconditional script, against the NumPy model and definitions."""
    knobs = dict(repetition=1.3, presence=0.5, frequency=0.25, no_repeat_ngram=3)
    tokens = reference.penalised_greedy(tiny_model.params, tiny_model.hparams, [tiny_model.endoftext], 12, **knobs)[1:]
    done = run(UNCONDITIONAL, *tiny_flags(tiny_model, nsamples=1, length=12, temperature=0, repetition_penalty=1.3,
                                          presence_penalty=0.5, frequency_penalty=0.25, no_repeat_ngram_size=3))
    assert done.returncode == 0, done.err
    assert done.out == '=' * 40 + ' SAMPLE 1 ' + '=' * 40 + '\n' + decode(tiny_model, tokens) + '\n'


def test_bad_penalty_is_a_flag_error(tiny_model):
    done = run(INTERACTIVE, *tiny_flags(tiny_model, repetition_penalty=0), stdin=b'hi\n')
    assert_clean_error(done, '--repetition_penalty')
    assert done.returncode == 2 and done.out == ''


@pytest.mark.parametrize('flag, value', [('repetition_penalty', -1), ('repetition_penalty', 'x'),
                                         ('presence_penalty', 'x'), ('frequency_penalty', float('nan')),
                                         ('frequency_penalty', float('inf')), ('no_repeat_ngram_size', -1),
                                         ('no_repeat_ngram_size', 1.5)])
def test_each_bad_penalty_names_its_flag(flag, value):
    from gpt2.base import flags
    from gpt2.sampling import rules
    knobs = dict(repetition_penalty=1, presence_penalty=0, frequency_penalty=0, no_repeat_ngram_size=0)
    with pytest.raises(flags.UsageError, match=f'--{flag}'):
        rules.check_penalties(**{**knobs, flag: value})


# ---------------------------------------------------------------------------------------------------------------
# Many prompts: a prompt file, multi-line prompts
# ---------------------------------------------------------------------------------------------------------------

def tiny_ids(tiny_model, text):
    """The tiny model's ids for text made of ' the', 'hello' pieces and single bytes (see tests/support.py)."""
    import encoder
    return encoder.read_vocabulary(tiny_model.dir).encode(text)


def test_prompt_file_samples_different_prompts_in_one_batch(tiny_model, tmp_path):
    """Three prompts of different lengths, one spanning two lines, two samples each at batch 4: each prompt's
    samples are its NumPy greedy continuation, under its own echo."""
    prompts = ['hello the', 'a\nb and c', ' the']
    (tmp_path / 'prompts.txt').write_text('\n\n'.join(prompts) + '\n\n\n')
    done = run(INTERACTIVE, *tiny_flags(tiny_model, length=6, temperature=0, nsamples=2, batch_size=4,
                                        prompt_file=tmp_path / 'prompts.txt'))
    assert done.returncode == 0, done.err
    expected = ''
    for prompt in prompts:
        text = greedy_text(tiny_model, tiny_ids(tiny_model, prompt), 6)
        expected += 'Model prompt >>> ' + prompt.replace('\n', '\n... ') + '\n'
        expected += ''.join('=' * 40 + f' SAMPLE {n} ' + '=' * 40 + '\n' + text + '\n' for n in (1, 2))
        expected += SEPARATOR + '\n'
    assert done.out == expected


def test_prompt_separator_and_a_typed_prompt_over_two_lines(tiny_model, tmp_path):
    (tmp_path / 'p.txt').write_text('one\n\ntwo\n%%\nthree\n')
    done = run(INTERACTIVE, *tiny_flags(tiny_model, length=4, temperature=0, prompt_file=tmp_path / 'p.txt',
                                        prompt_separator='%%'))
    assert done.out.count(SEPARATOR) == 2 and 'Model prompt >>> one\n... \n... two\n' in done.out
    typed = run(INTERACTIVE, *tiny_flags(tiny_model, length=5, temperature=0), stdin=b'a\\\nb\n')
    text = greedy_text(tiny_model, tiny_ids(tiny_model, 'a\nb'), 5)
    assert f'SAMPLE 1 {"=" * 40}\n{text}\n{SEPARATOR}' in typed.out and '... ' in typed.out


@pytest.mark.parametrize('content, command_line', [('', True), ('\n\n  \n', False)])
def test_empty_prompt_file_is_a_flag_error(tiny_model, tmp_path, capsys, content, command_line):
    (tmp_path / 'empty.txt').write_text(content)
    flags = dict(prompt_file=tmp_path / 'empty.txt')
    done = (run(INTERACTIVE, *tiny_flags(tiny_model, **flags)) if command_line
            else in_process(capsys, INTERACTIVE, **tiny_kwargs(tiny_model, **flags)))
    assert_clean_error(done, '--prompt_file', 'no prompt')
    assert done.returncode == 2 and done.out == ''


# ---------------------------------------------------------------------------------------------------------------
# Past the window
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('script, prompt', [(UNCONDITIONAL, None), (INTERACTIVE, ' the hello')])
def test_length_past_the_window_follows_the_rule(tiny_model, script, prompt):
    start = [tiny_model.endoftext] if prompt is None else [258, ord(' '), 257, 263, ord('o')]
    tokens = reference.sliding_greedy(tiny_model.params, tiny_model.hparams, start, 40, 12)[len(start):]
    done = run(script, *tiny_flags(tiny_model, nsamples=1, length=40, temperature=0, context_keep=12),
               stdin=(prompt or '').encode() + b'\n')
    assert done.returncode == 0, done.err
    assert '=' * 40 + ' SAMPLE 1 ' + '=' * 40 + '\n' + decode(tiny_model, tokens) + '\n' in done.out


def test_tensorflow_loads_without_keras():
    """runtime.import_tensorflow, as every script loads TensorFlow: without the Keras 3 that TensorFlow would
    import as it loads (1.3 s of the scripts' start-up), and with the v1 API whole."""
    env = {k: v for k, v in os.environ.items() if k != 'TF_USE_LEGACY_KERAS'}
    code = ('import sys; sys.path.insert(0, sys.argv[1]); from gpt2.base import runtime; tf = runtime.import_tensorflow(); '
            'print(sorted(m for m in sys.modules if m.split(".")[0] == "keras"), callable(tf.train.AdamOptimizer))')
    done = subprocess.run([sys.executable, '-c', code, str(REPO / 'src')], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['[]', 'True'], done.stdout

def test_endoftext_in_a_prompt_is_one_token(tiny_model):
    done = run(INTERACTIVE, *tiny_flags(tiny_model, length=6, top_k=1), stdin=b' the<|endoftext|> and\n')
    assert done.returncode == 0, done.err
    prompt = [258, tiny_model.endoftext, 262]  # ' the', <|endoftext|>, ' and' (tests/support.py's merges)
    tokens = reference.greedy(tiny_model.params, tiny_model.hparams, prompt, 6)[len(prompt):]
    assert f'SAMPLE 1 {"=" * 40}\n{decode(tiny_model, tokens)}\n' in done.out
