"""Markup that is not text: reST labels, comments, directive lines and roles; Markdown front matter.

Every function keeps the line structure (a removed line becomes an empty one), so chunk line
numbers still point at the right lines of the file.
"""

from __future__ import annotations

import re

import yaml

FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)

EXPLICIT = re.compile(r"^(\s*)\.\.(?:\s+(.*))?$")  # a reST explicit markup line: ".. something"
DIRECTIVE = re.compile(r"^([\w:.+-]+)::\s*(.*)$")
OPTION = re.compile(r"^\s+:[\w -]+:(\s.*)?$")
# Directives whose arguments and options are not text (their indented content still is)...
NO_TEXT = {"image", "figure", "highlight", "only", "sectionauthor", "moduleauthor", "currentmodule", "testsetup",
           "testcleanup", "code-block", "sourcecode", "code", "rubric", "program", "opcode", "productionlist",
           "default-role", "role", "csv-table", "list-table", "table", "doctest", "testcode", "testoutput"}
# ... and those with no text at all: navigation, index entries, raw output, includes.
NO_CONTENT = {"toctree", "index", "raw", "meta", "contents", "include", "literalinclude", "tabularcolumns",
              "autosummary", "automodule", "autoclass", "autofunction", "target-notes"}
ADMONITION = {"note": "Note", "warning": "Warning", "tip": "Tip", "important": "Important", "hint": "Hint",
              "caution": "Caution", "danger": "Danger", "attention": "Attention", "error": "Error",
              "seealso": "See also", "deprecated": "Deprecated since version",
              "versionadded": "New in version", "versionchanged": "Changed in version", "admonition": ""}
# :role:`text <target>` -> text; :role:`~a.b.c` -> c; :role:`!x` / :role:`x` -> x
ROLE = re.compile(r":[\w:+.-]+:`([^`]+)`")
LINK = re.compile(r"`([^`<]+?)\s*<[^`>]+>`_{1,2}")  # `text <url>`_
REF = re.compile(r"`([^`]+)`_{1,2}(?!\w)")  # `text`_
SUBST = re.compile(r"\|(\w|\w[\w -]*\w)\|_{0,2}")


def front_matter(text: str) -> tuple[dict, str]:
    """(fields, text with the front matter lines emptied) of a Markdown file starting with '---'."""
    m = FRONT_MATTER.match(text)
    if not m:
        return {}, text
    try:
        fields = yaml.safe_load(m.group(1) or "") or {}
    except yaml.YAMLError:
        return {}, text  # not YAML: a thematic break at the top, left as text
    if not isinstance(fields, dict):
        return {}, text
    return fields, "\n" * m.group(0).count("\n") + text[m.end():]


def _role_text(m: re.Match) -> str:
    inner = m.group(1)
    if (link := re.match(r"(.+?)\s*<[^<>]+>$", inner, re.S)):
        return link.group(1)
    inner = inner.lstrip("!")
    return inner.rsplit(".", 1)[-1] if inner.startswith("~") else inner


def clean_rst(text: str) -> str:
    """reST source as readable text: labels, comments, substitution definitions, navigation and
    non-text directive lines emptied; admonitions read "Note: ..."; roles and links reduced to
    their text."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = EXPLICIT.match(lines[i])
        if not m:
            out.append(_inline(lines[i]))
            i += 1
            continue
        indent, body = len(m.group(1)), (m.group(2) or "")
        i += 1
        d = DIRECTIVE.match(body)
        footnote = re.match(r"\[([^\]]+)\]\s+(.*)$", body)
        if d and d.group(1).split(":")[-1].lower() not in NO_CONTENT:
            name, args = d.group(1).split(":")[-1].lower(), _inline(d.group(2))
            if name in NO_TEXT:
                out.append("")
            elif name in ADMONITION and ADMONITION[name]:
                out.append(" " * indent + f"{ADMONITION[name]}: {args}".rstrip(": "))
            else:  # function, class, envvar, generic admonition...: the argument is text
                out.append(" " * indent + args)
            while i < len(lines) and OPTION.match(lines[i]):  # the directive's :options:
                out.append("")
                i += 1
        elif footnote:  # .. [1] text
            out.append(" " * indent + f"[{footnote.group(1)}] {_inline(footnote.group(2))}")
        else:  # a label (.. _name:), target, substitution definition, comment or navigation:
            out.append("")  # neither it nor the block indented under it is text
            while i < len(lines) and (_indented(lines[i], indent) or not lines[i].strip()
                                      and i + 1 < len(lines) and _indented(lines[i + 1], indent)):
                out.append("")
                i += 1
    return "\n".join(out)


# MyST (Sphinx in Markdown): ```{name} args / :::{name} args directive fences, {role}`text`
# roles and (label)= targets, read as clean_rst reads their reST forms.
MYST_FENCE = re.compile(r"^([ \t]*)(`{3,}|:{3,})\{([\w:.+-]+)\}[ \t]*(.*)$")
CODE_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
MYST_ROLE = re.compile(r"\{[\w:+.-]+\}`([^`]+)`")
MYST_LABEL = re.compile(r"^[ \t]*\([^()\s]+\)=[ \t]*$")
CODE_DIRECTIVES = {"code-block", "sourcecode", "code", "code-cell"}


def _closes(line: str, fence: str) -> bool:
    s = line.strip()
    return len(s) >= len(fence) and set(s) == {fence[0]}


def clean_myst(text: str) -> str:
    """Markdown with MyST markup as readable text: toctree/index (and other navigation) blocks
    emptied, admonitions read "Note: ...", other directives keep their content (code blocks
    become ordinary fenced code), {eval-rst} content is cleaned as reST, options, labels and
    roles are reduced as in clean_rst. Line structure is kept."""
    if "{" not in text and ")=" not in text:
        return text
    lines = text.split("\n")
    out: list[str] = []
    stack: list[tuple[str, bool]] = []  # open directive fences and whether their content is dropped
    code: str | None = None  # the fence of an open ordinary code block: nothing in it is markup
    i = 0
    while i < len(lines):
        line, i = lines[i], i + 1
        dropping = any(drop for _, drop in stack)
        if code is not None:
            if _closes(line, code):
                code = None
            out.append("" if dropping else line)
            continue
        if stack and _closes(line, stack[-1][0]):
            stack.pop()
            out.append("")
            continue
        d = MYST_FENCE.match(line)
        if d:
            indent, fence, name, args = d.group(1), d.group(2), d.group(3).split(":")[-1].lower(), d.group(4)
            if name in CODE_DIRECTIVES:
                code = fence
                out.append("" if dropping else f"{indent}{fence}{args}")
                continue
            drop = dropping or name in NO_CONTENT
            if drop or name in NO_TEXT or name == "eval-rst":
                out.append("")
            elif ADMONITION.get(name):
                out.append(f"{indent}{ADMONITION[name]}: {_inline(args)}".rstrip(": "))
            else:  # generic admonition, tab, API directives...: the argument is text
                out.append(indent + _inline(args))
            if i < len(lines) and lines[i].strip() == "---":  # options as a YAML block
                end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "---"), i)
                out += [""] * (end + 1 - i)
                i = end + 1
            while i < len(lines) and OPTION.match(" " + lines[i]):  # the directive's :options:
                out.append("")
                i += 1
            if name == "eval-rst" and not drop:  # its content is reST
                end = next((j for j in range(i, len(lines)) if _closes(lines[j], fence)), len(lines))
                out += clean_rst("\n".join(lines[i:end])).split("\n") if end > i else []
                i = end
            stack.append((fence, drop))
            continue
        c = CODE_FENCE.match(line)
        if c:
            code = c.group(1)
            out.append("" if dropping else line)
        elif dropping or MYST_LABEL.match(line):
            out.append("")
        else:
            out.append(MYST_ROLE.sub(_role_text, line) if "`" in line else line)
    return "\n".join(out)


def _indented(line: str, than: int) -> bool:
    return bool(line.strip()) and len(line) - len(line.lstrip()) > than


def _inline(line: str) -> str:
    if "`" in line or "|" in line:
        line = ROLE.sub(_role_text, line)
        line = LINK.sub(r"\1", line)
        line = REF.sub(r"\1", line)
        line = SUBST.sub(r"\1", line)
    if line.strip() == "::":  # "::" alone introduces a literal block
        return ""
    return line[:-1] if line.endswith("::") else line
