"""Not built yet: see the open issues."""
from ..errors import NotBuiltYet



def push(*args, **kwargs):
    raise NotBuiltYet("push")


def push_latest(*args, **kwargs):
    raise NotBuiltYet("pushlatest")
