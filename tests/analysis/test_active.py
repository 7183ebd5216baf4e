"""Query strategies (scnf.analysis.active) with known answers on hand-made log p(x, y)."""
import math

import numpy as np
import pytest

from scnf.analysis.active import STRATEGIES, discovery, entropy, scores, select

LN_HALF = math.log(0.5)


def test_entropy_and_margin_pick_the_row_on_the_boundary():
    lj = np.array([[0.0, -5.0], [-1.0, -1.0], [-4.0, 0.0]])  # row 1: p(y|x) = (1/2, 1/2)
    assert np.argmax(scores(lj, "entropy")) == 1
    assert scores(lj, "entropy")[1] == pytest.approx(math.log(2))
    assert np.argmax(scores(lj, "margin")) == 1 and scores(lj, "margin")[1] == pytest.approx(1.0)
    assert scores(lj, "margin")[0] == pytest.approx(1 - (1 - 2 / (1 + math.exp(5))), abs=1e-12)


def test_density_weighting_prefers_a_dense_ambiguous_row_to_an_ambiguous_outlier():
    # rows 0 and 1 are equally ambiguous; row 0 is an outlier (log p(x) 8 nats lower)
    lj = np.array([[-10.0, -10.0], [-2.0, -2.0], [-1.0, -6.0]])
    assert np.argmax(scores(lj, "entropy")) == 0  # a tie: plain uncertainty takes the first
    d = scores(lj, "density")
    assert np.argmax(d) == 1
    assert d[0] / d[1] == pytest.approx(math.exp(-8.0))  # H equal: the ratio of the densities


def test_novelty_picks_the_row_from_an_unseen_cluster():
    lj = np.array([[-1.0, -3.0], [-2.5, -0.5], [-30.0, -31.0], [-1.2, -1.1]])
    s = scores(lj, "novelty")
    assert np.argmax(s) == 2
    assert s[2] == pytest.approx(-(-30.0 + math.log(1 + math.exp(-1.0))))


def test_random_scores_follow_the_generator():
    lj = np.zeros((5, 2))
    a = scores(lj, "random", np.random.default_rng(3))
    assert np.array_equal(a, np.random.default_rng(3).random(5))


def test_a_diverse_batch_takes_one_row_of_each_cluster():
    rng = np.random.default_rng(0)
    latent = np.concatenate([rng.normal(0, 0.01, (6, 2)), rng.normal(5, 0.01, (4, 2))])
    score = np.array([9, 8, 7, 6, 5, 4, 3, 2.5, 2, 1.0])  # cluster A holds every top score
    assert select(score, 2, latent, diversity=False).tolist() == [0, 1]
    assert select(score, 2, latent, random_state=0).tolist() == [0, 6]  # the best of each cluster
    assert sorted(select(score, 10, latent).tolist()) == list(range(10))


@pytest.mark.parametrize("n, match", [(4, "only 3 candidates"), (0, "positive integer"), (1.5, "positive integer")])
def test_bad_batch_sizes_are_named(n, match):
    with pytest.raises(ValueError, match=match):
        select(np.zeros(3), n, np.zeros((3, 2)))


def test_an_unknown_strategy_or_bad_scores_are_named():
    with pytest.raises(ValueError, match="unknown strategy 'bald'.*entropy"):
        scores(np.zeros((2, 2)), "bald")
    with pytest.raises(ValueError, match="NaN"):
        scores(np.array([[0.0, np.nan]]), "entropy")
    assert set(STRATEGIES) == {"entropy", "margin", "density", "novelty", "discovery", "random"}
    with pytest.raises(ValueError, match="discovery strategy needs latent codes"):
        scores(np.zeros((2, 2)), "discovery")
    assert entropy(np.array([[0.0, -800.0]]))[0] == 0.0  # a certain row: no uncertainty, no NaN


def _groups(sizes, seed=0):
    """Candidates in well-separated groups (std 0.5, centres 10 apart), ``sizes`` rows each."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])[: len(sizes)]
    return np.concatenate([rng.normal(c, 0.5, (k, 2)) for c, k in zip(centres, sizes)]), centres


def test_discovery_takes_the_group_no_label_covers():
    cand, _ = _groups((30, 30))  # n = 1: two clusters, one per group
    pos, score = discovery(cand, np.array([[0.1, -0.2]]), 1, random_state=0)  # group 0 has a label
    group1 = cand[30:]
    assert pos[0] == 30 + np.argmin(((group1 - group1.mean(0)) ** 2).sum(1))  # nearest its centre
    # a label-free cluster's rows score its share of the candidates, a covered cluster's that minus 1
    assert score[30:] == pytest.approx(np.full(30, 0.5)) and score[:30] == pytest.approx(np.full(30, -0.5))


def test_discovery_ranks_label_free_clusters_by_their_mass_then_the_covered_ones():
    cand, _ = _groups((20, 30, 40, 10))  # n = 2: four clusters, one per group
    labelled = np.array([[0.0, 0.0], [10.0, 0.0]])  # groups 0 and 1 are covered
    pos, score = discovery(cand, labelled, 2, random_state=0)
    assert 50 <= pos[0] < 90 and 90 <= pos[1] < 100  # the 40-row group before the 10-row one
    assert score[pos].tolist() == pytest.approx([40 / 100, 10 / 100])
    assert score[:50].max() < 0 < score[50:].min()
    # with fewer label-free clusters than rows, the covered clusters follow, largest first
    pos, score = discovery(cand, np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), 2, random_state=0)
    assert 90 <= pos[0] < 100 and 50 <= pos[1] < 90  # the 10-row group, then the 40-row covered one
    assert score[pos].tolist() == pytest.approx([10 / 100, 40 / 100 - 1])


def test_discovery_with_duplicate_rows_still_returns_n_distinct_rows():
    cand = np.zeros((6, 2))
    cand[3:] = 1.0  # two distinct points, three copies each: at most 2 clusters with candidates
    pos, _ = discovery(cand, np.array([[5.0, 5.0]]), 4, random_state=0)
    assert len(set(pos.tolist())) == 4


@pytest.mark.parametrize("n, match", [(61, "only 60 candidates"), (0, "positive integer")])
def test_discovery_names_bad_batch_sizes(n, match):
    cand, _ = _groups((30, 30))
    with pytest.raises(ValueError, match=match):
        discovery(cand, cand[:1], n)
