# lib/filters: every filter's semantics, the chain and its snapshot (chains
# built through filterconf; its table and errors: test_filterconf.py).
import filters
from ptest import chain, feed, raises


def test_offset_multiply_in_channel_units():
    c = chain([{"offset": 1.5}, {"multiply": 2}], scale=100)
    assert c.push(1000, 0) == (1000 + 150) * 2


def test_calibrate_linear_least_squares_and_exact():
    c = chain([{"calibrate_linear": [[0, 0], [10, 21], [20, 39]]}], scale=10)
    # least squares through (0,0) (10,21) (20,39): y = 1.95 x + 0.5
    assert c.push(100, 0) == 200
    assert c.push(0, 0) == 5
    c = chain([{"calibrate_linear": {"method": "exact",
                                     "datapoints": ["0 -> 0", "10 -> 20", "20 -> 30"]}}])
    assert feed(c, [5, 10, 15, 30, -10]) == [10, 20, 25, 40, -20]  # extrapolates the end segments


def test_calibrate_polynomial_fits_a_parabola():
    pts = [[x, 2 * x * x - 3 * x + 1] for x in range(-3, 4)]
    c = chain([{"calibrate_polynomial": {"degree": 2, "datapoints": pts}}])
    assert feed(c, [0, 2, 10]) == [1, 3, 171]


def test_filter_out_values_and_missing_readings():
    c = chain([{"filter_out": [0, 85]}])
    assert feed(c, [20, 0, 85, None, 21]) == [20, None, None, None, 21]
    assert c.drops[filters.VALUE] == 2 and c.drops[filters.NAN] == 1


def test_clamp_clamps_or_drops():
    c = chain([{"clamp": {"min_value": -40, "max_value": 85}}], scale=10)
    assert feed(c, [900, -500, 250]) == [850, -400, 250]
    c.push(900, 0)
    assert c.flags == filters.CLAMPED
    c.push(250, 0)
    assert c.flags == 0
    c = chain([{"clamp": {"max_value": 85, "ignore_out_of_range": True}}], scale=10)
    assert feed(c, [900, 250]) == [None, 250]
    assert c.drops[filters.RANGE] == 1


def test_round_to_decimals():
    c = chain([{"round": 1}], scale=100)
    assert feed(c, [2154, 2155, -2155, 2149]) == [2150, 2160, -2160, 2150]


def test_median_window_edges_and_send_every():
    c = chain([{"median": {"window_size": 3, "send_every": 1}}])
    assert feed(c, [5, 1, 9, 2, 100, 3]) == [5, 3, 5, 2, 9, 3]  # partial window at first
    c = chain([{"median": {"window_size": 5, "send_every": 5, "send_first_at": 2}}])
    out = feed(c, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    assert [i for i in range(12) if out[i] is not None] == [1, 6, 11]
    assert out[1] == 1 and out[6] == 5 and out[11] == 10  # even window: mean of the middle two


def test_quantile_min_max_and_sliding_average():
    values = [4, 8, 15, 16, 23, 42]
    q = chain([{"quantile": {"window_size": 5, "send_every": 1, "quantile": 0.9}}])
    assert feed(q, values)[-1] == 42  # ceil(5 * 0.9) - 1 = 4th of [8 15 16 23 42]
    mn = chain([{"min": {"window_size": 3, "send_every": 1}}])
    mx = chain([{"max": {"window_size": 3, "send_every": 1}}])
    assert feed(mn, values) == [4, 4, 4, 8, 15, 16]
    assert feed(mx, values) == [4, 8, 15, 16, 23, 42]
    avg = chain([{"sliding_window_moving_average": {"window_size": 4, "send_every": 2}}])
    assert feed(avg, values) == [4, None, 9, None, 16, None]  # first value sent at once
    avg = chain([{"sliding_window_moving_average":
                  {"window_size": 4, "send_every": 2, "send_first_at": 2}}])
    assert feed(avg, values) == [None, 6, None, 11, None, 24]  # (15+16+23+42)/4 = 24


def test_ema_follows_esphome_formula():
    c = chain([{"exponential_moving_average": {"alpha": 0.5, "send_every": 1}}], scale=100)
    out = feed(c, [1000, 2000, 2000, 0])
    assert out == [1000, 1500, 1750, 875]
    c = chain([{"exponential_moving_average": {"alpha": 0.1}}])  # defaults: send every 15
    out = feed(c, [10] * 31)
    assert [i for i in range(31) if out[i] is not None] == [0, 15, 30]


def test_ema_has_no_dead_band_for_small_steps():
    c = chain([{"exponential_moving_average": {"alpha": 0.1, "send_every": 1}}])
    out = feed(c, [0] + [10] * 60)
    assert out[-1] >= 9  # converges to within a unit, not stuck short


def test_skip_initial():
    c = chain([{"skip_initial": 2}])
    assert feed(c, [1, 2, 3, 4]) == [None, None, 3, 4]
    assert c.drops[filters.SKIP] == 2


def test_delta_absolute_and_percent():
    c = chain([{"delta": 0.5}], scale=10)
    assert feed(c, [200, 204, 205, 201, 199]) == [200, None, 205, None, 199]
    assert c.drops[filters.DELTA] == 2
    c = chain([{"delta": "10%"}])
    assert feed(c, [100, 109, 110, 120, 121]) == [100, None, 110, None, 121]


def test_hampel_drops_or_replaces_outliers_only():
    c = chain([{"hampel": {"window_size": 7, "n_sigmas": 3}}])
    values = [200, 202, 199, 201, 200, 950, 201, 203, 198, 200]
    out = feed(c, values)
    assert out[5] is None and c.drops[filters.OUTLIER] == 1
    assert [v for v in out if v is not None] == [v for v in values if v != 950]
    c = chain([{"hampel": {"window_size": 7, "replace": True}}])
    out = feed(c, values)
    assert out[5] == 200 and c.reason == filters.OK
    c.push(950, 0)
    assert c.flags == filters.REPLACED
    # a real step change is followed once the window holds it
    c = chain([{"hampel": {"window_size": 5}}])
    out = feed(c, [100, 101, 100, 99, 100] + [300] * 8)
    assert out[-1] == 300


def test_throttle_passes_one_value_per_period():
    c = chain([{"throttle": "10s"}])
    out = feed(c, list(range(25)), step_ms=1000)
    assert [v for v in out if v is not None] == [0, 10, 20]
    assert c.drops[filters.THROTTLE] == 22


def test_throttle_average_sends_the_period_mean():
    c = chain([{"throttle_average": "5s"}])
    out = feed(c, [10, 20, 30, 40, 50, 60, 70], step_ms=1000)
    assert out == [None, None, None, None, None, 35, None]  # values at t=0..5s
    assert c.tick(10000) is None  # the next period began with 70 at 6 s
    assert c.tick(11000) == 70


def test_heartbeat_sends_latest_on_time_only():
    c = chain([{"heartbeat": "1min"}])
    assert feed(c, [1, 2, 3], step_ms=10000) == [None, None, None]
    assert c.tick(30000) is None
    assert c.tick(60000) == 3
    assert c.tick(90000) is None
    assert c.tick(120000) == 3  # repeats the latest while nothing new comes
    c = chain([{"heartbeat": {"period": "1min", "optimistic": True}}])
    assert c.push(7, 0) == 7


def test_timeout_marks_stale_or_sends_fallback():
    c = chain([{"timeout": "30s"}])
    assert c.push(21, 0) == 21 and c.flags == 0
    assert c.tick(29000) is None
    assert c.tick(30000) == 21 and c.flags == filters.STALE
    assert c.tick(90000) is None  # once per silence
    assert c.push(22, 100000) == 22 and c.flags == 0
    c = chain([{"timeout": {"period": "30s", "value": -1}}], scale=10)
    c.push(5, 0)
    assert c.tick(31000) == -10 and c.flags == 0


def test_debounce_sends_after_quiet_time():
    c = chain([{"debounce": "2s"}])
    assert feed(c, [1, 2, 3], step_ms=500) == [None, None, None]
    assert c.tick(2500) is None  # last value came at 1.0 s
    assert c.tick(3000) == 3
    assert c.tick(9000) is None


def test_or_passes_when_any_branch_does():
    c = chain([{"or": [{"delta": 5}, {"heartbeat": {"period": "60s", "optimistic": False}}]}])
    out = feed(c, [100, 101, 102, 110], step_ms=10000)
    assert out == [100, None, None, 110]
    assert c.drops[filters.OR] == 2
    assert c.tick(60000) == 110  # the heartbeat branch speaks on time


def test_time_filters_work_across_the_clock_wrap():
    c = chain([{"throttle": "10s"}])
    start = (1 << 30) - 5000
    out = feed(c, list(range(15)), step_ms=1000, start=start)
    assert [v for v in out if v is not None] == [0, 10]


def test_tick_output_goes_through_later_filters():
    c = chain([{"heartbeat": "10s"}, {"offset": 1}, {"clamp": {"max_value": 5}}])
    c.push(9, 0)
    assert c.tick(10000) == 5 and c.flags == filters.CLAMPED


def test_common_chain_end_to_end():
    c = chain([{"median": {"window_size": 5, "send_every": 1}},
               {"exponential_moving_average": {"alpha": 0.5, "send_every": 1}},
               {"clamp": {"min_value": -40, "max_value": 85}},
               {"delta": 0.1}], scale=100)
    out = feed(c, [2100, 2101, 9000, 2102, 2099, 2100, 2500, 2500, 2500, 2500])
    assert out[0] == 2100
    assert 9000 not in out and max(v for v in out if v is not None) < 2500  # spike gone
    assert out[-1] is not None and out[-1] > 2300  # the real step comes through


def test_snapshot_restore_mid_stream_matches_a_chain_that_never_slept():
    cfg = [{"skip_initial": 1}, {"hampel": {"window_size": 5}},
           {"median": {"window_size": 5, "send_every": 2}},
           {"exponential_moving_average": {"alpha": 0.3, "send_every": 1}},
           {"clamp": {"min_value": -40, "max_value": 85}},
           {"or": [{"delta": 0.2}, {"throttle": "5min"}]}, {"timeout": "15min"}]
    values = [2000 + ((i * 37) % 23) * 7 - (400 if i % 11 == 0 else 0) for i in range(60)]
    awake = chain(cfg, scale=100)
    ref = feed(awake, values, step_ms=60000)
    sleeper = chain(cfg, scale=100)
    got = []
    for i in range(60):
        got.append(sleeper.push(values[i], i * 60000))
        snap = sleeper.snapshot()
        assert len(snap) < 200  # fits the RTC-memory budget
        sleeper = chain(cfg, scale=100)  # deep sleep: RAM is gone
        sleeper.restore(snap)
    assert got == ref
    assert sleeper.tick(80 * 60000) == awake.tick(80 * 60000)


def test_snapshot_of_another_configuration_is_refused():
    a = chain([{"median": {"window_size": 3}}])
    b = chain([{"median": {"window_size": 3}}, {"delta": 1}])
    raises(ValueError, b.restore, a.snapshot())
    raises(ValueError, a.restore, b"")
    raises(ValueError, a.restore, a.snapshot() + b"\x02")
    raises(ValueError, a.restore, b"\x01\x80")


def test_values_beyond_the_integer_stage_range_are_counted_not_wrapped():
    c = chain([{"median": {"window_size": 3, "send_every": 1}}])
    assert c.push(262143, 0) == 262143  # 2**18 - 1 units: fine
    assert c.push(262144, 0) is None and c.reason == filters.RANGE
    assert c.push(-300000, 0) is None and c.drops[filters.RANGE] == 2
    e = str(raises(filters.ConfigError, chain, [{"offset": 5000}], 100))
    assert "coarser scale" in e


def test_small_alpha_keeps_its_precision():
    c = chain([{"exponential_moving_average": {"alpha": 0.01, "send_every": 1}}])
    out = feed(c, [0] + [10000] * 100)
    # 1 - 0.99**100 = 0.634 of the step after 100 samples
    assert 6300 <= out[-1] <= 6370


def test_negative_values_through_every_integer_filter():
    c = chain([{"offset": -10}, {"median": {"window_size": 3, "send_every": 1}},
               {"exponential_moving_average": {"alpha": 0.5, "send_every": 1}},
               {"clamp": {"min_value": -40}}, {"round": 0}, {"delta": 1}], scale=1)
    # offset: -30 -32 -34 -110; median: -30 -31 -32 -34; EMA 0.5: -30 -30.5 -31.25 -32.6
    # (rounded: -30 -30 -31 -33); delta 1 drops the repeated -30
    assert feed(c, [-20, -22, -24, -100]) == [-30, None, -31, -33]


def test_time_filters_on_the_simulated_clock_across_the_tick_wrap():
    import time

    import simstate

    b = simstate.board
    b.start_ticks_ms = (1 << 30) - 20000  # 20 s before ticks_ms wraps
    b.power_on()
    c = chain([{"throttle": "10s"}, {"timeout": "30s"}])
    sent = []
    for i in range(40):  # one reading a second
        out = c.push(i, time.ticks_ms())
        if out is not None:
            sent.append(out)
        time.sleep_ms(1000)
    assert sent == [0, 10, 20, 30]
    assert time.ticks_ms() < 30000  # the clock wrapped meanwhile
    time.sleep_ms(25000)  # 65 s: 30 s after the last value that got past the throttle
    assert c.tick(time.ticks_ms()) == 30 and c.flags == filters.STALE


def test_float_filters_drop_a_result_no_reading_can_hold_instead_of_raising():
    # a stored reading is a signed 32-bit int: beyond it, or not finite, the
    # multiply and the calibrations drop the value as RANGE, counted
    lim = filters.VALUE_LIMIT
    c = chain([{"multiply": 1000000}])
    assert c.push(2147, 0) == 2147000000
    assert c.push(2148, 0) is None and c.reason == filters.RANGE  # 2.148e9 > 2**31 - 1
    assert c.push(-2148, 0) is None and c.drops[filters.RANGE] == 2
    assert c.push(10 ** 12, 0) is None and c.drops[filters.RANGE] == 3  # a long int raw value too
    c = chain([{"calibrate_linear": [[0, 0], [1, 1000000]]}])
    assert c.push(lim // 1000000, 0) == lim // 1000000 * 1000000
    assert c.push(lim // 1000000 + 1, 0) is None and c.reason == filters.RANGE
    c = chain([{"calibrate_linear": {"method": "exact", "datapoints": [[0, 0], [1, 1000000]]}}])
    assert c.push(-(lim // 1000000) - 1, 0) is None and c.reason == filters.RANGE
    c = chain([{"calibrate_polynomial": {"degree": 8, "datapoints": [[x, x ** 8] for x in range(9)]}}])
    assert c.push(2, 0) == 256 and c.push(14, 0) == 14 ** 8
    assert c.push(15, 0) is None and c.reason == filters.RANGE  # 15**8 = 2562890625 > 2**31 - 1
    assert c.push(lim, 0) is None and c.reason == filters.RANGE  # ~4e74: a double, not a reading
    # what follows in the chain never sees the dropped value
    c = chain([{"multiply": 1000000}, {"median": {"window_size": 3, "send_every": 1}}])
    assert c.push(10 ** 6, 0) is None and c.reason == filters.RANGE and c.drops[filters.RANGE] == 1


def test_a_fit_with_no_finite_coefficients_is_refused_when_built():
    # a polynomial's coefficients that come out NaN or infinite: refused once
    e = str(raises(filters.ConfigError, filters.CalibratePolynomial, 1, [(float("inf"), 1), (2, 2), (3, 3)]))
    assert "no finite degree 1 fit" in e
