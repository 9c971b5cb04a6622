"""The layout's rules (docs/code.md), read from the source: which way imports run, names that shadow nothing,
files and functions short enough to read."""
import ast
import importlib.machinery
import sys
from pathlib import Path

import pytest

import support

SRC = support.REPO / 'src'
ORIGINAL = {'model', 'encoder', 'sample'}
SCRIPTS = {p.stem for p in SRC.glob('*.py')} - ORIGINAL
# A library module may import from the layers below its own, never above it (gpt2.loading and the original
# three sit between the feature packages and gpt2.base).
LAYERS = [
    {'gpt2.base'},
    {'model', 'encoder'},
    {'gpt2.sampling', 'sample', 'gpt2.loading', 'gpt2.data'},
    {'gpt2.training', 'gpt2.evaluation', 'gpt2.interop', 'gpt2.serving'},
]
FEATURES = {'gpt2.training', 'gpt2.evaluation', 'gpt2.interop', 'gpt2.serving'}
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80


def unit(module):
    """'gpt2.sampling.stops' -> 'gpt2.sampling'; 'sample' -> 'sample'; None for what is not the project's."""
    parts = module.split('.')
    if parts[0] == 'gpt2':
        return '.'.join(parts[:2]) if len(parts) > 1 else 'gpt2'
    if parts[0] in ORIGINAL or parts[0] in SCRIPTS:
        return parts[0]
    return None


def layer(name):
    return next(i for i, units in enumerate(LAYERS) if name in units)


def imports(path):
    """Every project module a file imports, at any depth of its code (functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
        else:
            continue
        found.update(u for u in map(unit, names) if u and u != 'gpt2')
    return found


def library_files():
    return [SRC / f'{name}.py' for name in ORIGINAL] + sorted((SRC / 'gpt2').rglob('*.py'))


def own_unit(path):
    rel = path.relative_to(SRC).with_suffix('')
    return unit('.'.join(rel.parts))


@pytest.mark.parametrize('path', library_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_library_imports_only_its_own_layer_or_below_and_no_script(path):
    mine = own_unit(path)
    for other in imports(path) - {mine}:
        assert other not in SCRIPTS, f'{path} imports the script {other}'
        assert layer(other) <= layer(mine), f'{path} ({mine}) imports {other}, a layer above it'
        assert not (mine in FEATURES and other in FEATURES), f'{path} ({mine}) imports {other}'


def test_no_top_level_name_in_src_shadows_an_installed_package():
    names = {p.stem for p in SRC.glob('*.py')} | {p.name for p in SRC.iterdir() if (p / '__init__.py').exists()}
    outside = [entry for entry in sys.path if Path(entry or '.').resolve() not in (SRC, support.REPO / 'tests')]
    for name in sorted(names):
        spec = importlib.machinery.PathFinder.find_spec(name, outside)
        assert spec is None, f'src/{name} shadows the installed {spec.origin}'

def source_files():
    return sorted(p for folder in ('src', 'bench', 'tools') for p in (support.REPO / folder).rglob('*.py')) + \
        [support.REPO / 'download_model.py']


@pytest.mark.parametrize('path', source_files(), ids=lambda p: str(p.relative_to(support.REPO)))
def test_files_and_functions_stay_short(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_FILE_LINES, f'{path} has {len(text.splitlines())} lines'
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f'{path}:{node.lineno} {node.name} has {lines} lines'
