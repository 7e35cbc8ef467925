"""Write a bundle's sha256 into the `mcpb` package of server.json: `python scripts/set_mcpb_sha256.py SERVER_JSON MCPB`.

`make bundle` runs it after packing. Only that field changes; the file keeps its two-space layout (tests check that
server.json is written exactly this way, so the rewrite is a one-line diff).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def main(server_json: Path, bundle: Path) -> None:
    data = json.loads(server_json.read_text(encoding="utf-8"))
    (package,) = (p for p in data["packages"] if p["registryType"] == "mcpb")
    package["fileSha256"] = hashlib.sha256(bundle.read_bytes()).hexdigest()
    server_json.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{server_json}: mcpb fileSha256 {package['fileSha256']}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.splitlines()[0])
    main(Path(sys.argv[1]), Path(sys.argv[2]))
