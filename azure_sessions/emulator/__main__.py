"""``azure-sessions-emulator`` (or ``python -m azure_sessions.emulator``): serve a local dynamic-sessions pool until
Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from . import is_loopback, start_emulator
from .faults import ENV_RULES
from .launcher import Limits
from .tiers import CHOICES, SandboxUnavailable


def build_parser() -> argparse.ArgumentParser:
    invoked_as = os.path.basename(sys.argv[0])  # the console script, or __main__.py under `python -m`
    parser = argparse.ArgumentParser(
        prog="python -m azure_sessions.emulator" if invoked_as == "__main__.py" else invoked_as,
        description="Local emulator of the Azure Container Apps dynamic-sessions API (Python code-interpreter pool).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--token", default=os.environ.get("AZURE_SESSIONS_EMULATOR_TOKEN"),
                        help="the only accepted bearer token (default: env AZURE_SESSIONS_EMULATOR_TOKEN; "
                        "none = any bearer token; required for non-loopback hosts)")  # fmt: skip
    parser.add_argument("--cooldown", type=float, default=300.0, help="idle seconds before a session is destroyed")
    parser.add_argument("--max-sessions", type=int, default=100,
                        help="concurrent sessions; a new identifier beyond them gets --pool-full-status")  # fmt: skip
    parser.add_argument("--pool-full-status", type=int, choices=(404, 429), default=404,
                        help="how a full pool answers: 404 (as Microsoft Learn documents, the default) or 429 "
                        "(as a production pool was seen to answer)")  # fmt: skip
    parser.add_argument("--data-root", default=None, help="directory for session files (default: a temp dir)")
    parser.add_argument("--prestart", type=int, default=2, help="pre-started workers kept ready (default 2)")
    parser.add_argument("--sandbox", choices=CHOICES, default="auto",
                        help="auto: the strongest tier that works here (bubblewrap, else landlock; unisolated only on "
                        "loopback); bubblewrap or landlock: require that tier; none: unisolated on purpose")  # fmt: skip
    parser.add_argument("--fault", action="append", default=None, metavar="RULE",
                        help="inject faults, e.g. '429:rate=0.1:retry_after=1', 'drop:path=executions:phase=after', "
                        f"'delay:seconds=2', 'expire:count=1', 'full:status=429' (repeatable; also env {ENV_RULES})")  # fmt: skip
    parser.add_argument("--fault-seed", type=int, default=None, help="random seed for fault rates")
    limits = parser.add_argument_group("what a session gets (0: no limit; README, 'What a session gets')")
    limits.add_argument("--max-processes", type=int, default=Limits.max_processes,
                        help=f"processes and threads per session (default {Limits.max_processes})")  # fmt: skip
    limits.add_argument("--session-memory-mb", type=int, default=Limits.session_memory_mb,
                        help="memory per session, summed over its processes; past it its largest process is ended "
                        f"(default {Limits.session_memory_mb})")  # fmt: skip
    limits.add_argument("--session-disk-mb", type=int, default=Limits.session_disk_mb,
                        help="disk per session, /mnt/data and /tmp together; past it the running cell is interrupted "
                        f"and uploads are refused (default {Limits.session_disk_mb})")  # fmt: skip
    limits.add_argument("--nice", type=int, default=Limits.nice,
                        help=f"added to the nice value of every session process (default {Limits.nice})")  # fmt: skip
    limits.add_argument("--exact-process-cap", action="store_true",
                        help="refuse a session's fork or thread past --max-processes at once (EAGAIN), through seccomp "
                        "user notification, rather than end its processes a moment later; some forks can then fail "
                        "with EINTR under load (dash's 'Cannot fork')")  # fmt: skip
    limits.add_argument("--memory-mb", type=int, default=Limits.memory_mb,
                        help=f"address space per process (default {Limits.memory_mb})")  # fmt: skip
    limits.add_argument("--cpu-seconds", type=int, default=Limits.cpu_seconds,
                        help=f"CPU time per process (default {Limits.cpu_seconds})")  # fmt: skip
    limits.add_argument("--file-size-mb", type=int, default=Limits.file_size_mb,
                        help=f"size of one file (default {Limits.file_size_mb})")  # fmt: skip
    limits.add_argument("--image-mb", type=int, default=Limits.image_mb,
                        help=f"the image a cell returns, as PNG; a larger one is left out (default "
                             f"{Limits.image_mb})")  # fmt: skip
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = Limits(memory_mb=args.memory_mb or None, cpu_seconds=args.cpu_seconds or None,
                    max_processes=args.max_processes or None, file_size_mb=args.file_size_mb or None,
                    image_mb=args.image_mb or None,
                    session_memory_mb=args.session_memory_mb or None, session_disk_mb=args.session_disk_mb or None,
                    nice=args.nice, exact_process_cap=args.exact_process_cap)  # fmt: skip
    try:
        emu = start_emulator(host=args.host, port=args.port, token=args.token, cooldown=args.cooldown,
                             max_sessions=args.max_sessions, data_root=args.data_root, prestart=args.prestart,
                             sandbox=args.sandbox, faults=args.fault, fault_seed=args.fault_seed, limits=limits,
                             log_level=args.log_level, refuse_unisolated=not is_loopback(args.host),
                             pool_full_status=args.pool_full_status)  # fmt: skip
    except (ValueError, SandboxUnavailable, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("Azure dynamic-sessions emulator is serving.", flush=True)
    print(f"  endpoint: {emu.endpoint}", flush=True)
    print(f"  auth:     Authorization: Bearer {'<your --token>' if emu.token else '<any non-empty token>'}")
    if emu.tier.isolated:
        print(f"  sandbox:  {emu.tier.summary}")
    else:
        banner = "!" * 100
        print(f"{banner}\n  sandbox:  {emu.tier.summary}\n{banner}", flush=True)
    budget = emu.budget
    shown = lambda value, unit="": "no limit" if value is None else f"{value}{unit}"  # noqa: E731
    print(f"  session:  {shown(budget.tasks)} processes and threads, {shown(budget.memory_mb, ' MiB')} of memory, "
          f"{shown(budget.disk_mb, ' MiB')} of disk, nice +{budget.nice}", flush=True)  # fmt: skip
    if emu.faults.active:
        print(f"  faults:   {emu.faults.rules()}")
    print("Press Ctrl-C to stop.", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(timeout=1.0):
        if not emu.running:
            break
    print("Stopping: ending sessions and removing their files.", flush=True)
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
