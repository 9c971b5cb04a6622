"""A training run from its checked flags to its last save, as train.py runs it: choose the start and read the data
(everything is checked before anything is written), prepare the run folder, build the step, the validation and
the samples, report the memory the run needs, restore, and train (gpt2/training/loop.py)."""
import functools
import os
import sys
from pathlib import Path

import tensorflow.compat.v1 as tf

from gpt2.base import flags
from gpt2.base import system
from gpt2.data import corpus
from gpt2.training import checks
from gpt2.training import distribute
from gpt2.training import graph
from gpt2.training import loop
from gpt2.training import memory
from gpt2.training import run_folder
from gpt2.training import start


def train(config):
    """Train as config (a TrainConfig that checks.check_flags has passed) says."""
    # None: one device.
    cluster = distribute.choose(config.devices, os.environ.get('TF_CONFIG'), config.collective_timeout)
    chief = cluster is None or cluster.is_chief
    run = run_folder.RunFolder(output_folder(config.checkpoint_dir) / config.run_name)
    origin, config, chunks, val_chunks = prepare(config, run)
    if chief:
        run.start(origin.model_dir, discard=config.restore_from == 'fresh' and config.overwrite)
    with tf.Graph().as_default():
        tf.set_random_seed(config.seed)
        training = build_step(config, origin.hparams, cluster)
        # Only the chief validates and samples (and saves).
        validation = chief and val_chunks and loop.Validation(
            origin.hparams, val_chunks, seq_len=config.seq_len, batch_size=config.val_batch_size,
            batch_count=config.val_batch_count, seed=config.seed)
        samples = chief and config.sample_every and loop.Samples(
            origin.hparams, origin.enc, output_folder(config.sample_dir) / config.run_name,
            length=config.sample_length, count=config.sample_num, batch_size=config.batch_size,
            top_k=config.top_k, top_p=config.top_p)
        saver = tf.train.Saver(var_list={v.op.name: v for v in training.saved_vars}, max_to_keep=None)
        run.checkpoint_size = memory.checkpoint_bytes(training.saved_vars)
        if chief:
            report_memory(origin.hparams, run, config)
        best = chief and (config.keep_best or config.early_stopping) and loop.Best(
            run, keep_best=config.keep_best, early_stopping=config.early_stopping,
            max_checkpoints=config.max_checkpoints) or None
        with cluster.session(graph.session_config) if cluster else tf.Session(config=graph.session_config()) as sess:
            seed = restore(sess, training, origin, cluster)
            where = f': {config.batch_size} on each of {cluster.describe()}' if cluster else ''
            print(f'Training {run.path} from {origin.prefix} at step {loop.steps_done(sess, training)}, '
                  f'batch {training.batch_size}{where}', flush=True)
            loop.train_loop(sess, training, corpus.Sampler(chunks, config.seq_len, seed), run if chief else None,
                            saver, config, samples=samples, validation=validation, best=best)


def output_folder(path):
    """--checkpoint_dir, --sample_dir -> the folder: a relative path is in the working directory, as for any
    command-line tool. (Only inputs, such as --models_dir, are also looked for in the repository.)"""
    return Path(path).expanduser()


def prepare(config, run):
    """What the run starts from, read and checked before anything is written -> (start.Start, config with the
    settings that depend on the model and the start filled in, the training chunks, the validation chunks or
    None)."""
    origin = start.choose_start(run, restore_from=config.restore_from, overwrite=config.overwrite,
                                model_name=config.model_name, models_dir=config.models_dir)
    seq_len, sample_length = checks.check_model_flags(config, origin.hparams)
    chunks = read_dataset(origin.enc, config.dataset, config)
    val_chunks = read_dataset(origin.enc, config.val_dataset, config) if config.val_dataset else None
    config = config.resolved(seq_len=seq_len, sample_length=sample_length, seed=start.choose_seed(config.seed, origin))
    return origin, config, chunks, val_chunks


def read_dataset(enc, path, config):
    """The dataset at path as token chunks; a missing or empty one ends the script with one line, exit 1."""
    try:
        return corpus.load_dataset(enc, path, combine=config.combine, encoding=config.encoding)
    except corpus.DatasetError as err:
        flags.fail(err, code=1)


def build_step(config, hparams, cluster):
    """The training step (graph.Training), on this device or on every replica of the cluster."""
    build = functools.partial(
        graph.build_training, hparams, batch_size=config.batch_size, seq_len=config.seq_len,
        optimizer=config.optimizer, learning_rate=config.learning_rate,
        accumulate_gradients=config.accumulate_gradients,
        only_train_transformer_layers=config.only_train_transformer_layers,
        memory_saving_gradients=config.memory_saving_gradients, mixed_precision=config.mixed_precision,
        noise=config.noise, seed=config.seed,
        lr_schedule=config.lr_schedule, warmup_steps=config.warmup_steps, total_steps=config.total_steps,
        adafactor_options=config.adafactor_options())
    return cluster.build(build, config.batch_size) if cluster else build()


def restore(sess, training, origin, cluster):
    """Restore the start's checkpoint -> the run's seed. With a cluster every replica, every worker, takes the
    chief's values, seed included, so that every worker draws the same batches."""
    if cluster:
        training.restore(sess, origin.prefix)
    else:
        start.restore(sess, training, origin.prefix)
    return int(sess.run(training.seed))


def report_memory(hparams, run, config):
    """Print the memory the run will need and its checkpoints' size; warn in one line when the machine (or its
    container's cgroup limit, system.available_memory) has less memory available, or the disk less room than
    one checkpoint."""
    needed = memory.estimate(hparams, batch_size=config.batch_size, seq_len=config.seq_len,
                             optimizer=config.optimizer, memory_saving_gradients=config.memory_saving_gradients,
                             accumulate_gradients=config.accumulate_gradients,
                             only_train_transformer_layers=config.only_train_transformer_layers,
                             adafactor_beta1=config.adafactor_beta1, half=config.mixed_precision is not None,
                             lean=config.mixed_precision != 'float16')
    print(needed.line(batch_size=config.batch_size, seq_len=config.seq_len), flush=True)
    print(f'Checkpoints: {run.checkpoint_size / memory.GB:.2f} GB each (weights and optimizer state)', flush=True)
    gpu = system.gpu_memory() if tf.config.list_physical_devices('GPU') else None
    if gpu is not None:
        warning = memory.memory_warning(needed.total - needed.runtime, gpu, where='each GPU')
    else:
        warning = memory.memory_warning(needed.total, system.available_memory())
    if warning:
        print(warning, file=sys.stderr, flush=True)
    free = run.free_space(run.path)
    if free < run.checkpoint_size:
        print(f'warning: the disk of {run.path} has {free / memory.GB:.2f} GB free, less than one checkpoint',
              file=sys.stderr, flush=True)
