"""download_model.py against a local HTTP server that serves a tiny but real checkpoint.

The server (FakeStorage) supports Range requests unless told not to, logs every request, and misbehaves on
demand: per file, a queue of faults consumed one per request ('cut' sends half the body and hangs up, 'stall'
sends half and then waits, a number answers with that HTTP status). No test touches the internet.
"""
import http.server
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

import support
import requests

REPO = support.REPO
sys.path.insert(0, str(REPO))
import download_model  # noqa: E402  (puts src/ on sys.path)
from gpt2.base import checkpoint

WEIGHTS = 'model.ckpt.data-00000-of-00001'
MODEL_PATH = '/models/124M/'


# ---------------------------------------------------------------------------------------------------------------
# The tiny model and the server
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def model_files(tiny_model):
    """File name -> bytes of the tiny model (support.py), a real checkpoint in the released layout."""
    return {name: (tiny_model.dir / name).read_bytes() for name in checkpoint.MODEL_FILES}


class FakeStorage(http.server.ThreadingHTTPServer):
    """Serves the files under /models/124M/ and logs (path, Range header, status) for every request."""

    def __init__(self, files):
        super().__init__(('127.0.0.1', 0), StorageHandler)
        self.files = dict(files)
        self.range_support = True
        self.faults = {}  # file name -> iterator of faults, one consumed per request
        self.log = []
        self.release = threading.Event()  # ends a 'stall'
        self.url = f'http://127.0.0.1:{self.server_address[1]}'

    def requests_for(self, name):
        return [(ranged, status) for path, ranged, status in self.log if path == MODEL_PATH + name]

    def handle_error(self, request, client_address):
        pass  # a client that hung up on a stalled or cut answer is expected here


class StorageHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive and Content-Length, like real blob storage

    def do_GET(self):
        storage = self.server
        name = self.path[len(MODEL_PATH):] if self.path.startswith(MODEL_PATH) else None
        fault = next(storage.faults.get(name, iter(())), None)
        data = storage.files.get(name)
        if isinstance(fault, int) or data is None:
            return self.answer_error(fault or 404)
        start = self.range_start() if storage.range_support else None
        status = 200 if start is None else 206
        storage.log.append((self.path, self.headers.get('Range'), status))
        self.send_response(status)
        self.send_header('Content-Length', str(len(data) - (start or 0)))
        if status == 206:
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        self.end_headers()
        self.send_body(data[start or 0:], fault)

    def range_start(self):
        ranged = self.headers.get('Range')
        return int(ranged.removeprefix('bytes=').split('-')[0]) if ranged else None

    def send_body(self, body, fault):
        if fault in ('cut', 'stall'):
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            if fault == 'stall':
                self.server.release.wait(30)
            self.close_connection = True
        else:
            self.wfile.write(body)

    def answer_error(self, status):
        self.server.log.append((self.path, self.headers.get('Range'), status))
        body = b'<?xml version="1.0"?><Error><Code>Nope</Code></Error>'  # what blob storage sends
        self.send_response(status)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def storage(model_files):
    server = FakeStorage(model_files)
    threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def command(storage, models_dir, *args):
    env = dict(os.environ, NO_PROXY='127.0.0.1', no_proxy='127.0.0.1',
               **{checkpoint.BASE_URL_ENV: storage.url, download_model.BACKOFF_ENV: '0'})
    argv = [sys.executable, str(REPO / 'download_model.py'), *args, '--models_dir', str(models_dir)]
    return argv, env


def session_without_proxies():
    session = requests.Session()
    session.trust_env = False  # a proxy from the environment must not see requests for 127.0.0.1
    return session


def run(storage, models_dir, *args, cwd=None):
    argv, env = command(storage, models_dir, *args)
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def error_lines(result):
    """The `error:` lines of a failed run, after checking that it failed without a traceback."""
    assert 'Traceback' not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith('error:')]


def assert_identical(model_dir, model_files):
    for name, data in model_files.items():
        assert (model_dir / name).read_bytes() == data, name
    assert not list(model_dir.glob('*' + checkpoint.PARTIAL_SUFFIX))


# ---------------------------------------------------------------------------------------------------------------
# Downloads that succeed
# ---------------------------------------------------------------------------------------------------------------

def test_fresh_download_is_byte_identical_with_one_request_per_file(storage, model_files, tmp_path):
    result = run(storage, tmp_path, '124M')
    assert result.returncode == 0, result.stderr
    assert_identical(tmp_path / '124M', model_files)
    assert sorted(path for path, _, _ in storage.log) == sorted(MODEL_PATH + f for f in checkpoint.MODEL_FILES)
    assert 'ready' in result.stdout


def test_rerun_fetches_nothing(storage, model_files, tmp_path):
    assert run(storage, tmp_path, '124M').returncode == 0
    storage.log.clear()
    result = run(storage, tmp_path, '124M')
    assert result.returncode == 0, result.stderr
    assert storage.log == []
    assert_identical(tmp_path / '124M', model_files)


def test_dropped_connection_is_resumed_within_the_same_run(storage, model_files, tmp_path):
    storage.faults[WEIGHTS] = iter(['cut'])
    result = run(storage, tmp_path, '124M')
    assert result.returncode == 0, result.stderr
    assert_identical(tmp_path / '124M', model_files)
    half = len(model_files[WEIGHTS]) // 2
    assert storage.requests_for(WEIGHTS) == [(None, 200), (f'bytes={half}-', 206)]


def test_rerun_after_a_cut_resumes_with_a_range_request(storage, model_files, tmp_path):
    storage.faults[WEIGHTS] = itertools.chain(['cut'], itertools.repeat(500))
    assert run(storage, tmp_path, '124M').returncode != 0
    storage.faults.clear()
    storage.log.clear()
    result = run(storage, tmp_path, '124M')
    assert result.returncode == 0, result.stderr
    assert_identical(tmp_path / '124M', model_files)
    assert storage.requests_for(WEIGHTS) == [(f'bytes={len(model_files[WEIGHTS]) // 2}-', 206)]


def test_server_ignoring_range_starts_the_file_over(storage, model_files, tmp_path):
    model_dir = tmp_path / '124M'
    model_dir.mkdir()
    stale = b'stale bytes that must not survive'
    (model_dir / (WEIGHTS + checkpoint.PARTIAL_SUFFIX)).write_bytes(stale)
    storage.range_support = False
    result = run(storage, tmp_path, '124M')
    assert result.returncode == 0, result.stderr
    assert_identical(model_dir, model_files)
    assert storage.requests_for(WEIGHTS) == [(f'bytes={len(stale)}-', 200)]


def test_old_name_117M_is_stored_as_124M_under_a_models_dir_relative_to_the_working_dir(
        storage, model_files, tmp_path):
    result = run(storage, 'models', '117M', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_identical(tmp_path / 'models' / '124M', model_files)
    assert not (tmp_path / 'models' / '117M').exists()
    assert all(path.startswith(MODEL_PATH) for path, _, _ in storage.log)
    assert '117M is the old name of 124M' in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------------------------

def test_server_failing_with_500_after_a_cut_gives_up_without_a_final_file(storage, model_files, tmp_path):
    storage.faults[WEIGHTS] = itertools.chain(['cut'], itertools.repeat(500))
    result = run(storage, tmp_path, '124M')
    assert result.returncode == 1
    [error] = error_lines(result)
    assert WEIGHTS in error and f'{storage.url}{MODEL_PATH}{WEIGHTS}' in error and '500' in error
    assert not (tmp_path / '124M' / WEIGHTS).exists()
    kept = tmp_path / '124M' / (WEIGHTS + checkpoint.PARTIAL_SUFFIX)
    assert kept.read_bytes() == model_files[WEIGHTS][:len(model_files[WEIGHTS]) // 2]
    assert len(storage.requests_for(WEIGHTS)) == download_model.RETRIES + 1


def test_404_stops_at_once_naming_file_url_and_status(storage, tmp_path):
    del storage.files['vocab.bpe']
    result = run(storage, tmp_path, '124M')
    assert result.returncode == 1
    [error] = error_lines(result)
    assert f'{storage.url}{MODEL_PATH}vocab.bpe' in error and '404' in error
    assert list((tmp_path / '124M').glob('vocab.bpe*')) == []
    assert storage.requests_for('vocab.bpe') == [(None, 404)]


@pytest.mark.parametrize('name', ['999M', '124'])  # fire turns 124 into an int
def test_unknown_name_exits_2_listing_valid_names_and_creates_nothing(storage, tmp_path, name):
    models_dir = tmp_path / 'models'
    result = run(storage, models_dir, name)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    [error] = error_lines(result)
    assert all(valid in error for valid in checkpoint.MODEL_SIZES)
    assert not models_dir.exists()
    assert storage.log == []


@pytest.mark.parametrize('args, line', [
    (['124M', '--model_dir', 'elsewhere'], 'error: unknown flag --model_dir; did you mean --models_dir?'),
    (['124M', 'extra'], "error: unexpected argument 'extra'"),
])
def test_a_misspelled_flag_or_extra_value_is_refused_before_any_request(storage, tmp_path, args, line):
    """fire would download into the default folder first, then complain about what it could not bind."""
    models_dir = tmp_path / 'models'
    result = run(storage, models_dir, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(line) and len(result.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == [] and storage.log == []


def test_hparams_not_matching_the_checkpoint_is_reported(storage, tmp_path):
    storage.files['hparams.json'] = json.dumps(dict(json.loads(storage.files['hparams.json']), n_embd=8)).encode()
    result = run(storage, tmp_path, '124M')
    assert result.returncode == 1
    [error] = error_lines(result)
    assert 'hparams.json' in error and 'does not match the checkpoint' in error


def test_encoder_json_that_is_not_an_object_is_reported(storage, tmp_path):
    storage.files['encoder.json'] = b'["a", "b"]'
    result = run(storage, tmp_path, '124M')
    assert result.returncode == 1
    [error] = error_lines(result)
    assert 'encoder.json' in error and 'JSON object' in error


def test_ctrl_c_exits_130_quietly_and_keeps_the_part_file(storage, model_files, tmp_path):
    storage.faults[WEIGHTS] = iter(['stall'])
    argv, env = command(storage, tmp_path, '124M')
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = tmp_path / '124M' / (WEIGHTS + checkpoint.PARTIAL_SUFFIX)
    half = len(model_files[WEIGHTS]) // 2
    deadline = time.monotonic() + 20
    while process.poll() is None and time.monotonic() < deadline and download_model.size_of(part) < half:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130
    assert 'Traceback' not in stderr and 'interrupted' in stderr
    assert part.read_bytes() == model_files[WEIGHTS][:half]
    assert not (tmp_path / '124M' / WEIGHTS).exists()


def test_drops_that_make_progress_do_not_count_towards_giving_up(storage, model_files, tmp_path, monkeypatch):
    monkeypatch.setattr(download_model, 'BACKOFF', 0)
    storage.faults[WEIGHTS] = iter(['cut'] * (download_model.RETRIES + 2))
    with session_without_proxies() as session:
        download_model.fetch(session, storage.url + MODEL_PATH + WEIGHTS, tmp_path / WEIGHTS)
    assert (tmp_path / WEIGHTS).read_bytes() == model_files[WEIGHTS]
    assert len(storage.requests_for(WEIGHTS)) == download_model.RETRIES + 3


def test_connection_errors_are_retried_with_doubling_backoff_then_given_up(tmp_path, monkeypatch):
    with socket.socket() as closed:  # a port that nothing listens on: connection refused
        closed.bind(('127.0.0.1', 0))
        url = f'http://127.0.0.1:{closed.getsockname()[1]}/models/124M/hparams.json'
    waits = []
    monkeypatch.setattr(download_model, 'BACKOFF', 1.0)
    monkeypatch.setattr(download_model, 'time', SimpleNamespace(sleep=waits.append))
    with session_without_proxies() as session, pytest.raises(download_model.DownloadError) as failure:
        download_model.fetch(session, url, tmp_path / 'hparams.json')
    assert str(failure.value).startswith(f'hparams.json: gave up on {url} after')
    assert waits == [2.0 ** i for i in range(download_model.RETRIES)]
    assert not (tmp_path / 'hparams.json').exists()
