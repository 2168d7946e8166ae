# lib/filterprog: the integer stage. Consecutive integer filters compiled into
# one program give exactly what the same filters give one at a time, and what
# each filter's plain definition gives; values at +-2**18 and beyond are
# refused as RANGE without touching the stage's state.
import filterprog as prog

LIMIT = prog.LIMIT  # 2**18


def values(n, seed, lo, hi):
    """n ints in lo..hi from a fixed generator (the same on both interpreters),
    one in four repeating the one before it."""
    out = []
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        if out and i % 4 == 3:
            out.append(out[-1])
        else:
            out.append(lo + x % (hi - lo + 1))
    return out


def push(stage, x):
    """-> (value or None, reason, flags) as a Chain sees them."""
    v = stage.push(x, 0)
    return v, stage.reason if v is None else prog.OK, 0 if v is None else stage.flag


def one_by_one(stages, x):
    """The filters as separate stages, each fed what the one before sent."""
    flags = 0
    for s in stages:
        x, reason, f = push(s, x)
        if x is None:
            return None, reason, 0
        flags |= f
    return x, prog.OK, flags


def compare(members, inputs):
    """The compiled stage against its members one at a time: every output,
    drop reason, flag and the state after every value. -> the outputs."""
    whole = prog.Stage(members)
    singles = [prog.Stage([m]) for m in members]
    out = []
    for i in range(len(inputs)):
        got = push(whole, inputs[i])
        want = one_by_one(singles, inputs[i])
        assert got == want, (i, inputs[i], got, want)
        state = []
        for s in singles:
            state += s.state()
        assert whole.state() == state, i
        out.append(got[0])
    return out


def test_a_compiled_chain_matches_its_filters_one_at_a_time():
    bound = [LIMIT - 1, -(LIMIT - 1), LIMIT, -LIMIT, LIMIT + 5, -(LIMIT + 5)]
    inputs = values(300, 1, -(LIMIT - 1), LIMIT - 1)
    for i in range(len(bound)):
        inputs.insert(40 * i + 7, bound[i])
    # the clamp first keeps what follows it within the range
    out = compare([prog.Clamp(-200000, 200000, False), prog.Offset(-37),
                   prog.Window(prog.MEDIAN, 5, 1, 1), prog.EMA(0.3, 1, 1), prog.Round(10),
                   prog.Delta(20)], inputs)
    assert len([v for v in out if v is not None]) > 100  # most values went through
    small = values(400, 2, -1500, 1500) + [0, 7, -7, 7, 1500, -1500, 3000, -3000]
    out = compare([prog.FilterOut([0, 7, -7]), prog.SkipInitial(3), prog.Hampel(7, 3.0, True),
                   prog.Window(prog.QUANTILE, 6, 2, 1, 900), prog.Clamp(-1000, 1000, True),
                   prog.Delta(0)], small)
    assert out.count(None) < len(out)
    compare([prog.Window(prog.MIN, 4, 3, 2), prog.Window(prog.MAX, 3, 1, 1),
             prog.Window(prog.MEAN, 5, 2, 2), prog.Hampel(5, 2.0, False),
             prog.Clamp(-50000, 50000, False)], inputs)
    steps = [100] * 20 + [5000] + [100] * 10 + [900] * 20  # an outlier, then a real step
    compare([prog.Hampel(9, 2.5, False), prog.EMA(0.05, 4, 1), prog.Offset(3)], steps)
    # one value both clamped and replaced carries both flags
    compare([prog.Clamp(-1000, 1000, False), prog.Hampel(9, 2.5, True)], steps)
    stage = prog.Stage([prog.Clamp(-1000, 1000, False), prog.Hampel(9, 2.5, True)])
    for x in steps[:20]:
        push(stage, x)
    assert push(stage, 5000) == (100, prog.OK, prog.CLAMPED | prog.REPLACED)


# ------------------------------------------------------------ plain definitions
def ref_window(kind, size, every, first, q=0):
    win = []
    count = [every - first]

    def f(x):
        win.append(x)
        del win[:-size]
        count[0] += 1
        if count[0] < every:
            return None
        count[0] = 0
        s = sorted(win)
        n = len(s)
        if kind == prog.MEDIAN:
            return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
        if kind == prog.MIN:
            return s[0]
        if kind == prog.MAX:
            return s[-1]
        if kind == prog.MEAN:  # rounded half away from zero
            t = sum(s)
            return (t + n // 2) // n if t >= 0 else -((-t + n // 2) // n)
        return s[max(0, (n * q + 999) // 1000 - 1)]  # ceil(n * q) - 1, as ESPHome
    return f


def ref_delta(d):
    last = []

    def f(x):
        if last and abs(x - last[0]) < d:
            return None
        last[:] = [x]
        return x
    return f


def ref_skip(n):
    left = [n]

    def f(x):
        if left[0]:
            left[0] -= 1
            return None
        return x
    return f


def ref_round(step):
    return lambda x: (x + step // 2) // step * step if x >= 0 else -((-x + step // 2) // step * step)


def ref_run(fns, x):
    for fn in fns:
        x = fn(x)
        if x is None:
            return None
    return x


def test_each_integer_filter_gives_its_plain_definition():
    inputs = values(300, 3, -(LIMIT - 1), LIMIT - 1)
    small = values(300, 4, -40, 40)
    for kind in (prog.MEDIAN, prog.MIN, prog.MAX, prog.MEAN, prog.QUANTILE):
        for size, every, first, q in ((1, 1, 1, 500), (4, 1, 1, 250), (4, 1, 1, 500), (5, 3, 2, 900),
                                      (64, 7, 7, 900)):
            q = q if kind == prog.QUANTILE else 0
            for data in (inputs, small):
                stage = prog.Stage([prog.Window(kind, size, every, first, q)])
                ref = ref_window(kind, size, every, first, q)
                for i in range(len(data)):
                    assert push(stage, data[i])[0] == ref(data[i]), (kind, size, every, i)
    chains = (
        ([prog.Offset(-LIMIT + 1)], [lambda x: x - LIMIT + 1], values(300, 5, 0, LIMIT - 1)),
        ([prog.FilterOut([0, 5, -5]), prog.SkipInitial(4)],
         [lambda x: None if x in (0, 5, -5) else x, ref_skip(4)], small),
        ([prog.Round(10), prog.Delta(25)], [ref_round(10), ref_delta(25)], inputs + small),
        ([prog.Delta(0)], [ref_delta(0)], small),
        ([prog.Clamp(-20, 20, False)], [lambda x: max(-20, min(20, x))], small),
        ([prog.Clamp(-20, 20, True)], [lambda x: x if -20 <= x <= 20 else None], small),
    )
    for members, fns, data in chains:
        stage = prog.Stage(members)
        for i in range(len(data)):
            assert push(stage, data[i])[0] == ref_run(fns, data[i]), (i, data[i])
    clamp = prog.Stage([prog.Clamp(-20, 20, False)])
    assert push(clamp, 21) == (20, prog.OK, prog.CLAMPED) and push(clamp, 3) == (3, prog.OK, 0)


def test_the_ema_is_within_a_unit_of_the_exact_one_even_at_the_range_bound():
    swings = [LIMIT - 1, -(LIMIT - 1)] * 50 + values(200, 6, -(LIMIT - 1), LIMIT - 1)
    for alpha in (1.0, 0.5, 0.25, 0.125):  # a / 2**shift exactly: the exact EMA is known
        stage = prog.Stage([prog.EMA(alpha, 1, 1)])
        e = None
        for i in range(len(swings)):
            x = swings[i]
            e = float(x) if e is None else e + alpha * (x - e)
            got = push(stage, x)[0]
            assert abs(got - e) <= 1, (alpha, i, got, e)  # the products did not wrap


def test_values_at_the_range_bound_are_refused_and_leave_the_state_alone():
    members = [prog.Window(prog.MEDIAN, 3, 1, 1), prog.EMA(0.5, 1, 1), prog.Delta(1),
               prog.SkipInitial(1), prog.Hampel(5, 3.0, False)]
    stage = prog.Stage(members)
    for x in (10, 12, 11, 13):
        push(stage, x)
    for x in (LIMIT - 1, -(LIMIT - 1)):  # the largest values the stage takes
        assert prog.Stage([prog.Offset(0)]).push(x, 0) == x
    before = stage.state()
    for x in (LIMIT, -LIMIT, LIMIT + 1, -(LIMIT + 1), 10 ** 9, -(10 ** 9)):
        assert push(stage, x) == (None, prog.RANGE, 0), x
        assert stage.state() == before  # as if it never came
    twin = prog.Stage(members)
    for x in (10, 12, 11, 13):
        push(twin, x)
    for x in values(50, 7, 0, 30):  # the refused values left no trace
        assert push(stage, x) == push(twin, x)


def test_counts_that_would_not_fit_the_state_array_are_refused_when_built():
    # skip_initial and send_every live in an array("i"), restored from a
    # snapshot only below BIAS: 2**31 raised OverflowError under CPython and
    # wrapped silently on the VM
    from ptest import raises

    for make in (lambda n: prog.SkipInitial(n), lambda n: prog.Window(prog.MEDIAN, 5, n, 1),
                 lambda n: prog.EMA(0.5, n, 1), lambda n: prog.Window(prog.MAX, 5, n, n)):
        for n in (0, prog.BIAS, 2 ** 31, 2 ** 32 + 1):
            raises(ValueError, make, n)
        st = prog.Stage([make(prog.BIAS - 1)])
        snap = st.state()
        st.load(iter(snap))  # what Stage.load takes back
        assert st.state() == snap
