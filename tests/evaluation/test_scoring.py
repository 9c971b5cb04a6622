"""The scoring windows and log-probabilities, against the NumPy reference GPT-2 on the tiny model."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import model
import support
from gpt2.evaluation import scoring
from support import brute_force, reference_logprobs

N_CTX = support.TINY_HPARAMS['n_ctx']


@pytest.fixture(scope='module')
def scorer(tiny_model):
    graph = tf.Graph()
    with graph.as_default():
        sess = tf.Session(graph=graph)
        s = scoring.Scorer(sess, tiny_model.hparams_object())
        support.restore(sess, tiny_model)
    yield s
    sess.close()


def document(length, seed=0, vocab=268):
    return np.random.default_rng(seed).integers(0, vocab, size=length).tolist()


def score_one(scorer, doc, stride, batch_size=4, chunks=None):
    results = list(scoring.score_documents(scorer.score, [('d', chunks or [doc])], first=scorer_first(scorer),
                                           n_ctx=N_CTX, stride=stride, batch_size=batch_size))
    ids = np.concatenate([r[1] for r in results])
    return ids, np.concatenate([r[2] for r in results]), results


def scorer_first(scorer):
    return scorer.hparams.n_vocab - 1  # the tiny vocabulary's <|endoftext|> is its last id


def test_every_stride_scores_each_token_once_with_the_rules_context(scorer, tiny_model):
    doc = document(3 * N_CTX + 5)
    for stride in range(1, N_CTX + 1):
        ids, logprobs, results = score_one(scorer, doc, stride, batch_size=16)
        assert ids.tolist() == doc, stride
        np.testing.assert_allclose(logprobs, brute_force(tiny_model, doc, stride), atol=2e-4, err_msg=str(stride))
        assert [r[3] for r in results] == [False] * (len(results) - 1) + [True]


def test_a_document_of_one_window_is_scored_in_one_pass(scorer, tiny_model):
    doc = document(N_CTX, seed=1)
    ids, logprobs, results = score_one(scorer, doc, stride=3)
    assert len(results) == 1
    np.testing.assert_allclose(logprobs, reference_logprobs(tiny_model, [tiny_model.endoftext] + doc), atol=2e-4)


def test_windows_of_many_documents_batched_together_score_as_alone(scorer):
    docs = [document(n, seed=n) for n in (1, 5, N_CTX, N_CTX + 1, 2 * N_CTX + 3, 2)]
    together = list(scoring.score_documents(scorer.score, list(enumerate([[d] for d in docs])),
                                            first=scorer_first(scorer), n_ctx=N_CTX, stride=7, batch_size=3))
    for key, doc in enumerate(docs):
        mine = [r for r in together if r[0] == key]
        alone = score_one(scorer, doc, stride=7, batch_size=1)
        assert np.concatenate([r[1] for r in mine]).tolist() == doc
        np.testing.assert_allclose(np.concatenate([r[2] for r in mine]), alone[1], atol=1e-5)
    assert [r[0] for r in together] == sorted(r[0] for r in together)  # document order


def test_tokens_arriving_in_chunks_give_the_same_windows():
    doc = document(5 * N_CTX + 3, seed=4)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.integers(0, len(doc), size=12))
    chunks = [doc[a:b] for a, b in zip([0, *cuts], [*cuts, len(doc)])]
    for stride in (1, 5, N_CTX):
        whole = [(t.tolist(), k) for t, k in scoring.windows([doc], 99, N_CTX, stride)]
        pieces = [(t.tolist(), k) for t, k in scoring.windows(iter(chunks), 99, N_CTX, stride)]
        assert pieces == whole


def test_at_full_stride_the_windows_are_the_harness_rolling_windows():
    """At S = n_ctx, lm-evaluation-harness's own rolling windows (its utils, with context_len 1, made disjoint)."""
    from lm_eval import utils
    doc = document(3 * N_CTX + 7, seed=5)
    # (context, continuation): the model's input is context + continuation[:-1], the targets the continuation.
    theirs = [(list(a) + list(b[:-1]), list(b)) for a, b in map(utils.make_disjoint_window,
                                                               utils.get_rolling_token_windows(doc, 99, N_CTX, 1))]
    ours = [(t[:-1].tolist(), t[len(t) - k:].tolist()) for t, k in scoring.windows([doc], 99, N_CTX, N_CTX)]
    assert ours == theirs


def test_a_document_without_tokens_has_no_windows():
    assert list(scoring.windows([[], []], 99, N_CTX, 4)) == []


def test_default_batch_size_fits_the_activation_budget():
    hparams = model.default_hparams().override_from_dict({'n_vocab': 50257})
    # 124M: 2 x 12 heads x 1024^2 x 4 bytes = 96 MiB a window; 10 fit in 1 GiB, 11 do not
    assert scoring.default_batch_size(hparams) == 10
    assert scoring.default_batch_size(hparams.override_from_dict({'n_head': 25})) == 5  # 1558M: 200 MiB


def test_logits_made_in_chunks_score_as_in_one(scorer, tiny_model, monkeypatch):
    """Chunks of 5 rows, the last one padded, give what one chunk of all the scored rows gives."""
    monkeypatch.setattr(scoring, 'CHUNK_ROWS', 5)
    with scorer.sess.graph.as_default():
        chunked = scoring.Scorer(scorer.sess, tiny_model.hparams_object())
    batch = [(np.array(document(n + 1, seed=n), np.int32), k) for n, k in ((N_CTX, 13), (7, 7), (20, 3))]
    banned = np.arange(tiny_model.hparams['n_vocab']) % 3 == 0
    for mine, whole in zip(chunked.score(batch, banned=banned), scorer.score(batch, banned=banned)):
        for a, b in zip(mine, whole):
            np.testing.assert_allclose(a, b, atol=1e-6)
