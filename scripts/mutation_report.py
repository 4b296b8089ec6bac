"""Print mutmut's results as a score per module: read `mutmut results --all true` on stdin,
keep the mutants matching the globs given as arguments, list the survivors."""

from __future__ import annotations

import fnmatch
import re
import sys
from collections import Counter, defaultdict


def main() -> None:
    patterns = sys.argv[1:] or ["*"]
    status: dict[str, str] = {}
    for line in sys.stdin:
        name, _, outcome = line.strip().rpartition(": ")
        if name and any(fnmatch.fnmatchcase(name, p) for p in patterns):
            status[name] = outcome
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    for name, outcome in status.items():
        # bridge.web.origin.x_check__mutmut_4,
        # bridge.sessions.sealing.xǁSessionSealerǁopen__mutmut_1
        module = re.split(r"\.x[_ǁ]", name, maxsplit=1)[0]
        per_module[module][outcome] += 1
    print(f"{'module':34} {'mutants':>7} {'killed':>7} {'survived':>8} {'other':>6} {'score':>6}")
    for module, counts in sorted(per_module.items()):
        total = sum(counts.values())
        killed = counts["killed"] + counts["timeout"]
        other = total - killed - counts["survived"]
        score = killed / total if total else 1.0
        print(f"{module:34} {total:7} {killed:7} {counts['survived']:8} {other:6} {score:6.0%}")
    survivors = sorted(n for n, o in status.items() if o not in ("killed", "timeout"))
    if survivors:
        print("\nnot killed (`.venv/bin/mutmut show NAME` prints the change):")
        print("\n".join(f"  {name}: {status[name]}" for name in survivors))


if __name__ == "__main__":
    main()
