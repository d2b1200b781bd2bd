"""The README stays a short door into the project, every link of the Markdown pages leads
somewhere, and the tree speaks of the code, not of issue numbers."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "README.md",
         *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "bench" / "results").glob("*.md"))]


def _anchors(page: pathlib.Path) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 300, f"README.md has {lines} lines: move detail to docs/ or bench/results/"


def test_links_resolve():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_no_issue_numbers():
    # scripts/ and .ci/ are the lead's; tests/data holds third-party files.
    word = "iss" + "ue"  # spelled in two so that this line does not match itself
    pattern = re.compile(rf"\b{word}s? #?[0-9]+\b|\({word}\b", re.I)
    found = []
    for folder in ("src", "include", "python", "tests", "bench", "docs", "examples", "fuzz",
                   "cmake"):
        for path in (ROOT / folder).rglob("*"):
            if (not path.is_file() or "data" in path.relative_to(ROOT).parts
                    or path.suffix not in {".c", ".h", ".py", ".pyi", ".md", ".sh", ".txt",
                                           ".cmake", ".in", ""}):
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    for name in ("README.md", "CHANGELOG.md", "CMakeLists.txt", "pyproject.toml"):
        for n, line in enumerate((ROOT / name).read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{name}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
