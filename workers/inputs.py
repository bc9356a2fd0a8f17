"""Input that cannot hurt: reading spec and sweep text, and errors that never echo more than a glance of it.

Every spec or sweep, from a file, the HTTP API or a page, is refused with a field-named `SpecError` before any
cost grows with what a stranger typed:

- **size**: at most `MAX_INPUT_BYTES` of text, which must be UTF-8 (`decode` names the file otherwise);
- **YAML**: a loader with YAML 1.2's core-schema resolvers (`1e-4` is a number; `1:30`, `yes` and `2024-01-01`
  stay text), at most `MAX_ALIASES` aliases and `MAX_DEPTH` levels, and at most `MAX_NODES` values once aliases are
  expanded, counted on the composed node graph (shared nodes once), so a "billion laughs" costs microseconds;
- **parsed data** (JSON, a page's dict): `check_tree` walks it with the same depth and size limits;
- **errors**: `quote` shows at most `MAX_QUOTE` characters of an input (with an ellipsis), cheaply even for a
  huge or deeply shared value, and `FieldError` clips its field and message.

Numbers in specs are strict (`steps: true` is not 1 step; `"0.5"` is not 0.5): `Int`, `Float` and `Bool` below.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, Field
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

MAX_INPUT_BYTES = 64 * 1024  # a spec is a few hundred bytes, a big sweep a few KB
MAX_DEPTH = 50  # a spec nests 3 levels (random → field → low); PyYAML's composer recurses per level
MAX_ALIASES = 20  # *name references: enough to share a block or two, far too few to multiply anything
MAX_NODES = 10_000  # values after expanding aliases (a sweep of 1,000 runs in a grid is ~1,000)
MAX_QUOTE = 80  # characters of an input an error message may quote
MAX_FIELD = 200  # characters of a field path (paths hold the keys someone typed)
MAX_MESSAGE = 500  # characters of one error message
MAX_ERRORS = 50  # errors one SpecError lists (a sweep of 1,000 invalid runs lists the first ones)
MAX_SEED = 2**63 - 1  # a signed 64-bit integer: torch takes up to 2**64 - 1, pandas/Parquet/PostgreSQL int64 not
MAX_COUNT = 2**31 - 1  # steps and step counts: 32-bit integers in PostgreSQL


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the last one an ellipsis when anything was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = MAX_QUOTE
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


def quote(value: Any, limit: int = MAX_QUOTE) -> str:
    """A short repr of an input: at most `limit` characters, and cheap whatever the value holds (reprlib stops at a
    few levels and items, so a structure of a billion shared leaves costs the same as a small one)."""
    if isinstance(value, str):
        return clip(repr(value[: limit + 1]), limit)
    try:
        text = _REPR.repr(value)
    except ValueError:  # an integer of more than 4,300 digits cannot become text (sys.int_info)
        text = f"<an integer of about {int(value.bit_length() * 0.30103)} digits>" if isinstance(value, int) else "?"
    except Exception:  # a caller's object whose repr fails: still an error message, not a traceback
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


def shown(text: Any, limit: int = MAX_QUOTE) -> str:
    """Text someone typed (a key, a name) as part of a message: escaped (a NUL shows as \\x00) and clipped."""
    return clip(repr(str(text))[1:-1], limit)


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as a name or label, or None: PostgreSQL refuses NUL, and control characters
    and lone surrogates break tables, logs and CSV."""
    for char in value:
        code = ord(char)
        if code < 0x20 or code == 0x7F:
            return f"must not contain control characters such as {char!r}"
        if 0xD800 <= code <= 0xDFFF:
            return f"must be valid Unicode text, without a lone surrogate such as {char!r}"
    return None


# --- errors --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __post_init__(self) -> None:  # one line each, clipped: a CLI prints one error a line
        object.__setattr__(self, "field", clip(str(self.field).replace("\n", " "), MAX_FIELD))
        object.__setattr__(self, "message", clip(str(self.message).replace("\n", " "), MAX_MESSAGE))

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class SpecError(ValueError):
    """A spec that cannot run, with one readable error per offending field (at most `MAX_ERRORS`)."""

    def __init__(self, errors: list[FieldError]) -> None:
        if len(errors) > MAX_ERRORS:
            more = len(errors) - MAX_ERRORS + 1
            errors = [*errors[: MAX_ERRORS - 1], FieldError("more", f"{more} more errors not shown")]
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def refuse(field: str, message: str) -> SpecError:
    return SpecError([FieldError(field, message)])


# --- strict numbers ------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds (np.int64 is no `int`); anything else as it is."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _no_bool(value: Any) -> Any:
    """For the items of a list given as text ("0.5, 0.75"): text is read, but true/false is no number."""
    value = _plain(value)
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {value!r}")
    return value


Int = Annotated[int, BeforeValidator(_plain), Field(strict=True)]
Float = Annotated[float, BeforeValidator(_plain), Field(strict=True, allow_inf_nan=False)]
Bool = Annotated[bool, BeforeValidator(_plain), Field(strict=True)]
LooseFloat = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False)]  # list items typed as text


# --- YAML ----------------------------------------------------------------------------------------------------------


class _Refused(Exception):
    pass


_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _CoreLoader(Reader, Scanner, Parser, Composer, SafeConstructor, BaseResolver):
    """PyYAML's safe loader with YAML 1.2 core-schema resolvers and limits checked while composing."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        BaseResolver.__init__(self)
        self.depth = self.aliases = self.nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} YAML aliases (*name)")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        self.depth += 1
        self.nodes += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        if self.nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} values")
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self.depth -= 1


def _construct_int(loader: SafeConstructor, node: Node) -> int:
    text = loader.construct_scalar(node)  # type: ignore[arg-type]
    if not _INT.match(text):  # `!!int 1:30` or `!!int 1_000`: YAML 1.1 only
        raise ConstructorError(None, None, f"not an integer: {quote(text)}", node.start_mark)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text)


def _construct_float(loader: SafeConstructor, node: Node) -> float:
    text = loader.construct_scalar(node)  # type: ignore[arg-type]
    if _INT.match(text) and not text.startswith(("0o", "0x")):
        return float(int(text))
    if not _FLOAT.match(text):
        raise ConstructorError(None, None, f"not a number: {quote(text)}", node.start_mark)
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return float("-inf") if lowered.startswith("-") else float("inf")
    if lowered == ".nan":
        return float("nan")
    return float(text)


_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_CoreLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_CoreLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))  # before float: "1" is int
_CoreLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_CoreLoader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
_CoreLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])
_CoreLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_CoreLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _measure(root: Node) -> None:
    """Refuse a node graph whose expansion (aliases followed) is deeper than MAX_DEPTH, holds more than MAX_NODES
    values, or loops. Each distinct node is visited once (post-order, an explicit stack: no recursion)."""
    done: dict[int, tuple[int, int]] = {}  # id -> (values, depth) of its expansion
    open_: set[int] = set()  # the nodes on the current path
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            parts = [done[id(child)] for child in _children(node)]
            size = 1 + sum(p[0] for p in parts)
            depth = 1 + max((p[1] for p in parts), default=0)
            if depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels once YAML aliases are expanded")
            if size > MAX_NODES:
                raise _Refused(f"more than {MAX_NODES:,} values once YAML aliases are expanded")
            done[key] = (size, depth)
            open_.discard(key)
            continue
        if key in done:
            continue
        if key in open_:
            raise _Refused("a YAML alias refers to a value that contains it")
        open_.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in done)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error in one line: the problem and where (its own message spans lines and quotes the input)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{exc.problem or exc.context or 'cannot be parsed'}{where}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"unacceptable character #x{exc.character:04x} at position {exc.position}: write it as an escape"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_yaml(text: str, what: str) -> Any:
    """Parse YAML (or JSON) text into plain data, or raise SpecError naming `what` ("spec", "sweep")."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_INPUT_BYTES:
        raise refuse(what, f"is {size:,} bytes; at most {MAX_INPUT_BYTES:,} (64 KiB) are accepted")
    loader: _CoreLoader | None = None
    try:
        loader = _CoreLoader(text)  # its reader refuses unprintable characters at once
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node)
        return loader.construct_document(node)
    except _Refused as exc:
        raise refuse(what, str(exc)) from None
    except yaml.YAMLError as exc:
        raise refuse(what, f"not valid YAML or JSON: {_yaml_problem(exc)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
        raise refuse(what, f"cannot be read: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def check_tree(data: Any, what: str) -> None:
    """Refuse already-parsed data (JSON, a page's dict) deeper than MAX_DEPTH or holding more than MAX_NODES
    values (shared containers counted each time they appear, as validation would see them). Stops early."""
    seen = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise refuse(what, f"nested deeper than {MAX_DEPTH} levels")
        if seen > MAX_NODES:
            raise refuse(what, f"more than {MAX_NODES:,} values")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)


def decode(raw: bytes, what: str, source: str) -> str:
    """The text of a file (`source` names it in errors): at most MAX_INPUT_BYTES, and UTF-8 (a BOM is dropped)."""
    if len(raw) > MAX_INPUT_BYTES:
        raise refuse(what, f"{source} is over {MAX_INPUT_BYTES:,} bytes (64 KiB); a spec is a few hundred bytes")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise refuse(what, f"{source} is UTF-16 text; it must be UTF-8: save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        raise refuse(
            what, f"{source} is not UTF-8 text (byte 0x{byte:02x} at offset {exc.start}); it must be UTF-8"
        ) from None
