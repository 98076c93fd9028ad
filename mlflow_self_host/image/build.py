"""Not built yet: see the open issues."""
from ..errors import NotBuiltYet



def build(*args, **kwargs):
    raise NotBuiltYet("build")
