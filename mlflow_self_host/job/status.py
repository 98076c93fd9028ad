"""Not built yet: see the open issues."""
from ..errors import NotBuiltYet



def status(*args, **kwargs):
    raise NotBuiltYet("status")
