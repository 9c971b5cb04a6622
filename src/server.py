#!/usr/bin/env python3
"""Serve GPT-2 over HTTP: OpenAI's completions API, as vLLM serves it for a base model (docs/serving.md).

The routes and the process: gpt2/serving/app.py; reading requests: gpt2/serving/parsing.py; the thread that
owns the TensorFlow session and runs the decoding loop: gpt2/serving/engine.py and slots.py.
"""
import fire

from gpt2.base import flags, runtime

if __name__ == '__main__':
    flags.check_script_early(__file__)  # a misspelled flag is refused before TensorFlow's seconds of loading
tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
import sample  # noqa: E402
from gpt2 import loading  # noqa: E402
from gpt2.sampling import rules  # noqa: E402
from gpt2.serving import app  # noqa: E402
from gpt2.serving import engine as engine_lib  # noqa: E402


def check_flags(*, host, port, api_key, max_batch_size, max_queue, max_body_bytes):
    """-> the API key as text (fire reads --api_key 123 as a number), or None."""
    if not isinstance(host, str) or not host:
        raise flags.UsageError(f'--host must be a host name or address, e.g. 127.0.0.1, got {host!r}')
    flags.whole_number('port', port, 1, 65535)
    flags.whole_number('max_batch_size', max_batch_size, 1)
    flags.whole_number('max_queue', max_queue, 1)
    flags.whole_number('max_body_bytes', max_body_bytes, 1024)
    if api_key is None:
        return None
    if isinstance(api_key, bool) or str(api_key) == '':
        raise flags.UsageError('--api_key must be the key clients send (Authorization: Bearer KEY), got '
                               f'{api_key!r}')
    return str(api_key)


@flags.script(
    "Serve GPT-2 over HTTP with OpenAI's completions API (POST /v1/completions, GET /v1/models), the tokenizer's "
    'routes lm_eval calls, and GET /health (200 once the model is loaded). SIGTERM finishes what is in flight and '
    'exits 0.',
    host='the address to listen on; default 127.0.0.1 (this machine only). 0.0.0.0 listens on every address.',
    port='the port to listen on; default 8000.',
    api_key='a key every client must send (Authorization: Bearer KEY, as the openai client sends OPENAI_API_KEY); '
            'by default none is asked.',
    max_batch_size='the most rows (prompts x n) decoding at once; default 8. Requests join and leave the running '
                   'batch step by step, whatever their knobs; the cache holds this many windows.',
    max_queue='the most requests waiting; one more is answered 503 with Retry-After. Default 64.',
    max_body_bytes='the largest request body, in bytes; a larger one is answered 413. Default 8 MiB.',
    precision="float32 (the default) or int8: the decoding loop's products in 8-bit integers, the weights quantized "
              'per output column, the activations per row; faster on a CPU, a CPU only.')
def serve(model_name='124M', models_dir='models', checkpoint='latest', host='127.0.0.1', port=8000, api_key=None,
          max_batch_size=8, max_queue=64, max_body_bytes=8 << 20, precision='float32'):
    precision = rules.check_precision(precision, on_cpu=sample.on_cpu(sample.default_device()),
                                      choices=rules.NOT_HALF)
    api_key = check_flags(host=host, port=port, api_key=api_key, max_batch_size=max_batch_size,
                          max_queue=max_queue, max_body_bytes=max_body_bytes)
    # The folder is checked here, at once; the weights load on the engine thread while /health answers 503.
    _, hparams, enc = loading.load_model(model_name, models_dir, checkpoint)
    engine = engine_lib.Engine(engine_lib.loader(model_name, models_dir, checkpoint, max_batch_size, precision),
                               max_batch_size=max_batch_size, max_queue=max_queue)
    settings = app.Settings(model_name=model_name, enc=enc, hparams=hparams, engine=engine, api_key=api_key,
                            max_body_bytes=max_body_bytes)
    if not app.serve(settings, host=host, port=port):
        flags.fail(engine.failure, code=1)


if __name__ == '__main__':
    runtime.setup_process()
    fire.Fire(serve, command=flags.check_argv(serve))
