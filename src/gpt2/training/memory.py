"""Know before you run: the memory a training run will need and the size of its checkpoints (what the machine has,
memory and disk, is gpt2/base/system.py's).

The estimate adds what a step holds at its peak: the weights, the gradients alive at once, the optimizer's state,
the activations kept for the backward pass at this batch and window, the logits and their gradient, and
TensorFlow itself. The constants below were fitted to peaks measured with bench/bench_train.py (docs/memory.md);
a float32 number is 4 bytes.
"""
import dataclasses
import math

from gpt2.base import checkpoint
from gpt2.base import system

FLOAT = 4
HALF = 2  # a bfloat16 or float16 number, with --mixed_precision
GB = system.GB
# TensorFlow's own memory (its libraries, the graph, the session's threads), measured as the peak RSS of a step
# of the tiny model (bench/bench_train.py).
RUNTIME_BYTES = 0.6 * GB
# Numbers kept per token and layer for the backward pass without recomputation: about this many of n_embd
# (the inputs of the products and of the norms, GELU's input and result, the residual sums), and this many
# [n_head, seq] rows of attention (the softmax's result, the scores).
KEPT_PER_EMBD = 14
KEPT_ATTENTION_ROWS = 2
# With --mixed_precision those are half precision but for the layer norms' results (2 of n_embd), which stay
# float32 (src/model.py; the softmax keeps only its half-precision result).
FLOAT32_PER_EMBD = 2
FLOAT32_ATTENTION_ROWS = 0
# A block being recomputed holds its activations and their gradients at once.
RECOMPUTED_BLOCK_FACTOR = 2
# The logits [tokens, n_vocab], the cross-entropy's gradient of them, and the product's work space.
LOGITS_COPIES = 3
LOSS_CHUNK = 128  # tokens per piece of losses.chunked_token_losses, which reads it here


@dataclasses.dataclass
class Estimate:
    """Bytes a run needs at its peak, by what holds them."""
    weights: float
    gradients: float
    optimizer_state: float
    activations: float
    runtime: float = RUNTIME_BYTES

    @property
    def total(self):
        return self.weights + self.gradients + self.optimizer_state + self.activations + self.runtime

    def line(self, *, batch_size, seq_len):
        gb = lambda n: f'{n / GB:.1f} GB'  # noqa: E731
        return (f'Memory: about {gb(self.total)} (weights {gb(self.weights)}, gradients {gb(self.gradients)}, '
                f'optimizer state {gb(self.optimizer_state)}, activations {gb(self.activations)} at {batch_size} x '
                f'{seq_len} tokens, TensorFlow {gb(self.runtime)})')


def variable_sizes(hparams):
    """name -> shape of every model variable."""
    return checkpoint.variable_shapes(hparams)


def optimizer_state_numbers(shape, optimizer, adafactor_beta1=None):
    """The numbers of optimizer state one variable of this shape has."""
    n = math.prod(shape)
    if optimizer == 'adam':
        return 2 * n
    if optimizer == 'sgd':
        return 0
    if len(shape) >= 2:  # adafactor: a row and a column
        state = math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]
    else:
        state = n
    return state + (n if adafactor_beta1 is not None else 0)


def estimate(hparams, *, batch_size, seq_len, optimizer='adam', memory_saving_gradients=False,
             accumulate_gradients=1, only_train_transformer_layers=False, adafactor_beta1=None, lean=True,
             half=False):
    """-> Estimate for a training run of build_training's settings (hparams: n_vocab, n_embd, n_head, n_layer).
    half: --mixed_precision, whose activations are half precision (and the weights' copies in it as they are
    read); with float16 give lean=False, since its loss scaling holds every gradient until all are checked."""
    shapes = variable_sizes(hparams)
    layer = lambda name: name.startswith('model/h')  # noqa: E731
    trained = {n: s for n, s in shapes.items() if layer(n) or not only_train_transformer_layers}
    weights = FLOAT * sum(math.prod(s) for s in shapes.values())
    state = FLOAT * sum(optimizer_state_numbers(s, optimizer, adafactor_beta1) for s in trained.values())
    trained_bytes = FLOAT * sum(math.prod(s) for s in trained.values())
    per_layer = FLOAT * sum(math.prod(s) for n, s in trained.items() if n.startswith('model/h0/'))
    if memory_saving_gradients and lean:
        # Each layer's gradients are applied as soon as that layer's backward pass is done: a layer's and the
        # embeddings' at once.
        gradients = min(trained_bytes, 2 * per_layer + FLOAT * math.prod(shapes['model/wte']))
    elif memory_saving_gradients:
        gradients = trained_bytes  # all held until the last is made
    else:
        gradients = min(trained_bytes, 2 * per_layer + FLOAT * math.prod(shapes['model/wte']))
    if accumulate_gradients > 1:
        gradients = 2 * trained_bytes  # the accumulators and a micro-batch's gradients
    tokens = batch_size * seq_len
    e, heads = hparams.n_embd, hparams.n_head
    block = kept_block_bytes(tokens, e, heads * seq_len, half)
    if memory_saving_gradients:
        kept = FLOAT * tokens * e * hparams.n_layer + RECOMPUTED_BLOCK_FACTOR * block
    else:
        kept = block * hparams.n_layer
    if memory_saving_gradients and lean:
        # The chunked cross-entropy: a chunk's logits, and the embeddings' gradient being summed.
        logits = (LOGITS_COPIES * FLOAT * min(tokens, LOSS_CHUNK) * hparams.n_vocab
                  + 2 * FLOAT * hparams.n_vocab * e)
    else:
        logits = LOGITS_COPIES * FLOAT * tokens * hparams.n_vocab
    if half:
        weights += HALF * sum(math.prod(s) for s in shapes.values())
        kept -= (FLOAT - HALF) * tokens * e * hparams.n_layer * memory_saving_gradients  # the blocks' inputs
    return Estimate(weights=weights, gradients=gradients, optimizer_state=state, activations=kept + logits)


def kept_block_bytes(tokens, n_embd, attention_row, half):
    """Bytes one block keeps for its backward pass at this many tokens (attention_row: n_head x seq numbers a
    token)."""
    if not half:
        return FLOAT * tokens * (KEPT_PER_EMBD * n_embd + KEPT_ATTENTION_ROWS * attention_row)
    float32 = FLOAT32_PER_EMBD * n_embd + FLOAT32_ATTENTION_ROWS * attention_row
    halves = ((KEPT_PER_EMBD - FLOAT32_PER_EMBD) * n_embd
              + (KEPT_ATTENTION_ROWS - FLOAT32_ATTENTION_ROWS) * attention_row)
    return tokens * (FLOAT * float32 + HALF * halves)


def memory_warning(needed, available, where='this machine'):
    """One line, or None when there is room."""
    if available is None or needed <= available:
        return None
    return (f'warning: this run needs about {needed / GB:.1f} GB and {where} has {available / GB:.1f} GB available; '
            f'it may run out of memory (try --optimizer adafactor, --memory_saving_gradients, or a smaller '
            f'--batch_size or --seq_len)')


def checkpoint_bytes(variables):
    """Bytes of a checkpoint of these variables (what a save writes, less a small index)."""
    return sum(v.shape.num_elements() * v.dtype.size for v in variables)
