"""train.py's flag checks, before anything is read or written: each raises flags.UsageError naming the first bad
flag. The sampling flags follow the sampling scripts' rules (gpt2/sampling/rules.py), with their messages."""
import os

import tensorflow.compat.v1 as tf

from gpt2.base import flags
from gpt2.base import system
from gpt2.data import corpus
from gpt2.sampling import rules
from gpt2.training import graph
from gpt2.training import precision
from gpt2.training import schedules


def check_flags(config):
    """Every flag whose range does not depend on the model (config: a TrainConfig as the user gave it)."""
    if config.dataset is None:
        raise flags.UsageError('--dataset is required: a text file, a folder, a glob or a .npz')
    for name in ('batch_size', 'accumulate_gradients', 'combine', 'save_every', 'max_checkpoints', 'sample_num',
                 'val_batch_size', 'val_batch_count'):
        flags.whole_number(name, getattr(config, name), 1)
    for name in ('steps', 'sample_every', 'val_every'):
        flags.whole_number(name, getattr(config, name), 0)
    flags.whole_number('seed', config.seed, 0, 2**32 - 1, allow_none=True)
    check_sampling_flags(config)
    if config.learning_rate is not None:
        flags.number('learning_rate', config.learning_rate, 0, float('inf'), low_open=True,
                     what='a number above 0')
    check_optimizer_flags(config)
    flags.number('noise', config.noise, 0, 1, what='a number from 0 to below 1')
    if config.noise == 1:
        raise flags.UsageError('--noise must be a number from 0 to below 1, got 1')
    try:
        corpus.check_encoding(config.encoding)
    except ValueError as err:
        raise flags.UsageError(err) from None
    check_switches(config, 'memory_saving_gradients', 'only_train_transformer_layers', 'overwrite')
    for name in ('run_name', 'restore_from'):
        value = getattr(config, name)
        if not isinstance(value, str) or not value or (name == 'run_name' and os.sep in value):
            raise flags.UsageError(f'--{name} must be a {"name" if name == "run_name" else "path"}, got {value!r}')
    check_validation_flags(config)
    check_mixed_precision(config)


def check_mixed_precision(config, gpu=None, cpu_bfloat16=None, tf_config=None):
    """--mixed_precision: a known dtype, on a machine that computes it fast (gpu: a GPU is visible; cpu_bfloat16:
    the CPU has bfloat16 instructions; by default both asked of this machine), and float16's loss scaling on
    one device."""
    value = config.mixed_precision
    if value is None:
        return
    if value not in precision.PRECISIONS:
        raise flags.UsageError(f'--mixed_precision must be one of {", ".join(precision.PRECISIONS)}, got {value!r}')
    if gpu is None:
        gpu = bool(tf.config.list_physical_devices('GPU'))
    why = precision.unsupported(value, gpu=gpu, cpu_bfloat16=system.cpu_has_bfloat16() if cpu_bfloat16 is None
                                else cpu_bfloat16)
    if why:
        raise flags.UsageError(why)
    tf_config = os.environ.get('TF_CONFIG') if tf_config is None else tf_config
    if value == 'float16' and (config.devices not in (None, 1) or tf_config):
        raise flags.UsageError('--mixed_precision float16 trains on one device: its loss scaling is not built for '
                               '--devices or TF_CONFIG (bfloat16 needs no scaling and goes with both)')


def check_sampling_flags(config):
    """--top_k and --top_p with the sampling scripts' rules and messages. Samples while training are drawn at
    temperature 1, sample_num at a time at most batch_size; those and the seed are checked above under train.py's
    own names, so only --top_k and --top_p can fail here."""
    rules.check_sampling_flags(nsamples=config.sample_num, batch_size=config.batch_size, temperature=1,
                               top_k=config.top_k, top_p=config.top_p, seed=config.seed, min_nsamples=1)


def check_switches(config, *names):
    """Flags that take no value (true/false)."""
    for name in names:
        flags.switch(name, getattr(config, name))


def check_validation_flags(config):
    """--val_dataset with --val_every, and what needs them: --keep_best, --early_stopping."""
    if bool(config.val_dataset) != bool(config.val_every):
        raise flags.UsageError('--val_dataset and --val_every go together: give both to validate, or neither')
    check_switches(config, 'keep_best')
    flags.whole_number('early_stopping', config.early_stopping, 0)
    for name in ('keep_best', 'early_stopping'):
        if getattr(config, name) and not config.val_every:
            raise flags.UsageError(f'--{name} needs validation: give --val_dataset and --val_every')


def check_optimizer_flags(config):
    """--optimizer, its Adafactor settings and the learning-rate schedule."""
    if config.optimizer not in graph.OPTIMIZERS:
        raise flags.UsageError(f'--optimizer must be one of {", ".join(graph.OPTIMIZERS)}, got '
                               f'{config.optimizer!r}')
    check_switches(config, 'adafactor_relative_step', 'adafactor_scale_parameter')
    if config.adafactor_beta1 is not None:
        flags.number('adafactor_beta1', config.adafactor_beta1, 0, 1, what='a number from 0 to below 1')
        if config.adafactor_beta1 == 1:
            raise flags.UsageError('--adafactor_beta1 must be a number from 0 to below 1, got 1')
    adafactor_only = [n for n in ('adafactor_beta1', 'adafactor_relative_step', 'adafactor_scale_parameter')
                      if getattr(config, n) not in (None, False)]
    if adafactor_only and config.optimizer != 'adafactor':
        raise flags.UsageError(f'--{adafactor_only[0]} goes with --optimizer adafactor')
    if config.adafactor_relative_step and config.learning_rate is not None:
        raise flags.UsageError('--adafactor_relative_step sets its own rate: give it without --learning_rate')
    if config.adafactor_relative_step and (config.lr_schedule != 'constant' or config.warmup_steps):
        raise flags.UsageError('--adafactor_relative_step sets its own rate: give it without --lr_schedule and '
                               '--warmup_steps')
    flags.whole_number('warmup_steps', config.warmup_steps, 0)
    flags.whole_number('total_steps', config.total_steps, 1, allow_none=True)
    try:
        schedules.check(config.lr_schedule, config.warmup_steps, config.total_steps)
    except ValueError as err:
        raise flags.UsageError(err) from None


def check_model_flags(config, hparams):
    """The flags whose range is the model's window -> (seq_len, sample_length)."""
    seq_len = flags.whole_number('seq_len', config.seq_len, 2, hparams.n_ctx, allow_none=True) or hparams.n_ctx
    sample_length = flags.whole_number('sample_length', config.sample_length, 1, hparams.n_ctx - 1,
                                       allow_none=True) or hparams.n_ctx - 1
    return seq_len, sample_length
