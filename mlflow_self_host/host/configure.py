"""Not built yet: see the open issues."""
from ..errors import NotBuiltYet



def run(*args, **kwargs):
    raise NotBuiltYet("configure-host")
