"""Hugging Face's GPT-2 folder layout, read and written without PyTorch.

A Hugging Face GPT-2 folder holds config.json (the sizes and the architecture's options), the weights in
model.safetensors (or several files listed by model.safetensors.index.json, or PyTorch's pytorch_model.bin), and
the tokenizer as vocab.json + merges.txt or as one tokenizer.json. The weights are the released checkpoint's,
under other names:

    released (checkpoint.variable_shapes)      Hugging Face                    shape there
    model/wte, model/wpe                       wte.weight, wpe.weight          the same
    model/hN/ln_1/g, .../b                     h.N.ln_1.weight, .bias          the same
    model/hN/attn/c_attn/w  [1, nx, nf]        h.N.attn.c_attn.weight          [nx, nf] (Conv1D: no leading 1)
    ... every other name likewise ...
    model/ln_f/g, model/ln_f/b                 ln_f.weight, ln_f.bias          the same

Both keep c_attn's columns as q, k, v side by side, so no weight is split or reordered. GPT2LMHeadModel saves
the names with a `transformer.` prefix and may add lm_head.weight, which is wte itself (tied); old files also
hold each layer's causal-mask buffers, h.N.attn.bias and h.N.attn.masked_bias, which are not weights.

vocab.json is encoder.json and merges.txt is vocab.bpe, byte for byte the same formats.
"""
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import tqdm

from gpt2.base import checkpoint

CONFIG_FILE = 'config.json'
SAFETENSORS_FILE = 'model.safetensors'
SAFETENSORS_INDEX = 'model.safetensors.index.json'
TORCH_FILE = 'pytorch_model.bin'
VOCAB_FILE = 'vocab.json'
MERGES_FILE = 'merges.txt'
TOKENIZER_FILE = 'tokenizer.json'
TOKENIZER_CONFIG_FILE = 'tokenizer_config.json'
MERGES_HEADER = '#version: 0.2'  # the first line of the released vocab.bpe and of Hugging Face's merges.txt

PREFIX = 'transformer.'  # GPT2LMHeadModel's name for the transformer inside it
HEAD = 'lm_head.weight'
MASK_BUFFER = re.compile(r'^h\.\d+\.attn\.(bias|masked_bias)$')

# config.json's keys for the five hyperparameters. Old files also have n_ctx, always equal to n_positions.
CONFIG_SIZES = {'n_vocab': 'vocab_size', 'n_ctx': 'n_positions', 'n_embd': 'n_embd', 'n_head': 'n_head',
                'n_layer': 'n_layer'}
# The options of transformers' GPT2Config that change the maths, with the value (GPT2Config's default) that is
# the GPT-2 this code computes, and what the other values do.
REQUIRED_OPTIONS = {
    'model_type': ('gpt2', 'another architecture'),
    'activation_function': ('gelu_new', "another activation than GPT-2's tanh approximation of GELU"),
    'layer_norm_epsilon': (1e-5, 'another layer-norm epsilon than 1e-5'),
    'scale_attn_weights': (True, 'attention scores not divided by sqrt(head_dim)'),
    'scale_attn_by_inverse_layer_idx': (False, 'attention scores also divided by the layer number'),
    'reorder_and_upcast_attn': (False, 'attention computed in another order and precision'),
    'add_cross_attention': (False, 'cross-attention layers (an encoder-decoder model)'),
}
DTYPES = (np.float32, np.float16, np.float64)


# ---------------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------------

def hf_name(name):
    """A released variable name -> Hugging Face's (without the prefix): model/h3/attn/c_attn/w ->
    h.3.attn.c_attn.weight."""
    parts = name.split('/')[1:]  # without 'model'
    parts[0] = re.sub(r'^h(\d+)$', r'h.\1', parts[0])
    parts[-1] = {'g': 'weight', 'w': 'weight', 'b': 'bias'}.get(parts[-1], parts[-1])
    if parts[-1] not in ('weight', 'bias'):  # wte, wpe
        parts.append('weight')
    return '.'.join(parts)


def is_conv1d(name):
    """Whether the released variable is a Conv1D weight, [1, nx, nf] released and [nx, nf] in Hugging Face's."""
    return name.endswith('/w')


def to_hf_tensors(params):
    """Released name -> array  ->  Hugging Face name (with the prefix) -> array."""
    return {PREFIX + hf_name(n): (v[0] if is_conv1d(n) else v) for n, v in params.items()}


def from_hf_tensors(tensors, hparams, source):
    """Hugging Face name -> array (prefix or not, as any GPT-2 file names them) -> released name -> float32 array,
    shaped as checkpoint.variable_shapes(hparams). ModelError for a missing, extra or misshapen tensor; the head
    is check_head's."""
    tensors = {n.removeprefix(PREFIX): v for n, v in tensors.items()}
    shapes = checkpoint.variable_shapes(SimpleNamespace(**hparams))
    params = {}
    for name, shape in shapes.items():
        key = hf_name(name)
        if key not in tensors:
            raise checkpoint.ModelError(f'{source} lacks the tensor {key} (the weights of {name}); this is not a '
                                        f'complete GPT-2 model')
        value = tensors[key]
        if list(value.shape) != (shape[1:] if is_conv1d(name) else shape):
            raise checkpoint.ModelError(f'{source}: {key} has shape {list(value.shape)}, config.json implies '
                                        f'{shape[1:] if is_conv1d(name) else shape}')
        params[name] = _float32(value, key, source).reshape(shape)
    wanted = {hf_name(n) for n in shapes} | {HEAD}
    extra = sorted(n for n in tensors if n not in wanted and not MASK_BUFFER.match(n))
    if extra:
        raise checkpoint.ModelError(f'{source} holds {len(extra)} tensors that GPT-2 has not (first: {extra[0]}); '
                                    f'this is another architecture, or GPT-2 with an extra head')
    return params


def check_head(tensors, config, source):
    """The output layer must be wte (tied), as in GPT-2; ModelError otherwise. A file may store the head beside
    wte, or not at all (transformers ties it when loading); tie_word_embeddings false with a head equal to wte
    is still GPT-2."""
    tensors = {n.removeprefix(PREFIX): v for n, v in tensors.items()}
    head = tensors.get(HEAD)
    tied = config.get('tie_word_embeddings', True)
    if head is None:
        if not tied:
            raise checkpoint.ModelError(f'{source}: config.json says tie_word_embeddings false but the folder has no '
                                        f'{HEAD}; GPT-2 uses wte as its output layer, give a tied model')
        return
    if head.shape != tensors['wte.weight'].shape or not np.array_equal(head, tensors['wte.weight']):
        raise checkpoint.ModelError(f'{source}: {HEAD} differs from wte.weight (an untied output layer); GPT-2 '
                                    f'uses wte as its output layer, so this model cannot be converted')


def _float32(value, key, source):
    if value.dtype not in DTYPES:
        raise checkpoint.ModelError(f'{source}: {key} is {value.dtype}; only float32, float16, bfloat16 and '
                                    f'float64 weights convert')
    return np.ascontiguousarray(value, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------------------------------

def read_config(folder):
    """config.json -> (the five hyperparameters, the config dict); ModelError for what is not GPT-2 as this
    code computes it."""
    path = Path(folder) / CONFIG_FILE
    config = _read_json(path)
    if not isinstance(config, dict):
        raise checkpoint.ModelError(f'{path} must hold a JSON object')
    for key, (value, meaning) in REQUIRED_OPTIONS.items():
        if config.get(key, value) != value:
            raise checkpoint.ModelError(f'{path}: {key} is {config[key]!r} ({meaning}); only GPT-2 with {key} '
                                        f'{json.dumps(value)} converts, other models would compute wrongly')
    missing = [k for k in CONFIG_SIZES.values() if k not in config]
    if missing:
        raise checkpoint.ModelError(f'{path} lacks {", ".join(missing)}; a GPT-2 config.json has them')
    hparams = checkpoint.parse_hparams(json.dumps({ours: config[theirs] for ours, theirs in CONFIG_SIZES.items()}),
                                       source=str(path))
    inner = config.get('n_inner')
    if inner is not None and inner != 4 * hparams['n_embd']:
        raise checkpoint.ModelError(f'{path}: n_inner is {inner}; GPT-2 has 4 * n_embd ({4 * hparams["n_embd"]}) '
                                    f'units in its MLP')
    return hparams, config


def config_json(hparams, endoftext):
    """The config.json of a GPT-2 with hparams, in transformers' GPT2Config keys; endoftext: the token's id."""
    return {
        'architectures': ['GPT2LMHeadModel'],
        **{key: value for key, (value, _) in REQUIRED_OPTIONS.items()},
        **{theirs: hparams[ours] for ours, theirs in CONFIG_SIZES.items()},
        'n_inner': None,
        'tie_word_embeddings': True,
        # Hugging Face's dropout for fine-tuning there; sampling and scoring ignore it.
        'attn_pdrop': 0.1, 'embd_pdrop': 0.1, 'resid_pdrop': 0.1,
        'initializer_range': 0.02,
        'bos_token_id': endoftext,
        'eos_token_id': endoftext,
        'use_cache': True,
    }


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise checkpoint.ModelError(f'cannot read {path} ({err})') from None


# ---------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------

def weight_files(folder):
    """The files that hold the folder's weights: model.safetensors, the files of its index, or
    pytorch_model.bin; ModelError if there are none."""
    folder = Path(folder)
    if (folder / SAFETENSORS_FILE).is_file():
        return [folder / SAFETENSORS_FILE]
    if (folder / SAFETENSORS_INDEX).is_file():
        index = _read_json(folder / SAFETENSORS_INDEX)
        try:
            names = sorted(set(index['weight_map'].values()))
        except (TypeError, KeyError, AttributeError):
            raise checkpoint.ModelError(f'{folder / SAFETENSORS_INDEX} has no weight_map') from None
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise checkpoint.ModelError(f'{folder} lacks {", ".join(missing)}, which {SAFETENSORS_INDEX} lists')
        return [folder / n for n in names]
    if (folder / TORCH_FILE).is_file():
        return [folder / TORCH_FILE]
    raise checkpoint.ModelError(f'{folder} has no {SAFETENSORS_FILE}, {SAFETENSORS_INDEX} or {TORCH_FILE}')


def read_tensors(folder):
    """Every tensor of the folder's weights, name -> NumPy array."""
    tensors = {}
    for path in weight_files(folder):
        tensors.update(read_torch(path) if path.name == TORCH_FILE else read_safetensors(path))
    return tensors


def read_safetensors(path):
    """A .safetensors file -> name -> array, through the safetensors package's NumPy API (no PyTorch)."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework='np') as f:
            return {n: _bfloat16(path, n) if f.get_slice(n).get_dtype() == 'BF16' else f.get_tensor(n)
                    for n in progress(f.keys(), path.name)}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise checkpoint.ModelError(f'cannot read {path} ({_first_line(err)}); the file is damaged or truncated, '
                                    f'download it again') from None


def _bfloat16(path, name):
    """A bfloat16 tensor of a .safetensors file as float32, which holds it exactly: NumPy has no bfloat16, so the
    safetensors package cannot hand it over. The format: an 8-byte little-endian header length, the JSON header
    (name -> dtype, shape, data_offsets from the end of the header), the data."""
    with open(path, 'rb') as f:
        size = int.from_bytes(f.read(8), 'little')
        entry = json.loads(f.read(size))[name]
        start, end = entry['data_offsets']
        f.seek(8 + size + start)
        halves = np.frombuffer(f.read(end - start), dtype='<u2')
    # bfloat16 is the upper half of a float32.
    return (halves.astype(np.uint32) << 16).view(np.float32).reshape(entry['shape'])


def write_safetensors(path, tensors):
    from safetensors.numpy import save_file
    # transformers reads the weights of a file whose metadata says format pt; without it, it refuses them.
    save_file({n: np.ascontiguousarray(v) for n, v in tensors.items()}, str(path), metadata={'format': 'pt'})


def read_torch(path):
    """pytorch_model.bin -> name -> array. Needs PyTorch, which the project does not: only where the user has it."""
    try:
        import torch
    except ImportError:
        raise checkpoint.ModelError(f'{path} is a PyTorch file, and reading it needs PyTorch (pip install torch); '
                                    f'or use a copy of the model with {SAFETENSORS_FILE}') from None
    try:
        state = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises many kinds (pickle, zip, runtime) for one cause: a bad file
        raise checkpoint.ModelError(f'cannot read {path} ({_first_line(err)})') from None
    # NumPy has no bfloat16: such weights go through float32, which holds them exactly.
    return {n: (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy() for n, t in state.items()}


def progress(items, what):
    """items, with a progress bar on stderr where it is a terminal (a large model takes a minute)."""
    return tqdm.tqdm(items, desc=what, unit='tensor', disable=None, leave=False)


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------------------------

def read_tokenizer(folder):
    """-> (vocabulary: token -> id, merges: [(a, b)] in rank order), from vocab.json + merges.txt, else
    tokenizer.json."""
    folder = Path(folder)
    if (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file():
        vocab = _read_json(folder / VOCAB_FILE)
        try:
            text = (folder / MERGES_FILE).read_text(encoding='utf-8')
        except (OSError, UnicodeDecodeError) as err:
            raise checkpoint.ModelError(f'cannot read {folder / MERGES_FILE} ({err})') from None
        lines = text.split('\n')
        if lines and lines[0].startswith('#version'):
            lines = lines[1:]
        merges = [tuple(line.split(' ')) for line in lines if line.strip()]
        return _checked_tokenizer(vocab, merges, folder / VOCAB_FILE)
    if (folder / TOKENIZER_FILE).is_file():
        return _tokenizer_json(folder / TOKENIZER_FILE)
    raise checkpoint.ModelError(f'{folder} has no tokenizer: neither {VOCAB_FILE} + {MERGES_FILE} nor '
                                f'{TOKENIZER_FILE}')


def _tokenizer_json(path):
    data = _read_json(path)
    try:
        bpe = data['model']
        if bpe.get('type', 'BPE') != 'BPE':
            raise checkpoint.ModelError(f'{path} is a {bpe["type"]} tokenizer, not byte-level BPE as GPT-2 has')
        vocab = dict(bpe['vocab'])
        # tokenizers writes a merge as "a b", or, since 0.20, as ["a", "b"].
        merges = [tuple(m.split(' ')) if isinstance(m, str) else tuple(m) for m in bpe['merges']]
        added = {t['content']: t['id'] for t in data.get('added_tokens', [])}
    except (TypeError, KeyError, AttributeError):
        raise checkpoint.ModelError(f'{path} lacks model.vocab or model.merges; it is not a BPE tokenizer') from None
    for token, token_id in added.items():
        vocab.setdefault(token, token_id)
    return _checked_tokenizer(vocab, merges, path)


def _checked_tokenizer(vocab, merges, path):
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise checkpoint.ModelError(f'{path}: the vocabulary must map tokens to whole numbers')
    bad = [m for m in merges if len(m) != 2]
    if bad:
        raise checkpoint.ModelError(f'{path}: a merge must be two tokens, got {" ".join(bad[0])!r}')
    if checkpoint.ENDOFTEXT not in vocab:
        raise checkpoint.ModelError(f'{path} has no {checkpoint.ENDOFTEXT} token; GPT-2 needs it')
    return vocab, merges


def merges_text(merges):
    """vocab.bpe's and merges.txt's text."""
    return MERGES_HEADER + '\n' + ''.join(f'{a} {b}\n' for a, b in merges)


def write_tokenizer(folder, vocab, merges, n_ctx):
    """vocab.json, merges.txt and the tokenizer_config.json that makes AutoTokenizer load them as GPT-2's."""
    folder = Path(folder)
    (folder / VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False), encoding='utf-8')
    (folder / MERGES_FILE).write_text(merges_text(merges), encoding='utf-8')
    special = checkpoint.ENDOFTEXT
    config = {'tokenizer_class': 'GPT2Tokenizer', 'model_max_length': n_ctx, 'add_prefix_space': False,
              'bos_token': special, 'eos_token': special, 'unk_token': special}
    (folder / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + '\n', encoding='utf-8')
