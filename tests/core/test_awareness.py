from gossip_agent.core.awareness import Awareness


def test_score_is_clamped_and_scales_timeouts() -> None:
    a = Awareness(8)
    assert a.scale(0.5) == 0.5
    a.apply_delta(3)
    assert a.score == 3 and a.scale(1.0) == 4.0
    a.apply_delta(100)
    assert a.score == 7
    a.apply_delta(-100)
    assert a.score == 0
