"""The one encoder spec grammar: ``kind[:name][@mode][,key=value…]``, parsed and written here only.

::

    spec    = kind [":" name] ["@" mode] {"," key "=" value}
    kind    = registered encoder kind          effnet-lite0, vae, metric, colour-hist …
    name    = trained model name, weights file or kind-specific argument (no ``,`` ``@`` ``=``)
    mode    = retrieval mode of a trained model  vae:shoes@loglik
    options = key=value pairs, order kept       effnet-lite0:/w.pth,pool=gem

When a spec has neither name nor mode, its first option may follow the colon: ``effnet-lite0:pool=gem``
is ``effnet-lite0,pool=gem``. :meth:`EncoderSpec.__str__` writes that shorter form, which is the
encoder name catalogs indexed before this grammar have stored, so every stored name parses back to
itself. Which names, modes and options a kind accepts is up to its factory (lookalike.encoders).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_FORBIDDEN = frozenset(",@=")


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed spec. ``options`` keeps the written order (it is part of the canonical string);
    values stay strings, the kind's factory converts them."""

    kind: str
    name: str | None = None
    mode: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not _KIND_RE.match(self.kind or ""):
            raise ValueError(f"invalid encoder kind {self.kind!r}: letters, digits, '-', '_', '.'")
        if self.name is not None and (not self.name or self.name != self.name.strip()
                                      or _NAME_FORBIDDEN & set(self.name)):
            raise ValueError(f"invalid encoder name {self.name!r}: non-empty, no ',', '@' or '='")
        if self.mode is not None and not _MODE_RE.match(self.mode):
            raise ValueError(f"invalid encoder mode {self.mode!r}: letters, digits, '-', '_'")
        for key, value in self.options.items():
            if not _KEY_RE.match(key):
                raise ValueError(f"invalid encoder option name {key!r}")
            if not isinstance(value, str) or "," in value or value != value.strip():
                raise ValueError(f"invalid value {value!r} for encoder option {key!r}: a string without ','")

    @classmethod
    def parse(cls, text: "str | EncoderSpec") -> "EncoderSpec":
        """``"vae:shoes@z"`` -> ``EncoderSpec("vae", "shoes", "z")``. Raises ValueError on a malformed
        spec (empty kind, empty name after ':', option without '=', an option given twice, ...)."""
        if isinstance(text, EncoderSpec):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"empty encoder spec {text!r}")
        head, *parts = [part.strip() for part in text.strip().split(",")]
        kind, colon, rest = (p.strip() for p in head.partition(":"))
        name = mode = None
        if "@" in kind:  # kind@mode without a name
            if colon:
                raise ValueError(f"encoder spec {text!r}: the model name comes before '@mode' (kind:name@mode)")
            kind, _, mode = (p.strip() for p in kind.partition("@"))
        elif rest:  # (a bare trailing ':' is tolerated, as before: "effnet-lite0:" is "effnet-lite0")
            if "=" in rest.partition("@")[0]:  # the shorthand kind:key=value (names hold no '=')
                parts.insert(0, rest)
            else:
                name, _, mode = (p.strip() for p in rest.partition("@"))
                mode = mode if "@" in rest else None
                if not name:
                    raise ValueError(f"encoder spec {text!r}: nothing between ':' and "
                                     f"{'@' if mode is not None else 'the end'}")
        if mode == "":
            raise ValueError(f"encoder spec {text!r}: empty mode after '@'")
        options: dict[str, str] = {}
        for part in parts:
            key, eq, value = (p.strip() for p in part.partition("="))
            if not eq or not key:
                raise ValueError(f"encoder spec {text!r}: option {part!r} must look like key=value")
            if key in options:
                raise ValueError(f"encoder spec {text!r}: option {key!r} given twice")
            options[key] = value
        return cls(kind, name, mode, options)

    def __str__(self) -> str:
        text = self.kind + (f":{self.name}" if self.name is not None else "")
        text += f"@{self.mode}" if self.mode is not None else ""
        if self.options:
            shorthand = self.name is None and self.mode is None
            text += (":" if shorthand else ",") + ",".join(f"{k}={v}" for k, v in self.options.items())
        return text

    def replace(self, **changes) -> "EncoderSpec":
        """A copy with some fields changed, e.g. ``spec.replace(mode=None)``."""
        return replace(self, **changes)

    def with_options(self, **options: str) -> "EncoderSpec":
        """A copy with ``options`` added or overriding (appended after the existing ones)."""
        return replace(self, options={**self.options, **{k: str(v) for k, v in options.items()}})


def parse_spec(text: "str | EncoderSpec") -> EncoderSpec:
    """Same as :meth:`EncoderSpec.parse`."""
    return EncoderSpec.parse(text)
