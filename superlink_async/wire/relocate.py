"""Move freshly generated protobuf modules into ``superlink_async.wire``.

protoc names imports after the proto package (``flwr.proto``); left as they are, our
modules would import the real ``flwr`` package. This rewrites those imports so the wire
layer is self-contained, while the descriptors keep their ``flwr/proto/*.proto`` names.
Used by ``make proto``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PACKAGE = "superlink_async.wire"
_FROM_IMPORT = re.compile(r"^from flwr\.proto import ", re.MULTILINE)
_DOTTED = re.compile(r"\bflwr\.proto\.(\w+_pb2)\b")


def relocate_source(source: str) -> str:
    """Point every ``flwr.proto`` module import of generated code at our package."""
    source = _FROM_IMPORT.sub(f"from {_PACKAGE} import ", source)
    return _DOTTED.sub(rf"{_PACKAGE}.\1", source)


def _is_empty_service_module(path: Path) -> bool:
    """The grpclib plugin writes a ``*_grpc.py`` even for files without services; skip those."""
    return path.name.endswith("_grpc.py") and "class " not in path.read_text()


def relocate(generated_dir: Path, target_dir: Path) -> list[Path]:
    """Rewrite and copy every generated module; return the files written."""
    written = []
    for path in sorted(generated_dir.iterdir()):
        if path.suffix not in {".py", ".pyi"} or _is_empty_service_module(path):
            continue
        target = target_dir / path.name
        target.write_text(relocate_source(path.read_text()))
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    """Entry point: ``python -m superlink_async.wire.relocate GENERATED_DIR TARGET_DIR``."""
    if len(argv) != 2:
        print("usage: python -m superlink_async.wire.relocate GENERATED_DIR TARGET_DIR")
        return 2
    for path in relocate(Path(argv[0]), Path(argv[1])):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
