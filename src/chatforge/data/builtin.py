"""Built-in corpora that need no download.

`builtin:pydoc` is the English text of the Python reference topics (`pydoc_data.topics`), which
ships with every CPython: real prose and code, about 0.5 MB, split into one document per section.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from chatforge.errors import DataError

# A section title is a line followed by a line of *, =, - or ~ of the same length.
_TITLE = re.compile(r"^(?P<title>[^\n]+)\n(?P<rule>[*=\-~^]{3,})\n", re.MULTILINE)


def pydoc_documents() -> Iterator[str]:
    """One document per section of every pydoc topic, in a fixed order."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        text = topics[key].strip()
        starts = [m.start() for m in _TITLE.finditer(text)] or [0]
        if starts[0] != 0:
            starts.insert(0, 0)
        for begin, end in zip(starts, starts[1:] + [len(text)]):
            section = text[begin:end].strip()
            if len(section) >= 40:
                yield section


BUILTIN_CORPORA = {"pydoc": pydoc_documents}


def builtin_documents(name: str) -> Iterator[str]:
    if name not in BUILTIN_CORPORA:
        known = ", ".join(f"builtin:{k}" for k in BUILTIN_CORPORA)
        raise DataError(f"unknown built-in corpus 'builtin:{name}' (known: {known})")
    return BUILTIN_CORPORA[name]()
