"""The HTTP side: Starlette routes on uvicorn's event loop. They read and check requests, hand jobs to the engine
thread and await its events; they never run TensorFlow.

Routes: GET /health, GET /v1/models, POST /v1/completions (streamed as server-sent events with "stream": true),
POST /v1/embeddings, POST /tokenize, POST /detokenize, GET /tokenizer_info (lm_eval's remote tokenizer). Errors are OpenAI's shape
(gpt2/serving/errors.py)."""
import asyncio
import contextlib
import dataclasses
import hmac
import signal
import time
import uuid

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gpt2.base import checkpoint
from gpt2.serving import choices as choices_lib
from gpt2.serving import embeddings as embeddings_lib
from gpt2.serving import engine as engine_lib
from gpt2.serving import parsing
from gpt2.serving import responses
from gpt2.serving.errors import APIError

RETRY_AFTER = '1'  # seconds, for a 503


@dataclasses.dataclass
class Settings:
    model_name: str
    enc: object  # the model's encoder.Encoder
    hparams: object
    engine: engine_lib.Engine
    api_key: object  # None: no key asked
    max_body_bytes: int
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))


def settings(request):
    return request.app.state.settings


def check_key(request):
    """401 unless the request carries `Authorization: Bearer KEY` for the server's --api_key."""
    key = settings(request).api_key
    if key is None:
        return
    given = request.headers.get('authorization', '')
    if not hmac.compare_digest(given.encode(), f'Bearer {key}'.encode()):
        raise APIError(401, 'a wrong or missing API key: send "Authorization: Bearer KEY"', code='invalid_api_key')


async def read_json(request):
    """The body, at most max_body_bytes (413 past it), as a JSON object (400 otherwise)."""
    limit = settings(request).max_body_bytes
    too_big = APIError(413, f'the body is over {limit} bytes (the server\'s --max_body_bytes)')
    declared = request.headers.get('content-length', '')
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_big
    return parsing.parse_json(bytes(body))


def check_ready(request):
    if not settings(request).engine.ready.is_set():
        raise APIError(503, 'the model is still loading', headers={'Retry-After': RETRY_AFTER})


# ---------------------------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------------------------

async def health(request):
    ready = settings(request).engine.ready.is_set()
    return JSONResponse({'status': 'ok' if ready else 'loading'}, status_code=200 if ready else 503)


async def models(request):
    check_key(request)
    s = settings(request)
    return JSONResponse({'object': 'list', 'data': [
        {'id': s.model_name, 'object': 'model', 'created': s.created, 'owned_by': 'gpt-2',
         'max_model_len': s.hparams.n_ctx}]})


async def completions(request):
    check_key(request)
    s = settings(request)
    body = await read_json(request)
    completion = parsing.completion(body, model_name=s.model_name, enc=s.enc, n_ctx=s.hparams.n_ctx,
                                     n_vocab=s.hparams.n_vocab)
    check_ready(request)
    job = engine_lib.Job(completion, asyncio.get_running_loop())
    try:
        s.engine.submit(job)
    except engine_lib.QueueFull:
        raise APIError(503, 'the queue is full; try again shortly', headers={'Retry-After': RETRY_AFTER}) from None
    header = responses.Header(f'cmpl-{uuid.uuid4().hex}', int(time.time()), s.model_name, completion.include_usage)
    if completion.stream:
        return StreamingResponse(stream(job, header, s.enc), media_type='text/event-stream')
    try:
        kind, value = await next_event(job, 'done')
    finally:
        job.cancelled = True  # answered, failed, or the client went away: no more events
    return JSONResponse(responses.completion(header.ident, header.created, s.model_name, completion, value))


async def next_event(job, wanted):
    """The job's next event of kind `wanted` or 'error' (raised as its APIError)."""
    while True:
        kind, *value = await job.events.get()
        if kind == 'error':
            raise value[0]
        if kind == wanted:
            return kind, value[0]


async def stream(job, header, enc):
    """A streamed completion's server-sent events: chunks of each choice's text as its tokens are drawn (with
    logprobs asked, a chunk per token with its logprobs), each choice's last chunk with its finish_reason, the
    usage (with stream_options.include_usage), [DONE]."""
    request = job.request
    stops = request.stop + [checkpoint.ENDOFTEXT]
    texts = {index: responses.TextStream(enc, stops, enc.decode(ids) if request.echo else '')
             for index, _, ids in request.rows()}
    scores = {index: choices_lib.StreamedLogprobs(enc, request.logprobs) for index in texts}
    try:
        for index, text in texts.items():
            if text.prefix:
                yield header.chunk(index, text.prefix)
        while True:
            kind, *value = await job.events.get()
            if kind == 'token':
                index, token, drawn = value
                new = texts[index].add(token)
                if request.logprobs is not None:
                    yield header.chunk(index, new, logprobs=scores[index].add(token, drawn))
                elif new:
                    yield header.chunk(index, new)
            elif kind == 'error':
                yield responses.event(value[0].body())
                break
            else:
                for choice in value[0]:
                    yield header.chunk(choice.index, texts[choice.index].rest(choice.text), choice.finish_reason)
                if header.include_usage:
                    yield header.usage_chunk(request, value[0])
                break
        yield responses.DONE
    finally:
        job.cancelled = True  # done, or the client went away: its rows are freed at the next step


async def embeddings(request):
    """The pooled final hidden states of the inputs, run on the engine's side thread (not the event loop)."""
    check_key(request)
    s = settings(request)
    ask = embeddings_lib.parse(await read_json(request), model_name=s.model_name, enc=s.enc, n_ctx=s.hparams.n_ctx,
                               n_vocab=s.hparams.n_vocab, n_embd=s.hparams.n_embd)
    check_ready(request)
    vectors = await s.engine.side(lambda model: model.gen.embed(ask.inputs, pooling=ask.pooling))
    return JSONResponse(embeddings_lib.response(ask, vectors, s.model_name))


async def tokenize(request):
    check_key(request)
    s = settings(request)
    tokens = parsing.tokenize(await read_json(request), s.enc)
    return JSONResponse({'tokens': tokens, 'count': len(tokens), 'max_model_len': s.hparams.n_ctx})


async def detokenize(request):
    check_key(request)
    s = settings(request)
    return JSONResponse({'prompt': parsing.detokenize(await read_json(request), s.enc, s.hparams.n_vocab)})


async def tokenizer_info(request):
    check_key(request)
    s = settings(request)
    return JSONResponse({'tokenizer_class': 'GPT2Tokenizer', 'eos_token': checkpoint.ENDOFTEXT,
                         'bos_token': checkpoint.ENDOFTEXT, 'pad_token': None, 'unk_token': checkpoint.ENDOFTEXT,
                         'model_max_length': s.hparams.n_ctx, 'vocab_size': s.hparams.n_vocab})


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------

async def api_error(request, err):
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def http_error(request, err):
    """Starlette's own 404 (no such path) and 405 (wrong method), in OpenAI's shape."""
    message = f'no route {request.method} {request.url.path}' if err.status_code in (404, 405) else err.detail
    return await api_error(request, APIError(err.status_code, message))


async def server_error(request, err):
    return await api_error(request, APIError(500, f'internal error: {type(err).__name__}: {err}'))


def create_app(s):
    """The Starlette app over Settings s."""
    routes = [Route('/health', health), Route('/v1/models', models),
              Route('/v1/completions', completions, methods=['POST']),
              Route('/v1/embeddings', embeddings, methods=['POST']),
              Route('/tokenize', tokenize, methods=['POST']), Route('/detokenize', detokenize, methods=['POST']),
              Route('/tokenizer_info', tokenizer_info)]
    app = Starlette(routes=routes, exception_handlers={APIError: api_error, HTTPException: http_error,
                                                       Exception: server_error})
    app.state.settings = s
    return app


# ---------------------------------------------------------------------------------------------------------------
# The process
# ---------------------------------------------------------------------------------------------------------------

class Server(uvicorn.Server):
    """uvicorn's server, whose SIGTERM or SIGINT stops accepting, lets what is in flight finish, and returns.
    uvicorn's own handling re-raises the signal once its shutdown is done, so the process would end by the
    signal (exit -15), not 0 as a service manager expects of a clean stop."""

    @contextlib.contextmanager
    def capture_signals(self):
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(s, *, host, port):
    """Serve until SIGTERM or SIGINT; the engine finishes its queue and closes the session. -> whether the
    model loaded (False: s.engine.failure says why)."""
    config = uvicorn.Config(create_app(s), host=host, port=port, log_level='warning', lifespan='off',
                            timeout_graceful_shutdown=None)
    server = Server(config)

    def failed(message):  # on the engine thread: the model did not load
        server.should_exit = True

    s.engine.on_failure = failed
    # The scripts end quietly on a closed pipe (runtime.setup_process); a server must not end when a client
    # closes its connection mid-answer: the write fails with EPIPE instead, and asyncio drops that connection.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    s.engine.start()
    server.run()
    s.engine.stop()
    return s.engine.failure is None
