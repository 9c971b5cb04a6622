"""POST /v1/embeddings: reading its body into a checked Embeddings request, and writing the answer in OpenAI's
shape. The embeddings themselves are the Generator's (gpt2/sampling/generator.py, embed), run on the engine's
side thread (app.py)."""
import base64
import dataclasses

import numpy as np

from gpt2.sampling import hidden
from gpt2.serving import parsing
from gpt2.serving.errors import APIError, bad

FORMATS = ('float', 'base64')
MAX_INPUTS = 2048  # OpenAI's limit on inputs per request


@dataclasses.dataclass
class Embeddings:
    """A checked embeddings request. inputs: token id lists, one per input, none empty nor past the window."""
    inputs: list
    encoding_format: str
    pooling: str


def choice(body, name, allowed, default):
    value = body.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise bad(f'{name} must be one of {", ".join(map(repr, allowed))}; got {value!r}', name)
    return value


def parse(body, *, model_name, enc, n_ctx, n_vocab, n_embd):
    """The body of POST /v1/embeddings (a dict) -> an Embeddings, or an APIError."""
    parsing.check_model(body, model_name)
    if 'input' not in body:
        raise bad('input is required', 'input')
    value = body['input']
    if value == '' or (isinstance(value, list) and '' in value):
        raise bad('input must not be empty: an empty string has no tokens to embed', 'input')
    inputs = parsing.prompts(value, enc, n_vocab, name='input')
    if len(inputs) > MAX_INPUTS:
        raise bad(f'input holds {len(inputs)} inputs; at most {MAX_INPUTS} per request', 'input')
    longest = max(range(len(inputs)), key=lambda i: len(inputs[i]))
    if len(inputs[longest]) > n_ctx:
        raise APIError(400, f"this model's window is {n_ctx} tokens; input {longest} has {len(inputs[longest])} "
                            'tokens', 'input', code='context_length_exceeded')
    dimensions = body.get('dimensions')
    if dimensions is not None and dimensions != n_embd:
        raise bad(f'dimensions must be the model\'s width, {n_embd}, or left out; got {dimensions!r}',
                  'dimensions')
    return Embeddings(inputs=inputs, encoding_format=choice(body, 'encoding_format', FORMATS, 'float'),
                      pooling=choice(body, 'pooling', hidden.POOLINGS, 'mean'))


def encoded(vector, encoding_format):
    """One embedding [n_embd] -> a list of floats, or (base64, as OpenAI's) its little-endian float32 bytes."""
    if encoding_format == 'base64':
        return base64.b64encode(np.asarray(vector, '<f4').tobytes()).decode('ascii')
    return np.asarray(vector, np.float32).tolist()


def response(request, vectors, model_name):
    """The answer: OpenAI's list of embeddings, in the order of the inputs, and the usage (no completion)."""
    tokens = sum(len(ids) for ids in request.inputs)
    return {'object': 'list', 'model': model_name,
            'data': [{'object': 'embedding', 'index': i, 'embedding': encoded(v, request.encoding_format)}
                     for i, v in enumerate(vectors)],
            'usage': {'prompt_tokens': tokens, 'total_tokens': tokens}}
