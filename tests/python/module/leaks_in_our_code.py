"""Reads the output of a pytest run under LeakSanitizer and fails when a leak was allocated
from our code (a frame in src/ or python/src/ of this repository), or when the tests did not
pass. CPython and the peers' wheels keep memory until exit by design, so leak reports whose
stacks do not touch our code are ignored.

    python tests/python/module/leaks_in_our_code.py LOG
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]


def main(path):
    text = pathlib.Path(path).read_text(errors="replace")
    summary = [line for line in text.splitlines() if re.search(r"\d+ passed", line)]
    if not summary or re.search(r"\d+ (failed|error)", summary[-1]):
        print(f"leak check: the tests did not pass: {summary[-1] if summary else 'no summary'}")
        return 1
    if "Too many leaks!" in text:
        # LSan considers at most 5000 leaks: past that, one of ours may not be in the log.
        print("leak check: LeakSanitizer stopped at its cap of reports (\"Too many leaks!\"), "
              "so leaks from our code cannot be ruled out: suppress more of the peers' leaks")
        return 1
    ours = re.compile(re.escape(str(ROOT)) + r"/(src|python/src)/")
    blocks = re.split(r"\n(?=(?:Direct|Indirect) leak of )", text)
    leaks = [b for b in blocks[1:] if ours.search(b.split("\n\n")[0])]
    print(f"leak check: {summary[-1].strip()}; {len(blocks) - 1} leak reports, "
          f"{len(leaks)} from our code")
    for block in leaks[:5]:
        print(block.split("\n\n")[0])
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
