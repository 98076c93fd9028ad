"""Not built yet: see the open issues."""
from .errors import NotBuiltYet



def backup(*args, **kwargs):
    raise NotBuiltYet("backup")


def restore(*args, **kwargs):
    raise NotBuiltYet("restore")


def before_deploy(settings, running_version, new_version):
    """Called by deploy before an image version change; returns the backup taken (None: none taken).

    Stub until the backup issue lands: takes no backup.
    """
    return None
