"""Not built yet: see the open issues."""
from ..errors import NotBuiltYet



def rollback(*args, **kwargs):
    raise NotBuiltYet("rollback")
