"""LAMBADA (Paperno et al., 2016) zero-shot, as GPT-2's paper and lm-evaluation-harness's `lambada_openai` score it.

The data is OpenAI's `lambada_test.jsonl`: one `{"text": ...}` per line, a passage whose last word the model must
predict. As `lambada_openai` does, the context is the text up to its last space and the target the space and the
last word (`text.split(' ')`); the target's ids are those of the whole text after the context's ids
(scoring.encode_pair), and no <|endoftext|> comes first.

- accuracy: the share of examples whose every target token is the model's argmax (greedy decoding gives the whole
  word), with the standard error of that mean (sample standard deviation / sqrt(n), as the harness reports it);
- perplexity: exp(-mean over examples of log p(target word)), the harness's `perplexity` aggregation.

Two variants the paper's figure may have used, and that are reported elsewhere:

- last_token: predict only the text's last BPE token from all the tokens before it (some reproductions did this;
  it is easier when a word has several tokens);
- stop_words: the paper says "adding a stop-word filter as an approximation [to a constraint that the prediction
  be a valid final word] further increases accuracy to 63.24%", without saying which list or how it was applied.
  Here the first token of the word is predicted among the tokens that are not a whole stop word after a space
  (" the", " The", ...), from STOP_WORDS: the English list of NLTK, the stop-word list most used in NLP tools,
  and a short one of function words only, which a passage's final word almost never is. Its accuracy is an
  approximation of the paper's filter, not the same computation.
"""
import json
import math

import numpy as np

from gpt2.evaluation import scoring

# NLTK's English stop words (nltk.corpus.stopwords.words('english')), the word list only.
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom this
that that'll these those am is are was were be been being have has had having do does did doing a an the and but
if or because as until while of at by for with about against between into through during before after above below
to from up down in out on off over under again further then once here there when where why how all any both each
few more most other some such no nor not only own same so than too very s t can will just don don't should
should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't
haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't
weren weren't won won't wouldn wouldn't
""".split())


class LambadaError(Exception):
    """A LAMBADA file that cannot be read: the message names the file and line."""


def read_examples(path):
    """-> the texts of a lambada_test.jsonl file, each a passage with at least one space."""
    texts = []
    try:
        with open(path, encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)['text']
                except (ValueError, TypeError, KeyError):
                    text = None
                if not isinstance(text, str) or ' ' not in text.strip():
                    raise LambadaError(f'{path} line {number} is not a LAMBADA example; each line must be a JSON '
                                       f'object {{"text": "..."}} whose text ends with a word after a space')
                texts.append(text)
    except OSError as err:
        raise LambadaError(f'cannot read {path} ({err.strerror or err}); check that it is a readable file') from None
    except UnicodeDecodeError:
        raise LambadaError(f'{path} is not UTF-8 text; give OpenAI\'s lambada_test.jsonl') from None
    if not texts:
        raise LambadaError(f'{path} has no examples; give a file with one {{"text": ...}} per line')
    return texts


def split_example(text):
    """-> (context, target) as lambada_openai writes them: all words but the last, and ' ' + the last word."""
    words = text.split(' ')
    return ' '.join(words[:-1]), ' ' + words[-1]


def request(enc, text, last_token):
    """-> (context ids, target ids) of one example."""
    if last_token:
        ids = enc.encode(text)
        return ids[:-1], ids[-1:]
    return scoring.encode_pair(enc, *split_example(text))


def banned_tokens(enc, n_vocab):
    """[n_vocab] bool: the tokens that are a whole stop word after a space, in any capitalisation."""
    banned = np.zeros([n_vocab], bool)
    for token, id_ in enc.encoder.items():
        text = enc.token_bytes(id_).decode('utf-8', 'replace')
        if text.startswith(' ') and text[1:].lower() in STOP_WORDS:
            banned[id_] = True
    return banned


def evaluate(score, enc, texts, *, n_ctx, n_vocab, batch_size, last_token=False, stop_words=False):
    """-> {'examples', 'accuracy', 'accuracy_stderr', 'perplexity'} over the texts."""
    windows = [scoring.continuation_window(*request(enc, text, last_token), n_ctx) for text in texts]
    options = {'banned': banned_tokens(enc, n_vocab)} if stop_words else {}
    results = scoring.score_windows(score, windows, batch_size, **options)
    correct, logprobs = [], []
    for result in results:
        greedy = result[1].copy()
        if stop_words:
            greedy[0] = result[2][0]  # the word's first token, chosen among the tokens that are no stop word
        correct.append(float(greedy.all()))
        logprobs.append(float(result[0].sum()))
    return figures(correct, logprobs)


def figures(correct, logprobs):
    """Accuracy, its standard error and perplexity as lm-evaluation-harness aggregates them."""
    n = len(correct)
    accuracy = sum(correct) / n
    stddev = math.sqrt(sum((c - accuracy) ** 2 for c in correct) / (n - 1)) if n > 1 else float('nan')
    return {'examples': n, 'accuracy': accuracy, 'accuracy_stderr': stddev / math.sqrt(n),
            'perplexity': math.exp(-sum(logprobs) / n)}


def evaluate_model(model_dir, hparams, enc, texts, *, batch_size=None, last_token=False, stop_words=False):
    """evaluate() with the model of model_dir (loading.load_model's), in a session of its own. batch_size None:
    scoring.default_batch_size."""
    with scoring.scorer_session(model_dir, hparams) as scorer:
        return evaluate(scorer.score, enc, texts, n_ctx=hparams.n_ctx, n_vocab=hparams.n_vocab,
                        batch_size=batch_size or scoring.default_batch_size(hparams), last_token=last_token,
                        stop_words=stop_words)


def report(result, *, as_json):
    """evaluate()'s figures as one line of text, or as JSON (--json)."""
    if as_json:
        return json.dumps(result)
    return (f"{result['examples']} examples: accuracy {result['accuracy']:.4f} ± {result['accuracy_stderr']:.4f}, "
            f"perplexity {result['perplexity']:.2f}")
