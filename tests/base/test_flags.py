"""gpt2.base.flags.check_argv: a command line is refused, in one line and exit 2, exactly when fire would leave
some of it over (and so run the job with defaults, complaining only afterwards); fire itself is the reference."""
import sys

import fire
import pytest

from gpt2.base import flags


def train_like(dataset=None, steps=0, seed=None, overwrite=False, top_k=0, top_p=1, memory_saving=False):
    """All flags have defaults, as train.py's: every value binds by name or by position."""


def two_folders(model_folder, out_folder, step=None, overwrite=False):
    """Two positional parameters, as convert.py's to_hf."""


def files_and_flags(*files, model_name='124M', json=False, stride=None):
    """Any number of positional values, then keyword-only flags, as score.py."""


COMMANDS = {'to_hf': two_folders, 'from_hf': lambda hf_folder, out_folder, overwrite=False: None}


def fire_binds_everything(main, argv):
    """The reference: whether fire binds every argument of argv to main (it exits with 2 when some are left
    over, after calling main)."""
    try:
        fire.Fire(main, command=argv)
    except fire.core.FireExit as exit_info:
        return exit_info.code == 0
    return True


def refused(main, argv, capsys, **kwargs):
    """-> the one error line check_argv printed (exit 2), or None when it accepted argv."""
    try:
        flags.check_argv(main, argv, **kwargs)
    except SystemExit as exit_info:
        assert exit_info.code == 2
        out, err = capsys.readouterr()
        assert out == '' and len(err.splitlines()) == 1 and err.startswith('error: '), err
        return err.strip()
    return None


# Command lines of every form fire reads: --name=value, --name value, --name alone or --noname for a boolean,
# -x for the one parameter starting with x, a negative number as a value, values by position, hyphens in names.
ARGVS = [
    [], ['--steps=5'], ['--steps', '5'], ['--steps', '-5'], ['--seed=-1'], ['--top_p', '-.5'], ['--overwrite'],
    ['--overwrite', '--steps', '3'], ['--nooverwrite'], ['--nooverwrite', '--steps', '1'], ['--top-k', '3'],
    ['--top-k=3'], ['-d', 'x.txt'], ['-s', '1'], ['-t', '1'], ['d.txt'], ['d.txt', '5'], ['-5'], ['d.txt', '-5'],
    ['--dataset', 'd', 'x'], ['a', 'b', 'c', 'd', 'e', 'f', 'g'], ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'],
    ['--dataset', 'd', 'a', 'b', 'c', 'd', 'e', 'f', 'g'], ['--stpes', '1'], ['--stpes=1'], ['--dataset', 'd',
    '--stpes'], ['--nooverwrite', 'x'], ['--noverwrite'], ['--zzz'], ['-x'], ['--memory-saving'], ['--no_steps'],
    ['--steps', '--seed', '1'],
]


@pytest.mark.parametrize('argv', ARGVS, ids=' '.join)
def test_refused_exactly_when_fire_would_leave_an_argument_over(argv, capsys):
    expected = fire_binds_everything(train_like, argv)
    capsys.readouterr()
    assert (refused(train_like, argv, capsys) is None) == expected


@pytest.mark.parametrize('argv', [['a', 'b'], ['a', 'b', 'c'], ['a', '--out_folder', 'b'],
                                  ['--model_folder', 'a', 'b', 'c'], ['--out_folder', 'b', 'a'],
                                  ['a', 'b', '--step', '-3', '--overwrite'], ['a', 'b', '--stp', '3'],
                                  ['a', 'b', '-o']],
                         ids=' '.join)
def test_positional_values_fill_the_parameters_not_given_by_name_as_fire_fills_them(argv, capsys):
    fire_ok = fire_binds_everything(two_folders, argv)
    capsys.readouterr()
    assert (refused(two_folders, argv, capsys) is None) == fire_ok


@pytest.mark.parametrize('argv', [['a', 'b', 'c', 'd'], ['a', '--json', 'b'], ['--stride', '-1', 'a'],
                                  ['a', '--jsn'], ['a', '--stride']], ids=' '.join)
def test_any_number_of_values_before_keyword_only_flags(argv, capsys):
    fire_ok = fire_binds_everything(files_and_flags, argv)
    capsys.readouterr()
    assert (refused(files_and_flags, argv, capsys) is None) == fire_ok


def test_the_line_names_the_flag_and_the_nearest_real_one(capsys):
    assert refused(train_like, ['--dataset', 'd.txt', '--stpes', '1'], capsys) == \
        'error: unknown flag --stpes; did you mean --steps?'
    assert refused(train_like, ['--stpes=1'], capsys) == 'error: unknown flag --stpes; did you mean --steps?'
    assert refused(train_like, ['--top-kk', '3'], capsys) == 'error: unknown flag --top-kk; did you mean --top_k?'
    assert refused(train_like, ['--zzz'], capsys) == 'error: unknown flag --zzz (see --help)'


def test_a_name_cut_short_suggests_the_one_name_it_begins(capsys):
    def lambada(path, batch_size=None, json=False):
        pass
    assert refused(lambada, ['x', '--batch', '4'], capsys) == 'error: unknown flag --batch; did you mean --batch_size?'
    assert refused(train_like, ['--top', '4'], capsys) == 'error: unknown flag --top; did you mean --top_p?'


def test_an_ambiguous_shortcut_names_every_flag_it_could_be(capsys):
    assert refused(train_like, ['-t', '1'], capsys) == 'error: -t is ambiguous: it could be --top_k or --top_p'


def test_a_value_left_over_is_named(capsys):
    line = refused(two_folders, ['a', 'b', '3', 'yes', 'e'], capsys)  # e: no parameter left
    assert line.startswith("error: unexpected argument 'e'")


@pytest.mark.parametrize('argv', [['--help'], ['-h'], ['--steps', '3', '--help'], ['d.txt', '-h', '--seed', '1']])
def test_help_anywhere_is_a_request_for_the_functions_help(argv, capsys):
    """fire shows help only for a first --help; later it would run the job, then complain."""
    assert flags.check_argv(train_like, argv) == ['--help']
    assert capsys.readouterr() == ('', '')


def test_dash_h_is_help_even_beside_a_flag_starting_with_h(capsys):
    def serve(host='127.0.0.1', port=8000):
        pass
    assert flags.check_argv(serve, ['-h']) == ['--help']
    assert flags.check_argv(serve, ['--port', '1', '-h']) == ['--help']
    assert capsys.readouterr() == ('', '')


def test_what_follows_the_last_separator_is_fires_own_and_left_alone(capsys):
    assert flags.check_argv(train_like, ['--steps', '1', '--', '--help']) == ['--steps', '1', '--', '--help']
    assert flags.check_argv(train_like, ['--', '--verbose']) == ['--', '--verbose']
    # Only the last -- separates: fire reads an earlier one as a flag of the function.
    assert refused(train_like, ['--', '--steps', '1', '--', '--trace'], capsys).startswith('error: unknown flag --')


def test_a_function_taking_any_keyword_takes_every_flag(capsys):
    def anything(**kwargs):
        pass
    assert flags.check_argv(anything, ['--whatever', '1', '--else']) == ['--whatever', '1', '--else']


def test_a_command_is_chosen_first_and_its_flags_are_checked(capsys):
    assert flags.check_argv(COMMANDS, ['to_hf', 'a', 'b', '--step', '3']) == ['to_hf', 'a', 'b', '--step', '3']
    assert flags.check_argv(COMMANDS, ['to-hf', 'a', 'b']) == ['to-hf', 'a', 'b']  # fire reads - as _
    assert refused(COMMANDS, ['to_hf', 'a', 'b', '--stpe', '3'], capsys) == \
        'error: unknown flag --stpe; did you mean --step?'
    # --step belongs to to_hf, not from_hf
    assert refused(COMMANDS, ['from_hf', 'a', 'b', '--step', '3'], capsys).startswith('error: unknown flag --step')
    assert flags.check_argv(COMMANDS, ['to_hf', 'a', '--help']) == ['to_hf', '--help']


def test_an_unknown_command_is_one_line_with_the_nearest_and_the_list(capsys):
    assert refused(COMMANDS, ['to_hff', 'a', 'b'], capsys) == \
        'error: unknown command to_hff; did you mean to_hf? (the commands: to_hf, from_hf)'
    assert refused(COMMANDS, ['--overwrite', 'to_hf'], capsys).startswith('error: unknown command --overwrite')


@pytest.mark.parametrize('argv', [[], ['--help'], ['-h']])
def test_no_command_or_help_is_left_to_fire_which_lists_the_commands(argv, capsys):
    assert flags.check_argv(COMMANDS, argv) == argv


def test_the_command_line_is_sys_argv_by_default(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['train.py', '--stpes', '1'])
    assert refused(train_like, None, capsys) == 'error: unknown flag --stpes; did you mean --steps?'


def test_lenient_leaves_what_a_flag_before_could_take_as_its_value(capsys):
    """For a command line the script changes before fire reads it (the sampling scripts gather --stop X, X
    whatever it looks like): only what cannot be a value is refused."""
    assert refused(train_like, ['--seed', '-x', '--steps', '1'], capsys, lenient=True) is None
    assert refused(train_like, ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'], capsys, lenient=True) is None
    assert refused(train_like, ['--seed', '1', '--stpes', '1'], capsys, lenient=True) == \
        'error: unknown flag --stpes; did you mean --steps?'


# ---------------------------------------------------------------------------------------------------------------
# check_script_early: the same check from the script's source, before TensorFlow loads
# ---------------------------------------------------------------------------------------------------------------

SCRIPT = '''
import fire
from gpt2.base import flags

def main(dataset=None, steps=0):
    pass

def to_hf(model_folder, out_folder, step=None):
    pass

COMMANDS = {'to_hf': to_hf}

if __name__ == '__main__':
    fire.Fire(main, command=flags.check_argv(%s))
'''


def run_early(tmp_path, target, argv):
    """check_script_early with a script that hands target to check_argv -> its exit code
    (None: it let the script go on)."""
    path = tmp_path / 'script.py'
    path.write_text(SCRIPT % target)
    try:
        flags.check_script_early(path, argv)
    except SystemExit as exit_info:
        return exit_info.code
    return None


@pytest.mark.parametrize('target, argv, code', [
    ('main', ['--stpes', '1'], 2), ('main', ['--steps', '1', 'd.txt'], None), ('main', ['a', 'b', 'c'], 2),
    ('COMMANDS', ['to_hf', 'a', 'b', '--stp', '1'], 2), ('COMMANDS', ['to_hff'], 2),
    ('{"to_hf": to_hf}', ['to_hf', 'a', '--zzz'], 2), ('{"to_hf": to_hf}', ['to_hf', 'a', 'b'], None),
    # lenient with a changed command line: a value a flag could take is left alone, an unknown flag is not
    ('main, changed(sys.argv)', ['--dataset', '-x'], None), ('main, changed(sys.argv)', ['--stpes', '1'], 2),
    # what the source cannot tell is left to the check in __main__
    ('pick()', ['--stpes', '1'], None), ('{**COMMANDS}', ['to_hff'], None),
])
def test_the_check_made_from_the_scripts_source(tmp_path, capsys, target, argv, code):
    assert run_early(tmp_path, target, argv) == code
    err = capsys.readouterr().err
    assert (err.startswith('error: ') and len(err.splitlines()) == 1) if code else err == ''


def test_no_check_without_a_script_that_asks_for_it(tmp_path, capsys):
    flags.check_script_early(tmp_path / 'missing.py', ['--stpes'])
    plain = tmp_path / 'plain.py'
    plain.write_text("if __name__ == '__main__':\n    print('hello')\n")
    flags.check_script_early(plain, ['--stpes'])
    assert capsys.readouterr() == ('', '')
