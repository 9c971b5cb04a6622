"""src/score.py on the tiny model: figures, documents, per-token output, streaming, bad input."""
import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from support import REPO, TINY_HPARAMS, assert_clean_error, brute_force, decode, reference_logprobs, run_script as run

import score  # noqa: E402
from gpt2.evaluation import documents

N_CTX = TINY_HPARAMS['n_ctx']

TEXT = ('The cat and the dog went in the hall, and all of the others went on. ' * 3).strip()


def score_json(capsys, tiny_model, *files, **flags):
    score.score(*map(str, files), models_dir=str(tiny_model.models_dir), model_name=tiny_model.name, json=True,
                **flags)
    return json.loads(capsys.readouterr().out)


def fails(capsys, code, *words, **call):
    files = call.pop('files')
    with pytest.raises(SystemExit) as exit_:
        score.score(*map(str, files), **call)
    assert exit_.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    for word in words:
        assert word in err[0]


def per_token_lines(path):
    return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()]


def test_figures_and_per_token_logprobs_equal_the_reference(capsys, tiny_model, tmp_path):
    (tmp_path / 'a.txt').write_text(TEXT, encoding='utf-8')
    out = tmp_path / 'tokens.jsonl'
    result = score_json(capsys, tiny_model, tmp_path / 'a.txt', stride=9, per_token=str(out), batch_size=2)
    [line] = per_token_lines(out)
    assert decode(tiny_model, line['ids']) == TEXT
    assert len(line['ids']) > 3 * N_CTX
    np.testing.assert_allclose(line['logprobs'], brute_force(tiny_model, line['ids'], 9), atol=2e-4)
    assert line['tokens'] == [decode(tiny_model, [t]) for t in line['ids']]
    figures = result['files'][0]
    assert figures['tokens'] == len(line['ids'])
    assert figures['nll'] == pytest.approx(-sum(line['logprobs']), rel=1e-9)
    assert result['total'] == {k: v for k, v in figures.items() if k != 'path'}


def test_counts_and_derived_figures_by_hand(capsys, tiny_model, tmp_path):
    text = 'héllo wörld  日本\nand more\n'  # 5 + 1 + 5 + 2 + 2 + 1 + 3 + 1 + 4 + 1 = 25 characters
    (tmp_path / 'u.txt').write_text(text, encoding='utf-8')
    f = score_json(capsys, tiny_model, tmp_path / 'u.txt')['total']
    assert (f['characters'], f['bytes'], f['words']) == (25, 25 + 2 + 4, 5)  # é ö: 2 bytes, 日 本: 3 bytes
    bits = f['nll'] / math.log(2)
    assert f['perplexity'] == pytest.approx(math.exp(f['nll'] / f['tokens']))
    assert f['bits_per_byte'] == pytest.approx(bits / 31)
    assert f['bits_per_character'] == pytest.approx(bits / 25)
    assert f['word_perplexity'] == pytest.approx(math.exp(f['nll'] / 5))


def test_documents_at_endoftext_and_lines_each_start_after_endoftext(capsys, tiny_model, tmp_path):
    (tmp_path / 'e.txt').write_text('the hall<|endoftext|>and all<|endoftext|>', encoding='utf-8')
    (tmp_path / 'l.txt').write_text('the hall\r\n\nand all\n', encoding='utf-8')
    for name, how in (('e.txt', 'endoftext'), ('l.txt', 'lines')):
        out = tmp_path / f'{name}.jsonl'
        result = score_json(capsys, tiny_model, tmp_path / name, documents=how, per_token=str(out))
        lines = per_token_lines(out)
        assert [decode(tiny_model, d['ids']) for d in lines] == ['the hall', 'and all']
        assert [d['document'] for d in lines] == [0, 1]
        for d in lines:
            np.testing.assert_allclose(d['logprobs'], reference_logprobs(tiny_model, [tiny_model.endoftext] + d['ids']),
                                       atol=2e-4)
        assert result['total']['words'] == 4 and result['total']['characters'] == 15


def test_text_summary_per_file_and_total(capsys, tiny_model, tmp_path):
    for name in ('a.txt', 'b.txt'):
        (tmp_path / name).write_text('the hall', encoding='utf-8')
    score.score(str(tmp_path / 'a.txt'), str(tmp_path / 'b.txt'), models_dir=str(tiny_model.models_dir),
                model_name=tiny_model.name)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(':')[0] for line in lines] == [str(tmp_path / 'a.txt'), str(tmp_path / 'b.txt'), 'total']
    assert all('perplexity' in line and 'bits per byte' in line for line in lines)


def test_a_file_read_in_small_blocks_scores_as_a_whole(capsys, tiny_model, tmp_path, monkeypatch):
    """Streaming: blocks of 16 bytes, cut again where BPE allows, give the whole file's ids and figures."""
    (tmp_path / 'a.txt').write_text(TEXT + '\n' + TEXT, encoding='utf-8')
    whole = score_json(capsys, tiny_model, tmp_path / 'a.txt', per_token=str(tmp_path / 'w.jsonl'))
    monkeypatch.setattr(documents, 'BLOCK_SIZE', 16)
    small = score_json(capsys, tiny_model, tmp_path / 'a.txt', per_token=str(tmp_path / 's.jsonl'))
    assert per_token_lines(tmp_path / 's.jsonl')[0]['ids'] == per_token_lines(tmp_path / 'w.jsonl')[0]['ids']
    assert small['total']['words'] == whole['total']['words'] == len((TEXT + '\n' + TEXT).split())
    assert small['total']['nll'] == pytest.approx(whole['total']['nll'], rel=1e-6)


def test_detokenizer_changes_what_is_scored_not_the_counts(capsys, tiny_model, tmp_path, monkeypatch):
    text = ' = = the hall = = \n and all , the hall . \n'
    (tmp_path / 'w.txt').write_text(text, encoding='utf-8')
    monkeypatch.setattr(documents, 'BLOCK_SIZE', 8)
    result = score_json(capsys, tiny_model, tmp_path / 'w.txt', detokenizer='wikitext',
                        per_token=str(tmp_path / 'w.jsonl'))
    assert decode(tiny_model, per_token_lines(tmp_path / 'w.jsonl')[0]['ids']) == '== the hall ==\nand all, the hall.\n'
    assert result['total']['characters'] == len(text) and result['total']['words'] == len(text.split())


def test_checkpoint_picks_the_run_checkpoint_scored(capsys, tiny_run, tmp_path):
    import encoder
    (tmp_path / 'a.txt').write_text(TEXT, encoding='utf-8')
    ids = encoder.read_vocabulary(tiny_run[1].dir).encode(TEXT)
    run_model = {'models_dir': str(tiny_run[1].models_dir), 'model_name': tiny_run[1].name}
    for which, step in (('latest', 3), ('best', 2), (1, 1)):
        score.score(str(tmp_path / 'a.txt'), json=True, checkpoint=which, **run_model)
        nll = json.loads(capsys.readouterr().out)['total']['nll']
        assert nll == pytest.approx(-brute_force(tiny_run[step], ids, N_CTX).sum(), rel=1e-5), which
    fails(capsys, 1, '--checkpoint 7', '1, 2, 3', files=[tmp_path / 'a.txt'], checkpoint=7, **run_model)
    fails(capsys, 2, '--checkpoint', files=[tmp_path / 'a.txt'], checkpoint='first', **run_model)


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture()
def good(tmp_path):
    (tmp_path / 'good.txt').write_text('the hall', encoding='utf-8')
    return tmp_path / 'good.txt'


def test_bad_files_fail_with_one_line_and_exit_1(capsys, tiny_model, tmp_path, good):
    model = {'models_dir': str(tiny_model.models_dir), 'model_name': tiny_model.name}
    (tmp_path / 'empty.txt').write_bytes(b'')
    (tmp_path / 'binary.bin').write_bytes(b'\x89PNG\r\n\x00\x00')
    (tmp_path / 'latin.txt').write_bytes(b'caf\xe9 and more')
    (tmp_path / 'blank.txt').write_text('\n\n\n', encoding='utf-8')
    fails(capsys, 1, 'missing.txt', 'cannot read', files=[good, tmp_path / 'missing.txt'], **model)
    fails(capsys, 1, 'empty', files=[tmp_path / 'empty.txt'], **model)
    fails(capsys, 1, 'binary', files=[tmp_path / 'binary.bin'], **model)
    out = tmp_path / 'out.jsonl'
    fails(capsys, 1, 'not UTF-8', files=[good, tmp_path / 'latin.txt'], per_token=str(out), **model)
    fails(capsys, 1, 'no text', files=[tmp_path / 'blank.txt'], documents='lines', **model)
    fails(capsys, 1, 'no_such_model', files=[good], models_dir=str(tiny_model.models_dir), model_name='no_such_model')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['binary.bin', 'blank.txt', 'empty.txt', 'good.txt',
                                                         'latin.txt']  # nothing half-written


def test_bad_flags_fail_with_one_line_and_exit_2(capsys, tiny_model, tmp_path, good):
    model = {'models_dir': str(tiny_model.models_dir), 'model_name': tiny_model.name}
    fails(capsys, 2, '--stride', files=[good], stride=0, **model)
    fails(capsys, 2, '--stride', str(N_CTX), files=[good], stride=N_CTX + 1, **model)
    fails(capsys, 2, '--detokenizer', files=[good], detokenizer='moses', **model)
    fails(capsys, 2, '--documents', files=[good], documents='pages', **model)
    fails(capsys, 2, '--batch_size', files=[good], batch_size=0, **model)
    fails(capsys, 2, 'at least one', files=[], **model)
    fails(capsys, 2, '--per_token', files=[good], per_token=str(tmp_path / 'no' / 'dir.jsonl'), **model)


def test_the_script_from_the_command_line(tiny_model, good):
    done = run('score.py', good, f'--models_dir={tiny_model.models_dir}', f'--model_name={tiny_model.name}', '--json')
    assert done.returncode == 0, done.err
    assert json.loads(done.out)['total']['characters'] == len('the hall')
    bad = run('score.py', good, f'--models_dir={tiny_model.models_dir}', f'--model_name={tiny_model.name}',
              '--stride=abc')
    assert bad.returncode == 2
    assert_clean_error(bad, '--stride')


def test_ctrl_c_while_scoring_leaves_no_per_token_file(tiny_model, tmp_path):
    """Ctrl-C ends score.py at once (runtime.setup_process), and first removes the --per_token file it was
    writing: neither it nor its partial file is left."""
    (tmp_path / 'long.txt').write_text('the hall and all ' * 20000, encoding='utf-8')
    out = tmp_path / 'tokens.jsonl'
    # Stride 1 and one window a run: minutes of work, so it is surely interrupted in the middle.
    proc = subprocess.Popen([sys.executable, 'src/score.py', str(tmp_path / 'long.txt'), '--stride=1',
                             '--batch_size=1', f'--per_token={out}', f'--models_dir={tiny_model.models_dir}',
                             f'--model_name={tiny_model.name}'], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob('tokens.jsonl*')) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert list(tmp_path.glob('tokens.jsonl*')), 'score.py never started writing'
        time.sleep(1)  # the model loads and the scoring starts
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr.read().decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['long.txt']
