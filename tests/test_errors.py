"""Our own exception types (``promptweights.errors``)."""

from __future__ import annotations

import promptweights as pw


def test_weight_errors_pickle_with_their_position() -> None:
    import pickle

    error = pw.InvalidWeightError("too big", source="a (b:9)", pos=3)
    again = pickle.loads(pickle.dumps(error))
    assert (again.message, again.source, again.pos) == ("too big", "a (b:9)", 3)
    assert str(again) == str(error)
