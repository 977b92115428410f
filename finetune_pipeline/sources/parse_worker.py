"""The parse worker: `python -m finetune_pipeline.sources.parse_worker`, started by `files.ParseWorker`.

Reads one JSON request per line on stdin ({"path", "settings"}), parses the document with
`sources.readers.document_records` and writes one JSON reply per line on stdout: {"records": [...]}, {"unreadable":
why} or {"error": exception name}. Anything a library prints goes to stderr, so stdout carries replies only.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # a library printing to stdout must not corrupt the replies
    sys.stdout = sys.stderr
    from finetune_pipeline.settings import Settings
    from finetune_pipeline.sources.readers import document_records
    from finetune_pipeline.sources.files import UnreadableDocument

    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"records": document_records(request["path"], Settings.model_validate_json(request["settings"]))}
        except UnreadableDocument as exc:
            reply = {"unreadable": str(exc)}
        except Exception as exc:  # reported by name: the caller turns it into a reject
            reply = {"error": type(exc).__name__}
        replies.write(json.dumps(reply, default=str) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
