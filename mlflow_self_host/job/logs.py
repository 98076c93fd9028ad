"""Not built yet: see the open issues."""
from ..errors import NotBuiltYet



def logs(*args, **kwargs):
    raise NotBuiltYet("logs")
