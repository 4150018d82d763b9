"""What the sending process's fork server loads once, before it forks any child.

Imported only there (it is the fork server's preload, see :mod:`.sending_process`), never in the
service's own process:

1. apprise with all its plugins: apprise loads them on its first ``add()`` (~150 ms on a quiet
   machine, ~450–750 ms on a busy one), which made the first alert after every start that much
   late.  Loaded here, every child is forked ready to send.
2. A child does not run the service's main module again.  multiprocessing imports it in each
   new process, so that functions defined there can be unpickled; the sending process needs
   none (its code is in this package), and re-running ``responder``'s command line imported the
   CLI and the web stack again (~0.5–1 s per start on a busy machine).  It was also where a
   child failed when the service was started beside a ``responder/`` folder.  Only the main
   module is skipped: the rest of multiprocessing's preparation (``sys.path``, working
   directory, logging) is kept.
"""

from __future__ import annotations

from multiprocessing import spawn
from typing import Any

from responder.engine.apprise_call import warm_up

_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")
_prepare = spawn.prepare


def _prepare_without_main(data: dict[str, Any]) -> None:
    _prepare({key: value for key, value in data.items() if key not in _MAIN_KEYS})


# In this fork server's process (and so in every child forked from it) only.
spawn.prepare = _prepare_without_main
PLUGINS = warm_up()
