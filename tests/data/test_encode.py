"""src/encode.py: a dataset -> a .npz of token ids that load_dataset (and nshepperd's and gpt-2-simple's loaders)
read back; streamed; bad input leaves nothing behind."""
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import support

from gpt2.base import checkpoint
import encode
import encoder
from gpt2.data import corpus
from gpt2.data import npz_writer

REPO = support.REPO


@pytest.fixture()
def tiny_enc(tiny_model):
    return encoder.get_encoder(tiny_model.name, tiny_model.models_dir)


def write(path, text, encoding='utf-8'):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def run_encode(tiny_model, *args):
    done = subprocess.run([sys.executable, str(REPO / 'src' / 'encode.py'), *map(str, args),
                           '--model_name', tiny_model.name, '--models_dir', str(tiny_model.models_dir)],
                          capture_output=True, text=True, timeout=120)
    return done


def call_encode(tiny_model, capsys, *args, **flags):
    """encode.py's main function in this process -> (exit code, stderr)."""
    flags = {'model_name': tiny_model.name, 'models_dir': str(tiny_model.models_dir), **flags}
    try:
        encode.encode(*map(str, args), **flags)
        code = 0
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


def folder_listing(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob('*'))


DOCS = {
    'a/one.txt': "Hello world, the end<|endoftext|>and in the hell of it\n",
    'a/two.txt': 'ünïcode 😀 text\r\n\r\nwith lines',
    'b.txt': 'the and the',
}


def test_encode_script_round_trip_through_npz(tiny_model, tiny_enc, tmp_path):
    for name, text in DOCS.items():
        write(tmp_path / 'data' / name, text)
    out = tmp_path / 'data.npz'
    done = run_encode(tiny_model, tmp_path / 'data', out, '--combine', 60)
    assert done.returncode == 0, done.stderr
    with np.load(out) as npz:
        assert npz.files == ['arr_0', 'arr_1']  # one.txt + two.txt reach 60 characters; b.txt is the rest
        arrays = [npz[name] for name in npz.files]
    assert all(a.dtype == np.uint16 and a.ndim == 1 for a in arrays)
    eot = '<|endoftext|>'
    assert tiny_enc.decode(np.concatenate(arrays)) == ''.join(text + eot for text in DOCS.values()).replace(
        eot + eot, eot)
    assert list(arrays[0]).count(tiny_model.endoftext) == 3  # the literal one and two files' ends
    chunks = corpus.load_dataset(tiny_enc, out)
    assert [list(c) for c in chunks] == [list(a) for a in arrays]
    assert [list(c) for c in corpus.load_dataset(tiny_enc, tmp_path / 'data', combine=60)] == \
        [list(a) for a in arrays]


def test_npz_is_stored_uncompressed_and_numpy_reads_it_as_savez_would(tiny_model, tmp_path, capsys):
    write(tmp_path / 'a.txt', 'the end')
    code, err = call_encode(tiny_model, capsys, tmp_path / 'a.txt', tmp_path / 'out.npz')
    assert code == 0, err
    with zipfile.ZipFile(tmp_path / 'out.npz') as z:
        assert [i.filename for i in z.infolist()] == ['arr_0.npy']
        assert z.infolist()[0].compress_type == zipfile.ZIP_STORED
    # 'the end': t he, then ' ' e n d (no merge makes 'Ġe'), then the end of the file.
    expected = [ord('t'), 257, ord(' '), ord('e'), ord('n'), ord('d'), tiny_model.endoftext]
    np.savez(tmp_path / 'ref.npz', np.array(expected, dtype=np.uint16))
    with np.load(tmp_path / 'out.npz') as ours, np.load(tmp_path / 'ref.npz') as ref:
        assert ours['arr_0'].dtype == ref['arr_0'].dtype and list(ours['arr_0']) == list(ref['arr_0'])
    assert folder_listing(tmp_path) == [Path('a.txt'), Path('out.npz'), Path('ref.npz')]


def test_streaming_in_small_blocks_gives_the_tokens_of_the_whole(tiny_model, tiny_enc, tmp_path, capsys,
                                                               monkeypatch):
    text = 'and the hell of it\r\nin the end   and\n' * 50
    write(tmp_path / 'a.txt', text)
    write(tmp_path / 'b.txt', text[:100])
    monkeypatch.setattr(corpus, 'BLOCK_SIZE', 7)
    monkeypatch.setattr(npz_writer, 'COPY_SIZE', 3)
    code, err = call_encode(tiny_model, capsys, tmp_path, tmp_path / 'out.npz', combine=0)
    assert code == 0, err
    with np.load(tmp_path / 'out.npz') as npz:
        arrays = [list(npz[name]) for name in npz.files]
    eot = [tiny_model.endoftext]
    assert arrays == [tiny_enc.encode(text) + eot, tiny_enc.encode(text[:100]) + eot]


def test_help_is_the_manual_with_a_line_per_flag():
    done = subprocess.run([sys.executable, str(REPO / 'src' / 'encode.py'), '--help'], capture_output=True,
                          text=True, timeout=120)
    for flag in ('DATASET', 'OUT', '--model_name', '--models_dir', '--combine', '--encoding'):
        assert flag in done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one error line, an exit code, nothing created
# ---------------------------------------------------------------------------------------------------------------

def latin1_file(tmp_path):
    write(tmp_path / 'in' / 'good.txt', 'fine')
    write(tmp_path / 'in' / 'bad.txt', 'caf\xe9', encoding='latin-1')


@pytest.mark.parametrize('make, dataset, out, flags, code, message', [
    (lambda d: None, 'missing.txt', 'out.npz', {}, 1, r'missing\.txt not found'),
    (lambda d: (d / 'in').mkdir(), 'in', 'out.npz', {}, 1, 'holds no files'),
    (lambda d: write(d / 'in' / 'e.txt', ''), 'in', 'out.npz', {}, 1, 'holds no text'),
    (latin1_file, 'in', 'out.npz', {}, 1, r'bad\.txt is not valid utf-8'),
    (lambda d: write(d / 'a.txt', 'a'), 'a.txt', 'out.npz', {'encoding': 'klingon'}, 2, '--encoding'),
    (lambda d: write(d / 'a.txt', 'a'), 'a.txt', 'no/such/out.npz', {}, 2, 'does not exist'),
    (lambda d: write(d / 'a.txt', 'a'), 'a.txt', 'out.txt', {}, 2, r'\.npz'),
    (lambda d: write(d / 'a.txt', 'a'), 'a.txt', 'out.npz', {'combine': -1}, 2, '--combine'),
    (lambda d: write(d / 'a.txt', 'a'), 'a.txt', 'out.npz', {'model_name': 'nope'}, 1, 'download_model'),
])
def test_bad_input_is_one_error_line_and_creates_nothing(tiny_model, tmp_path, capsys, make, dataset, out, flags,
                                                        code, message):
    make(tmp_path)
    before = folder_listing(tmp_path)
    got, err = call_encode(tiny_model, capsys, tmp_path / dataset, tmp_path / out, **flags)
    assert got == code
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1 and 'Traceback' not in err
    assert re.search(message, lines[0]), lines[0]
    assert folder_listing(tmp_path) == before


def test_bad_input_as_a_user_sees_it_no_traceback(tiny_model, tmp_path):
    done = run_encode(tiny_model, tmp_path / 'missing.txt', tmp_path / 'out.npz')
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith('error: ') and 'Traceback' not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_interrupt_while_encoding_leaves_no_file(tiny_model, tmp_path, capsys, monkeypatch):
    write(tmp_path / 'in' / 'a.txt', 'the end\n' * 100)
    write(tmp_path / 'in' / 'b.txt', 'the end\n' * 100)
    calls = []

    def interrupted(enc, text):
        calls.append(text)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return enc.encode(text, allowed_special={checkpoint.ENDOFTEXT})

    monkeypatch.setattr(corpus, 'encode_text', interrupted)
    code, err = call_encode(tiny_model, capsys, tmp_path / 'in', tmp_path / 'out.npz', combine=0)
    assert code == 130 and 'interrupted' in err
    assert folder_listing(tmp_path) == [Path('in'), Path('in/a.txt'), Path('in/b.txt')]


def test_full_disk_is_one_error_line_and_leaves_no_file(tiny_model, tmp_path, capsys, monkeypatch):
    write(tmp_path / 'in' / 'a.txt', 'the end')

    def full(npz, name, tokens, length, dtype):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(npz_writer, 'write_array', full)
    code, err = call_encode(tiny_model, capsys, tmp_path / 'in', tmp_path / 'out.npz')
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert code == 1 and len(lines) == 1 and 'No space left' in lines[0] and 'Traceback' not in err
    assert folder_listing(tmp_path) == [Path('in'), Path('in/a.txt')]


def test_existing_output_is_replaced_only_when_the_new_one_is_complete(tiny_model, tmp_path, capsys):
    write(tmp_path / 'a.txt', 'the')
    write(tmp_path / 'bad.txt', 'caf\xe9', encoding='latin-1')
    np.savez(tmp_path / 'out.npz', np.array([1, 2, 3]))
    code, _ = call_encode(tiny_model, capsys, tmp_path / 'bad.txt', tmp_path / 'out.npz')
    assert code == 1
    with np.load(tmp_path / 'out.npz') as npz:
        assert list(npz['arr_0']) == [1, 2, 3]
    code, _ = call_encode(tiny_model, capsys, tmp_path / 'a.txt', tmp_path / 'out.npz')
    assert code == 0
    with np.load(tmp_path / 'out.npz') as npz:
        assert list(npz['arr_0']) == [ord('t'), 257, tiny_model.endoftext]


def test_real_vocabulary_without_weights_gives_token_50256(tmp_path):
    """encode.py needs only a model's encoder.json and vocab.bpe: tests/data/gpt2_vocab holds OpenAI's two."""
    write(tmp_path / 'a.txt', 'Hi<|endoftext|>there')
    done = subprocess.run([sys.executable, str(REPO / 'src' / 'encode.py'), tmp_path / 'a.txt', tmp_path / 'o.npz',
                           '--model_name', 'gpt2_vocab', '--models_dir', REPO / 'tests' / 'data'],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / 'o.npz') as npz:
        assert list(npz['arr_0']) == [17250, 50256, 8117, 50256]  # 'Hi', <|endoftext|>, 'there', the file's end


def test_encode_script_does_not_load_tensorflow():
    """TensorFlow would add about 600 MB and seconds of start-up to a script that only tokenizes."""
    code = 'import sys; import encode; print("tensorflow" in sys.modules)'
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO / 'src', capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == 'False', done.stderr


def test_output_has_the_permissions_of_any_new_file(tiny_model, tmp_path, capsys):
    write(tmp_path / 'a.txt', 'the')
    (tmp_path / 'plain').write_text('')
    code, _ = call_encode(tiny_model, capsys, tmp_path / 'a.txt', tmp_path / 'out.npz')
    assert code == 0
    assert (tmp_path / 'out.npz').stat().st_mode == (tmp_path / 'plain').stat().st_mode
