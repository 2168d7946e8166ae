# lib/filterconf: chains built from configuration (ESPHome's names and
# options), the table from filter name to maker, and errors that name the
# channel, the filter and the key. (The filters themselves: test_filters.py.)
import filterconf
import filters
from ptest import chain, feed, raises


def test_configuration_errors_name_channel_filter_and_key():
    def err(items):
        return str(raises(filters.ConfigError, chain, items))

    e = err([{"median": {"window_size": 5}}, {"clamp": {"minimum": 0}}])
    assert "channel 'temp'" in e and "filter 2 'clamp'" in e and "'minimum'" in e
    assert "min_value" in e  # says what is expected
    e = err([{"median": {"window_size": "five"}}])
    assert "'window_size'" in e and "integer" in e
    e = err([{"exponential_moving_average": {"alpha": 2}}])
    assert "'alpha'" in e
    e = err([{"throttle": "soon"}])
    assert "duration" in e
    e = err([{"smooth": 3}])
    assert "unknown filter" in e and "'smooth'" in e
    e = err([{"median": {}, "delta": 1}])
    assert "filter 1" in e
    e = err([{"or": [{"delta": 1}, {"clamp": {"max_value": "x"}}]}])
    assert "'or'" in e and "'clamp'" in e and "'max_value'" in e
    e = err([{"median": {"send_every": 2, "send_first_at": 3}}])
    assert "send_first_at" in e
    e = err([{"calibrate_polynomial": {"degree": 3, "datapoints": [[0, 0], [1, 1]]}}])
    assert "datapoints" in e
    raises(filters.ConfigError, filterconf.build_chain, "x", {"scale": 0})
    raises(filters.ConfigError, filterconf.build_chain, "x", {"filter": []})
    raises(filters.ConfigError, filterconf.build, [1, 2])


def test_build_from_json_text():
    import json

    chains = filterconf.build(json.loads(
        '{"t": {"scale": 100, "filters": [{"median": {"window_size": 3, "send_every": 1}}]},'
        ' "rh": {"filters": [{"delta": 1}]}}'))
    assert sorted(chains) == ["rh", "t"]
    assert chains["t"].push(2000, 0) == 2000


def test_window_and_hampel_limits():
    raises(filters.ConfigError, chain, [{"median": {"window_size": 65}}])
    raises(filters.ConfigError, chain, [{"hampel": {"n_sigmas": 9}}])
    raises(filters.ConfigError, chain, [{"hampel": {"window_size": 2}}])


# one configuration per name in the README's list, in short and long forms
EVERY_FILTER = [
    {"offset": 1}, {"offset": {"value": -1}}, {"multiply": 2}, {"multiply": {"value": 0.5}},
    {"calibrate_linear": [[0, 0], [10, 20]]},
    {"calibrate_linear": {"method": "exact", "datapoints": ["0 -> 0", "10 -> 20"]}},
    {"calibrate_polynomial": {"degree": 1, "datapoints": [[0, 0], [1, 2]]}},
    {"filter_out": 85}, {"filter_out": {"values": [0, 85]}},
    {"clamp": {"min_value": -40, "max_value": 85, "ignore_out_of_range": False}},
    {"round": 1}, {"round": {"accuracy_decimals": 0}},
    {"median": {"window_size": 3, "send_every": 1}}, {"quantile": {"quantile": 0.5}},
    {"min": {}}, {"max": {"send_first_at": 2}}, {"sliding_window_moving_average": {}},
    {"exponential_moving_average": {"alpha": 0.5}}, {"skip_initial": 1}, {"skip_initial": {"count": 2}},
    {"throttle": "1s"}, {"throttle": {"period": 1000}}, {"throttle_average": "1min"},
    {"heartbeat": "1h"}, {"heartbeat": {"period": "10s", "optimistic": True}},
    {"timeout": "30s"}, {"timeout": {"period": "30s", "value": 0}}, {"debounce": "500ms"},
    {"delta": 1}, {"delta": "5%"}, {"delta": {"value": 0.5}},
    {"or": [{"delta": 1}, {"heartbeat": "1min"}]}, {"hampel": {"window_size": 5, "replace": True}},
]


def test_every_filter_name_builds_from_the_table():
    named = []
    for item in EVERY_FILTER:
        c = chain([item], scale=10)
        assert len(c.filters) == 1, item  # one Python filter, or one compiled stage
        c.push(100, 0)
        c.tick(3600000)
        named.append(list(item)[0])
    # the README's list, the table and the names the errors offer are one set
    readme = ("offset, multiply, calibrate_linear, calibrate_polynomial, filter_out, clamp, round, "
              "median, quantile, min, max, sliding_window_moving_average, exponential_moving_average, "
              "skip_initial, throttle, throttle_average, heartbeat, timeout, debounce, delta, or, "
              "hampel").split(", ")
    assert sorted(set(named)) == sorted(readme)
    assert sorted(filterconf.MAKERS) == sorted(readme) == sorted(filterconf.FILTER_NAMES)


def test_the_table_gives_each_family_member_its_own_kind_and_defaults():
    values = [5, 1, 9, 2, 7, 8, 8]
    last = {}
    for name in ("median", "min", "max", "sliding_window_moving_average"):
        last[name] = feed(chain([{name: {"send_every": 1}}]), values)[-1]
    # median, min, max: a window of 5 by default ([9, 2, 7, 8, 8]); the average: 15 (all 7)
    assert last == {"median": 8, "min": 2, "max": 9, "sliding_window_moving_average": 6}
    out = feed(chain([{"median": {}}]), list(range(12)))  # send_every defaults to 5, first at 1
    assert [i for i in range(12) if out[i] is not None] == [0, 5, 10]
    # throttle, throttle_average and debounce share a maker: each gets its own class
    kinds = [type(chain([{n: "1s"}]).filters[0]) for n in ("throttle", "throttle_average", "debounce")]
    assert kinds == [filters.Throttle, filters.ThrottleAverage, filters.Debounce]


def test_an_unknown_filter_names_itself_and_every_known_one():
    e = str(raises(filters.ConfigError, chain, [{"median": {}}, {"kalman": {"q": 1}}]))
    assert e.startswith("channel 'temp', filter 2 'kalman': unknown filter (known: offset, multiply, ")
    assert e.endswith(", or, hampel)")
    for name in filterconf.FILTER_NAMES:
        assert name in e


def test_config_errors_are_one_class_for_the_node():
    import confcheck

    assert filters.ConfigError is confcheck.ConfigError and issubclass(filters.ConfigError, ValueError)
    e = raises(confcheck.ConfigError, chain, [{"clamp": {"max_value": 1, "min_value": 2}}])
    assert str(e) == "channel 'temp', filter 1 'clamp': min_value is above max_value"
    e = str(raises(confcheck.ConfigError, chain, [{"median": {"window_size": 0}}]))
    assert e == "channel 'temp', filter 1 'median': key 'window_size' must be an integer in 1..64, got 0"
    e = str(raises(confcheck.ConfigError, chain, [{"median": {"sendevery": 1}}]))
    assert e == ("channel 'temp', filter 1 'median': unknown key 'sendevery' "
                 "(expected: window_size, send_every, send_first_at)")
    e = str(raises(confcheck.ConfigError, chain, [{"median": 5}]))
    assert e == "channel 'temp', filter 1 'median': expected a mapping of options, got 5"
    e = str(raises(confcheck.ConfigError, chain, [{"offset": {}}]))
    assert e == "channel 'temp', filter 1 'offset': missing key 'value'"


def test_each_bound_takes_its_limit_and_refuses_one_past_it():
    """The bounds (filterconf's docstring) at their edges: the limit builds a
    chain, one past it is a ConfigError naming the key."""
    f = filterconf
    nest = [{"delta": 1}]
    for _ in range(f.MAX_DEPTH):
        nest = [{"or": nest}]
    pts = [[i, 2 * i] for i in range(f.MAX_POINTS)]
    poly = [[i, i * i] for i in range(f.MAX_DEGREE + 1)]
    edges = (  # (at the limit, one past it, what the error names)
        ({"skip_initial": f.MAX_COUNT}, {"skip_initial": f.MAX_COUNT + 1}, "'count'"),
        ({"median": {"send_every": f.MAX_COUNT}}, {"median": {"send_every": f.MAX_COUNT + 1}}, "'send_every'"),
        ({"exponential_moving_average": {"send_every": f.MAX_COUNT}},
         {"exponential_moving_average": {"send_every": f.MAX_COUNT + 1}}, "'send_every'"),
        ({"round": f.MAX_DECIMALS}, {"round": f.MAX_DECIMALS + 1}, "'accuracy_decimals'"),
        ({"calibrate_polynomial": {"degree": f.MAX_DEGREE, "datapoints": poly}},
         {"calibrate_polynomial": {"degree": f.MAX_DEGREE + 1, "datapoints": poly + [[99, 1]]}}, "'degree'"),
        ({"calibrate_linear": pts}, {"calibrate_linear": pts + [[99, 1]]}, "datapoints"),
        ({"filter_out": list(range(f.MAX_POINTS))}, {"filter_out": list(range(f.MAX_POINTS + 1))}, "'values'"),
        ({"or": [{"delta": 1}] * f.MAX_FILTERS}, {"or": [{"delta": 1}] * (f.MAX_FILTERS + 1)}, "filters"),
        (nest[0], {"or": nest}, "nested more than %d" % f.MAX_DEPTH),
        ({"delta": "%d%%" % f.MAX_PERCENT}, {"delta": "%d%%" % (f.MAX_PERCENT + 1)}, "percentage"),
        ({"multiply": 1e6}, {"multiply": 1.000001e6}, "'value'"),
    )
    for ok, bad, named in edges:
        chain([ok])
        e = str(raises(filters.ConfigError, chain, [bad]))
        assert e.startswith("channel 'temp', filter 1 '%s'" % list(bad)[0]) and named in e, (bad, e)
    chain([{"delta": 1}] * f.MAX_FILTERS)
    e = str(raises(filters.ConfigError, chain, [{"delta": 1}] * (f.MAX_FILTERS + 1)))
    assert "at most %d filters" % f.MAX_FILTERS in e
    # a value in the unit times the scale is bounded too: what a reading holds
    assert chain([{"timeout": {"period": "1s", "value": f.VALUE_LIMIT / 4}}], 4).filters[0].fallback == f.VALUE_LIMIT
    e = str(raises(filters.ConfigError, chain, [{"timeout": {"period": "1s", "value": 2 ** 29}}], 4))
    assert "'value'" in e and "coarser scale" in e
    chain([{"clamp": {"max_value": 21474}}], scale=100000)
    e = str(raises(filters.ConfigError, chain, [{"clamp": {"max_value": 21475}}], 100000))
    assert "'max_value'" in e and "coarser scale" in e
    raises(filters.ConfigError, filterconf.build_chain, "x", {"scale": f.MAX_SCALE + 1})


def test_a_refused_value_is_shown_short_in_the_message():
    e = str(raises(filters.ConfigError, chain, [{"round": 10 ** 40}]))
    assert "an integer of 41 digits" in e
    e = str(raises(filters.ConfigError, chain, [{"throttle": "x" * 5000}]))
    assert len(e) < 200 and "..." in e
    e = str(raises(filters.ConfigError, chain, [[[[[[1]]]]]]))
    assert "got a list of 1" in e


def test_a_polynomial_at_the_bounds_builds_or_is_refused_and_never_raises_per_sample():
    # the widest datapoints the bounds let through (1e9 at scale 2: 2e9 units),
    # at the highest degree: the normal equations hold x**16 of 2e9 (about
    # 1e149), inside a double (the ESP32's single floats: NaN, refused)
    lim = 10 ** 9
    tries = [
        [[lim - i, (-1) ** i * lim] for i in range(9)],
        [[-lim + i * (lim // 4), lim - i] for i in range(9)],
        [[i, lim if i % 2 else -lim] for i in range(9)],
        [[0, 0]] * 9,
    ]
    built = 0
    for pts in tries:
        try:
            c = chain([{"calibrate_polynomial": {"degree": 8, "datapoints": pts}}], 2)
        except filters.ConfigError as e:
            assert "calibrate_polynomial" in str(e)
            continue
        built += 1
        top = filterconf.VALUE_LIMIT
        for x in (0, 1, -1, 1000, top, -top):
            y = c.push(x, 0)
            assert y is None and c.reason == filters.RANGE or -top <= y <= top, (pts, x, y)
    assert built >= 1
