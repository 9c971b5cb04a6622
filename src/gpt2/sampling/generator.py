"""Generate from Python: load a model once, then sample from it as often as you like (a notebook, a web app).

    from gpt2.sampling import generator
    gen = generator.Generator('124M')
    for sample in gen.generate(['The meaning of life is', 'Once upon a time'], length=40, top_k=40, seed=1):
        print(sample.text)

Every knob of generate() (length, temperature, top_k, top_p, the penalties, the stop strings, the seed) is a
placeholder fed per call, so one graph serves every call with the same number of prompts: a new batch size
builds one more graph (once), and a call that goes past the model's window builds its sliding graph (once).
Prompts of different lengths share a batch (sample.sample_sequence's context_lengths).

embed() and hidden_states() run the model over whole inputs (gpt2/sampling/hidden.py): pooled embeddings, and
every layer's hidden states for research. Their one graph serves every batch and length.
"""
import contextlib
import dataclasses
import numbers

import numpy as np
import tensorflow.compat.v1 as tf

import sample

from gpt2 import loading
from gpt2.base import checkpoint
from gpt2.base.checkpoint import ENDOFTEXT
from gpt2.base import flags
from gpt2.sampling import cpu_matmul, int8
from gpt2.sampling import hidden as hidden_lib
from gpt2.sampling import penalties as penalties_lib
from gpt2.sampling import rules
from gpt2.sampling import stops as stops_lib


@dataclasses.dataclass
class Sample:
    text: str  # the sample's text, cut before the first stop string
    tokens: list  # its token ids, through the one that completes the stop string (or all of them)


class Generator:
    """A model loaded once into its own graph and session. Close it (or use `with`) to free its memory."""

    def __init__(self, model_name='124M', models_dir='models', *, device=None, checkpoint='latest',
                 session_config=None, precision='float32'):
        """checkpoint: which of a training run's checkpoints to load, as the scripts' --checkpoint (latest, best
        or a step). session_config: a tf.ConfigProto for the session; by default the scripts'
        (sample.session_config()). precision: the products of generate(), as the scripts' --precision (float32;
        int8 on a CPU; float16 or bfloat16, the weights and the cache in half precision, on a GPU); another value,
        int8 for a GPU or a half precision for a CPU is a ValueError. embed() and hidden_states() are float32."""
        with knob_errors():
            self.precision = rules.check_precision(precision, on_cpu=sample.on_cpu(device or sample.default_device()))
        # The sampling code is TensorFlow 1 graph code (the scripts set this up in runtime.setup_process); idempotent.
        tf.disable_v2_behavior()
        self.model_dir, self.hparams, self.enc = loading.load_model(model_name, models_dir, checkpoint)
        self.endoftext = self.enc.encoder[ENDOFTEXT]  # (checkpoint here is the argument, not the module)
        self.token_bytes = stops_lib.token_bytes(self.enc, self.hparams.n_vocab)
        self.device = device
        self.graph = tf.Graph()
        self.sess = tf.Session(graph=self.graph, config=session_config or sample.session_config())
        self.graphs = {}  # (batch size, sliding) -> (placeholders, output)
        self.hidden = None  # hidden_lib.Graph, built on first use
        with self.graph.as_default():
            loading.start_restore(self.sess, self.model_dir, self.hparams, self.precision)()
            with tf.name_scope('knobs'):
                self.knobs = {
                    'length': tf.placeholder(tf.int32, [], 'length'),
                    'temperature': tf.placeholder(tf.float32, [], 'temperature'),
                    'top_k': tf.placeholder(tf.int32, [], 'top_k'),
                    'top_p': tf.placeholder(tf.float32, [], 'top_p'),
                    'seed': tf.placeholder(tf.int32, [2], 'seed'),
                    'stops': tf.placeholder(tf.int32, [None, None], 'stops'),
                    'context_keep': tf.placeholder(tf.int32, [], 'context_keep'),
                    'repetition': tf.placeholder(tf.float32, [], 'repetition_penalty'),
                    'presence': tf.placeholder(tf.float32, [], 'presence_penalty'),
                    'frequency': tf.placeholder(tf.float32, [], 'frequency_penalty'),
                    'no_repeat_ngram': tf.placeholder(tf.int32, [], 'no_repeat_ngram_size'),
                }

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sess.close()

    # -----------------------------------------------------------------------------------------------------------

    def graph_for(self, batch, sliding, on_token=None):
        """The sampling graph for `batch` prompts, built on first use: (context, lengths placeholders, output).
        on_token: sample_sequence's callback, fixed in the graph (gpt2/serving streams through one)."""
        key = (batch, sliding, on_token)
        if key not in self.graphs:
            k = self.knobs
            with self.graph.as_default():
                context = tf.placeholder(tf.int32, [batch, None])
                lengths = None if sliding else tf.placeholder(tf.int32, [batch])
                rules = penalties_lib.Penalties(repetition=k['repetition'], presence=k['presence'],
                                                frequency=k['frequency'], no_repeat_ngram=k['no_repeat_ngram'])
                output = sample.sample_sequence(
                    hparams=self.hparams, length=k['length'], context=context, context_lengths=lengths,
                    temperature=k['temperature'], top_k=k['top_k'], top_p=k['top_p'], seed=k['seed'],
                    stops=k['stops'], token_bytes=self.token_bytes, penalties=rules, frozen_weights=True,
                    device=self.device, context_keep=k['context_keep'] if sliding else None, on_token=on_token,
                    precision=self.precision)
            self.graphs[key] = (context, lengths, output)
        return self.graphs[key]

    def generate(self, prompts, length=64, temperature=1.0, top_k=0, top_p=1.0, stop=(), seed=None, *,
                 repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, no_repeat_ngram_size=0,
                 context_keep=None):
        """One sample per prompt (a string, or a list of them) -> a list of Sample (text and token ids).

        An empty prompt starts from <|endoftext|> (an unconditional sample); '<|endoftext|>' in a prompt is that
        token. The knobs are those of the scripts (see their --help); stop: a string or a list of them; give
        '<|endoftext|>' to end at that token too. seed (0 to 2**32 - 1): the same seed gives the
        same samples; None draws one. A knob out of range is a ValueError, by the scripts' rules for their flags.
        Past the model's window (prompt + length - 1 > n_ctx) the window slides (context_keep, by default half
        the window), one prompt at a time."""
        single = isinstance(prompts, str)
        prompts = [prompts] if single else list(prompts)
        if not prompts:
            raise ValueError('give at least one prompt')
        stop = [stop] if isinstance(stop, str) else list(stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise ValueError(f'a stop string must be text, not empty; got {stop!r}')
        n_ctx = self.hparams.n_ctx
        with knob_errors():  # the scripts' rules for the knobs, in one place (gpt2/sampling/rules.py)
            rules.check_sampling_flags(nsamples=len(prompts), batch_size=len(prompts), temperature=temperature,
                                     top_k=top_k, top_p=top_p, seed=seed)
            rules.check_penalties(repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                                frequency_penalty=frequency_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
            rules.check_length(length, n_ctx, default=None)
            context_keep = rules.check_context_keep(context_keep, n_ctx)
        if seed is None:
            seed = np.random.randint(0, 2**31 - 1)
        ids = [self.enc.encode(p, allowed_special={checkpoint.ENDOFTEXT}) or [self.endoftext] for p in prompts]
        feed = self.feed(length=length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=stop,
                         context_keep=context_keep, repetition_penalty=repetition_penalty,
                         presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                         no_repeat_ngram_size=no_repeat_ngram_size)
        if max(map(len, ids)) + length - 1 <= n_ctx:
            padded, n = sample.left_pad(ids)
            context, lengths, output = self.graph_for(len(ids), sliding=False)
            out = self.sess.run(output, {**feed, context: padded, lengths: n})
            new = [row[padded.shape[1]:] for row in out]
        else:
            context, _, output = self.graph_for(1, sliding=True)
            new = [self.sess.run(output, {**feed, context: [p]})[0, len(p):] for p in ids]
        results = [self.finish(tokens, stop) for tokens in new]
        return results[0] if single else results

    def feed(self, *, length, temperature, top_k, top_p, seed, stop, context_keep, repetition_penalty,
             presence_penalty, frequency_penalty, no_repeat_ngram_size):
        """The knobs' placeholders -> their values for one run (checked already). seed: 0 to 2**32 - 1, or a
        pair of int32 (a caller's own stream of seeds)."""
        k = self.knobs
        pair = list(seed) if isinstance(seed, (list, tuple)) else [seed % 2**31, seed // 2**31]
        return {k['length']: length, k['temperature']: temperature, k['top_k']: top_k, k['top_p']: top_p,
                k['seed']: pair, k['stops']: stops_lib.stop_array(stop), k['context_keep']: context_keep,
                k['repetition']: repetition_penalty, k['presence']: presence_penalty,
                k['frequency']: frequency_penalty, k['no_repeat_ngram']: no_repeat_ngram_size}

    def finish(self, tokens, stop):
        """A row's new tokens -> its Sample: the text before the first stop string, the tokens through the one
        that completes it."""
        tokens = [int(t) for t in tokens]
        text = stops_lib.cut(self.enc.decode(tokens), stop)
        if stop:
            ends = np.cumsum([len(self.enc.decode_bytes([t])) for t in tokens])
            data = self.enc.decode_bytes(tokens)
            found = [data.find(s.encode('utf-8')) for s in stop]
            found = [(i + len(s.encode('utf-8'))) for i, s in zip(found, stop) if i >= 0]
            if found:
                tokens = tokens[:int(np.searchsorted(ends, min(found))) + 1]
        return Sample(text=text, tokens=tokens)


    # -----------------------------------------------------------------------------------------------------------
    # Embeddings and hidden states
    # -----------------------------------------------------------------------------------------------------------

    def hidden_graph(self):
        """The graph of hidden states and pooled embeddings (gpt2/sampling/hidden.py), built on first use; the
        server builds it as the model loads."""
        if self.hidden is None:
            with self.graph.as_default():
                self.hidden = hidden_lib.Graph(self.hparams, self.device, self.whole_products())
        return self.hidden

    def whole_products(self):
        """How passes over whole inputs (hidden states, scoring) multiply: float32, or with precision int8 the int8
        model's products, since its weights are kept only as int8 copies (loading.start_restore)."""
        weights = int8.weights_if_kernel_works(1, 'hidden states') if self.precision == 'int8' else None
        return cpu_matmul.Products(int8=weights)

    def embed(self, inputs, pooling='mean', *, batch_size=8):
        """Inputs -> their embeddings, float32 [n, n_embd]: the final hidden state (after ln_f) averaged over each
        input's tokens (pooling='mean'), or its last token's (pooling='last').

        inputs: a string or a list of token ids (one input, n = 1), or a list of strings and token id lists;
        '<|endoftext|>' in a string is its one token. Each input is run alone, as if in a batch of one; inputs of
        similar lengths share a run of at most batch_size. An empty input, a token id outside the vocabulary, an
        input longer than the window (n_ctx) or another pooling is a ValueError."""
        if pooling not in hidden_lib.POOLINGS:
            raise ValueError(f'pooling must be one of {list(hidden_lib.POOLINGS)}; got {pooling!r}')
        if not is_whole(batch_size) or batch_size < 1:
            raise ValueError(f'batch_size must be a whole number, 1 or more; got {batch_size!r}')
        rows = self.input_tokens(inputs)
        graph = self.hidden_graph()
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths together: less padding
        out = np.empty([len(rows), self.hparams.n_embd], np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out[chunk] = self.sess.run(graph.pooled[pooling], graph.feed([rows[i] for i in chunk]))
        return out

    def hidden_states(self, one_input):
        """One input (a string or a list of token ids) -> every layer's hidden states, float32
        [n_layer + 1, seq, n_embd], as Hugging Face transformers' output_hidden_states: [0] the embeddings'
        output (token + position embeddings), [i] for 1 <= i < n_layer the output of block i - 1 (h{i-1}), and
        [n_layer] the last block's output after the final layer norm ln_f (whose mean over the tokens is
        embed()'s). Errors as embed()'s."""
        if not (isinstance(one_input, str) or is_token_ids(one_input)):
            raise ValueError('hidden_states takes one input: a string or a list of token ids')
        graph = self.hidden_graph()
        return self.sess.run(graph.states, graph.feed(self.input_tokens(one_input)))[:, 0]

    def input_tokens(self, inputs):
        """embed()'s inputs -> token id lists, checked."""
        if isinstance(inputs, str) or is_token_ids(inputs):
            inputs = [inputs]
        inputs = list(inputs)
        if not inputs:
            raise ValueError('give at least one input')
        rows = []
        for i, x in enumerate(inputs):
            if isinstance(x, str):
                ids = self.enc.encode(x, allowed_special={checkpoint.ENDOFTEXT})
            elif is_token_ids(x) or (isinstance(x, (list, tuple)) and not x):
                ids = [int(t) for t in x]
            else:
                raise ValueError(f'input {i} is neither a string nor a list of token ids: {x!r}')
            if not ids:
                raise ValueError(f'input {i} is empty')
            outside = [t for t in ids if not 0 <= t < self.hparams.n_vocab]
            if outside:
                raise ValueError(f'input {i}: token id {outside[0]} is outside the vocabulary '
                                 f'(0 to {self.hparams.n_vocab - 1})')
            if len(ids) > self.hparams.n_ctx:
                raise ValueError(f'input {i} has {len(ids)} tokens, more than the window of {self.hparams.n_ctx}')
            rows.append(ids)
        return rows


def is_whole(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_token_ids(value):
    """A list (or tuple, or 1-D array) of whole numbers, at least one."""
    return (isinstance(value, (list, tuple, np.ndarray)) and len(value) > 0
            and all(is_whole(t) for t in value))


@contextlib.contextmanager
def knob_errors():
    """The scripts' flag errors (flags.UsageError, '--top_k must be ...') as ValueError ('top_k must be ...')."""
    try:
        yield
    except flags.UsageError as err:
        raise ValueError(str(err).removeprefix('--')) from None
