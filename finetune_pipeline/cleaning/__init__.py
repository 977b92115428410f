"""Cleaning: the stage (`stage.py`: erasure, normalisation, the privacy policy, then the filters the task's
kind lists), the filters behind one contract (`filters.py`, with the checks in `quality_filters.py` and
`sft_filters.py`), and the techniques each in its module (`normalize.py`, `noise.py`, `privacy.py`,
`provenance.py`, `erasure.py`, `bias.py`).
"""

from finetune_pipeline.cleaning import noise
from finetune_pipeline.cleaning.stage import (STAGE, CleaningStats, clean_corpus, clean_documents, clean_rows,
                                              cleaning_result, remove_page_headers)

__all__ = ["STAGE", "CleaningStats", "clean_corpus", "clean_documents", "clean_rows", "cleaning_result", "noise",
           "remove_page_headers"]
