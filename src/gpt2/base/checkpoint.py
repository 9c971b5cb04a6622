"""Facts about the released GPT-2 checkpoints, and the checks that a model folder holds a usable one.

This is the one place that knows the model names, the files of a checkpoint, where they are downloaded from,
the variables a checkpoint must hold, and where the `models/` folder is. It imports TensorFlow only when a
function needs it (through runtime.import_tensorflow), so `download_model.py` starts fast.
"""
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

from gpt2.base import runtime

# The released sizes. name: (n_layer, n_embd, n_head); all share n_vocab 50257 and n_ctx 1024.
MODEL_SIZES = {
    '124M': (12, 768, 12),
    '355M': (24, 1024, 16),
    '774M': (36, 1280, 20),
    '1558M': (48, 1600, 25),
}
# Names the first releases used for the same weights.
LEGACY_NAMES = {'117M': '124M', '345M': '355M'}

MODEL_FILES = (
    'checkpoint',
    'encoder.json',
    'hparams.json',
    'model.ckpt.data-00000-of-00001',
    'model.ckpt.index',
    'model.ckpt.meta',
    'vocab.bpe',
)
CHECKPOINT_PREFIX = 'model.ckpt'
# TensorFlow's checkpoint state file, which names the folder's current checkpoint: model.ckpt in a released folder,
# the latest model-STEP in a training run's folder (see gpt2/training/run_folder.py).
STATE_FILE = 'checkpoint'
# Every model folder needs these besides its checkpoint's files.
MODEL_INFO_FILES = ('encoder.json', 'hparams.json', 'vocab.bpe')
# A file being downloaded is written as FILE + PARTIAL_SUFFIX and renamed only when complete.
PARTIAL_SUFFIX = '.part'

DEFAULT_BASE_URL = 'https://openaipublic.blob.core.windows.net/gpt-2'
BASE_URL_ENV = 'GPT2_DOWNLOAD_URL'

HPARAMS_KEYS = ('n_vocab', 'n_ctx', 'n_embd', 'n_head', 'n_layer')
ENDOFTEXT = '<|endoftext|>'

REPO_ROOT = Path(__file__).resolve().parents[3]  # src/gpt2/base/checkpoint.py
DEFAULT_MODELS_DIR = REPO_ROOT / 'models'


class ModelError(Exception):
    """A model folder that is missing, incomplete or inconsistent. The message says what to do."""


def download_hint(model_name):
    if model_name in MODEL_SIZES:
        return f'run `python download_model.py {model_name}` to fetch it'
    return f'run `python download_model.py NAME` with NAME one of {", ".join(MODEL_SIZES)} to fetch a model'


def resolve_models_dir(models_dir):
    """A relative models_dir is looked up in the working directory first, then next to the repo's `src/`, so
    that the default 'models' finds the repo's folder whether a script runs from the root or from src/."""
    path = Path(models_dir).expanduser()
    if path.is_absolute() or path.is_dir():
        return path
    return REPO_ROOT / path


def variable_shapes(hparams):
    """Every variable of the released checkpoints, name -> shape, for hparams with the HPARAMS_KEYS attributes."""
    e, v = hparams.n_embd, hparams.n_vocab
    shapes = {'model/wte': [v, e], 'model/wpe': [hparams.n_ctx, e], 'model/ln_f/g': [e], 'model/ln_f/b': [e]}
    for i in range(hparams.n_layer):
        h = f'model/h{i}'
        shapes.update({
            f'{h}/ln_1/g': [e], f'{h}/ln_1/b': [e],
            f'{h}/attn/c_attn/w': [1, e, 3 * e], f'{h}/attn/c_attn/b': [3 * e],
            f'{h}/attn/c_proj/w': [1, e, e], f'{h}/attn/c_proj/b': [e],
            f'{h}/ln_2/g': [e], f'{h}/ln_2/b': [e],
            f'{h}/mlp/c_fc/w': [1, e, 4 * e], f'{h}/mlp/c_fc/b': [4 * e],
            f'{h}/mlp/c_proj/w': [1, 4 * e, e], f'{h}/mlp/c_proj/b': [e],
        })
    return shapes


def parse_hparams(text, source='hparams.json'):
    """The five hyperparameters as a dict of positive ints; anything else is a ModelError."""
    try:
        values = json.loads(text)
    except ValueError as err:
        raise ModelError(f'{source} is not valid JSON ({err})') from None
    if not isinstance(values, dict):
        raise ModelError(f'{source} must hold a JSON object with the keys {", ".join(HPARAMS_KEYS)}')
    missing = [k for k in HPARAMS_KEYS if k not in values]
    unknown = sorted(set(values) - set(HPARAMS_KEYS))
    if missing or unknown:
        raise ModelError(f'{source}: missing keys {missing}, unknown keys {unknown}; '
                         f'expected exactly {", ".join(HPARAMS_KEYS)}')
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelError(f'{source}: {key} must be a positive whole number, got {value!r}')
    if values['n_embd'] % values['n_head']:
        raise ModelError(f'{source}: n_embd ({values["n_embd"]}) must be a multiple of n_head ({values["n_head"]})')
    return values


def read_hparams(model_dir):
    path = Path(model_dir) / 'hparams.json'
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f'cannot read {path} ({err})') from None
    return parse_hparams(text, source=str(path))


def checkpoint_files(prefix):
    """The files of the checkpoint `prefix` that restoring it reads."""
    return (f'{prefix}.data-00000-of-00001', f'{prefix}.index')


def read_state(model_dir):
    """The checkpoint names in model_dir's state file, oldest first, the current one last; [] if the file is
    missing or names none. Only the file names count: the checkpoints are the state file's neighbours wherever
    the folder has moved to (TensorFlow may have written absolute paths)."""
    try:
        text = (Path(model_dir) / STATE_FILE).read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError):
        return []
    current = re.findall(r'^model_checkpoint_path:\s*"(.*)"\s*$', text, re.M)
    listed = re.findall(r'^all_model_checkpoint_paths:\s*"(.*)"\s*$', text, re.M)
    names = [os.path.basename(p) for p in listed + current[-1:]]
    return list(dict.fromkeys(reversed(names)))[::-1]  # each once, the current one last


# A training run's folder (see gpt2/training/run_folder.py, which writes it) keeps checkpoints named model-STEP.
RUN_CHECKPOINT = re.compile(r'^model-(\d+)$')


def checkpoint_name(step):
    """The name (file name prefix) of a training run's checkpoint of step `step`."""
    return f'model-{step}'


def run_checkpoints(run_dir):
    """The checkpoints a training run's folder keeps (those its state file lists), oldest first."""
    return [n for n in read_state(run_dir) if RUN_CHECKPOINT.match(n)]


def state_text(names):
    """The state file's text, in TensorFlow's format, for checkpoint names oldest first (the current one last)."""
    return f'model_checkpoint_path: "{names[-1]}"\n' + ''.join(f'all_model_checkpoint_paths: "{n}"\n' for n in names)


# A training run's record of its best validation (train.py --keep_best, --early_stopping): JSON with the keys
# checkpoint (the name of the best checkpoint, or null), loss (the lowest validation loss), step (where), since
# (validations since then without improvement), last (the step of the last validation counted).
BEST_FILE = 'best.json'


def read_best(model_dir):
    """The run's best.json as a dict, or None where there is none (or it cannot be read)."""
    try:
        best = json.loads((Path(model_dir) / BEST_FILE).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    return best if isinstance(best, dict) else None


def best_text(*, checkpoint, loss, step, since, last):
    return json.dumps({'checkpoint': checkpoint, 'loss': loss, 'step': step, 'since': since, 'last': last}) + '\n'


def choose_checkpoint(model_dir, which='latest'):
    """--checkpoint latest|best|STEP -> the file name prefix of that checkpoint in model_dir: the current one,
    the run's best (train.py --keep_best), or model-STEP. ModelError if the folder has no such checkpoint."""
    if which in (None, 'latest'):
        return current_checkpoint(model_dir)
    if which == 'best':
        best = read_best(model_dir)
        if not best or not best.get('checkpoint'):
            raise ModelError(f'--checkpoint best: {model_dir} has no best checkpoint (train with --keep_best and '
                             f'--val_every to keep one); give latest or a step')
        return best['checkpoint']
    name = checkpoint_name(which)
    kept = read_state(model_dir)
    if name not in kept:
        steps = ', '.join(n.split('-', 1)[1] for n in kept if n.startswith('model-')) or 'none'
        raise ModelError(f'--checkpoint {which}: {model_dir} holds no checkpoint of that step (it holds: {steps})')
    return name


def current_checkpoint(model_dir):
    """The file name prefix of the checkpoint that model_dir's state file names: model.ckpt in a released
    folder, model-STEP in a training run. A state file that names none means the released layout."""
    names = read_state(model_dir)
    return names[-1] if names else CHECKPOINT_PREFIX


def required_files(prefix):
    """The files a model folder whose current checkpoint is prefix must hold."""
    if prefix == CHECKPOINT_PREFIX:
        return MODEL_FILES
    return (STATE_FILE, *MODEL_INFO_FILES, *checkpoint_files(prefix))


def check_model_dir(model_dir, model_name=None, prefix=None):
    """Raise ModelError unless model_dir holds every file of a checkpoint whose variables match hparams.json: the
    checkpoint its `checkpoint` state file names (model.ckpt as released, or a training run's latest).

    Cheap: reads hparams.json and the checkpoint index, and compares the weights file's size with what the
    index needs; it does not read the weights. Returns the hparams dict. prefix: check that checkpoint (a file
    name prefix in model_dir) instead of the current one.
    """
    model_dir = Path(model_dir)
    model_name = model_name or model_dir.name
    if not model_dir.is_dir():
        raise ModelError(f'model folder {model_dir} not found; {download_hint(model_name)}')
    prefix = prefix or current_checkpoint(model_dir)
    missing = [f for f in required_files(prefix) if not (model_dir / f).is_file()]
    if missing:
        partial = [f for f in missing if (model_dir / (f + PARTIAL_SUFFIX)).exists()]
        why = 'its download was interrupted' if partial else 'the folder is incomplete'
        raise ModelError(f'{model_dir} lacks {", ".join(missing)} ({why}); {download_hint(model_name)}')
    hparams = read_hparams(model_dir)
    check_checkpoint_index(model_dir, hparams, model_name, prefix)
    return hparams


def check_vocabulary_fits(ids, n_vocab, source, hint=None):
    """Every id of a tokenizer (ids: its values) must have an embedding, 0 <= id < n_vocab: a tokenizer of another
    model would otherwise fail at its first id past the table, deep inside TensorFlow. source names the tokenizer
    in the message; hint, what to do, is added after it."""
    ids = list(ids)
    if max(ids) >= n_vocab or min(ids) < 0:
        raise ModelError(f'{source}: the tokenizer has ids up to {max(ids)}, the model only {n_vocab} embeddings'
                         + (f'; {hint}' if hint else ''))


def check_checkpoint_index(model_dir, hparams, model_name, checkpoint_name=CHECKPOINT_PREFIX):
    """The index of the checkpoint checkpoint_name in model_dir must list the expected variables (a training
    run's also has the optimizer's) with hparams' shapes, and the weights file must be as long as the index
    says."""
    tf = runtime.import_tensorflow()
    prefix = str(Path(model_dir) / checkpoint_name)
    try:
        reader = tf.train.load_checkpoint(prefix)
        found = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f'cannot read the checkpoint index in {model_dir} ({first_line}); '
                         f'{download_hint(model_name)}') from None
    expected = variable_shapes(SimpleNamespace(**hparams))
    lacking = sorted(set(expected) - set(found))
    if lacking:
        raise ModelError(f'the checkpoint in {model_dir} lacks {len(lacking)} variables the model needs '
                         f'(first: {lacking[0]}); {download_hint(model_name)}')
    wrong = [n for n in sorted(expected) if list(found[n]) != expected[n]]
    if wrong:
        n = wrong[0]
        raise ModelError(f'hparams.json in {model_dir} does not match the checkpoint: {n} has shape '
                         f'{list(found[n])}, hparams imply {expected[n]}')
    needed = sum(_num_elements(found[n]) * dtypes[n].size for n in expected)
    data = Path(model_dir) / checkpoint_files(checkpoint_name)[0]
    if os.path.getsize(data) < needed:
        raise ModelError(f'{data} is truncated ({os.path.getsize(data)} bytes, the index needs at least {needed}); '
                         f'{download_hint(model_name)}')


def _num_elements(shape):
    count = 1
    for dim in shape:
        count *= dim
    return count


def save_checkpoint(model_dir, hparams, params):
    """Write hparams.json and a TF checkpoint of params (name -> float32 array, names and shapes as in
    variable_shapes) in the released layout. For tests and benchmarks, which cannot download the real weights."""
    tf = runtime.import_tensorflow()
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / 'hparams.json').write_text(json.dumps(hparams, indent=2) + '\n', encoding='utf-8')
    with tf.Graph().as_default():
        # Values go in through placeholders, so the graph saved in model.ckpt.meta stays small, as released.
        inputs = {name: tf.placeholder(tf.float32, value.shape) for name, value in params.items()}
        variables = {name: tf.Variable(inputs[name], name=name) for name in params}
        saver = tf.train.Saver(var_list=variables)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer(), {inputs[name]: value for name, value in params.items()})
            saver.save(sess, str(model_dir / CHECKPOINT_PREFIX), write_state=False)
    # As released: the checkpoint's own folder, not an absolute path, so the folder can be moved.
    (model_dir / STATE_FILE).write_text(state_text([CHECKPOINT_PREFIX]))
