"""Collection: every file under `raw/` and every configured SQL source becomes records (`collect.py`), read
as the task's kind reads them (`readers.py`: labeled texts or conversations; `files.py` documents,
`tabular.py` tables and Hugging Face datasets, `sql.py` databases, `conversations.py` chat formats).
"""

from finetune_pipeline.sources import files, sql, tabular
from finetune_pipeline.sources.collect import (STAGE, CollectionStats, Progress, SourceCounts, collect_raw_corpus,
                                               collect_sources, corpus_columns, discover_sources, parse_sources,
                                               source_digest)
from finetune_pipeline.sources.readers import (EXTRA_COLUMNS, HF_DATASET, INSTRUCTION_COLUMNS, NOT_A_CONVERSATION,
                                               PROMPT_RESPONSE_COLUMNS, SUPPORTED, ArchiveTooLarge, document_records,
                                               source_type_of)

__all__ = ["EXTRA_COLUMNS", "HF_DATASET", "INSTRUCTION_COLUMNS", "NOT_A_CONVERSATION", "PROMPT_RESPONSE_COLUMNS",
           "STAGE", "SUPPORTED", "ArchiveTooLarge", "CollectionStats", "Progress", "SourceCounts",
           "collect_raw_corpus", "collect_sources", "corpus_columns", "discover_sources", "document_records", "files", "parse_sources",
           "source_digest", "source_type_of", "sql", "tabular"]
