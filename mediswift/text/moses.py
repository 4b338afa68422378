"""Moses tokenization (sacremoses, English, aggressive dash splits, no XML escaping), made fast.

Stock sacremoses rebuilds two large character sets (`IsLower`, `IsAlpha`: tens of thousands of
code points) on every call of `islower`/`isanyalpha`, i.e. for almost every token that ends with
a period, and scans the nonbreaking-prefix *lists* linearly. `FastMosesTokenizer` precomputes the
sets once per instance, replaces the per-token regex searches with the equivalent string tests,
and skips a rule whose pattern needs a character the text lacks (it cannot match). The rules, their
regexes and their order are sacremoses' own, so the output is identical (tested against stock
sacremoses on the whole mirror corpus; re-run that test when upgrading sacremoses). Nothing is
patched globally: stock `MosesTokenizer` objects are unaffected.

Documents are tokenized as one Moses "line": all whitespace, newlines included, becomes one space.
"""

from __future__ import annotations

from functools import lru_cache

from sacremoses import MosesDetokenizer, MosesTokenizer

LANG = "en"
# The Moses settings of this project (`tokenizer.perl -l en -a -no-escape`); recorded in the
# tokenizer files so a tokenizer is never used with other settings than it was learned with.
SETTINGS = {"lang": LANG, "aggressive_dash_splits": True, "escape": False}

_ASCII_DIGITS = frozenset("0123456789")


class FastMosesTokenizer(MosesTokenizer):
    """sacremoses' `MosesTokenizer` with its per-call set building and list scans precomputed."""

    def __init__(self, lang: str = LANG) -> None:
        if lang != LANG:
            raise ValueError(f"only English Moses rules are implemented here, not {lang!r}")
        super().__init__(lang=lang)
        self._lower = frozenset(self.IsLower)
        self._alpha = frozenset(self.IsAlpha)
        self._prefixes = frozenset(self.NONBREAKING_PREFIXES)
        self._numeric_only = frozenset(self.NUMERIC_ONLY_PREFIXES)

    def islower(self, text: str) -> bool:
        return self._lower.issuperset(text)

    def isanyalpha(self, text: str) -> bool:
        return not self._alpha.isdisjoint(text)

    def handles_nonbreaking_prefixes(self, text: str) -> str:
        # Same decisions as sacremoses, without a regex search per token:
        # `re.search(r"^(\S+)\.$", tok)` on a whitespace-split token is `len >= 2 and endswith(".")`
        # and `re.search(r"^[0-9]+", tok)` is "starts with an ASCII digit".
        tokens = text.split()
        last = len(tokens) - 1
        for i, token in enumerate(tokens):
            if len(token) < 2 or token[-1] != ".":
                continue
            prefix = token[:-1]
            if (
                ("." in prefix and self.isanyalpha(prefix))
                or (prefix in self._prefixes and prefix not in self._numeric_only)
                or (i != last and tokens[i + 1][0] in self._lower)
            ):
                continue
            if prefix in self._numeric_only and i < last and tokens[i + 1][0] in _ASCII_DIGITS:
                continue
            tokens[i] = prefix + " ."
        return " ".join(tokens)

    def tokenize_str(self, text: str) -> str:
        """Moses-tokenize one document with the project's settings; tokens joined by spaces.

        The same steps, in the same order, as `MosesTokenizer.tokenize(text, lang="en",
        aggressive_dash_splits=True, escape=False, protected_patterns=None)`, except that a rule
        whose pattern needs a character the text does not contain is skipped (it could not match;
        its big character-class scan is most of the remaining cost).
        """
        text = str(text)
        for regexp, sub in (self.DEDUPLICATE_SPACE, self.ASCII_JUNK):
            text = regexp.sub(sub, text)
        text = text.strip()
        regexp, sub = self.PAD_NOT_ISALNUM
        text = regexp.sub(sub, text)
        if "-" in text:
            regexp, sub = self.AGGRESSIVE_HYPHEN_SPLIT
            text = regexp.sub(sub, text)
        if ".." in text:
            text = self.replace_multidots(text)
        if "," in text:
            for regexp, sub in (
                self.COMMA_SEPARATE_1,
                self.COMMA_SEPARATE_2,
                self.COMMA_SEPARATE_3,
            ):
                text = regexp.sub(sub, text)
        if "'" in text:
            for regexp, sub in self.ENGLISH_SPECIFIC_APOSTROPHE:
                text = regexp.sub(sub, text)
        text = self.handles_nonbreaking_prefixes(text)
        regexp, sub = self.DEDUPLICATE_SPACE
        text = regexp.sub(sub, text).strip()
        if ".'" in text:
            regexp, sub = self.TRAILING_DOT_APOSTROPHE
            text = regexp.sub(sub, text)
        if "MULTI" in text:
            text = self.restore_multidots(text)
        return text


@lru_cache(maxsize=1)
def tokenizer() -> FastMosesTokenizer:
    """One tokenizer per process (building it parses the prefix lists and compiles regexes)."""
    return FastMosesTokenizer(LANG)


@lru_cache(maxsize=1)
def detokenizer() -> MosesDetokenizer:
    return MosesDetokenizer(LANG)


def moses_tokenize(text: str) -> str:
    """`text` Moses-tokenized (English, aggressive dash splits, no XML escaping)."""
    return tokenizer().tokenize_str(text)


def moses_detokenize(text: str) -> str:
    """Inverse of `moses_tokenize` up to Moses normalisation (spacing, `@-@` joins)."""
    return detokenizer().detokenize(text.split(), return_str=True, unescape=False)


def stock_tokenize(mt: MosesTokenizer, text: str) -> str:
    """The same call on a stock sacremoses tokenizer (the reference for tests and benchmarks)."""
    return mt.tokenize(
        text,
        aggressive_dash_splits=SETTINGS["aggressive_dash_splits"],
        escape=SETTINGS["escape"],
        return_str=True,
    )
