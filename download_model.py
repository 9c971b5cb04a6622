#!/usr/bin/env python3
"""Download a released GPT-2 model into models/NAME: `python download_model.py 124M`.

Every file is written as FILE.part and renamed only once it has the size the server announced, so a file
under its final name is always complete. A re-run skips complete files and resumes .part files.
"""
import json
import os
import sys
import time
from pathlib import Path

import fire
import requests
import urllib3
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent / 'src'))
from gpt2.base import checkpoint

# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------

# Failed attempts in a row allowed per file, and the wait before the first retry (doubled after each failure).
# A server that stops answering costs at most 5 attempts of about 10 s (TIMEOUT) plus 1+2+4+8 s of waiting:
# the run gives up within about a minute.
RETRIES = 4
BACKOFF_ENV = 'GPT2_DOWNLOAD_BACKOFF'  # seconds; tests set it to 0
BACKOFF = float(os.environ.get(BACKOFF_ENV, '1'))
TIMEOUT = (5, 10)  # seconds to connect, and to wait for the next bytes
CHUNK_SIZE = 1 << 20

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class DownloadError(Exception):
    """A failure that retrying will not fix. The message is one line naming the file and what went wrong."""


class Transient(Exception):
    """A failure worth retrying: connection trouble, a timeout, a 5xx answer or a body cut short."""


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------

def main(model_name: str, models_dir: str = None):
    """Download a GPT-2 model into MODELS_DIR/MODEL_NAME; run it again to resume an interrupted download.

    Args:
        model_name: 124M, 355M, 774M or 1558M (the old names 117M and 345M fetch 124M and 355M)
        models_dir: folder to create the model's folder in (default: models/ next to this script)
    """
    name = current_name(str(model_name))  # fire turns a name like 124 into an int
    if name is None:
        fail(f"unknown model '{model_name}'; choose one of {', '.join(checkpoint.MODEL_SIZES)} "
             f"(or the old names {', '.join(checkpoint.LEGACY_NAMES)})", EXIT_USAGE)
    if name != str(model_name):
        note(f'{model_name} is the old name of {name}; fetching {name} and storing it as {name}')
    model_dir = (Path(str(models_dir)).expanduser() if models_dir else checkpoint.DEFAULT_MODELS_DIR) / name
    try:
        download(name, model_dir, base_url())
        verify(model_dir, name)
    except KeyboardInterrupt:
        note('interrupted; run the same command again to resume')
        sys.exit(EXIT_INTERRUPTED)
    except (DownloadError, OSError) as err:
        remove_if_empty(model_dir)
        fail(err)
    print(f'{name} is ready in {model_dir.resolve()}')


def remove_if_empty(folder):
    """A failure before any byte arrived leaves no trace of the model."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def current_name(model_name):
    """The name the model is stored under, or None if model_name is not a released model."""
    if model_name in checkpoint.MODEL_SIZES:
        return model_name
    return checkpoint.LEGACY_NAMES.get(model_name)


def base_url():
    return (os.environ.get(checkpoint.BASE_URL_ENV) or checkpoint.DEFAULT_BASE_URL).rstrip('/')


def note(message):
    print(message, file=sys.stderr)


def fail(message, code=EXIT_FAILED):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------------------------

def download(name, model_dir, base):
    """Fetch every file of the model that is not already complete in model_dir."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with requests.Session() as session:
        for filename in checkpoint.MODEL_FILES:
            path = model_dir / filename
            if path.exists():  # only complete files ever get their final name
                note(f'{filename}: already downloaded')
                continue
            fetch(session, f'{base}/models/{name}/{filename}', path)


def fetch(session, url, path):
    """Download url into path by way of path.part, retrying transient failures with backoff."""
    part = path.with_name(path.name + checkpoint.PARTIAL_SUFFIX)
    failures = 0
    while True:
        before = size_of(part)
        try:
            fetch_once(session, url, part)
            break
        except Transient as err:
            # Only failures in a row count: a connection that drops after progress is still worth resuming.
            failures = 1 if size_of(part) > before else failures + 1
            if failures > RETRIES:
                raise DownloadError(f'{path.name}: gave up on {url} after {failures} failed attempts in a row '
                                    f'(last: {err}); run again later to resume') from None
            delay = BACKOFF * 2 ** (failures - 1)
            note(f'{path.name}: {err}; retrying in {delay:g} s')
            time.sleep(delay)
        except DownloadError as err:
            raise DownloadError(f'{path.name}: {url} {err}') from None
        except requests.RequestException as err:
            raise DownloadError(f'{path.name}: cannot fetch {url} ({err})') from None
    part.replace(path)


def fetch_once(session, url, part):
    """One request that appends the rest of the file to part (or starts it over). Returns once part is complete."""
    have = size_of(part)
    # identity: ask for the file's own bytes, so that Range offsets and sizes count the bytes on disk.
    headers = {'Accept-Encoding': 'identity'}
    if have:
        headers['Range'] = f'bytes={have}-'
    try:
        with session.get(url, headers=headers, stream=True, timeout=TIMEOUT) as response:
            offset, total = body_position(response, have, part)
            write_body(response, part, offset, total)
    except (requests.Timeout, urllib3.exceptions.TimeoutError):
        raise Transient('timed out') from None
    except requests.ConnectionError:
        raise Transient('connection failed') from None
    except urllib3.exceptions.HTTPError:  # raised by the raw body reads in write_body
        raise Transient('connection dropped part-way') from None


def body_position(response, have, part):
    """Where the response body starts in the file, and the file's full size (None if not announced)."""
    status = f'HTTP {response.status_code} {response.reason}'
    if response.status_code == 206:
        start, total = content_range(response)
        if start != have:
            raise DownloadError(f'resumed at byte {start} instead of {have}')
        return start, total
    if response.status_code == 200:  # the whole file, also when the server ignores Range: start over
        length = response.headers.get('Content-Length')
        return 0, int(length) if length else None
    if response.status_code == 416:  # the .part is not shorter than the server's file, which must have changed
        part.unlink()
        raise Transient(f'{status}, starting the file over')
    if response.status_code >= 500:
        raise Transient(status)
    raise DownloadError(f'answered {status}; if the files have moved, set {checkpoint.BASE_URL_ENV} to a mirror')


def content_range(response):
    """(start, total) from a Content-Range header such as 'bytes 100-999/1000'."""
    try:
        span, total = response.headers['Content-Range'].split(' ', 1)[1].split('/')
        return int(span.split('-')[0]), int(total)
    except (KeyError, IndexError, ValueError):
        raise DownloadError('answered 206 without a usable Content-Range header') from None


def write_body(response, part, offset, total):
    """Stream the body into part from offset on, with a progress bar; Transient if it ends short.

    Reads the raw body with read1, which returns whatever has arrived: every byte received before a dropped
    connection or a Ctrl-C reaches the .part (iter_content waits for whole chunks and loses the last one), and
    the file is unbuffered so that they are on disk even if the process is killed. The raw body is also exactly
    the bytes Content-Length counts.
    """
    name = part.name.removesuffix(checkpoint.PARTIAL_SUFFIX)
    with open(part, 'ab' if offset else 'wb', buffering=0) as out, \
            tqdm(desc=name, initial=offset, total=total, unit='B', unit_scale=True, unit_divisor=1024,
                 file=sys.stderr, dynamic_ncols=True) as bar:
        while chunk := response.raw.read1(CHUNK_SIZE):
            out.write(chunk)
            bar.update(len(chunk))
    size = size_of(part)
    if total is not None and size > total:  # never resume from bytes that cannot be part of the file
        part.unlink()
        raise DownloadError(f'sent {size - offset} bytes, more than the {total - offset} it announced')
    if total is not None and size < total:
        raise Transient(f'connection closed after {size} of {total} bytes')


def size_of(path):
    return path.stat().st_size if path.exists() else 0


# ---------------------------------------------------------------------------------------------------------------
# Checking the result
# ---------------------------------------------------------------------------------------------------------------

def verify(model_dir, name):
    """Cheap integrity check of the finished folder: the JSON files parse and the checkpoint fits hparams.json."""
    try:
        check_encoder(model_dir / 'encoder.json')
        checkpoint.check_model_dir(model_dir, name)
    except checkpoint.ModelError as err:
        raise DownloadError(f'{err} (the downloaded files do not fit together: delete {model_dir} and download '
                            f'again, or try another mirror)') from None


def check_encoder(path):
    try:
        vocabulary = json.loads(path.read_text(encoding='utf-8'))
    except (ValueError, UnicodeDecodeError) as err:
        raise checkpoint.ModelError(f'{path} is not valid JSON ({err})') from None
    if not isinstance(vocabulary, dict):
        raise checkpoint.ModelError(f'{path} must hold a JSON object mapping tokens to ids')


if __name__ == '__main__':
    from gpt2.base import flags  # refuses a misspelled flag before any request
    fire.Fire(main, command=flags.check_argv(main))
