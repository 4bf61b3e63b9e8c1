"""Text that crosses a wire: JSON may carry lone UTF-16 surrogates (``"\\ud800"``) that Python decodes
into a ``str`` no tokenizer, hash or database can encode. Request models type such fields as
:data:`WireText`, so they are refused at validation (a 4xx) instead of failing deep inside (a 500)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def encodable(text: str) -> str:
    """``text`` unchanged; ValueError naming the position when UTF-8 cannot encode it (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode text: lone surrogate at character {exc.start}") from None
    return text


#: A str that UTF-8 can encode.
WireText = Annotated[str, AfterValidator(encodable)]
