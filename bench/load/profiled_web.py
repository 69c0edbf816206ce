"""daphne under cProfile, for the load benchmark's `--profile-web DIR`: where the web process's time goes.

    python -m bench.load.profiled_web -b 127.0.0.1 -p 8000 mangaassist.asgi:application

cProfile sees the main thread, which runs the event loop (every consumer, the orchestrator, the
relay); work handed to threads (`run_db`, the Bedrock stream reader) shows there as the await that
waits for it. On SIGUSR1 (Twisted owns SIGTERM) the profile is written to $BENCH_PROFILE_OUT (.prof, and .txt with the
top functions by own and by cumulative time), then the process exits.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import signal
import sys


def main() -> None:
    out = os.environ.get("BENCH_PROFILE_OUT", "web.prof")
    profile = cProfile.Profile()

    def dump(*_: object) -> None:
        profile.disable()
        profile.dump_stats(out)
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats("tottime").print_stats(45)
        stats.sort_stats("cumulative").print_stats(70)
        with open(os.path.splitext(out)[0] + ".txt", "w", encoding="utf-8") as handle:
            handle.write(text.getvalue())
        os._exit(0)

    signal.signal(signal.SIGUSR1, dump)
    from daphne.cli import CommandLineInterface

    sys.argv = ["daphne", *sys.argv[1:]]
    profile.enable()
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
