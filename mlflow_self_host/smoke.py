"""Not built yet: see the open issues."""
from .errors import NotBuiltYet



def smoke(*args, **kwargs):
    raise NotBuiltYet("smoke")
