"""The training loop (train_loop) and what it does besides steps: the progress line, validation, the best
checkpoint and early stopping, samples, and the Ctrl-C that asks it to save and stop."""
import signal
import sys
import time

import numpy as np

import sample
from gpt2.base import checkpoint
from gpt2.data import corpus
from gpt2.sampling import printing
from gpt2.training import graph


class StopRequest:
    """The first Ctrl-C asks the loop to save and stop after the current step; the second ends the process at once
    (SIGINT's default action), without saving: the run folder stays at its last checkpoint."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print('Interrupted: saving after this step (Ctrl-C again to stop at once, without saving)',
              file=sys.stderr, flush=True)


class Progress:
    """The original's progress line, `[step | seconds since start] loss=... avg=...`, avg a moving average over
    about the last 100 steps, plus the step's tokens per second, and with float16's loss scaling the steps
    skipped so far for a non-finite gradient."""

    def __init__(self):
        self.start = time.time()
        self.total, self.weight = 0.0, 0.0

    def elapsed(self):
        return time.time() - self.start

    def step(self, step, loss, tokens, seconds, skipped=None):
        self.total, self.weight = self.total * 0.99 + loss, self.weight * 0.99 + 1
        print(f'[{step} | {self.elapsed():.2f}] loss={loss:.2f} avg={self.total / self.weight:.2f} '
              f'tokens/s={tokens / seconds:.1f}' + (f' skipped={skipped}' if skipped is not None else ''), flush=True)


def steps_done(sess, training):
    """The steps the run has taken: its updates (global_step) and, with float16's loss scaling, the steps it
    skipped, which drew their batches too."""
    done = int(sess.run(training.global_step))
    return done + (int(sess.run(training.skipped)) if training.skipped is not None else 0)


class Validation:
    """The loss over a fixed set of windows of the validation data, chosen once, so that it is comparable over a
    run; printed with its perplexity, exp(loss)."""

    def __init__(self, hparams, chunks, *, seq_len, batch_size, batch_count, seed):
        self.batches = corpus.Sampler(chunks, seq_len, seed).fixed_batches(batch_size, batch_count)
        self.tokens, self.lengths, self.loss_sum, self.count = graph.build_validation(hparams, batch_size)

    def run(self, sess, step, progress):
        total, count = 0.0, 0.0
        for tokens, lengths in self.batches:
            loss_sum, n = sess.run([self.loss_sum, self.count], {self.tokens: tokens, self.lengths: lengths})
            total, count = total + float(loss_sum), count + float(n)
        loss = total / count
        print(f'[{step} | {progress.elapsed():.2f}] validation loss={loss:.4f} perplexity={np.exp(loss):.2f}',
              flush=True)
        return loss


class Best:
    """--keep_best and --early_stopping: after each validation, the run's best.json is brought up to date; with
    keep_best the checkpoint of a new lowest loss is saved (if it is not already) and never pruned, and with
    early_stopping N the run stops after N validations in a row without a new lowest loss. The record is in the
    run folder, so a resumed run goes on counting (a validation of the same step is not counted twice)."""

    def __init__(self, run, *, keep_best, early_stopping, max_checkpoints):
        self.run, self.keep_best, self.early_stopping = run, keep_best, early_stopping
        self.max_checkpoints = max_checkpoints

    def update(self, loss, step, save):
        """After a validation of loss at step; save() saves a checkpoint of step -> True to stop the run."""
        best = self.run.best()
        if best.get('last') == step:
            return False
        if best.get('loss') is None or loss < best['loss']:
            name = None
            if self.keep_best and step > 0:
                if checkpoint.checkpoint_name(step) not in self.run.checkpoints():
                    save()
                name = checkpoint.checkpoint_name(step)
            best = dict(checkpoint=name, loss=loss, step=step, since=0)
        else:
            best = dict(best, since=best.get('since', 0) + 1)
        best['last'] = step
        self.run.record_best(self.max_checkpoints, **{k: best.get(k) for k in ('checkpoint', 'loss', 'step',
                                                                               'since', 'last')})
        if self.early_stopping and best['since'] >= self.early_stopping:
            print(f'Stopping early: {best["since"]} validations without a loss below {best["loss"]:.4f} (step '
                  f'{best["step"]})', flush=True)
            return True
        return False


class Samples:
    """Unconditional samples from the weights being trained, printed and written to SAMPLE_DIR/RUN_NAME/
    samples-STEP. The sampling graph is built at the first samples, not before the first step (2 s for 124M)."""

    def __init__(self, hparams, enc, folder, *, length, count, batch_size, top_k, top_p):
        self.enc, self.folder, self.count = enc, folder, count
        self.rows = min(count, batch_size)
        self.options = dict(hparams=hparams, length=length, start_token=enc.encoder[checkpoint.ENDOFTEXT],
                            batch_size=self.rows, top_k=top_k, top_p=top_p, frozen_weights=False)
        self.output = None

    def run(self, sess, step):
        if self.output is None:
            with sess.graph.as_default():
                self.output = sample.sample_sequence(**self.options)
        texts = []
        while len(texts) < self.count:
            for tokens in sess.run(self.output)[:self.count - len(texts)]:
                texts.append(printing.sample_header(len(texts) + 1) + '\n' + printing.sample_text(self.enc, tokens[1:]))
        text = '\n'.join(texts) + '\n'
        print(text, end='', flush=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f'samples-{step}').write_text(text, encoding='utf-8', errors='replace')


def train_loop(sess, training, sampler, run, saver, config, *, samples, validation, best=None):
    """Train until config.steps more steps are done (0: until Ctrl-C), saving every config.save_every steps and
    at the end; samples (a Samples, or None) every config.sample_every steps and at the end of the steps;
    validation (a Validation, or None) every config.val_every steps. best: a Best, for --keep_best and
    --early_stopping. run None: save nothing (a worker not the chief)."""
    steps, save_every, max_checkpoints = config.steps, config.save_every, config.max_checkpoints
    sample_every, val_every = config.sample_every, config.val_every
    step = steps_done(sess, training)
    sampler.draws = step * training.accumulate_gradients  # go on with the windows a straight run would draw
    last, saved = (step + steps if steps else None), step
    progress, stop = Progress(), StopRequest()

    def validate():
        """-> True to stop early."""
        loss = validation.run(sess, step, progress)

        def save():
            nonlocal saved
            print(f'Saving {run.save(sess, saver, step, max_checkpoints)}', flush=True)
            saved = step
        return best is not None and best.update(loss, step, save)
    early = bool(validation) and validate()
    while not early and not stop.requested and (last is None or step < last):
        batches = [sampler.sample(training.batch_size) for _ in range(training.accumulate_gradients)]
        began = time.time()
        loss = training.run_step(sess, batches)
        seconds, step = time.time() - began, step + 1
        skipped = int(sess.run(training.skipped)) if training.skipped is not None else None
        progress.step(step, loss, sum(int(lengths.sum()) for _, lengths in batches), seconds, skipped)
        if run and step % save_every == 0:
            print(f'Saving {run.save(sess, saver, step, max_checkpoints)}', flush=True)
            saved = step
        if samples and step % sample_every == 0:
            samples.run(sess, step)
        if validation and step % val_every == 0:
            early = validate()
    if run and step != saved:
        print(f'Saving {run.save(sess, saver, step, max_checkpoints)}', flush=True)
    if samples and not stop.requested and step % sample_every:
        samples.run(sess, step)  # a run of --steps ends with samples of the weights it leaves
