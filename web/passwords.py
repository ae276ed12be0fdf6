"""`python -m rqscope.web.passwords`: print a password hash for RQSCOPE_USERS."""

from __future__ import annotations

import getpass
import sys

from werkzeug.security import generate_password_hash


def main() -> int:
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("rqscope: error: use at least 8 characters", file=sys.stderr)
        return 2
    print(generate_password_hash(password))
    return 0


if __name__ == "__main__":
    sys.exit(main())
