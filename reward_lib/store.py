"""Where named, versioned rewards live, and how a reference to one is resolved.

Shipped specs are package data (``reward_lib/specs/<name>.yaml``). The store is a folder of
``<name>/v<version>.yaml`` files that only grows: :meth:`RewardStore.save_new_version` takes the
next free version and creates its file exclusively, so a spec in use is never overwritten.

A reference is ``name`` (its latest version), ``name@version``, a path to a YAML file, or YAML
text itself (a candidate's ``reward.py`` may carry its spec inline). Python rewards registered
with ``@reward`` are found by name too.
"""

from __future__ import annotations

import re
from pathlib import Path

from reward_lib.errors import RewardError
from reward_lib.rewards import REGISTRY, Reward, spec_reward
from reward_lib.spec import RewardSpec, load_spec, parse_spec

SHIPPED = Path(__file__).resolve().parent / "specs"
DEFAULT_STORE = Path("runs") / "rewards"
REFERENCE = re.compile(r"^([a-z][a-z0-9_]*)(?:@(\d+))?$")
VERSION_FILE = re.compile(r"^v(\d+)\.yaml$")


class RewardStore:
    """The shipped specs plus a folder of versioned ones (``root``, created on the first save)."""

    def __init__(self, root: Path = DEFAULT_STORE) -> None:
        self.root = root

    def _shipped(self) -> dict[str, Path]:
        return {path.stem: path for path in sorted(SHIPPED.glob("*.yaml"))}

    def names(self) -> list[str]:
        stored = {p.name for p in self.root.iterdir() if p.is_dir()} if self.root.is_dir() else set()
        python = {name for name, _ in REGISTRY}
        return sorted(stored | set(self._shipped()) | python)

    def versions(self, name: str) -> dict[int, Path]:
        """Spec files of ``name`` by version: the shipped one, then the store's (which win a tie)."""
        found: dict[int, Path] = {}
        shipped = self._shipped().get(name)
        if shipped is not None:
            found[load_spec(shipped).version] = shipped
        folder = self.root / name
        if folder.is_dir():
            for path in folder.iterdir():
                match = VERSION_FILE.match(path.name)
                if match:
                    found[int(match[1])] = path
        return dict(sorted(found.items()))

    def load(self, name: str, version: int | None = None) -> Reward:
        """``name@version`` (the latest version when None), from Python rewards or spec files."""
        python = {v: r for (n, v), r in REGISTRY.items() if n == name}
        files = self.versions(name)
        known = sorted(set(python) | set(files))
        if not known:
            raise RewardError(
                f"unknown reward {name!r}: not registered in Python, not in {SHIPPED}, not in {self.root}; "
                f"known: {', '.join(self.names()) or 'none'}"
            )
        chosen = known[-1] if version is None else version
        if chosen in python:
            return python[chosen]
        if chosen not in files:
            raise RewardError(f"reward {name} has no version {chosen}; versions: {', '.join(map(str, known))}")
        spec = load_spec(files[chosen])
        if (spec.name, spec.version) != (name, chosen):
            raise RewardError(f"{files[chosen]}: holds {spec.key}, but its place in the store says {name}@{chosen}")
        return spec_reward(spec, str(files[chosen]))

    def next_version(self, name: str) -> int:
        known = set(self.versions(name)) | {v for n, v in REGISTRY if n == name}
        return max(known, default=0) + 1

    def save_new_version(self, spec: RewardSpec, header: str = "") -> tuple[RewardSpec, Path]:
        """Write ``spec`` as the next version of its name; an existing file is never replaced."""
        version = self.next_version(spec.name)
        saved = spec.model_copy(update={"version": version})
        path = self.root / spec.name / f"v{version}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        comment = "".join(f"# {line}\n" for line in header.splitlines())
        with path.open("x", encoding="utf-8") as handle:  # "x": fails rather than overwrite
            handle.write(comment + saved.to_yaml())
        return saved, path


def resolve_reward(reference: str | Reward, store: RewardStore | None = None, source: str = "inline spec") -> Reward:
    """The reward a reference names: ``name``, ``name@version``, a YAML file, or YAML text
    (which ``source`` names in messages)."""
    if isinstance(reference, Reward):
        return reference
    if "\n" in reference:
        return spec_reward(parse_spec(reference, source), source)
    match = REFERENCE.match(reference)
    if match is None or Path(reference).suffix in (".yaml", ".yml"):
        path = Path(reference)
        if not path.is_file():
            raise RewardError(f"{reference}: no such reward spec file (or not a name, name@version)")
        return spec_reward(load_spec(path), str(path))
    return (store or RewardStore()).load(match[1], int(match[2]) if match[2] else None)
