"""src/train.py end to end, as subprocesses on the tiny model: the run folder, resuming, pruning, Ctrl-C, SIGKILL
during saves, and bad input. The training graph itself is tested in test_train.py."""
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from gpt2.base import checkpoint
import support
import reference
import train
from gpt2.training import loop
from gpt2.training import run_folder
from support import (ONE_THREAD, assert_clean_error, checkpoint_files, losses, run_cli, run_train,
                     start_train, state, tensors, train_command, wait_for_step, train_in_process)

REPO = support.REPO


# ---------------------------------------------------------------------------------------------------------------
# The run folder
# ---------------------------------------------------------------------------------------------------------------

def test_run_folder_is_a_model_folder_with_relative_state(setup, tiny_model):
    done = run_train(setup(steps=3, save_every=2, sample_every=2, sample_length=5, sample_num=2))
    run = setup.run_dir()
    assert sorted(losses(done.stdout)) == [1, 2, 3]
    assert (run / 'checkpoint').read_text() == ('model_checkpoint_path: "model-3"\n'
                                                 'all_model_checkpoint_paths: "model-2"\n'
                                                 'all_model_checkpoint_paths: "model-3"\n')
    for name in checkpoint.MODEL_INFO_FILES:
        assert (run / name).read_bytes() == (tiny_model.dir / name).read_bytes()
    assert checkpoint.check_model_dir(run) == tiny_model.hparams
    # Every sample_every steps, and at the end of --steps.
    assert sorted(p.name for p in (setup.tmp / 'samples' / 'run1').iterdir()) == ['samples-2', 'samples-3']
    samples = (setup.tmp / 'samples' / 'run1' / 'samples-3').read_text()
    assert re.findall(r'SAMPLE (\d+)', samples) == ['1', '2']
    # The folder moves: the state names its neighbours.
    moved = setup.tmp / 'elsewhere'
    run.rename(moved)
    assert checkpoint.check_model_dir(moved) == tiny_model.hparams
    assert not np.array_equal(tensors(moved / 'model-3')['model/h0/attn/c_attn/w'],
                              tiny_model.params['model/h0/attn/c_attn/w'])


def test_relative_output_folders_are_in_the_working_directory_not_the_repository(setup, tiny_model):
    """`cd work && python REPO/src/train.py --checkpoint_dir runs --sample_dir out` writes work/runs and work/out,
    as any command-line tool would, even where those folders do not exist yet."""
    work = setup.tmp / 'work'
    work.mkdir()
    names = ('train_test_runs', 'train_test_samples')
    assert not any((REPO / name).exists() for name in names)
    args = setup(steps=1, sample_every=1, sample_length=3, checkpoint_dir=names[0], sample_dir=names[1])
    done = subprocess.run(train_command(args), cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert state(work / names[0] / 'run1') == ['model-1']
    assert (work / names[1] / 'run1' / 'samples-1').is_file()
    assert not any((REPO / name).exists() for name in names)
    assert not any((REPO / 'src' / name).exists() for name in names)


def test_n_steps_then_n_more_equal_2n_straight_bit_for_bit(setup):
    options = dict(optimizer='adam', accumulate_gradients=2, batch_size=2, noise=0.1, seed=None)
    first = run_train(setup(run_name='a', steps=2, seed=5, **{k: v for k, v in options.items() if k != 'seed'}),
                      env=ONE_THREAD)
    # The seed is not given again: the run keeps its own.
    second = run_train(setup(run_name='a', steps=2, **options), env=ONE_THREAD)
    straight = run_train(setup(run_name='b', steps=4, seed=5, **{k: v for k, v in options.items() if k != 'seed'}),
                         env=ONE_THREAD)
    assert {**losses(first.stdout), **losses(second.stdout)} == losses(straight.stdout)
    resumed, whole = tensors(setup.run_dir('a') / 'model-4'), tensors(setup.run_dir('b') / 'model-4')
    assert sorted(resumed) == sorted(whole)
    assert any(name.endswith('/Adam_1') for name in whole) and whole['global_step'] == 4
    for name in whole:
        assert np.array_equal(resumed[name], whole[name]), name


def test_adafactor_with_a_schedule_resumed_n_plus_n_equals_2n_bit_for_bit(setup):
    """Adafactor's state and the schedule's position (global_step) go on across a resume."""
    options = dict(optimizer='adafactor', learning_rate=None, lr_schedule='cosine', warmup_steps=1, total_steps=4)
    first = run_train(setup(run_name='a', steps=2, **options), env=ONE_THREAD)
    second = run_train(setup(run_name='a', steps=2, **options), env=ONE_THREAD)
    straight = run_train(setup(run_name='b', steps=4, **options), env=ONE_THREAD)
    assert {**losses(first.stdout), **losses(second.stdout)} == losses(straight.stdout)
    resumed, whole = tensors(setup.run_dir('a') / 'model-4'), tensors(setup.run_dir('b') / 'model-4')
    assert sorted(resumed) == sorted(whole)
    assert whole['adafactor_step'] == 4 and 'model/h0/attn/c_attn/w/Adafactor_row' in whole
    assert not any('Adam' in name for name in whole)
    for name in whole:
        assert np.array_equal(resumed[name], whole[name]), name


def test_only_the_last_checkpoints_are_kept_across_restarts(setup):
    run_train(setup(steps=3, save_every=1, max_checkpoints=2))
    assert state(setup.run_dir()) == ['model-2', 'model-3']
    run_train(setup(steps=2, save_every=1, max_checkpoints=2))
    assert state(setup.run_dir()) == ['model-4', 'model-5']
    assert checkpoint_files(setup.run_dir()) == ['model-4.data-00000-of-00001', 'model-4.index',
                                                 'model-5.data-00000-of-00001', 'model-5.index']


def test_a_start_removes_what_killed_saves_left(setup):
    run_train(setup(steps=1))
    run = setup.run_dir()
    # TensorFlow's (NAME.tempstate...) and our own (gpt2.base.atomic's NAME.part) files of unfinished writes.
    leftovers = ['model-9.index', 'model-9.data-00000-of-00001', 'model-2.index.tempstate123',
                 'model-2.data-00000-of-00001.tempstate99', 'checkpoint.part', 'best.json.part',
                 'hparams.json.part']
    for name in leftovers:
        (run / name).write_bytes(b'partial')
    (run / 'model-2_temp').mkdir()
    run_train(setup(steps=1))
    assert state(run) == ['model-1', 'model-2']
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ['checkpoint', *checkpoint.MODEL_INFO_FILES, *checkpoint.checkpoint_files('model-1'),
         *checkpoint.checkpoint_files('model-2')])


def test_first_ctrl_c_saves_the_step_and_exits(setup):
    process = start_train(setup(steps=0, save_every=1000))
    wait_for_step(process, 3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert 'Interrupted' in err and 'Traceback' not in err
    last = state(setup.run_dir())[-1]
    assert int(last.split('-')[1]) >= 3 and f'Saving {setup.run_dir() / last}' in out


def test_second_ctrl_c_exits_at_once_without_saving(setup, tiny_model):
    # After step 1 is saved, many samples keep the process busy long enough for both signals to arrive.
    process = start_train(setup(steps=0, save_every=1, sample_every=1, sample_num=400, sample_length=31))
    for line in process.stdout:
        if line.startswith('Saving'):
            break
    process.send_signal(signal.SIGINT)
    for line in process.stderr:
        if 'Interrupted' in line:
            break
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    finally:
        process.kill()  # if it went on training
        process.communicate()
    assert process.returncode == -signal.SIGINT
    assert state(setup.run_dir()) == ['model-1']
    assert checkpoint.check_model_dir(setup.run_dir()) == tiny_model.hparams


def test_sigkill_at_any_moment_of_saving_leaves_a_loadable_folder(setup, tiny_model):
    run = setup.run_dir()
    for delay in (0.0, 0.05, 0.13, 0.31):
        # A save every step: most of the time goes into saving.
        process = start_train(setup(steps=0, save_every=1, max_checkpoints=2))
        wait_for_step(process, 2)
        time.sleep(delay)
        process.kill()
        process.wait()
        assert checkpoint.check_model_dir(run) == tiny_model.hparams
        assert set(tiny_model.params) <= set(tensors(run / state(run)[-1]))
    resumed = run_train(setup(steps=1, max_checkpoints=2))
    assert len(losses(resumed.stdout)) == 1
    assert not [p for p in run.iterdir() if 'temp' in p.name or p.name.endswith(checkpoint.PARTIAL_SUFFIX)]
    assert checkpoint_files(run) == sorted(f for name in state(run) for f in checkpoint.checkpoint_files(name))


def test_restore_from_fresh_refuses_an_existing_run_unless_overwrite(setup):
    run_train(setup(steps=3))
    before = sorted(p.name for p in setup.run_dir().iterdir())
    done = run_cli(setup(restore_from='fresh'))
    assert_clean_error(done, '--restore_from latest', '--overwrite')
    assert done.returncode == 2
    assert sorted(p.name for p in setup.run_dir().iterdir()) == before
    again = run_train(setup(restore_from='fresh', overwrite=True, steps=1))
    assert sorted(losses(again.stdout)) == [1]
    assert state(setup.run_dir()) == ['model-1']
    assert not (setup.run_dir() / 'model-3.index').exists()


def test_restore_from_a_checkpoint_path_goes_on_from_its_step(setup):
    run_train(setup(steps=2))
    done = run_train(setup(run_name='other', restore_from=setup.run_dir() / 'model-2', steps=1))
    assert sorted(losses(done.stdout)) == [3]
    assert state(setup.run_dir('other')) == ['model-3']


def test_validation_prints_loss_and_perplexity_of_fixed_windows(setup):
    done = run_train(setup(steps=4, val_dataset=setup.tmp / 'data.txt', val_every=2, val_batch_count=3))
    found = re.findall(r'^\[(\d+) \| [\d.]+\] validation loss=([\d.]+) perplexity=([\d.]+)$', done.stdout, re.M)
    assert [int(step) for step, _, _ in found] == [0, 2, 4]
    for _, loss, perplexity in found:
        assert float(perplexity) == pytest.approx(np.exp(float(loss)), rel=1e-3)
    assert float(found[-1][1]) < float(found[0][1])  # the same windows, after training on them


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2 for a flag and 1 for the model or data, nothing created
# ---------------------------------------------------------------------------------------------------------------



@pytest.mark.parametrize('flag, value', [
    ('seq_len', 33), ('seq_len', 1), ('learning_rate', 0), ('learning_rate', -1), ('optimizer', 'rmsprop'),
    ('noise', 1), ('batch_size', 0), ('accumulate_gradients', 0), ('top_p', 2), ('top_p', 0), ('top_k', -1),
    ('val_every', 5),
    ('encoding', 'no-such-codec'), ('run_name', 'a/b'), ('max_checkpoints', 0), ('sample_length', 32),
    ('steps', -1), ('dataset', None), ('lr_schedule', 'step'), ('lr_schedule', 'linear'), ('total_steps', 0),
    ('warmup_steps', -1), ('adafactor_beta1', 1), ('adafactor_beta1', 0.9), ('adafactor_relative_step', 'x'),
])
def test_bad_flag_exits_2_naming_it_and_creates_nothing(setup, capsys, flag, value):
    code, err = train_in_process(capsys, setup(**{flag: value}))
    assert code == 2
    assert err.startswith('error: ') and err.count('\n') == 1 and f'--{flag}' in err, err
    assert not (setup.tmp / 'ck').exists() and not (setup.tmp / 'samples').exists()


@pytest.mark.parametrize('flags, words', [
    ({'dataset': 'missing.txt'}, ['missing.txt']),
    ({'dataset': 'empty.txt'}, ['no text']),
    ({'dataset': 'empty.npz'}, ['no text']),
    ({'dataset': 'empty_files'}, ['no text']),
    ({'model_name': 'absent'}, ['not found']),
    ({'restore_from': 'nowhere/model-5'}, ['--restore_from', 'no checkpoint']),
])
def test_missing_model_or_data_exits_1_and_creates_nothing(setup, capsys, flags, words):
    empty = [setup.tmp / 'empty.txt', setup.tmp / 'empty.npz', setup.tmp / 'empty_files']
    empty[0].write_text('')
    np.savez(empty[1], np.zeros(0, np.uint16), np.zeros(0, np.uint16))  # arrays with no tokens, a non-empty file
    empty[2].mkdir()
    for name in ('a.txt', 'b.npz'):
        (empty[2] / name).write_bytes(empty[1].read_bytes() if name.endswith('.npz') else b'')
    flags = {k: setup.tmp / v if k in ('dataset', 'restore_from') else v for k, v in flags.items()}
    code, err = train_in_process(capsys, setup(**flags))
    assert code == 1
    last = err.rstrip('\n').split('\n')[-1]  # after the dataset's progress bar, if it got that far
    assert last.startswith('error: ') and 'Traceback' not in err, err
    for word in words:
        assert word in last
    assert not (setup.tmp / 'ck').exists()
    if flags.get('dataset') in empty:
        assert err.count('\n') == 1 and '\r' not in err, err  # the error line alone, no progress bar before it


@pytest.mark.parametrize('flag, value, line', [
    ('top_p', 0, 'error: --top_p must be a number above 0 and at most 1 (1 keeps every token), got 0'),
    ('top_k', 1.5, 'error: --top_k must be a whole number 0 or more, got 1.5'),
])
def test_sampling_flags_are_refused_as_the_sampling_scripts_refuse_them(setup, capsys, flag, value, line):
    """The same rule and the same words as generate_unconditional_samples.py's (gpt2/sampling/rules.py)."""
    code, err = train_in_process(capsys, setup(**{flag: value}))
    assert (code, err) == (2, line + '\n')


def test_a_bad_flag_from_the_shell_is_one_line(setup):
    done = run_cli(setup(optimizer='rmsprop'))
    assert_clean_error(done, '--optimizer')
    assert done.returncode == 2


def test_help_is_the_manual_with_a_line_per_flag():
    done = run_cli(['--help'], env={'PAGER': 'cat'})
    assert done.returncode == 0
    for flag in train.FLAGS:
        block = (done.out + done.err).split(f'--{flag}=', 1)[1].split('\n    -', 1)[0]
        assert len(block.splitlines()) >= 3, block  # the flag, its default, and a line of explanation


def test_a_run_folder_missing_its_latest_checkpoint_says_so(setup):
    run_train(setup(steps=1))
    (setup.run_dir() / 'model-1.data-00000-of-00001').unlink()
    with pytest.raises(checkpoint.ModelError, match='lacks model-1.data-00000-of-00001'):
        checkpoint.check_model_dir(setup.run_dir())


# ---------------------------------------------------------------------------------------------------------------
# --keep_best, --early_stopping, and --checkpoint in the sampling scripts
# ---------------------------------------------------------------------------------------------------------------

class ScriptedRun:
    """loop.Best on a real run folder, with checkpoints that are files of a few bytes (no TensorFlow)."""

    def __init__(self, path, *, keep_best, early_stopping, max_checkpoints):
        self.run = run_folder.RunFolder(path)
        self.run.path.mkdir(parents=True)
        self.max_checkpoints = max_checkpoints
        self.best = loop.Best(self.run, keep_best=keep_best, early_stopping=early_stopping,
                              max_checkpoints=max_checkpoints)

    def save(self, step):
        name = checkpoint.checkpoint_name(step)
        for f in checkpoint.checkpoint_files(name):
            (self.run.path / f).write_bytes(b'x')
        self.run.prune([n for n in self.run.checkpoints() if n != name] + [name], self.max_checkpoints)

    def play(self, losses, save_every):
        """A validation after every step (and at step 0), with losses[step] -> the step it stopped at."""
        for step, loss in enumerate(losses):
            if step and step % save_every == 0:
                self.save(step)
            if self.best.update(loss, step, lambda: self.save(step)):
                return step
        return None


def test_keep_best_never_prunes_the_lowest_validation(tmp_path):
    scripted = ScriptedRun(tmp_path / 'run', keep_best=True, early_stopping=0, max_checkpoints=2)
    # Lowest at step 3 (not a save step: it is saved for being the best), then worse for long.
    losses = [5.0, 4.0, 4.5, 3.0, 3.5, 3.2, 3.9, 3.1, 3.3]
    assert scripted.play(losses, save_every=2) is None
    assert state(scripted.run.path) == ['model-3', 'model-6', 'model-8']
    assert checkpoint.read_best(scripted.run.path)['checkpoint'] == 'model-3'
    assert checkpoint.read_best(scripted.run.path)['loss'] == 3.0
    assert checkpoint_files(scripted.run.path) == sorted(
        f for n in ('model-3', 'model-6', 'model-8') for f in checkpoint.checkpoint_files(n))
    # A later new best replaces it, and the old one goes with the pruning.
    scripted.best.update(2.0, 9, lambda: scripted.save(9))
    assert state(scripted.run.path) == ['model-8', 'model-9']
    assert checkpoint.choose_checkpoint(scripted.run.path, 'best') == 'model-9'


def test_early_stopping_after_n_validations_without_improvement_and_across_a_resume(tmp_path):
    scripted = ScriptedRun(tmp_path / 'run', keep_best=False, early_stopping=3, max_checkpoints=5)
    # Best 2.0 at step 2; steps 3, 4 and 5 are no better (4 ties it: not an improvement) -> stop at 5.
    assert scripted.play([3.0, 2.5, 2.0, 2.1, 2.0, 2.2, 1.0], save_every=100) == 5
    assert checkpoint.read_best(scripted.run.path)['checkpoint'] is None  # without keep_best nothing is kept
    # A run with one bad validation, stopped, resumed (its first validation repeats the last step's, uncounted).
    again = ScriptedRun(tmp_path / 'again', keep_best=False, early_stopping=2, max_checkpoints=5)
    assert again.play([3.0, 3.5], save_every=100) is None
    resumed = loop.Best(again.run, keep_best=False, early_stopping=2, max_checkpoints=5)
    assert resumed.update(3.5, 1, lambda: None) is False
    assert resumed.update(3.6, 2, lambda: None) is True


def test_sampling_scripts_load_the_checkpoint_asked_for(setup, tiny_model):
    from support import INTERACTIVE, UNCONDITIONAL, decode, run_script as run, tiny_flags
    run_train(setup(steps=3, save_every=1, max_checkpoints=3, learning_rate=0.05))
    run_dir = setup.run_dir()
    (run_dir / checkpoint.BEST_FILE).write_text(checkpoint.best_text(checkpoint='model-1', loss=1.0, step=1,
                                                                     since=0, last=3))
    options = dict(models_dir=run_dir.parent, model_name='run1', nsamples=1, length=8, temperature=0)
    greedy = {}
    for step in (1, 2, 3):
        weights = tensors(run_dir / f'model-{step}')
        greedy[step] = decode(tiny_model, reference.greedy(weights, tiny_model.hparams, [tiny_model.endoftext],
                                                           8)[1:])
    assert len(set(greedy.values())) > 1  # the checkpoints differ in what they write
    for which, step in (('2', 2), ('best', 1)):
        done = run(UNCONDITIONAL, *tiny_flags(tiny_model, **options, checkpoint=which))
        assert done.returncode == 0, done.err
        assert done.out.split('\n', 1)[1] == greedy[step] + '\n', which
    done = run(INTERACTIVE, *tiny_flags(tiny_model, **dict(options, nsamples=1), checkpoint=7), stdin=b' the\n')
    assert_clean_error(done, '--checkpoint 7', '1, 2, 3')
    assert done.returncode == 1
