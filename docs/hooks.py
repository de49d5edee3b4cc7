"""MkDocs hooks: serve ``benchmarks/results/`` in the site and quote its tables in the pages.

* ``on_files`` adds every ``.md`` and ``.png`` file of ``benchmarks/results/`` to the build under the
  same path, ``benchmarks/results/<name>``: the result files render as pages with their plots, and links
  to them are checked like links to any other page.
* ``on_page_markdown`` replaces a line ``<!-- results: <name>.md -->`` with the result file's command
  (its ``Command:`` or ``Reproduce:`` paragraph), its first table, its first plot and a link to the whole
  file. The numbers are read from the committed file at build time, so a page never disagrees with it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SITE_PATH = "benchmarks/results"
DIRECTIVE = re.compile(r"^<!-- results: (?P<name>[\w.-]+\.md) -->$", re.MULTILINE)
IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+\.png)\)")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add every ``.md`` and ``.png`` file of ``benchmarks/results/`` as ``benchmarks/results/<name>``."""
    for path in sorted(RESULTS.iterdir()):
        if path.suffix in {".md", ".png"}:
            files.append(File.generated(config, f"{SITE_PATH}/{path.name}", abs_src_path=str(path)))
    return files


def _paragraphs(text: str) -> list[list[str]]:
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [block for block in blocks if block]


def results_excerpt(name: str, page_dir: str) -> str:
    """The command, first table and first plot of ``benchmarks/results/<name>``, linked from ``page_dir``."""
    path = RESULTS / name
    if not path.is_file():
        raise FileNotFoundError(f"docs: <!-- results: {name} --> names no file in {RESULTS}")
    paragraphs = _paragraphs(path.read_text(encoding="utf-8"))
    link = posixpath.relpath(f"{SITE_PATH}/{name}", page_dir or ".")
    parts = []
    command = next((p for p in paragraphs if p[0].startswith(("Command:", "Reproduce:"))), None)
    if command is not None:
        parts.append("\n".join(command))
    table = next((p for p in paragraphs if p[0].startswith("|")), None)
    if table is None:
        raise ValueError(f"docs: {path} has no table to quote")
    parts.append("\n".join(line for line in table if line.startswith("|")))
    image = next((m for p in paragraphs for line in p if (m := IMAGE.search(line))), None)
    if image is not None:
        src = posixpath.relpath(posixpath.join(SITE_PATH, image["src"]), page_dir or ".")
        parts.append(f"![{image['alt']}]({src})")
    parts.append(f"All rows, per seed and the full notes: [`benchmarks/results/{name}`]({link}).")
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Expand every ``<!-- results: <name>.md -->`` line of a page."""
    page_dir = posixpath.dirname(page.file.src_uri)
    return DIRECTIVE.sub(lambda match: results_excerpt(match["name"], page_dir), markdown)
