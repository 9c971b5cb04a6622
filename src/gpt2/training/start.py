"""Where a run starts from: the run's latest checkpoint, the base model, or a checkpoint named by path
(choose_start), and restoring it into the training graph (restore)."""
import dataclasses
import os
from pathlib import Path

import tensorflow.compat.v1 as tf

import model
from gpt2 import loading
from gpt2.base import checkpoint
from gpt2.base import flags


@dataclasses.dataclass
class Start:
    """Where a run starts: the model it trains and the checkpoint it restores."""
    model_dir: Path  # the model folder whose hparams.json, encoder.json and vocab.bpe the run uses
    hparams: model.HParams
    enc: object  # encoder.Encoder
    prefix: str  # the checkpoint to restore
    seed: int | None  # the seed a resumed run had (it goes on with it), else None


def choose_start(run, *, restore_from, overwrite, model_name, models_dir):
    """-> Start, for --restore_from latest (the run's latest checkpoint, else the base model), fresh (the base
    model) or a checkpoint's path (a prefix such as checkpoint/run1/model-500, or a model folder)."""
    if restore_from == 'latest' and run.latest():
        model_dir, hparams, enc = loading.load_model(run.path.name, run.path.parent)
        return Start(model_dir, hparams, enc, run.latest(), saved_seed(run.latest()))
    if restore_from == 'fresh' and run.checkpoints() and not overwrite:
        raise flags.UsageError(f'{run.path} already holds checkpoints (the latest is {run.checkpoints()[-1]}); '
                             f'go on with --restore_from latest, start again with --overwrite, or choose another '
                             f'--run_name')
    model_dir, hparams, enc = loading.load_model(model_name, models_dir)
    check_same_model(run, model_dir)
    if restore_from in ('latest', 'fresh'):
        return Start(model_dir, hparams, enc, str(model_dir / checkpoint.current_checkpoint(model_dir)), None)
    prefix = checkpoint_prefix(restore_from)
    path = Path(prefix)
    checkpoint.check_checkpoint_index(path.parent, dataclasses.asdict(hparams), model_name, path.name)
    return Start(model_dir, hparams, enc, prefix, saved_seed(prefix))


def checkpoint_prefix(restore_from):
    """--restore_from PATH -> the checkpoint's path prefix: PATH itself, or a folder's current checkpoint."""
    path = Path(str(restore_from)).expanduser()
    if path.is_dir():
        path = path / checkpoint.current_checkpoint(path)
    if not Path(f'{path}.index').is_file():
        raise checkpoint.ModelError(f'--restore_from {restore_from}: no checkpoint there ({path}.index not found); '
                                    f'give a checkpoint such as checkpoint/run1/model-1000, or latest, or fresh')
    return str(path)


def check_same_model(run, model_dir):
    """A run folder holds one model's checkpoints; training another model into it would mix them."""
    ours = run.path / 'hparams.json'
    if ours.exists() and checkpoint.read_hparams(run.path) != checkpoint.read_hparams(model_dir):
        raise checkpoint.ModelError(f'{run.path} holds a run of another model (its hparams.json differs from '
                                    f'{model_dir}); choose another --run_name or --model_name')


def saved_seed(prefix):
    """The seed a run checkpoint was trained with, or None (the base model has none)."""
    reader = tf.train.load_checkpoint(prefix)
    return int(reader.get_tensor('train_seed')) if reader.has_tensor('train_seed') else None


def choose_seed(seed, start):
    """--seed, else the seed of the run being resumed, else a random one."""
    if seed is not None:
        return seed
    return start.seed if start.seed is not None else int.from_bytes(os.urandom(4), 'little')


def checkpoint_vars(prefix):
    """The names of the variables the checkpoint at prefix holds."""
    return set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())


def restore(sess, training, prefix):
    """Restore what training saves from the checkpoint at prefix: from the base model only its weights (the
    optimizer starts fresh and the step at 0), from a run's checkpoint also the optimizer state and step. Not the
    run's seed: choose_seed has chosen it already (--seed, else the checkpoint's, else a random one). Every other
    variable is initialised: only those, since drawing random initial weights that the restore overwrites costs
    a second of start-up for 124M (bench/bench_train.py)."""
    found = checkpoint_vars(prefix)
    wanted = {v.op.name: v for v in training.saved_vars if v.op.name in found and v is not training.seed}
    tf.train.Saver(var_list=wanted).restore(sess, prefix)
    restored = {id(v) for v in wanted.values()}
    sess.run(tf.variables_initializer([v for v in tf.global_variables() if id(v) not in restored]))
