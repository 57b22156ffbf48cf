"""bench.gemm_rate's timing helper: the passes it compares take turns, round by round."""
from bench.gemm_rate import alternated_medians


def test_alternated_medians_take_turns_and_time_every_call():
    log = []

    def call(name):
        return lambda n: log.append((name, n))

    medians = alternated_medians({"a": call("a"), "b": call("b")}, rounds=3, round_s=0.0)
    assert set(medians) == {"a", "b"} and all(seconds >= 0 for seconds in medians.values())
    warm_up, rounds = log[:4], log[4:]
    assert warm_up == [("a", 1), ("a", 3), ("b", 1), ("b", 3)]
    assert [name for name, _ in rounds] == ["a", "b"] * 3  # a round of each in turn
    assert all(n >= 1 for _, n in rounds)
