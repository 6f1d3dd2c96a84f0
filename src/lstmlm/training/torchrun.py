"""torchrun (`torch.distributed.run`) as `lstmlm train --nproc` starts it, less the
traceback torchrun prints when a signal stops it.

torchrun turns SIGTERM, SIGINT and SIGHUP into a `SignalException`, passes the signal on
to every worker (which save their checkpoint and say how to resume) and then lets the
exception escape: a 30-line traceback after the one line that matters. Here it ends with
the shell's status for the signal, 128 + its number, and nothing more.
"""

from __future__ import annotations

import sys


def main() -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun()
    except SignalException as e:
        sys.exit(128 + int(e.sigval))


if __name__ == "__main__":
    main()
