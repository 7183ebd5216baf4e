"""scnf.data.load.hold_out: the one way validation rows are held out and the unlabelled pool
is subsampled, with known answers."""
import numpy as np

from scnf.data.load import hold_out


def test_validation_rows_come_from_the_candidates_only_and_are_drawn_by_the_split_seed():
    labelled = np.array([0, 3, 5])
    candidates = np.setdiff1d(np.arange(10), labelled)  # images: the unlabelled rows
    keep, val = hold_out(10, labelled, candidates, 3, 0, seed=4)
    expected = np.sort(np.random.default_rng([4, 1]).choice(candidates, 3, replace=False))
    assert np.array_equal(val, expected) and not set(val) & set(labelled)
    assert np.array_equal(keep, np.setdiff1d(np.arange(10), expected))
    # own data hold out labelled rows: the candidates are the labelled ones
    keep, val = hold_out(10, labelled, labelled, 2, 0, seed=4)
    assert set(val) < set(labelled.tolist()) and len(val) == 2 and len(keep) == 8


def test_the_unlabelled_pool_is_subsampled_and_every_labelled_row_kept():
    labelled = np.array([1, 8])
    keep, val = hold_out(12, labelled, np.setdiff1d(np.arange(12), labelled), 2, 3, seed=0)
    assert len(val) == 2 and set(labelled.tolist()) <= set(keep.tolist())
    assert len(keep) == 2 + 3 and not set(keep) & set(val)
    rest = np.setdiff1d(np.setdiff1d(np.arange(12), val), labelled)
    drawn = np.random.default_rng(0).choice(rest, 3, replace=False)
    assert np.array_equal(keep, np.sort(np.concatenate([labelled, drawn])))
    # nothing asked: every row kept, none held out
    keep, val = hold_out(5, labelled[:1], labelled[:1], 0, 0, seed=0)
    assert np.array_equal(keep, np.arange(5)) and val.size == 0
