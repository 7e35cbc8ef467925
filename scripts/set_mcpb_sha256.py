"""server.json with a bundle's sha256 in its `mcpb` package: `python scripts/set_mcpb_sha256.py SERVER_JSON MCPB OUT`.

`make bundle` runs it after packing, with OUT beside the bundle (dist/server.json): the tracked file stays as it is.
Only that field changes; the two-space layout is kept (tests check that server.json is written exactly this way).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def main(server_json: Path, bundle: Path, out: Path) -> None:
    data = json.loads(server_json.read_text(encoding="utf-8"))
    (package,) = (p for p in data["packages"] if p["registryType"] == "mcpb")
    package["fileSha256"] = hashlib.sha256(bundle.read_bytes()).hexdigest()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{out}: mcpb fileSha256 {package['fileSha256']}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.splitlines()[0])
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
