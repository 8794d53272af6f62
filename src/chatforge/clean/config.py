"""The typed config of `chatforge clean`: inputs, the seven steps in the seed's order, dedup,
decontamination, selection, outputs and the executor. Each step receives only its own section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from chatforge.config.base import StrictModel

Mode = Literal["drop", "label"]
MODE_HELP = "drop: failing documents go to the side output; label: they stay, with the verdict in their labels"


class InputConfig(StrictModel):
    path: str = Field(description="file or directory: HTML files, .warc/.warc.gz, .jsonl, .parquet, or an HF save_to_disk dir")
    format: Literal["auto", "html", "warc", "jsonl", "parquet", "hf"] = Field(
        "auto", description="auto: from the suffix (.html/.htm, .warc/.warc.gz, .jsonl/.json, .parquet) or dataset_info.json"
    )
    content: Literal["auto", "html", "text"] = Field(
        "auto", description="what the text field holds: html is extracted (step 3), text is not; auto: html when it starts like HTML"
    )
    text_field: str = Field(
        "text", description="JSONL/Parquet/HF field with the document (e.g. html; a `messages` list is read as its turns' text)"
    )
    url_field: str | None = Field("url", description="field with the page URL (absent: no URL rules for the record)")
    id_field: str | None = Field("id", description="field with the record id (absent: source:where)")
    timestamp_field: str | None = Field(None, description="field with a timestamp, copied into the labels")
    keep_fields: list[str] = Field(default_factory=list, description="other fields copied into the labels (e.g. truth)")
    name: str | None = Field(None, description="source label (default: the file or directory stem)")


class LangIdConfig(StrictModel):
    enabled: bool = True
    mode: Mode = Field("drop", description=MODE_HELP)
    languages: list[str] = Field(default_factory=lambda: ["en"], description="ISO 639-1 codes to keep (py3langid)")
    min_score: float = Field(0.65, ge=0.0, le=1.0, description="keep only when the top language's probability reaches this")


class UrlConfig(StrictModel):
    enabled: bool = True
    mode: Mode = Field("drop", description=MODE_HELP)
    blocklist_files: list[str] = Field(default_factory=list, description="files of blocked domains, one a line (# comments)")
    domains: list[str] = Field(default_factory=list, description="blocked domains (subdomains are blocked too)")
    keywords: list[str] = Field(default_factory=list, description="a URL containing one of these words is blocked")
    regexes: list[str] = Field(default_factory=list, description="a URL matching one of these regexes is blocked")
    soft_keywords: list[str] = Field(
        default_factory=lambda: ["cheap", "free", "buy", "deal", "deals", "casino", "bonus", "discount", "best", "win"],
        description="words that lower the URL score (each costs `soft_keyword_cost`)",
    )
    soft_keyword_cost: float = Field(0.25, ge=0.0, le=1.0, description="score lost per soft keyword in the URL")
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="a URL scoring below this is dropped (reason url_score)")


class ExtractConfig(StrictModel):
    enabled: bool = True
    method: Literal["trafilatura", "tags"] = Field(
        "trafilatura", description="trafilatura: main content only; tags: every visible text, tags removed (a raw baseline)"
    )
    favor: Literal["precision", "recall", "balanced"] = Field(
        "precision", description="trafilatura's trade-off: precision drops more boilerplate"
    )
    include_tables: bool = False
    min_chars: int = Field(1, ge=1, description="an extraction shorter than this counts as empty (reason empty_extraction)")


class DocFilterConfig(StrictModel):
    """Gopher quality and repetition rules (datatrove's filters, with an offline word splitter); the
    n-gram repetition thresholds are Gopher's own (datatrove's defaults)."""

    enabled: bool = True
    mode: Mode = Field("drop", description=MODE_HELP)
    min_words: int = Field(50, ge=0, description="fewer words than this: gopher_short_doc")
    max_words: int = Field(100_000, ge=1)
    min_mean_word_length: float = Field(3.0, ge=0.0)
    max_mean_word_length: float = Field(10.0, ge=0.0)
    max_symbol_word_ratio: float = Field(0.1, ge=0.0, description="'#' or '...' per word")
    min_alpha_words_ratio: float = Field(0.8, ge=0.0, le=1.0, description="share of words with a letter")
    min_stop_words: int = Field(2, ge=0, description="distinct stop words a document must contain")
    max_punctuation_ratio: float = Field(0.25, ge=0.0, le=1.0, description="punctuation characters per non-space character")
    dup_line_frac: float = Field(0.3, ge=0.0, le=1.0, description="Gopher: share of duplicated lines")
    dup_para_frac: float = Field(0.3, ge=0.0, le=1.0)


class LineFilterConfig(StrictModel):
    """C4's line rules (datatrove's C4QualityFilter): lines are removed, documents left too short are dropped."""

    enabled: bool = True
    mode: Mode = Field("drop", description=MODE_HELP)
    terminal_punctuation: bool = Field(True, description="remove lines that do not end in . ! ? or a quote")
    min_words_per_line: int = Field(3, ge=-1, description="remove lines with fewer words (-1: off)")
    javascript: bool = Field(True, description="remove lines mentioning javascript ('enable javascript')")
    policy: bool = Field(True, description="remove cookie / terms-of-use lines")
    lorem_ipsum: bool = Field(True, description="drop documents containing lorem ipsum")
    curly_bracket: bool = Field(False, description="drop documents with '{' (C4 does; it also drops code-bearing prose)")
    min_sentences: int = Field(3, ge=-1, description="drop documents left with fewer sentences (-1: off)")


class PerplexityConfig(StrictModel):
    enabled: bool = Field(False, description="needs `model`: a chatforge-trained (HF) model directory")
    mode: Mode = Field("drop", description=MODE_HELP)
    model: str | None = Field(None, description="HF model directory that scores the documents")
    max_len: int = Field(256, ge=8, description="tokens per scoring window")
    low_percentile: float = Field(2.0, ge=0.0, le=100.0, description="drop documents below this perplexity percentile")
    high_percentile: float = Field(95.0, ge=0.0, le=100.0, description="drop documents above this percentile")
    max_chars: int = Field(4000, ge=100, description="score only the first N characters (speed)")

    @model_validator(mode="after")
    def _band(self) -> PerplexityConfig:
        if self.low_percentile >= self.high_percentile:
            raise ValueError(f"low_percentile {self.low_percentile} must be below high_percentile {self.high_percentile}")
        if self.enabled and not self.model:
            raise ValueError("perplexity.enabled needs perplexity.model (a model directory)")
        return self


class QualityConfig(StrictModel):
    model: str | None = Field(None, description="classifier from `python -m chatforge.clean.quality RUN OUT` (unset: off)")
    mode: Mode = Field("label", description=MODE_HELP)
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="P(kept) under which a document fails (reason low_quality)")


class SensitiveConfig(StrictModel):
    enabled: bool = True
    mode: Mode = Field("drop", description=MODE_HELP)
    files: list[str] = Field(
        default_factory=list,
        description="files of rules, one a line: a phrase (case-insensitive), or re:REGEX; # comments",
    )
    keywords: list[str] = Field(default_factory=list)
    regexes: list[str] = Field(default_factory=list)


class DecontamConfig(StrictModel):
    enabled: bool = Field(False, description="flag or drop documents sharing n-grams with evaluation sets")
    mode: Mode = Field("label", description=MODE_HELP)
    eval_sets: list[str] = Field(
        default_factory=list, description="files or dirs: C-Eval .csv, .jsonl (every string field), .txt; one set per path"
    )
    n: int = Field(8, ge=3, description="words per n-gram")
    min_words: int = Field(5, ge=1, description="item segments shorter than this are ignored (one-word answer options)")
    min_matches: int = Field(1, ge=1, description="shared n-grams that make a document contaminated")
    summary: str | None = Field(None, description="also write the summary JSON here (default: report/decontamination.json)")


class DedupConfig(StrictModel):
    exact: bool = Field(True, description="drop documents whose normalised text hashes like an earlier one")
    near: bool = Field(True, description="drop near-duplicates of earlier documents (MinHash + LSH, datasketch)")
    mode: Mode = Field("drop", description=MODE_HELP)
    ngram: int = Field(3, ge=1, description="words per shingle")
    num_perm: int = Field(128, ge=16, description="MinHash permutations")
    threshold: float = Field(0.6, gt=0.0, lt=1.0, description="estimated Jaccard similarity that makes a near-duplicate")
    seed: int = 1


class RuleConfig(StrictModel):
    when: str = Field(description="label expression, e.g. \"lang == 'en' and ppl < 80\"")
    action: Literal["keep", "drop", "weight"] = Field("weight", description="keep only, drop, or set the weight")
    weight: float = Field(1.0, ge=0.0, description="weight for action=weight (later rules win)")


class RebalanceConfig(StrictModel):
    label: str = Field(description="label whose distribution is rebalanced, e.g. length_bucket or source")
    target: dict[str, float] = Field(description="wanted share per label value (normalised); other values are dropped")
    seed: int = 0


class OutputConfig(StrictModel):
    formats: list[Literal["jsonl", "parquet"]] = Field(default_factory=lambda: ["jsonl"])
    shard_docs: int = Field(10_000, ge=1, description="documents per output shard")
    split_by: str | None = Field(
        None, description="a label: one output directory per value, and mixture.yaml with their summed weights for pretrain"
    )


class Config(StrictModel):
    out: str = Field("runs/clean", description="run directory: data/, dropped/, report/")
    inputs: list[InputConfig] = Field(description="documents to clean")
    workers: int = Field(1, ge=1, description="local worker processes (datatrove LocalPipelineExecutor)")
    tasks: int | None = Field(None, ge=1, description="shards (default: workers); each is resumable on its own")
    executor: Literal["local", "slurm"] = Field("local", description="slurm submits the shards with sbatch (datatrove)")
    slurm_partition: str = "cpu"
    slurm_time: str = "04:00:00"
    slurm_dry_run: bool = Field(False, description="write the sbatch script and stop (checks the cluster path without a cluster)")
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    url: UrlConfig = Field(default_factory=UrlConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    doc_filters: DocFilterConfig = Field(default_factory=DocFilterConfig)
    line_filters: LineFilterConfig = Field(default_factory=LineFilterConfig)
    perplexity: PerplexityConfig = Field(default_factory=PerplexityConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    sensitive: SensitiveConfig = Field(default_factory=SensitiveConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    select: list[RuleConfig] = Field(default_factory=list, description="label rules applied in order")
    rebalance: RebalanceConfig | None = None
    output: OutputConfig = Field(default_factory=OutputConfig)
    truth_field: str | None = Field(
        None, description="a kept field (keep_fields) holding {keep, reason}: the report scores the drops against it"
    )
    examples_per_reason: int = Field(3, ge=0, description="examples kept in the report per drop reason")

    @property
    def num_tasks(self) -> int:
        return self.tasks or self.workers
