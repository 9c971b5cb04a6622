"""What every command-line script shares, without TensorFlow: --help from a line per flag, flag checks, and
bad input ending in one `error:` line and a non-zero exit (2 for a flag, 1 for a model), not a traceback.
encode.py uses it without loading TensorFlow."""
import ast
import difflib
import functools
import inspect
import os
import re
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
    'precision': 'float32 (the default); int8: every product of the model in 8-bit integers, the weights '
                 'quantized per output column, the activations per row, faster on a CPU, a CPU only; float16 or '
                 "bfloat16: the products' weights (and sampling's cache of keys and values) in half precision, "
                 'the layer norms, softmax and the logits in float32, a GPU only.',
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


# ---------------------------------------------------------------------------------------------------------------
# Unknown flags: refused before the work starts
# ---------------------------------------------------------------------------------------------------------------
# fire calls a script's function with the flags it can bind, and complains about the rest only once the function
# returns: `train.py --stpes 1` would train forever with --steps at its default. check_argv reads the command
# line as fire will (fire.core._ParseKeywordArgs: --name=value, --name value, --name alone or --noname for a
# boolean, -n for the one flag starting with n, - followed by a digit is a value), and refuses what fire would
# leave over, before anything runs.

HELP = ('-h', '--help')


def check_argv(main_or_commands, argv=None, *, lenient=False):
    """The command line (sys.argv[1:] by default) for fire.Fire(main_or_commands, command=...), a function or a
    dict of commands (name -> function), after checking it against the function's parameters (the chosen
    command's) -> the argv to hand fire: as given, or a request for that function's --help when -h or --help is
    among its flags (fire alone shows help only for a first one, and runs the job otherwise).

    An unknown command or flag, an ambiguous -x or a value no parameter takes: one `error:` line naming it (and
    the nearest real name), exit 2. What follows fire's `--` separator is fire's own flags, left to it.
    lenient: refuse only an unknown command or flag that no flag before it could take as its value (for a
    command line that the script changes before fire reads it; see check_script_early)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, _ = split_fire_flags(argv)  # what follows `--` is for fire
    command, main = [], main_or_commands
    if isinstance(main_or_commands, dict):
        if not own or own[0] in HELP:
            return argv  # fire lists the commands
        name = own[0] if own[0] in main_or_commands else own[0].replace('-', '_')
        if name not in main_or_commands:
            fail(f'unknown command {own[0]}{suggestion(name, main_or_commands, prefix="")} (the commands: '
                 f'{", ".join(main_or_commands)})', code=2)
        command, main, own = own[:1], main_or_commands[name], own[1:]
    try:
        wants_help = check_flags(parameters(main), own, lenient=lenient)
    except UsageError as err:
        fail(err, code=2)
    return command + ['--help'] if wants_help else argv


def parameters(main):
    """A function's parameters (inspect.Parameter), through the wrapper of script(); a list is taken as they."""
    return main if isinstance(main, list) else list(inspect.signature(main).parameters.values())


def split_fire_flags(argv):
    """-> (the command's arguments, fire's own flags): those after the last `--`, as fire splits them."""
    if '--' not in argv:
        return argv, []
    last = len(argv) - 1 - argv[::-1].index('--')
    return argv[:last], argv[last + 1:]


def is_flag(arg):
    """Whether fire reads arg as a flag: -x, -x=..., --anything; not -1 or -.5, which are values."""
    return arg.startswith('--') or re.match(r'^-[a-zA-Z]', arg) is not None


def check_flags(params, args, *, lenient=False):
    """Raise UsageError for the first of args that fire would not bind to the parameters params -> whether -h or
    --help is among them, unbound (a request for help). lenient: see check_argv."""
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return any(arg in HELP for arg in args)  # every flag binds
    names = [p.name for p in params if p.kind is not p.VAR_POSITIONAL]
    bound, values, wants_help, skip = set(), [], False, False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if not is_flag(arg):
            values.append(arg)
            continue
        last = index + 1 == len(args)
        alone = '=' not in arg and (last or (is_flag(args[index + 1]) and not lenient))
        name = flag_name(arg, names, alone or lenient)
        if name is None and arg in HELP:
            wants_help = True
        elif name is None:
            raise UsageError(f'unknown flag {arg.split("=", 1)[0]}{suggestion(key(arg), names) or " (see --help)"}')
        else:
            bound.add(name)
        skip = '=' not in arg and not alone  # --name value: the next argument is the value
    if not lenient:
        check_values(params, bound, values)
    return wants_help


def flag_name(arg, names, alone):
    """The parameter that fire binds the flag arg to, or None. alone: no value follows (--name alone or --noname
    is a boolean)."""
    name = key(arg)
    if name in names:
        return name
    if alone and name.startswith('no') and name[2:] in names:
        return name[2:]
    if arg == '-h':
        return None  # always help, even for a script with a flag starting with h (server.py's --host)
    if len(name) == 1:  # fire's shortcut: -n for the one parameter starting with n
        starting = [n for n in names if n[0] == name]
        if len(starting) > 1:
            raise UsageError(f'{arg.split("=", 1)[0]} is ambiguous: it could be '
                             f'{" or ".join("--" + n for n in starting)}')
        return starting[0] if starting else None
    return None


def check_values(params, bound, values):
    """Values without a flag fill main's positional parameters not set by a flag, in order, as fire fills them;
    UsageError for one left over."""
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    room = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in bound]
    if len(values) > len(room):
        raise UsageError(f'unexpected argument {values[len(room)]!r}: no flag before it, and no parameter left to '
                         f'take it (see --help)')


def key(arg):
    """The parameter name a flag spells, as fire reads it: --top-k=5 -> top_k."""
    return arg.lstrip('-').split('=', 1)[0].replace('-', '_')


def suggestion(typed, names, prefix='--'):
    """'; did you mean --NAME?' for the real name nearest to a mistyped one, or '' if none is near. A name cut
    short (--batch) means the one name it begins (--batch_size): fire takes no abbreviations but -x."""
    starting = [name for name in names if name.startswith(typed)]
    nearest = starting if len(starting) == 1 else difflib.get_close_matches(typed, list(names), n=1, cutoff=0.6)
    return f'; did you mean {prefix}{nearest[0]}?' if nearest else ''


# ---------------------------------------------------------------------------------------------------------------
# The same check before TensorFlow loads
# ---------------------------------------------------------------------------------------------------------------
# A script imports TensorFlow first (runtime.import_tensorflow), seconds before its functions are defined and
# its __main__ block runs check_argv. To refuse a misspelled flag without that wait, the script calls
# check_script_early(__file__) just before that import; it reads the script's source for the check_argv(...)
# call of its __main__ block and the parameters of the function (or dict of commands) handed to it. The check in
# __main__ stays the one that decides: what this cannot read, it leaves to that.

def check_script_early(script, argv=None):
    """check_argv(...) of script's `__main__` block (script: the running script's __file__), made from its source
    before the script loads TensorFlow, which takes seconds: an unknown flag or command ends the process with its
    one line and exit 2 at once. Strict when the call reads the command line as it is, lenient when it hands over
    a changed one (the sampling scripts' --stop list); what the source does not tell is left to that call."""
    try:
        with open(script, encoding='utf-8') as file:
            tree = ast.parse(file.read())
    except (OSError, SyntaxError, ValueError):
        return
    call, block = main_check_call(tree)
    target = call and call.args and static_target(call.args[0], tree.body + block.body)
    if target:
        check_argv(target, argv, lenient=len(call.args) > 1 or bool(call.keywords))


def main_check_call(tree):
    """-> (the check_argv call in the script's last `if __name__ == '__main__':` block, that block), or
    (None, None)."""
    blocks = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) in
              ("__name__ == '__main__'", '__name__ == "__main__"')]
    for block in reversed(blocks):
        for node in ast.walk(block):
            if isinstance(node, ast.Call) and 'check_argv' in (getattr(node.func, 'attr', None),
                                                               getattr(node.func, 'id', None)):
                return node, block
    return None, None


def static_target(node, statements):
    """What check_argv's first argument names, read from the source: a function -> its parameters (a list of
    inspect.Parameter), a dict of them -> name -> parameters; None for anything else."""
    if isinstance(node, ast.Dict):
        keys = [k.value if isinstance(k, ast.Constant) else None for k in node.keys]
        values = [static_target(v, statements) for v in node.values]
        ok = all(isinstance(k, str) for k in keys) and all(isinstance(v, list) for v in values)
        return dict(zip(keys, values)) if ok else None
    if not isinstance(node, ast.Name):
        return None
    for at in reversed(range(len(statements))):  # the last definition of the name
        statement = statements[at]
        if isinstance(statement, ast.FunctionDef) and statement.name == node.id:
            return ast_parameters(statement.args)
        if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and getattr(statement.targets[0], 'id', None) == node.id):
            return static_target(statement.value, statements[:at])  # its value names what came before
    return None


def ast_parameters(args):
    """A function's ast.arguments -> its parameters (inspect.Parameter; the kinds are what check_flags needs)."""
    P = inspect.Parameter
    kinds = [(args.posonlyargs, P.POSITIONAL_ONLY), (args.args, P.POSITIONAL_OR_KEYWORD),
             ([args.vararg] if args.vararg else [], P.VAR_POSITIONAL), (args.kwonlyargs, P.KEYWORD_ONLY),
             ([args.kwarg] if args.kwarg else [], P.VAR_KEYWORD)]
    return [P(arg.arg, kind) for group, kind in kinds for arg in group]
