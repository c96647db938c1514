"""A host where no isolation tier works, made real for a child process: the seccomp filter a locked-down container
applies, with no namespaces (so bubblewrap cannot start) and Landlock's calls refused with ENOSYS, as a profile that
does not list them does (on a kernel that has Landlock, the tier's probe names this profile as the cause)."""

from __future__ import annotations

import errno
from collections.abc import Callable

_NAMESPACE_FLAGS = (0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000)
_LANDLOCK = ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self")


def without_isolation_tiers() -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess``: the child and everything it starts get neither tier."""

    def apply() -> None:
        import pyseccomp as sc

        rules = sc.SyscallFilter(sc.ALLOW)
        rules.add_rule(sc.ERRNO(errno.EPERM), "unshare")
        rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        for flag in _NAMESPACE_FLAGS:
            rules.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        for name in _LANDLOCK:
            rules.add_rule(sc.ERRNO(errno.ENOSYS), name)
        rules.load()

    return apply
