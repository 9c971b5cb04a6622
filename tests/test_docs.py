"""The documentation holds together: the README stays short, every relative link in README.md and docs/*.md
leads somewhere (a file, and a heading of it for an #anchor, by GitHub's rule for heading anchors), and every
table of a script's flags lists exactly the flags of the script's main function, which --help lists too.

A flag table is marked by a comment just above it, naming the script's module and main function:

    <!-- flags: train.train_main -->
    | flag | default | meaning |
    |---|---|---|
    | `--dataset` | (required) | ... |
    | `OUT` | (required) | ... |          (a positional argument, in capitals)

A table shared by several functions names them all and gives each a column after the first, in the same
order; a row whose cell in a function's column is `—` is not that function's flag."""
import importlib
import importlib.util
import inspect
import re

import fire
import pytest

from support import REPO

README = REPO / 'README.md'
PAGES = [README, *sorted((REPO / 'docs').glob('*.md'))]
README_MAX_LINES = 250

# Every script's main function, as module.function (download_model.py is at the repository's root).
SCRIPT_MAINS = {
    'download_model.main', 'generate_unconditional_samples.sample_model',
    'interactive_conditional_samples.interact_model', 'train.train_main', 'encode.encode', 'score.score',
    'export.export_main', 'convert.from_hf', 'convert.to_hf', 'convert.weights', 'evaluate_tasks.run_lambada',
    'evaluate_tasks.run_harness', 'server.serve',
}
NOT_THIS_SCRIPTS = '—'

FENCE = re.compile(r'^(```|~~~)')
HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')
INLINE_CODE = re.compile(r'`+[^`]*`+')
LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
MARKER = re.compile(r'^<!--\s*flags:\s*(.*?)\s*-->$')
FLAG_CELL = re.compile(r'^--([a-z][a-z0-9_]*)$|^([A-Z][A-Z0-9_]*)$')


# ---------------------------------------------------------------------------------------------------------------
# Reading Markdown
# ---------------------------------------------------------------------------------------------------------------

def prose_lines(text):
    """(line number, line) of the lines outside fenced code blocks."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            inside = not inside
            continue
        if not inside:
            yield number, line


def slug(heading):
    """GitHub's anchor for a heading's text: the rendered text (no Markdown marks), lower case, every character
    but letters, digits, spaces, hyphens and underscores dropped, spaces turned to hyphens."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link renders as its text
    text = text.replace('`', '').replace('*', '')
    text = re.sub(r'<[^>]+>', '', text)  # inline HTML
    text = ''.join(c for c in text.lower() if c.isalnum() or c in ' -_')
    return text.replace(' ', '-')


def anchors(path):
    """The anchors of a Markdown file's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen, found = {}, set()
    for _, line in prose_lines(path.read_text(encoding='utf-8')):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f'{base}-{count}')
    return found


def relative_links(path):
    """(line number, target) of every link in a Markdown file that is not to another site."""
    for number, line in prose_lines(path.read_text(encoding='utf-8')):
        for match in LINK.finditer(INLINE_CODE.sub('', line)):
            target = match.group(1)
            if not re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):  # https:, mailto:, ...
                yield number, target


def broken_link(page, target):
    """Why a relative link of page does not resolve, or None when it does."""
    file_part, _, anchor = target.partition('#')
    linked = (page.parent / file_part).resolve() if file_part else page
    if not linked.exists():
        return f'{linked.relative_to(REPO) if linked.is_relative_to(REPO) else linked} does not exist'
    if anchor and linked.suffix == '.md' and anchor not in anchors(linked):
        return f'{linked.name} has no heading with the anchor #{anchor}'
    if anchor and linked.suffix != '.md':
        return f'#{anchor} points into {linked.name}, which has no headings'
    return None


def cells(line):
    return [c.strip() for c in line.strip().strip('|').split('|')]


def flag_tables(path):
    """(line number, [module.function, ...], {function: set of flag names}) of each marked flag table."""
    lines = list(prose_lines(path.read_text(encoding='utf-8')))
    for i, (number, line) in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match:
            continue
        mains = match.group(1).split()
        rows = []
        for _, row in lines[i + 1:]:
            if not row.startswith('|'):
                break
            rows.append(cells(row))
        yield number, mains, table_flags(rows, mains)


def table_flags(rows, mains):
    """{function: set of flag names} of a flag table's rows (header and separator included); a first cell that is
    neither `--flag` nor `POSITIONAL` is a ValueError."""
    flags = {main: set() for main in mains}
    for row in rows[2:]:
        cell = row[0].strip('`').split()[0] if row[0].strip('`').split() else ''
        match = FLAG_CELL.match(cell)
        if not match:
            raise ValueError(f'{row[0]!r} is neither `--flag` nor `POSITIONAL`')
        name = match.group(1) or match.group(2).lower()
        for column, main in enumerate(mains, 1):
            if len(mains) == 1 or row[column] != NOT_THIS_SCRIPTS:
                flags[main].add(name)
    return flags


def is_flag_table_header(line):
    return line.startswith('|') and cells(line)[0].lower() == 'flag'


# ---------------------------------------------------------------------------------------------------------------
# Reading the scripts
# ---------------------------------------------------------------------------------------------------------------

def script_module(name):
    if name == 'download_model':
        spec = importlib.util.spec_from_file_location('download_model', REPO / 'download_model.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(name)


def script_flags(main):
    """The flags of a script's main function, module.function: the names of its parameters."""
    module_name, function_name = main.split('.')
    function = getattr(script_module(module_name), function_name)
    parameters = inspect.signature(function).parameters.values()
    assert all(p.kind != p.VAR_KEYWORD for p in parameters), f'{main} takes **kwargs: its flags cannot be read'
    return {p.name for p in parameters}


# ---------------------------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------------------------

def test_readme_reads_in_two_minutes():
    lines = README.read_text(encoding='utf-8').splitlines()
    assert len(lines) < README_MAX_LINES, f'README.md is {len(lines)} lines; move reference to docs/'


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / t.partition('#')[0]).resolve() for _, t in relative_links(README)}
    missing = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f'README.md does not link {missing}'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = [f'{page.name}:{number}: {target}: {why}' for number, target in relative_links(page)
              if (why := broken_link(page, target))]
    assert not broken, '\n'.join(broken)


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_flag_table_is_marked(page):
    """A table of flags without its marker would go unchecked."""
    lines = [line for _, line in prose_lines(page.read_text(encoding='utf-8'))]
    unmarked = [n for n, line in enumerate(lines)
                if is_flag_table_header(line) and not (n > 0 and MARKER.match(lines[n - 1].strip()))]
    assert not unmarked, f'{page.name}: a flag table without a <!-- flags: ... --> marker above it'


def documented_flags():
    """{module.function: (page name, set of flags)} of every marked table in the docs."""
    found = {}
    for page in PAGES:
        for number, mains, flags in flag_tables(page):
            for main in mains:
                assert main not in found, f'{main} has two flag tables: {found[main][0]} and {page.name}:{number}'
                found[main] = (f'{page.name}:{number}', flags[main])
    return found


def test_every_script_has_a_flag_table():
    assert set(documented_flags()) == SCRIPT_MAINS


def test_convert_commands_are_the_documented_ones():
    convert = script_module('convert')
    assert {f'convert.{f.__name__}' for f in convert.COMMANDS.values()} == {
        m for m in SCRIPT_MAINS if m.startswith('convert.')}


@pytest.mark.parametrize('main', sorted(SCRIPT_MAINS))
def test_a_flag_table_lists_exactly_the_scripts_flags(main):
    where, flags = documented_flags()[main]
    actual = script_flags(main)
    assert flags == actual, (f'{where}: the table of {main} lacks {sorted(actual - flags)} and lists '
                             f'{sorted(flags - actual)}, which the script does not take')


@pytest.mark.parametrize('main', sorted(SCRIPT_MAINS))
def test_help_is_the_manual_with_every_flag(main, capsys):
    """fire's --help of each main function, as the script hands it over: every flag, each with its help line."""
    module_name, function_name = main.split('.')
    function = getattr(script_module(module_name), function_name)
    with pytest.raises(SystemExit) as exit_info:
        fire.Fire(function, command=['--help'], name=module_name)
    assert exit_info.value.code == 0
    out = capsys.readouterr().err  # fire writes its help to stderr
    assert (function.__doc__ or '').strip(), f'{main} has no help text'
    for flag in script_flags(main):
        assert f'--{flag}' in out or flag.upper() in out, f'{main} --help does not list {flag}'
        assert re.search(rf'^\s+{flag}: \S', function.__doc__, re.M), f'{main} has no help line for {flag}'


# The checks themselves, on known answers.

def test_slug_follows_githubs_rule():
    assert slug("The paper's zero-shot tasks: `src/evaluate_tasks.py`") == \
        'the-papers-zero-shot-tasks-srcevaluate_taskspy'
    assert slug('Which to pick on a GPU') == 'which-to-pick-on-a-gpu'
    assert slug('Serving: from Python, and as a SavedModel') == 'serving-from-python-and-as-a-savedmodel'
    assert slug('**Bold** and [a link](x.md)') == 'bold-and-a-link'


def test_a_table_with_a_missing_or_foreign_flag_is_caught():
    shared = ['| flag | a | b | meaning |', '|---|---|---|---|', '| `--seed` | none | none | x |',
              '| `--prompt_file FILE` | — | none | y |', '| `OUT` | (required) | — | z |']
    assert table_flags([cells(r) for r in shared], ['m.a', 'm.b']) == {'m.a': {'seed', 'out'},
                                                                       'm.b': {'seed', 'prompt_file'}}
    with pytest.raises(ValueError):
        table_flags([cells(r) for r in ['| flag | meaning |', '|---|---|', '| seed | x |']], ['m.a'])


def test_a_broken_link_is_caught():
    page = REPO / 'docs' / 'sampling.md'
    assert broken_link(page, 'fine-tuning.md#flags') is None
    assert broken_link(page, 'fine-tuning.md#no-such-heading') is not None
    assert broken_link(page, 'no-such-page.md') is not None
    assert broken_link(page, '#flags') is None
