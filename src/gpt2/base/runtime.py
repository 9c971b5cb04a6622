"""Process set-up shared by the scripts: TensorFlow loaded without its start-up log lines, and the signal and
stream settings of a command-line tool. A script calls these first, before it imports anything that loads
TensorFlow; importing this module has no effect of its own."""
import contextlib
import importlib.util
import os
import signal
import sys


@contextlib.contextmanager
def native_stderr_hidden():
    """Point file descriptor 2 at /dev/null for a moment. A Python error raised inside is still shown: it is
    printed after the exit."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """tensorflow.compat.v1, loaded without its start-up log lines, so that a user sees samples, not pages of
    warnings. TensorFlow's native libraries log to file descriptor 2 while they load, before any log level
    applies (absl's "All log messages before absl::InitializeLog() ..."), so the descriptor itself is silenced
    while they load. TF_CPP_MIN_LOG_LEVEL=0 in the environment shows everything.

    TensorFlow imports Keras 3 as it loads (1.3 s of its 4 s on a 2-core machine), which nothing here uses.
    TF_USE_LEGACY_KERAS=1 points it at tf_keras instead: where that is not installed, it skips the import
    (tf.keras is then unavailable in the process; TF_USE_LEGACY_KERAS=0 in the environment keeps it)."""
    if 'tensorflow' not in sys.modules and importlib.util.find_spec('tf_keras') is None:
        os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
    if 'tensorflow' in sys.modules or os.environ.get('TF_CPP_MIN_LOG_LEVEL') == '0':
        import tensorflow.compat.v1 as tf
        return tf
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    with native_stderr_hidden():
        import tensorflow.compat.v1 as tf
    tf.logging.set_verbosity(tf.logging.ERROR)
    return tf


def setup_process():
    """Ctrl-C and a closed pipe end the process at once and quietly, as for any command-line tool: TensorFlow
    runs the sampling loop without returning to Python, so a Python KeyboardInterrupt would wait for the whole
    batch. Text that the terminal or pipe cannot encode is replaced, not fatal, and so is invalid UTF-8 read."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.stdout.reconfigure(errors='replace')
    sys.stdin.reconfigure(errors='replace')
    import_tensorflow().disable_v2_behavior()
