"""Generates the gRPC stubs from the repository's proto/ while the package is built.

`pip install clients/python` runs this in place: build_py compiles ../../proto/facesweep/v1
with grpcio-tools (pinned in pyproject.toml) into facesweep_client/_gen, and rewrites the
generated `from facesweep.v1 import ...` lines so the stubs live inside this package.
FACESWEEP_PROTO points at another proto/ folder (e.g. building from a copied tree).
"""

import os
import re
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
GEN_PACKAGE = "facesweep_client._gen"


def proto_root() -> Path:
    root = Path(os.environ.get("FACESWEEP_PROTO", HERE.parent.parent / "proto")).resolve()
    if not (root / "facesweep" / "v1").is_dir():
        sys.exit(
            f"facesweep-client: no proto files under {root}/facesweep/v1; install from the "
            "repository (pip install ./clients/python) or set FACESWEEP_PROTO to its proto/ folder"
        )
    return root


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    root = proto_root()
    protos = sorted(str(p.relative_to(root)) for p in (root / "facesweep" / "v1").glob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{root}", f"-I{well_known}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        sys.exit(f"facesweep-client: grpc_tools.protoc failed on {root}")
    for sub in (out, out / "facesweep", out / "facesweep" / "v1"):
        (sub / "__init__.py").touch()
    # protoc writes imports relative to the proto root; make them package-relative.
    for f in (out / "facesweep" / "v1").glob("*.py*"):
        text = re.sub(r"^from facesweep\.v1 import", f"from {GEN_PACKAGE}.facesweep.v1 import",
                      f.read_text(), flags=re.M)
        f.write_text(text)


class BuildWithStubs(build_py):
    def run(self):
        generate(Path(self.build_lib) / "facesweep_client" / "_gen")
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
