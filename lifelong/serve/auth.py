"""The bearer token: from --token-file, else an environment variable, else one made once in RUN_DIR/serve/token."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from lifelong.errors import UserError

MIN_LENGTH = 16
TOKEN_FILE = "token"


def load_token(env_name: str, token_file: Path | None, root: Path) -> tuple[str, str]:
    """(token, where it came from); a token shorter than MIN_LENGTH characters is refused."""
    if token_file is not None:
        try:
            token, where = token_file.read_text().strip(), f"from {token_file}"
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read the token file '{token_file}': {getattr(err, 'strerror', None) or err}") from None
    elif os.environ.get(env_name):
        token, where = os.environ[env_name].strip(), f"from ${env_name}"
    else:
        token, where = _made(root / TOKEN_FILE), f"in {root / TOKEN_FILE}"
    if len(token) < MIN_LENGTH:
        raise UserError(f"the token ({where}) has {len(token)} characters; use at least {MIN_LENGTH}, e.g. "
                        "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token, where


def _made(path: Path) -> str:
    """The token in ``path``, written once (readable by its owner only) if the file does not exist."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except FileExistsError:
            pass
        except OSError as err:
            raise UserError(f"cannot write the token file '{path}': {err.strerror or err}") from None
    return path.read_text().strip()


def matches(given: str | None, token: str) -> bool:
    """Constant-time comparison of a presented token with the service's."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
