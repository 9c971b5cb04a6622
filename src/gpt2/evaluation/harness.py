"""This project's TensorFlow GPT-2 as a model of EleutherAI's lm-evaluation-harness (`lm_eval`, an optional
dependency: requirements-eval.txt). Import this module only when lm_eval is wanted.

    import harness, lm_eval
    lm = harness.HarnessModel(model_name='124M', models_dir='models')
    results = lm_eval.simple_evaluate(model=lm, tasks=['lambada_openai'])

HarnessModel answers the harness's three kinds of request as its Hugging Face backend (`hf`) does for GPT-2:
- tokenisation: the GPT-2 BPE with no token added in front; a literal <|endoftext|> in a text is that token (as
  Hugging Face's tokenizer reads it); a request's context and continuation are split as the harness's TemplateLM
  does (its own code: trailing spaces of the context move to the continuation, and so on);
- loglikelihood: context + continuation, cut from the left to the window's n_ctx + 1 tokens, the continuation's
  log-probability summed and whether greedy decoding gives it;
- loglikelihood_rolling: the text after <|endoftext|>, in disjoint windows of n_ctx (scoring.windows at stride
  n_ctx, which is the harness's rolling-window rule), log-probabilities summed;
- generate_until: greedy decoding from the context's last n_ctx - max_gen_toks tokens, for max_gen_toks tokens
  (the request's, else 256) or to <|endoftext|>, then cut before the first of the task's `until` strings.
  Sampling arguments are ignored: decoding is always greedy.
"""
import numpy as np
import tensorflow.compat.v1 as tf
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from tqdm import tqdm

import sample

from gpt2 import loading
from gpt2.base import checkpoint
from gpt2.evaluation import scoring
from gpt2.sampling import printing

DEFAULT_MAX_GEN_TOKS = 256  # the harness's default for generation tasks that give none


@register_model('gpt2-tf')
class HarnessModel(TemplateLM):
    """GPT-2 from a model folder (a released size or a fine-tuning run folder), loaded as the sampling scripts
    load it (loading.load_model), for lm_eval.simple_evaluate. batch_size: windows scored at once (default: as many
    as 1 GiB of activations holds: scoring.default_batch_size). checkpoint: which of a run folder's checkpoints,
    latest, best or a step, as the scripts' --checkpoint."""

    def __init__(self, model_name='124M', models_dir='models', batch_size=None, max_gen_toks=DEFAULT_MAX_GEN_TOKS,
                 checkpoint='latest'):
        super().__init__()
        model_dir, self.hparams, self.enc = loading.load_model(model_name, models_dir, checkpoint)
        self.batch_size = int(batch_size) if batch_size not in (None, 'auto') else \
            scoring.default_batch_size(self.hparams)
        self._max_gen_toks = int(max_gen_toks)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.sess = tf.Session(config=scoring.session_config())
            self.scorer = scoring.restored_scorer(self.sess, model_dir, self.hparams)
        self.generators = {}  # max_gen_toks -> (context placeholder, output tokens)

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        """For `lm_eval --model gpt2-tf --model_args model_name=124M,models_dir=models[,checkpoint=best]`."""
        args = dict(pair.split('=', 1) for pair in arg_string.split(',') if pair)
        config = {k: v for k, v in (additional_config or {}).items() if k == 'batch_size' and v is not None}
        return cls(**args, **config)

    # --- tokens

    @property
    def eot_token_id(self):
        return self.enc.encoder[checkpoint.ENDOFTEXT]

    @property
    def max_length(self):
        return self.hparams.n_ctx

    @property
    def max_gen_toks(self):
        return self._max_gen_toks

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
        return self.enc.encode(string, allowed_special={checkpoint.ENDOFTEXT})

    def tok_decode(self, tokens):
        return self.enc.decode(tokens)

    # --- the three kinds of request

    def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kwargs):
        """requests: ((context, continuation), context ids, continuation ids) -> (log p, is greedy) each."""
        windows = [scoring.continuation_window(context, continuation, self.max_length)
                   for _, context, continuation in requests]
        results = self.score(windows, disable_tqdm, 'loglikelihood requests')
        answers = []
        for (strings, _, _), (logprobs, greedy) in zip(requests, results):
            answer = (float(logprobs.sum()), bool(greedy.all()))
            self.cache_hook.add_partial('loglikelihood', strings, answer)
            answers.append(answer)
        return answers

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        owners, windows = [], []
        for n, request in enumerate(requests):
            for window in scoring.windows([self.tok_encode(request.args[0])], self.prefix_token_id,
                                          self.max_length, self.max_length):
                owners.append(n)
                windows.append(window)
        totals = [0.0] * len(requests)
        for n, (logprobs, _) in zip(owners, self.score(windows, disable_tqdm, 'rolling windows')):
            totals[n] += float(logprobs.sum())
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial('loglikelihood_rolling', (request.args[0],), total)
        return totals

    def generate_until(self, requests, disable_tqdm=False):
        texts = []
        for request in tqdm(requests, disable=disable_tqdm, desc='generate_until requests'):
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop('until', None), eos=self.tok_decode([self.eot_token_id]))
            text = self.greedy(context, kwargs['max_gen_toks'])
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            self.cache_hook.add_partial('generate_until', (context, gen_kwargs), text)
            texts.append(text)
        return texts

    # --- running the model

    def score(self, windows, disable_tqdm, desc):
        """scoring.score_windows with a progress bar of batches."""
        progress = tqdm(total=len(windows), disable=disable_tqdm, desc=desc)

        def counted(batch):
            results = self.scorer.score(batch)
            progress.update(len(batch))
            return results
        with progress:
            return scoring.score_windows(counted, windows, self.batch_size)

    def greedy(self, context, length):
        """The text that greedy decoding writes after context, for length tokens or to <|endoftext|>."""
        if length >= self.max_length:
            raise ValueError(f'max_gen_toks {length} must be below the window, {self.max_length}')
        ids = self.tok_encode(context)[-(self.max_length - length):] or [self.eot_token_id]
        if length not in self.generators:
            with self.graph.as_default():
                tokens = tf.placeholder(tf.int32, [1, None])
                output = sample.sample_sequence(hparams=self.hparams, length=length, context=tokens,
                                                temperature=0, stop_token=self.eot_token_id, frozen_weights=True)
            self.generators[length] = tokens, output
        tokens, output = self.generators[length]
        new = self.sess.run(output, {tokens: np.array([ids], np.int32)})[0, len(ids):]
        return printing.sample_text(self.enc, new, self.eot_token_id)
