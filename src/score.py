#!/usr/bin/env python3
"""Score text with GPT-2: per-token log-probabilities, perplexity, bits per byte of files.

The windows: gpt2/evaluation/scoring.py; reading the files' documents: gpt2/evaluation/documents.py; the
figures: gpt2/evaluation/figures.py; --per_token: gpt2/evaluation/per_token.py.
"""
import fire

from gpt2.base import flags, runtime

if __name__ == '__main__':
    flags.check_script_early(__file__)  # a misspelled flag is refused before TensorFlow's seconds of loading
tf = runtime.import_tensorflow()  # first, so that TensorFlow loads without its start-up log lines
import sample  # noqa: E402
from gpt2 import loading  # noqa: E402
from gpt2.evaluation import detokenize  # noqa: E402
from gpt2.evaluation import documents as documents_lib  # noqa: E402
from gpt2.evaluation import figures  # noqa: E402
from gpt2.evaluation import per_token as per_token_lib  # noqa: E402
from gpt2.evaluation import scoring  # noqa: E402
from gpt2.sampling import rules  # noqa: E402


def check_flags(files, *, documents, stride, batch_size, detokenizer):
    if not files:
        raise flags.UsageError('give at least one text file to score, e.g. python src/score.py some.txt')
    if documents not in documents_lib.DOCUMENTS:
        raise flags.UsageError(f'--documents must be one of {", ".join(documents_lib.DOCUMENTS)}, got {documents!r}')
    if detokenizer not in detokenize.DETOKENIZERS:
        raise flags.UsageError(f'--detokenizer must be one of {", ".join(detokenize.DETOKENIZERS)}, '
                               f'got {detokenizer!r}')
    flags.whole_number('stride', stride, 1, allow_none=True)
    flags.whole_number('batch_size', batch_size, 1, allow_none=True)


@flags.script(
    'Score text files with GPT-2: perplexity, bits per byte, per-token log-probabilities.',
    files='the UTF-8 text files to score.',
    documents="how files are cut into documents, each scored from <|endoftext|> as its context: 'file' "
              "(default; each file is one), 'endoftext' (split at a literal <|endoftext|>) or 'lines' (each "
              "non-empty line).",
    stride="tokens each window moves on by, 1 to the model's window; a token sees at least window + 1 - "
           "stride tokens before it. Default: the window (disjoint windows, as lm-evaluation-harness).",
    batch_size='windows scored at once; default: as many as 1 GiB of activations holds (10 windows at 124M).',
    json='print one JSON object: {"files": [{"path": ..., FIGURES}], "total": {FIGURES}}.',
    per_token='write one JSON line per document to this file: path, document, ids, tokens, logprobs.',
    detokenizer="undo a corpus's tokenised spelling before scoring: none (default), wikitext or ptb; "
                "counts are of the text as given.")
def score(*files, model_name='124M', models_dir='models', documents='file', stride=None, batch_size=None,
          json=False, per_token=None, detokenizer='none', checkpoint='latest', precision='float32'):
    check_flags(files, documents=documents, stride=stride, batch_size=batch_size, detokenizer=detokenizer)
    precision = rules.check_precision(precision, on_cpu=sample.on_cpu(sample.default_device()))
    paths = [str(f) for f in files]
    try:
        for path in paths:
            documents_lib.check_file(path)
        model_dir, hparams, enc = loading.load_model(model_name, models_dir, checkpoint)
        stride = hparams.n_ctx if stride is None else flags.whole_number('stride', stride, 1, hparams.n_ctx)
        batch_size = batch_size or scoring.default_batch_size(hparams)
        session = scoring.scorer_session(model_dir, hparams, precision)
        with per_token_lib.writer(per_token, enc) as writer, session as scorer:
            totals = figures.score_files(scorer, enc, paths, documents=documents, stride=stride,
                                         batch_size=batch_size, detokenizer=detokenizer, per_token=writer)
    except documents_lib.FileProblem as err:
        flags.fail(err, code=1)
    figures.print_figures(totals, as_json=json)


if __name__ == '__main__':
    runtime.setup_process()
    fire.Fire(score, command=flags.check_argv(score))
