"""Reading a request body: the JSON object of POST /v1/completions (and the tokenizer's routes) -> a checked
Completion, or an APIError (400, 404) naming the parameter. Nothing here runs the model."""
import dataclasses
import json
import math

from gpt2.base import checkpoint
from gpt2.serving.errors import APIError, bad

MAX_N = 128  # choices per prompt
MAX_LOGPROBS = 5  # OpenAI's limit
# Parameters OpenAI's API has and this server does not honour: refused rather than silently ignored.
UNSUPPORTED = ('suffix', 'logit_bias')


@dataclasses.dataclass
class Completion:
    """A checked completions request. prompts: token id lists, one per prompt (never empty)."""
    prompts: list
    max_tokens: int
    n: int
    echo: bool
    logprobs: object  # None, or how many top log-probabilities per token (0 to 5)
    stream: bool
    include_usage: bool
    seed: object  # None, or 0 .. 2**32 - 1
    stop: list  # the request's stop strings
    knobs: dict  # temperature, top_k, top_p, repetition_penalty, presence_penalty, frequency_penalty,
    #              no_repeat_ngram_size: as gpt2.sampling.generator.Generator.feed takes them

    def rows(self):
        """(choice index, prompt index, token ids) of every choice: index = prompt index x n + j."""
        return [(p * self.n + j, p, ids) for p, ids in enumerate(self.prompts) for j in range(self.n)]


def parse_json(body):
    """Bytes -> a JSON object (dict), or a 400."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise bad(f'the body is not valid JSON: {err}') from None
    if not isinstance(value, dict):
        raise bad(f'the body must be a JSON object, got {type(value).__name__}')
    return value


# ---------------------------------------------------------------------------------------------------------------
# One value each
# ---------------------------------------------------------------------------------------------------------------

def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def integer(body, name, default, low, high=None):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not is_int(value) or value < low or (high is not None and value > high):
        upper = f' to {high}' if high is not None else ' or more'
        raise bad(f'{name} must be a whole number, {low}{upper}; got {value!r}', name)
    return value


def real(body, name, default, low, high, *, low_open=False):
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or value > high or (low_open and value == low):
        bounds = f'above {low} and at most {high}' if low_open else f'from {low} to {high}'
        raise bad(f'{name} must be a number {bounds}; got {value!r}', name)
    return float(value)


def boolean(body, name, default=False):
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(f'{name} must be true or false; got {value!r}', name)
    return value


def stop_strings(value):
    """stop: null, a string or a list of strings -> a list of non-empty strings."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(s, str) for s in values):
        raise bad(f'stop must be a string or a list of strings; got {value!r}', 'stop')
    return [s for s in values if s]


# ---------------------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------------------

def prompts(value, enc, n_vocab, name='prompt'):
    """A prompt in its four forms (a string, a list of strings, a list of token ids, a list of such lists) ->
    token id lists. In text, '<|endoftext|>' is its one token; an empty string is that token alone, as for the
    Generator (a sample from nothing)."""
    if isinstance(value, str):
        return [encode(value, enc)]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return [encode(v, enc) for v in value]
        if all(is_int(v) for v in value):
            return [token_ids(value, n_vocab, name)]
        if all(isinstance(v, list) for v in value):
            return [token_ids(v, n_vocab, name) for v in value]
    raise bad(f'{name} must be a string, a list of strings, a list of token ids or a list of such lists, none '
              f'empty', name)


def encode(text, enc):
    endoftext = enc.encoder[checkpoint.ENDOFTEXT]
    return enc.encode(text, allowed_special={checkpoint.ENDOFTEXT}) or [endoftext]


def token_ids(values, n_vocab, name):
    if not values or not all(is_int(v) for v in values):
        raise bad(f'{name}: a list of token ids must hold whole numbers, at least one', name)
    outside = [v for v in values if not 0 <= v < n_vocab]
    if outside:
        raise bad(f'{name}: token id {outside[0]} is outside the vocabulary (0 to {n_vocab - 1})', name)
    return list(values)


# ---------------------------------------------------------------------------------------------------------------
# POST /v1/completions
# ---------------------------------------------------------------------------------------------------------------

def check_model(body, model_name):
    model = body.get('model')
    if model is not None and model != model_name:
        raise APIError(404, f'the model {model!r} does not exist; this server serves {model_name!r}', 'model',
                       code='model_not_found')


def completion(body, *, model_name, enc, n_ctx, n_vocab):
    """The body of POST /v1/completions (a dict) -> a Completion, or an APIError."""
    check_model(body, model_name)
    for name in UNSUPPORTED:
        if body.get(name):
            raise bad(f'{name} is not supported by this server', name)
    if 'prompt' not in body:
        raise bad('prompt is required', 'prompt')
    ids = prompts(body['prompt'], enc, n_vocab)
    echo = boolean(body, 'echo')
    max_tokens = integer(body, 'max_tokens', 16, 0)
    if max_tokens == 0 and not echo:
        raise bad('max_tokens must be at least 1 (0 only with echo)', 'max_tokens')
    longest = max(map(len, ids))
    if longest + max_tokens > n_ctx:
        raise APIError(400, f"this model's window is {n_ctx} tokens; the prompt has {longest} tokens and "
                            f'max_tokens is {max_tokens}: give at most {max(n_ctx - longest, 0)} for this prompt',
                       'max_tokens', code='context_length_exceeded')
    stream = boolean(body, 'stream')
    logprobs = integer(body, 'logprobs', None, 0, MAX_LOGPROBS)
    options = body.get('stream_options')
    if options is not None and (not isinstance(options, dict) or not stream):
        raise bad('stream_options must be an object, and only with stream', 'stream_options')
    if stream and echo and logprobs is not None:
        raise bad('logprobs with echo and stream is not supported: ask without stream, or without echo', 'logprobs')
    seed = body.get('seed')
    if seed is not None and not is_int(seed):
        raise bad(f'seed must be a whole number; got {seed!r}', 'seed')
    return Completion(
        prompts=ids, max_tokens=max_tokens, n=integer(body, 'n', 1, 1, MAX_N), echo=echo, logprobs=logprobs,
        stream=stream, include_usage=boolean(options or {}, 'include_usage'),
        seed=None if seed is None else seed % 2**32, stop=stop_strings(body.get('stop')), knobs=knobs(body))


def knobs(body):
    """The sampling knobs, in the Generator's names. top_k -1 (vLLM's off) is 0 (the scripts' off)."""
    top_k = integer(body, 'top_k', 0, -1)
    big = 1e30
    return dict(
        temperature=real(body, 'temperature', 1.0, 0, 2), top_k=max(top_k, 0),
        top_p=real(body, 'top_p', 1.0, 0, 1, low_open=True),
        repetition_penalty=real(body, 'repetition_penalty', 1.0, 0, big, low_open=True),
        presence_penalty=real(body, 'presence_penalty', 0.0, -2, 2),
        frequency_penalty=real(body, 'frequency_penalty', 0.0, -2, 2),
        no_repeat_ngram_size=integer(body, 'no_repeat_ngram_size', 0, 0))


# ---------------------------------------------------------------------------------------------------------------
# The tokenizer's routes (lm_eval's RemoteTokenizer)
# ---------------------------------------------------------------------------------------------------------------

def tokenize(body, enc):
    """POST /tokenize {"prompt": text} -> token ids; '<|endoftext|>' is its one token (the one special token),
    whatever add_special_tokens says: GPT-2 adds none."""
    text = body.get('prompt')
    if not isinstance(text, str):
        raise bad('prompt must be a string', 'prompt')
    return enc.encode(text, allowed_special={checkpoint.ENDOFTEXT})


def detokenize(body, enc, n_vocab):
    """POST /detokenize {"tokens": [ids]} -> the text."""
    tokens = body.get('tokens')
    if not isinstance(tokens, list):
        raise bad('tokens must be a list of token ids', 'tokens')
    return enc.decode(token_ids(tokens, n_vocab, 'tokens')) if tokens else ''
