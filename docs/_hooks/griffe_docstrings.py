"""A griffe extension that turns the reStructuredText left in flatminima's docstrings into Markdown.

The docstrings are Google style (Args/Returns/Raises/Example) but name objects with Sphinx roles
(:class:`HessianOperator`, :func:`~flatminima.curvature.measure`), end some paragraphs with ``::``
before an indented literal block, and one of them (``flatminima.solvers.nonconvex``) holds an RST
"simple table". mkdocstrings renders Markdown, so without this extension the roles would show as
raw text and the table would turn into a heading. The source docstrings are left as they are (they
read well in ``help()`` and in an editor); only what the site renders is rewritten:

* ``:role:`target``` -> ```target``` (``~a.b.C`` -> ``C``, as Sphinx shows it);
* a paragraph ending in ``::`` -> ``:`` (the indented block after it is a Markdown code block anyway);
* an RST simple table (rows between lines of ``=`` runs) -> a Markdown table;
* ``Example:`` -> ``Examples:`` (griffe's Google parser knows only the plural; the singular would be an
  admonition whose ``>>>`` lines Markdown reads as link references);
* an ``Args:`` (or ``Attributes:``) entry for several names at once (``model, loss_fn, batches: as
  ...``) -> one entry per name with the same description (griffe would warn that the joint name is no
  parameter);
* a ``Raises:`` section of free text (``As :class:`X`.``, no ``Error: description`` pairs) -> a
  paragraph "**Raises:** ..." with the same text;
* plain-text mathematics in prose kept literal: ``<lambda, b>`` is not an HTML tag, ``||Z||_*``,
  ``||R||_F`` and ``A^*`` start no emphasis, ``_{1,1}`` is no attribute list (code spans, doctests
  and indented literal blocks are left as they are).
"""

from __future__ import annotations

import re
from typing import Any

try:
    import griffe
except ImportError:  # pragma: no cover - only mkdocstrings needs the extension class
    griffe = None  # type: ignore[assignment]

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const|ref|term):`([^`]+)`")
_BORDER = re.compile(r"^(\s*)(=+)( +=+)+\s*$")


def _role(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    explicit = re.match(r"^(.*?)\s*<([^>]+)>$", target)  # :class:`title <target>`
    if explicit:
        return f"`{explicit.group(1)}`"
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def _columns(border: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"=+", border)]


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    cells = []
    for i, (start, _end) in enumerate(spans):
        stop = spans[i + 1][0] if i + 1 < len(spans) else len(line)
        cells.append(line[start:stop].strip().replace("|", "\\|"))
    return cells


def _tables(text: str) -> str:
    """Rewrite RST simple tables (border, header, border, rows, border) as Markdown tables."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _BORDER.match(lines[i])
        borders = [j for j in range(i, min(len(lines), i + 400)) if _BORDER.match(lines[j])][:3]
        if match and len(borders) == 3 and borders[0] == i:
            indent = match.group(1)
            spans = _columns(lines[i])
            header = _cells(lines[i + 1], spans)
            rows = [_cells(line, spans) for line in lines[borders[1] + 1 : borders[2]] if line.strip()]
            out.append(f"{indent}| " + " | ".join(header) + " |")
            out.append(f"{indent}|" + "|".join("---" for _ in header) + "|")
            out.extend(f"{indent}| " + " | ".join(row) + " |" for row in rows)
            i = borders[2] + 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


_GROUPED = re.compile(r"^(\s*)(\w+(?:\s*,\s*\w+)+)(\s*\([^)]*\))?:(.*)$")
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Attributes|Raises):\s*$")
_RAISES_ITEM = re.compile(r"^\s*[\w.]+(\s*,\s*[\w.]+)*(\s*\([^)]*\))?:")


def _sections(text: str) -> str:
    """Split grouped parameter entries; turn free-text Raises sections into an admonition."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(re.sub(r"^(\s*)Example:\s*$", r"\1Examples:", line))
        header = _SECTION.match(line)
        i += 1
        if not header:
            continue
        body_start = i
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(header.group(1))):
            i += 1
        body = lines[body_start:i]
        while body and not body[-1].strip():  # trailing blank lines belong after the section
            body.pop()
            i -= 1
        items = [b for b in body if b.strip()]
        if not items:
            continue
        item_indent = _indent(items[0])
        if header.group(2) == "Raises":
            if _RAISES_ITEM.match(items[0]):
                out.extend(body)
            else:  # a sentence, not (exception, description) pairs: keep it as a paragraph
                out[-1] = f"{header.group(1)}**Raises:** " + " ".join(b.strip() for b in items)
            continue
        j = 0
        while j < len(body):
            grouped = _GROUPED.match(body[j]) if _indent(body[j]) == item_indent else None
            k = j + 1
            while k < len(body) and (not body[k].strip() or _indent(body[k]) > item_indent):
                k += 1
            if grouped:
                rest = body[j + 1 : k]
                for name in re.split(r"\s*,\s*", grouped.group(2)):
                    out.append(f"{grouped.group(1)}{name}{grouped.group(3) or ''}:{grouped.group(4)}")
                    out.extend(rest)
            else:
                out.extend(body[j:k])
            j = k
    return "\n".join(out)


_SECTION_TITLES = re.compile(
    r"^\s*(Args|Arguments|Parameters|Raises|Returns|Yields|Examples?|Attributes|References|Notes?|"
    r"Warnings?|See Also|Other Parameters|Keyword Args|Methods|Functions|Classes)\s*:\s*$"
)
_CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")


def _escape_prose(segment: str) -> str:
    """Keep plain-text mathematics literal in Markdown: ``<lambda, b>``, ``||Z||_*``, ``_{1,1}``."""
    segment = re.sub(r"<(?=[A-Za-z!/?])(?!https?:)", "&lt;", segment)  # not an HTML tag
    segment = re.sub(r"(?<=[_^])\*", r"\\*", segment)  # A^*, ||Z||_*: no emphasis
    # an underscore not between two letters or digits could open or close emphasis (||R||_F ... X||_*)
    segment = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", segment)
    return segment.replace("{", "\\{").replace("}", "\\}")  # no attr_list


def _escape(text: str) -> str:
    """Escape the prose of a docstring, leaving doctests, literal blocks and code spans alone."""
    lines = text.split("\n")
    out: list[str] = []
    code_indent: int | None = None
    previous = ""  # the last non-blank line
    blank = False
    doctest = False  # from a ">>>" line to the next blank line: examples and their output
    for line in lines:
        if not line.strip():
            out.append(line)
            blank, doctest = True, False
            continue
        indent = _indent(line)
        if code_indent is not None and indent < code_indent:
            code_indent = None
        literal = blank and not _SECTION_TITLES.match(previous)  # Markdown's indented code block
        if code_indent is None and literal and indent >= _indent(previous) + 4:
            code_indent = indent
        doctest = doctest or line.lstrip().startswith(">>>")
        if code_indent is not None or doctest:
            out.append(line)
        else:
            parts = _CODE_SPAN.split(line)
            out.append("".join(part if i % 2 else _escape_prose(part) for i, part in enumerate(parts)))
        previous, blank = line, False
    return "\n".join(out)


def to_markdown(text: str) -> str:
    """The Markdown form of one docstring (see the module docstring)."""
    text = _sections(text)
    text = _ROLE.sub(_role, text)
    text = re.sub(r"(\S)::\n(\s*\n)", r"\1:\n\2", text)
    text = re.sub(r"(\s)::\n(\s*\n)", r"\1\n\2", text)
    return _tables(_escape(text))


if griffe is not None:  # the conversion itself (to_markdown) is tested without the docs extra

    class RstToMarkdown(griffe.Extension):
        """Rewrite every docstring once the object tree is loaded."""

        def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:  # noqa: D102
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj.docstring.value)
