"""Print the README's "Conformance of sc-server 0.13.0" table from two reports.

Reads the JSON reports that ``run_reference.py`` writes (without and with
authentication) and the two baselines, and prints one Markdown row per requirement
that sc-server fails in a mode, or that neither mode could judge:

    python tests/reference/conformance_table.py reports/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SHOWN = {"pass": "pass", "fail": "**fail**", "error": "**error**", "skip": "skip"}


def outcomes(report: Path) -> dict[str, dict]:
    document = json.loads(report.read_text(encoding="utf-8"))
    return {entry["id"]: entry for entry in document["requirements"]}


def reasons() -> dict[str, str]:
    """The one-line explanations of both baselines, by requirement id."""
    found: dict[str, str] = {}
    for baseline in sorted(HERE.glob("baseline-sc-server-0.13-*.txt")):
        for line in baseline.read_text(encoding="utf-8").splitlines():
            if line.startswith("#") or "#" not in line:
                continue
            requirement_id, reason = line.split("#", 1)
            found.setdefault(requirement_id.strip(), reason.strip())
    return found


def skip_reason(entry: dict) -> str:
    messages = [check["message"] for check in entry["checks"] if check["message"]]
    return messages[0].splitlines()[0] if messages else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir", type=Path)
    options = parser.parse_args(argv)

    open_run = outcomes(options.report_dir / "sc-server-0.13-open.json")
    auth_run = outcomes(options.report_dir / "sc-server-0.13-auth.json")
    why = reasons()

    print("| requirement | level | auth off | auth on | what sc-server 0.13.0 does |")
    print("| --- | --- | --- | --- | --- |")
    for requirement_id, entry in open_run.items():
        pair = (entry["outcome"], auth_run[requirement_id]["outcome"])
        failed = {"fail", "error"} & set(pair)
        if not failed and "pass" in pair:
            continue  # judged and passed where it applies
        if set(pair) <= {"skip", "untested"}:
            explanation = skip_reason(auth_run[requirement_id]) or skip_reason(entry)
        else:
            explanation = why.get(requirement_id, "")
        shown = [SHOWN.get(outcome, outcome) for outcome in pair]
        print(
            f"| {requirement_id} | {entry['level']} | {shown[0]} | {shown[1]} "
            f"| {explanation} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
