"""One check for arguments accepted for upstream compatibility that this suite cannot honour."""
from typing import Any, Dict, Tuple


def refuse_unsupported(owner: str, given: Dict[str, Tuple[Any, Any, str]]) -> None:
    """`given` maps an argument name to (value, inert value, why); a value other than the inert one stops the
    run with one line naming `owner.argument`."""
    for name, (value, inert, why) in given.items():
        if value != inert:
            raise ValueError(f"{owner}.{name}: {value!r} is not supported: {why} (remove it or set {inert!r})")
