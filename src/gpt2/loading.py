"""Loading a model folder: its hyperparameters, vocabulary and checkpoint, checked before anything is built, and
the restore of its weights into a session."""
import threading
from pathlib import Path

import tensorflow.compat.v1 as tf

import encoder
import model

from gpt2.base import checkpoint, flags
from gpt2.sampling import cpu_matmul, int8


class ModelFolder(type(Path())):
    """A model folder's path that also names the checkpoint in it to load (checkpoint_name)."""
    checkpoint_name = None


def load_model(model_name, models_dir, which='latest'):
    """-> (model_dir, hparams, encoder), after checking that the folder holds a complete, consistent model.
    which: the --checkpoint flag, latest, best or a step (checkpoint.choose_checkpoint); start_restore restores
    that one."""
    flags.folder_name('model_name', model_name)
    if isinstance(which, str) and which.isdecimal():
        which = int(which)  # a step given as text: lm_eval's --model_args, or Python callers
    if not (which in ('latest', 'best') or (isinstance(which, int) and not isinstance(which, bool) and which >= 0)):
        raise flags.UsageError(f'--checkpoint must be latest, best or a step (a whole number), got {which!r}')
    models_dir = checkpoint.resolve_models_dir(models_dir)
    model_dir = ModelFolder(models_dir / model_name)
    if not models_dir.is_dir():
        raise checkpoint.ModelError(f'models folder {models_dir} not found; {checkpoint.download_hint(model_name)}')
    if which != 'latest' and model_dir.is_dir():
        model_dir.checkpoint_name = checkpoint.choose_checkpoint(model_dir, which)
    hparams = model.default_hparams().override_from_dict(
        checkpoint.check_model_dir(model_dir, model_name, model_dir.checkpoint_name))
    enc = encoder.read_vocabulary(model_dir)
    checkpoint.check_vocabulary_fits(enc.encoder.values(), hparams.n_vocab, f'encoder.json in {model_dir}',
                                     checkpoint.download_hint(model_name))
    return model_dir, hparams, enc


def error_reason(err):
    """The line of a TensorFlow error that says what went wrong (its message starts with where, in the graph and
    in Python), e.g. 'TensorBundle at .../model.ckpt shard 0 (...): Checksum does not match: ...'."""
    lines = [line for line in err.message.strip().splitlines() if line.strip()]
    context = ('Graph execution error', 'Detected at node', 'Node:', ' ', '\t')
    reasons = [line for line in lines if not line.startswith(context)]
    return (reasons or lines or ['unknown error'])[-1].strip()


def start_restore(sess, model_dir, hparams, precision='float32'):
    """Create the model's variables and start restoring them from model_dir's current checkpoint (the one its
    state file names: model.ckpt, or a training run's latest) on another thread, so that the restore (0.7 s for
    124M) overlaps building the sampling graph, which is Python's work: the first token comes that much sooner.
    -> a function that waits for the restore to end; it raises ModelError if the restore failed. Call it
    before running anything else in sess.

    precision 'int8', where TensorFlow's int8 product works: the weights of the products are restored a layer at a
    time into int8 copies (gpt2/sampling/int8.py, Store), and their float32 variables stay empty: the graph
    must multiply them in int8 (sample_sequence(precision='int8'), the int8 Scorer)."""
    variables = {name: tf.get_variable(name, shape, initializer=tf.zeros_initializer())
                 # The initial values never matter: every variable is restored before the first sample.
                 for name, shape in checkpoint.variable_shapes(hparams).items()}
    store = int8.Store(hparams, cpu_matmul.CPU_SPLITS) if precision == 'int8' and int8.kernel_works() else None
    float32 = [v for name, v in variables.items() if store is None or name not in store.weights]
    saver = tf.train.Saver(float32)
    graph = sess.graph
    path = graph.get_tensor_by_name(saver.saver_def.filename_tensor_name)
    # A callable runs without extending the session's graph. Session.run would first take the graph's lock,
    # which the thread building the sampling graph takes for every op it adds: the restore would wait for it.
    runs = [sess.make_callable(graph.get_operation_by_name(saver.saver_def.restore_op_name), [path])]
    runs += store.fill_steps(sess, path) if store else []
    failure = []

    def restore():
        prefix = str(model_dir / (getattr(model_dir, 'checkpoint_name', None)
                                  or checkpoint.current_checkpoint(model_dir)))
        try:
            for run in runs:  # the int8 fills after the float32 ones, one layer at a time: little float32 held
                run(prefix)
        except tf.errors.OpError as err:
            failure.append(error_reason(err))

    thread = threading.Thread(target=restore, name='restore', daemon=True)
    thread.start()

    def wait():
        thread.join()
        if failure:
            raise checkpoint.ModelError(f'cannot restore the checkpoint in {model_dir} ({failure[0]}); '
                                        f'{checkpoint.download_hint(model_dir.name)}')
    return wait
