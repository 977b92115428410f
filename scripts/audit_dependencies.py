"""Audit the locked dependencies (requirements.lock) for known vulnerabilities with pip-audit.

    python scripts/audit_dependencies.py [--lock requirements.lock] [--service pypi|osv]

pip-audit runs from its own virtual environment (.venv-audit/, so it never changes the project's), with
`--no-deps --disable-pip`: the lock file already pins every package. Findings whose id is listed in
scripts/audit_ignore.txt (each with the reason, see docs/security.md) are reported but do not fail.

Exit status: 0 audited, nothing new; 1 an untriaged vulnerability; 3 not audited, because the
vulnerability service could not be reached or answered for no package (pip-audit itself then prints
"No known vulnerabilities found", which would be a false all-clear: this script says NOT AUDITED).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PIP_AUDIT = "pip-audit==2.10.1"


def audit_venv(folder: Path) -> Path:
    exe = folder / "bin" / "pip-audit"
    if not exe.exists():
        venv.create(folder, with_pip=True)
        subprocess.run([str(folder / "bin" / "pip"), "install", "--quiet", PIP_AUDIT], check=True,
                       stderr=subprocess.DEVNULL)
    return exe


def ignored_ids(path: Path) -> dict[str, str]:
    """{vulnerability id: reason} from lines `ID  # reason`."""
    out = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        vid, _, reason = line.partition("#")
        if vid.strip():
            out[vid.strip()] = reason.strip()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", default=str(REPO / "requirements.lock"))
    parser.add_argument("--service", default="pypi", choices=["pypi", "osv"])
    args = parser.parse_args()
    exe = audit_venv(REPO / ".venv-audit")
    proc = subprocess.run([str(exe), "-r", args.lock, "--no-deps", "--disable-pip", "--progress-spinner", "off",
                           "--vulnerability-service", args.service, "--format", "json"],
                          capture_output=True, text=True)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"NOT AUDITED: pip-audit could not query the {args.service} vulnerability service ({last[:200]})")
        return 3
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = len(deps) - len(skipped)
    print(f"{len(deps)} locked packages; {audited} audited against the {args.service} vulnerability service, "
          f"{len(skipped)} could not be")
    if deps and audited == 0:
        print(f"NOT AUDITED: the service answered for no package (e.g. {skipped[0]['skip_reason']}); "
              f"this network does not reach it")
        return 3
    ignore = ignored_ids(REPO / "scripts" / "audit_ignore.txt")
    new = 0
    for dep in deps:
        for vuln in dep.get("vulns", []):
            ids = [vuln["id"], *vuln.get("aliases", [])]
            triaged = next((i for i in ids if i in ignore), None)
            status = f"triaged: {ignore[triaged]}" if triaged else "NEW"
            new += not triaged
            print(f"{dep['name']}=={dep['version']} {vuln['id']} fixed in {', '.join(vuln.get('fix_versions', [])) or '-'}"
                  f" [{status}]")
    for dep in skipped:
        print(f"not audited: {dep['name']}: {dep['skip_reason']}")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
