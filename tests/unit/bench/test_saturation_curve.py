"""bench.stats.KeepUp and SaturationCurve: the saturation rule the stack's steps and the floor's share."""

from bench.stats import KeepUp, SaturationCurve


def step(rate: float, achieved: float, p95: float | None = 10.0, error_rate: float = 0.0) -> dict:
    return {"target_rps": rate, "achieved_rps": achieved, "p95_ms": p95, "error_rate": error_rate}


def test_a_step_keeps_up_within_all_three_bounds():
    rule = KeepUp()
    assert rule.why_not(step(100, 90)) is None
    assert rule.why_not(step(100, 89.9)) == "achieved 90/s < 90% of offered 100/s"
    assert rule.why_not(step(100, 100, error_rate=0.02)) == "error rate 2.00% > 1% at 100/s"
    assert rule.why_not(step(100, 100, p95=1000.1)) == "p95 1000.1 ms > 1000 ms at 100/s"
    assert rule.why_not(step(100, 0, p95=None)) is not None


def test_the_curve_keeps_the_best_and_the_best_that_kept_up_and_stops_at_the_first_that_did_not():
    curve = SaturationCurve(KeepUp())
    first, second, third = step(100, 100), step(200, 199), step(300, 250, p95=900)
    assert curve.add(first) and curve.add(second)
    assert not curve.add(third)  # 250 < 270
    result = curve.result()
    assert result["curve"] == [first, second, third]
    assert result["best"] is third  # the highest rate achieved, although it did not keep up
    assert result["sustainable"] is second
    assert result["stop_reason"] == "achieved 250/s < 90% of offered 300/s"


def test_a_step_with_too_many_errors_is_never_the_best():
    curve = SaturationCurve(KeepUp())
    good, failing = step(100, 100), step(200, 198, error_rate=0.05)
    assert curve.add(good) and not curve.add(failing)
    assert curve.result()["best"] is good and curve.result()["sustainable"] is good


def test_without_steps_there_is_no_best_and_nothing_stopped():
    result = SaturationCurve(KeepUp()).result()
    assert result == {"best": None, "sustainable": None, "curve": [], "stop_reason": "all steps done"}


def test_the_bounds_can_be_changed():
    assert KeepUp(ratio=0.5).why_not(step(100, 60)) is None
    assert KeepUp(max_p95_ms=5).why_not(step(100, 100, p95=6)) == "p95 6 ms > 5 ms at 100/s"
