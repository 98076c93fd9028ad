"""Not built yet: see the open issues."""
from .errors import NotBuiltYet



def doctor(*args, **kwargs):
    raise NotBuiltYet("doctor")
