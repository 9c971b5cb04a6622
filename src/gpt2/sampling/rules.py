"""The sampling flags' rules, shared by the sampling scripts, train.py's samples and the Generator: each check
takes what the user typed and returns the value to use, or raises flags.UsageError naming the flag."""
from gpt2.base import flags
from gpt2.sampling import half
from gpt2.sampling import penalties

# The precisions sampling and scoring multiply in (--precision): float32; int8 on a CPU (gpt2/sampling/int8.py);
# float16 and bfloat16 on a GPU (gpt2/sampling/half.py). NOT_HALF: those of the model server, whose loop has no
# half-precision cache yet.
NOT_HALF = ('float32', 'int8')
PRECISIONS = NOT_HALF + half.PRECISIONS


def check_sampling_flags(*, nsamples, batch_size, temperature, top_k, top_p, seed, min_nsamples=0):
    """-> the batch size to build the sampling graph with: never more rows than samples wanted (nsamples 0 wants
    them forever), since every batch is sampled at that size (see print_samples)."""
    flags.whole_number('nsamples', nsamples, min_nsamples)
    flags.whole_number('batch_size', batch_size, 1)
    flags.number('temperature', temperature, 0, float('inf'), what='a number, 0 or more (0 means greedy)')
    flags.whole_number('top_k', top_k, 0)
    flags.number('top_p', top_p, 0, 1, low_open=True, what='a number above 0 and at most 1 (1 keeps every token)')
    flags.whole_number('seed', seed, 0, 2**32 - 1, allow_none=True)  # NumPy's seeds are 32-bit
    return min(batch_size, nsamples) if nsamples else batch_size


def check_stops(stop):
    """--stop: None, one string or a list of them (see gather_repeated) -> a list of stop strings, with \\n and
    \\t in them standing for a newline and a tab (which a shell makes hard to type), and \\\\ for a backslash."""
    if stop is None:
        return []
    values = list(stop) if isinstance(stop, (list, tuple)) else [stop]
    texts = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise flags.UsageError(f'--stop must be text, got {value!r}')
        text = unescape(str(value))
        if not text:
            raise flags.UsageError('--stop must not be empty: give the text a sample ends at, e.g. --stop "\\n\\n"')
        texts.append(text)
    return texts


def unescape(text):
    """\\n -> newline, \\t -> tab, \\\\ -> backslash; any other backslash stays as typed."""
    out, i = [], 0
    while i < len(text):
        pair = text[i:i + 2]
        if pair in ('\\n', '\\t', '\\\\'):
            out.append({'\\n': '\n', '\\t': '\t', '\\\\': '\\'}[pair])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return ''.join(out)


def gather_repeated(argv, name):
    """argv with every --name VALUE and --name=VALUE gathered into one --name=[...] at the first's place, so that
    a flag may be repeated (fire keeps only the last) and each value stays text (fire would read 5 as a number)."""
    flag, values, out, first = f'--{name}', [], [], None
    args = iter(argv)
    for arg in args:
        if arg == flag:
            value = next(args, None)
            if value is None:
                out.append(arg)
                continue
        elif arg.startswith(flag + '='):
            value = arg[len(flag) + 1:]
        else:
            out.append(arg)
            continue
        values.append(value)
        if first is None:
            first = len(out)
            out.append(None)
    if first is not None:
        out[first] = f'{flag}={values!r}'
    return out


def check_penalties(*, repetition_penalty, presence_penalty, frequency_penalty, no_repeat_ngram_size):
    """-> the penalties.Penalties of the flags (all off by default)."""
    big = 1e30  # finite: inf or nan would make every logit nan
    for name, value in (('repetition_penalty', repetition_penalty), ('presence_penalty', presence_penalty),
                        ('frequency_penalty', frequency_penalty)):
        if isinstance(value, float) and value != value:
            raise flags.UsageError(f'--{name} must be a number, got nan')
    return penalties.Penalties(
        repetition=flags.number('repetition_penalty', repetition_penalty, 0, big, low_open=True,
                                what='a number above 0 (1 is off; above 1 penalises repeats)'),
        presence=flags.number('presence_penalty', presence_penalty, -big, big, what='a finite number (0 is off)'),
        frequency=flags.number('frequency_penalty', frequency_penalty, -big, big,
                               what='a finite number (0 is off)'),
        no_repeat_ngram=flags.whole_number('no_repeat_ngram_size', no_repeat_ngram_size, 0))


def check_length(length, n_ctx, *, default, room_for_prompt=False):
    """length defaults to `default`; 1 or more: past the window, the model goes on from the last tokens
    (check_context_keep)."""
    if length is None:
        return default
    return flags.whole_number('length', length, 1)


def check_context_keep(context_keep, n_ctx):
    """--context_keep: by default half the window; 1 to the window."""
    if context_keep is None:
        return n_ctx // 2
    return flags.whole_number('context_keep', context_keep, 1, n_ctx)


def check_precision(precision, *, on_cpu, choices=PRECISIONS):
    """--precision: one of choices; int8 multiplies on a CPU only, float16 and bfloat16 on a GPU only (on_cpu:
    whether the graph is built for a CPU)."""
    if precision not in choices:
        raise flags.UsageError(f'--precision must be one of {", ".join(choices)}, got {precision!r}')
    if precision == 'int8' and not on_cpu:
        raise flags.UsageError('--precision int8 runs on a CPU only, and TensorFlow sees a GPU here: use '
                               'float32, or hide the GPU (CUDA_VISIBLE_DEVICES=)')
    if precision in half.PRECISIONS and on_cpu:
        # bfloat16 samples slower than float32 on a CPU (docs/performance.md; bench/gpu_check.py --on_cpu).
        raise flags.UsageError(f'--precision {precision} is for a GPU, and TensorFlow sees none here: on a CPU, '
                               'half precision samples slower than float32; use float32 or int8')
    return precision
