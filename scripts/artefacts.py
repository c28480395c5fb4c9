#!/usr/bin/env python3
"""The release's artefacts, for scripts/release (standard library only).

    artefacts.py sbom IN.json OUT.json    # the SBOM narrowed to the crates in the binary
    artefacts.py check DIR VERSION        # every artefact in DIR says VERSION, or exit 1

cargo-cyclonedx describes the crates of `cargo metadata`'s resolve, in which the features of
dev-dependencies are unified with the rest (a test's flate2 with its default backend, say),
so it lists crates the binary does not contain. `sbom` keeps the components that
`cargo tree -e normal` finds for the release target, the crates the linker saw, and the
dependency edges between them; it fails if a crate of the binary is missing from the SBOM.
"""

import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TARGET = "x86_64-unknown-linux-gnu"


def linked_crates() -> set[tuple[str, str]]:
    """(name, version) of every crate built into the binary, npzfs itself aside."""
    tree = subprocess.run(
        ["cargo", "tree", "--locked", "-e", "normal", "--target", TARGET,
         "--prefix", "none", "--format", "{p}"],
        check=True, capture_output=True, text=True,
    ).stdout
    crates = {(line.split()[0], line.split()[1].lstrip("v")) for line in tree.splitlines() if line}
    return {c for c in crates if c[0] != "npzfs"}


def sbom(src: Path, dst: Path) -> None:
    bom = json.loads(src.read_text())
    linked = linked_crates()
    keep = [c for c in bom["components"] if (c["name"], c["version"]) in linked]
    missing = linked - {(c["name"], c["version"]) for c in keep}
    if missing:
        sys.exit(f"error: the SBOM lacks crates of the binary: {sorted(missing)}")
    refs = {c["bom-ref"] for c in keep} | {bom["metadata"]["component"]["bom-ref"]}
    listed = len(bom["components"])
    bom["components"] = keep
    bom["dependencies"] = [
        {**d, "dependsOn": [r for r in d.get("dependsOn", []) if r in refs]}
        for d in bom.get("dependencies", [])
        if d["ref"] in refs
    ]
    dst.write_text(json.dumps(bom, indent=2) + "\n")
    print(f"{dst}: the {len(keep)} crates of the binary ({listed} in cargo's resolve)")


def versions(directory: Path) -> list[tuple[str, str]]:
    """(what, the version it says) for every artefact of the release in `directory`."""
    found: list[tuple[str, str]] = []
    wheels = sorted(directory.glob("npzfs-*.whl"))
    debs = sorted(directory.glob("npzfs_*.deb"))
    boms = sorted(directory.glob("npzfs-*.cdx.json"))
    if len(wheels) != 1 or len(debs) != 1 or len(boms) != 1:
        sys.exit(f"error: {directory} must hold one wheel, one .deb and one SBOM")
    wheel, deb, bom = wheels[0], debs[0], boms[0]
    found.append((f"{wheel.name} (file name)", wheel.name.split("-")[1]))
    with zipfile.ZipFile(wheel) as z:
        metadata = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(metadata).decode()
        found.append((f"{wheel.name} METADATA", re.search(r"(?m)^Version: (.*)$", text).group(1)))
        binary = next(n for n in z.namelist() if n.endswith(".data/scripts/npzfs"))
        wheel_binary = z.read(binary)
    found.append((f"{deb.name} (file name)", deb.name.split("_")[1]))
    control = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    )
    found.append((f"{deb.name} control", control.stdout.strip()))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        deb_binary = Path(tmp, "usr/bin/npzfs")
        said = subprocess.run([str(deb_binary), "--version"], capture_output=True, text=True)
        found.append((f"{deb.name} /usr/bin/npzfs --version", (said.stdout.split() or ["nothing"])[-1]))
        if deb_binary.read_bytes() != wheel_binary:
            sys.exit(f"error: {deb.name} and {wheel.name} carry different binaries")
        changelog = subprocess.run(
            ["zcat", str(Path(tmp, "usr/share/doc/npzfs/changelog.gz"))],
            check=True, capture_output=True, text=True,
        ).stdout
        found.append((f"{deb.name} changelog.gz", re.match(r"npzfs \((.*?)\)", changelog).group(1)))
    component = json.loads(bom.read_text())["metadata"]["component"]
    found.append((f"{bom.name} component {component['name']}", component["version"]))
    found.append((f"{bom.name} (file name)", bom.name[len("npzfs-"):-len(".cdx.json")]))
    return found


def check(directory: Path, version: str) -> None:
    wrong = [(what, said) for what, said in versions(directory) if said != version]
    for what, said in wrong:
        print(f"error: {what} says {said}, Cargo.toml says {version}", file=sys.stderr)
    if wrong:
        sys.exit(1)
    print(f"every artefact in {directory} is version {version}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "sbom":
        sbom(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(Path(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(__doc__)
