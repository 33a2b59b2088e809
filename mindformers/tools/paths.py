"""Finding files named in configs."""
import os

# the directory that holds the `mindformers` package (the repository root in a checkout)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_repo_path(path: str, what: str) -> str:
    """Absolute path of `path`; a relative path is looked up in the current directory, then the repo root."""
    expanded = os.path.expanduser(str(path))
    candidates = [expanded] if os.path.isabs(expanded) else \
        [os.path.abspath(expanded), os.path.join(REPO_ROOT, expanded)]
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"{what} '{path}' not found (tried {' and '.join(candidates)})")
