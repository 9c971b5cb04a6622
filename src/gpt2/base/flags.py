"""What every command-line script shares, without TensorFlow: --help from a line per flag, flag checks, and
bad input ending in one `error:` line and a non-zero exit (2 for a flag, 1 for a model), not a traceback.
encode.py uses it without loading TensorFlow."""
import functools
import inspect
import os
import sys

from gpt2.base import checkpoint


class UsageError(Exception):
    """A flag out of range or of the wrong type. The message names the flag and what it accepts."""


# The --help line of each flag the scripts share; each script adds its own.
COMMON_FLAGS = {
    'model_name': 'the model to use, a folder in models_dir: 124M, 355M, 774M or 1558M.',
    'seed': 'a whole number that makes the samples repeatable; by default they differ on every run.',
    'batch_size': 'how many samples to draw at once; more is faster per sample and uses more memory.',
    'temperature': 'divides the logits; below 1 the text is more predictable, above 1 more random, 0 is greedy.',
    'top_k': 'draw only from the k most likely tokens at each step; 0 (the default) means no limit. '
             '40 is a good value.',
    'top_p': 'draw only from the most likely tokens whose probabilities add up to at most top_p (nucleus '
             'sampling), in (0, 1]; 1 (the default) means no limit.',
    'models_dir': 'the folder holding the model folders; a relative path is looked up in the working '
                  'directory, then in the repository.',
    'stop_at_endoftext': 'end each sample at its first <|endoftext|> token (which is not printed).',
    'repetition_penalty': "CTRL's repetition penalty, as in Hugging Face transformers: the logit of a token already "
                          'in the prompt or sample is divided by it when positive, multiplied when negative; '
                          '1 (the default) is off, 1.2 is a common value.',
    'presence_penalty': "OpenAI's presence penalty: subtracted from the logit of every token already in the prompt "
                        'or sample; 0 (the default) is off.',
    'frequency_penalty': "OpenAI's frequency penalty: subtracted from a token's logit once per time it is already in "
                         'the prompt or sample; 0 (the default) is off.',
    'no_repeat_ngram_size': 'never repeat an n-gram of this many tokens (of the prompt and sample), as in Hugging '
                            'Face transformers; 0 (the default) is off.',
    'context_keep': "for samples past the model's window (--length): when the tokens before the next are more "
                    'than the window, the model goes on from their last CONTEXT_KEEP tokens (recomputed in one '
                    'pass), 1 to the window; by default half of it (512).',
    'stop': 'end each sample where its text first contains TEXT (not printed); repeat --stop for more '
            'strings, or give a list. \\n and \\t stand for a newline and a tab. A batch ends once every '
            'sample has stopped.',
    'checkpoint': "which of a training run's checkpoints to load: latest (the default), best (the lowest "
                  "validation loss, with train.py --keep_best) or a step, e.g. 1000.",
}


def script(summary, **own_flags):
    """Decorate a script's main function for fire: its docstring becomes the --help manual (the summary, then
    a line per flag in the order of the signature), and its errors become one-line messages."""
    def decorate(main):
        wrapper = friendly_errors(main)
        docs = {**COMMON_FLAGS, **own_flags}
        flags = inspect.signature(main).parameters
        wrapper.__doc__ = f'{summary}\n\nArgs:\n' + ''.join(f'  {name}: {docs[name]}\n' for name in flags)
        return wrapper
    return decorate


def friendly_errors(main):
    """Wrap a script's main function: a bad flag or a broken model folder ends with one line on stderr and a
    non-zero exit (2 for a flag, 1 for the model), not a traceback."""
    @functools.wraps(main)
    def wrapper(*args, **flags):
        try:
            return main(*args, **flags)
        except UsageError as err:
            fail(err, code=2)
        except checkpoint.ModelError as err:
            fail(err, code=1)
    return wrapper


def fail(message, code):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(code)


def whole_number(name, value, low, high=None, *, allow_none=False):
    """value must be an int in [low, high]; fire hands over whatever the user typed, e.g. the string 'abc'."""
    if value is None and allow_none:
        return value
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        upper = f' and {high}' if high is not None else ' or more'
        raise UsageError(f'--{name} must be a whole number {"between " if high is not None else ""}{low}{upper}, '
                         f'got {value!r}')
    return value


def number(name, value, low, high, *, low_open=False, what=None):
    """value must be a real number in [low, high] (or (low, high] when low_open)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and (value < low or (low_open and value == low) or value > high):
        ok = False
    if not ok:
        raise UsageError(f'--{name} must be {what or f"a number from {low} to {high}"}, got {value!r}')
    return float(value)


def switch(name, value):
    """value must be True or False: a flag that takes no value (--overwrite), or is given true/false. fire hands
    over whatever followed the flag, e.g. --overwrite 3 gives the number 3."""
    if not isinstance(value, bool):
        raise UsageError(f'--{name} takes no value (or true/false), got {value!r}')
    return value


def folder_name(name, value):
    """value must name one folder (e.g. --model_name 124M), not a path."""
    if not isinstance(value, str) or not value or os.sep in value:
        raise UsageError(f'--{name} must be a folder name such as 124M, got {value!r}')
    return value
