"""Query composition and reranking as tables: pure numpy, no model."""

import numpy as np
import pytest

from retrieval.query import Weights, compose, rerank, weighted_mean

E = np.eye(4, dtype=np.float32)
NONE = np.zeros((0, 4), np.float32)


@pytest.mark.parametrize(
    "text, images, liked, disliked, expect_best, expect_worst",
    [
        (E[[0]], NONE, NONE, NONE, 0, None),
        (E[[0]], E[[1]], NONE, NONE, None, None),  # equal pull from text and example
        (E[[0]], NONE, E[[2]], NONE, 0, None),  # text dominates one like
        (E[[0]], NONE, NONE, E[[3]], 0, 3),  # dislike pushes away
        (NONE, E[[1]], NONE, NONE, 1, None),  # query by example alone
    ],
)
def test_compose(text, images, liked, disliked, expect_best, expect_worst):
    q = compose(text, np.ones(len(text)), images, liked, disliked)
    assert np.isclose(np.linalg.norm(q), 1.0)
    if expect_best is not None:
        assert int(np.argmax(q)) == expect_best
    if expect_worst is not None:
        assert int(np.argmin(q)) == expect_worst and q[expect_worst] < 0
    if expect_best is None and len(images) and len(text):
        assert np.isclose(q[0], q[1])


def test_many_likes_do_not_drown_the_text():
    liked = np.repeat(E[[2]], 10, axis=0)
    q = compose(E[[0]], np.ones(1), NONE, liked, NONE)
    assert q[0] > q[2]


def test_concept_weights():
    q = compose(E[[0, 1]], np.array([2.0, 1.0]), NONE, NONE, NONE)
    assert q[0] > q[1] > 0


def test_weighted_mean_of_nothing_is_zero():
    assert weighted_mean(NONE).shape == (4,) and not weighted_mean(NONE).any()


def test_rerank_penalises_the_negative_concept():
    query = np.array([1, 0, 0, 0], np.float32)
    cats = np.array([[0.9, 0.0, 0.43, 0], [0.8, 0.0, 0, 0.6]], np.float32)  # black cat, white cat
    black = np.array([[0, 0, 1, 0]], np.float32)
    scores, penalties = rerank(query, cats, black, np.ones(1))
    assert scores[1] > scores[0] and penalties[0] > 0 and penalties[1] == 0
    plain, none = rerank(query, cats, np.zeros((0, 4), np.float32), np.ones(0))
    assert plain[0] > plain[1] and not none.any()


def test_penalty_strength_is_a_weight():
    query = np.array([1, 0], np.float32)
    cand = np.array([[0.8, 0.6]], np.float32)
    neg = np.array([[0, 1]], np.float32)
    soft, _ = rerank(query, cand, neg, np.ones(1), Weights(negative_penalty=0.5))
    hard, _ = rerank(query, cand, neg, np.ones(1), Weights(negative_penalty=1.0))
    assert np.isclose(soft[0], 0.5) and np.isclose(hard[0], 0.2)


def test_negative_sharing_the_subject_only_penalises_the_difference():
    # "windmills, not white windmills": dims = (windmill, white, stone)
    query = np.array([1, 0, 0], np.float32)
    white_mill = np.array([0.8, 0.6, 0], np.float32)
    stone_mill = np.array([0.8, 0, 0.6], np.float32)
    negative = np.array([[0.7071, 0.7071, 0]], np.float32)  # "white windmills"
    scores, penalties = rerank(query, np.stack([white_mill, stone_mill]), negative, np.ones(1))
    assert penalties[1] == 0 and penalties[0] > 0.5 and scores[1] > scores[0]
