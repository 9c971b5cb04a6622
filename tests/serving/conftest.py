"""The server of a test module: src/server.py on the tiny model, started once per module (a module's
SERVER_FLAGS, if it has them, are its extra flags) and stopped after it."""
import pytest

from support import start_server, stop_server


@pytest.fixture(scope='module')
def server(tiny_model, request):
    """-> (the process, its base URL, e.g. http://127.0.0.1:PORT)."""
    process, url = start_server(tiny_model, *getattr(request.module, 'SERVER_FLAGS', ()))
    yield process, url
    stop_server(process)
