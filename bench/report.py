"""A benchmark's result: its Markdown section and its verdicts against the targets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Report:
    title: str
    command: str
    body: str = ""
    # (target, measured, holds): printed in the summary of RESULTS.md.
    verdicts: list[tuple[str, str, bool | None]] = field(default_factory=list)

    def check(self, target: str, measured: str, holds: bool | None) -> None:
        self.verdicts.append((target, measured, holds))

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", f"`{self.command}`", "", self.body.strip(), ""]
        if self.verdicts:
            lines += ["| target | measured | holds |", "| --- | --- | --- |"]
            lines += [f"| {t} | {m} | {verdict(h)} |" for t, m, h in self.verdicts]
            lines.append("")
        return "\n".join(lines)


def verdict(holds: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[holds]
