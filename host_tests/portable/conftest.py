# Portable tests start on a freshly powered-on simulated board, as on the VM runner.
import pytest
import simstate


@pytest.fixture(autouse=True)
def fresh_board():
    yield simstate.reset_world()
