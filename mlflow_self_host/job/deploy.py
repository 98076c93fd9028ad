"""Not built yet: see the open issues."""
from ..errors import NotBuiltYet



def deploy(*args, **kwargs):
    raise NotBuiltYet("deploy")
