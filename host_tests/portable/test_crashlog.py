# app.crashlog: the last crashes' tracebacks kept in /crash.log within its bound.
from app import crashlog
from ptest import scratch_dir


def test_crash_log_keeps_the_newest_whole_entries_within_its_bound():
    d, _ = scratch_dir()
    path = d + "/crash.log"
    for i in range(200):
        try:
            raise ValueError("boom %d" % i)
        except ValueError as e:
            tb = crashlog.keep(e, "boot=%d" % i, path)
    assert "boom 199" in tb
    text = crashlog.read(path)
    assert len(text) <= crashlog.LIMIT and text.startswith("--- boot=")
    assert "boom 199" in text and "boom 0\n" not in text
