"""Pre-backup hook for Kestrel: dump PostgreSQL before the nightly job.

Install as /etc/kestrel/hooks/pre-backup.d/10-postgres.py; kestreld runs every
executable in that folder before a job and aborts the job if one exits non-zero.
"""

import subprocess
import sys
from pathlib import Path

DUMP_DIR = Path("/var/backups/postgres")
TIMEOUT_SECONDS = 1800  # give up after 30 minutes


def dump_database(name: str) -> Path:
    """Write a compressed custom-format dump of one database."""
    DUMP_DIR.mkdir(parents=True, exist_ok=True)
    target = DUMP_DIR / f"{name}.dump"
    subprocess.run(
        ["pg_dump", "--format=custom", "--compress=6", f"--file={target}", name],
        check=True,
        timeout=TIMEOUT_SECONDS,
    )
    return target


def main() -> int:
    databases = sys.argv[1:] or ["app"]
    for name in databases:
        path = dump_database(name)
        print(f"dumped {name} to {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
