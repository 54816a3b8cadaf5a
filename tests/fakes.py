"""A piece of the fake property modules that the plugin's tests write into pytester folders."""

#: A property needing a capability that the fake adapters do not claim: it never runs, and its
#: requirement is reported not-claimed. The module it goes into imports pytest.
NOT_CLAIMED = """

@pytest.mark.requirement("objective.sum-of-terms")
@pytest.mark.capability("gradients")
def test_not_claimed(suite):
    raise AssertionError("never runs: the fake does not claim gradients")
"""
