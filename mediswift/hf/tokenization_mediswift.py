"""The MediSwift tokenizer for `transformers`: Moses pre-tokenization, then sentencepiece BPE.

This file is copied into every exported model directory and loaded by
`AutoTokenizer.from_pretrained(dir, trust_remote_code=True)`. It is self-contained on purpose:
it needs `transformers`, `sentencepiece` and `sacremoses`, never the `mediswift` package.

The ids equal those the models were trained on:
- Moses, as `tokenizer.perl -l en -a -no-escape`: English rules, aggressive dash splits
  (`a-b` -> `a @-@ b`), no XML escaping; a whole text is one Moses "line" (all whitespace,
  newlines included, becomes one space);
- then the sentencepiece BPE model (`bpe.model`, identity normalisation), no BOS/EOS added.
Special tokens written literally in a text (`</s>`) are tokenized as text, exactly as in
training (`split_special_tokens=True`); pass ids to insert them.

Decoding is sentencepiece's (special tokens vanish) followed by Moses detokenization, the
training code's decoder, with one difference: the space a word-initial first piece carries is
kept, as GPT-2's tokenizer keeps it. `decode(new_ids)` of a continuation is then " the heart",
not "the heart", so the text-generation pipeline (which appends the decoded new tokens to the
prompt) and `decode(prompt_ids + new_ids)` both read "... risk of the heart". Whether that space
is there is Moses' decision (a continuation starting with "," or "-" joins the word before it).
The price: a whole text decodes with one leading space (`.lstrip()` it); sentencepiece marks
the first word of every text as word-initial, so its ids cannot tell a text from a
continuation.

Offsets (`return_offsets_mapping=True`) are not supported: Moses rewrites the text before BPE
sees it (`a-b` -> `a @-@ b`), and only "fast" (Rust) tokenizers compute offsets in
`transformers`; asking for them raises NotImplementedError.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import sentencepiece as spm
from sacremoses import MosesDetokenizer, MosesTokenizer
from transformers import PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "bpe.model"}
WORD_START = "\u2581"  # sentencepiece's word-boundary mark: the piece follows a space
# A plain word put before a continuation so that Moses decides the space in front of it as it
# would after any word (then removed): "," and "@-@" join it, "the" and "(" do not.
ANCHOR = "x"


class MediSwiftTokenizer(PreTrainedTokenizer):
    """Moses (sacremoses) + sentencepiece BPE, with the ids of the MediSwift training code."""

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        moses_lang: str = "en",
        aggressive_dash_splits: bool = True,
        escape: bool = False,
        **kwargs: Any,
    ) -> None:
        # The processors exist before the base class runs: its __init__ asks for the vocabulary.
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        self.moses_lang = moses_lang
        self.aggressive_dash_splits = aggressive_dash_splits
        self.escape = escape
        self._moses = MosesTokenizer(lang=moses_lang)
        self._detok = MosesDetokenizer(lang=moses_lang)
        kwargs.setdefault("split_special_tokens", True)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            bos_token=bos_token,
            eos_token=eos_token,
            unk_token=unk_token,
            pad_token=pad_token,
            moses_lang=moses_lang,
            aggressive_dash_splits=aggressive_dash_splits,
            escape=escape,
            **kwargs,
        )

    # Pickling sends the settings, not the sentencepiece and Moses objects (worker processes).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("sp_model", "_moses", "_detok"):
            state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor(model_file=self.vocab_file)
        self._moses = MosesTokenizer(lang=self.moses_lang)
        self._detok = MosesDetokenizer(lang=self.moses_lang)

    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(getattr(self, "_added_tokens_encoder", {}))
        return vocab

    def moses(self, text: str) -> str:
        """`text` Moses-tokenized as in training (tokens joined by single spaces)."""
        return self._moses.tokenize(
            text,
            aggressive_dash_splits=self.aggressive_dash_splits,
            escape=self.escape,
            return_str=True,
        )

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return self.sp_model.encode(self.moses(text), out_type=str)

    def _convert_token_to_id(self, token: str) -> int:
        # A piece outside the vocabulary (an unknown character run) maps to the unk id, as in
        # sentencepiece's own id output.
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(int(index))

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        tokens = list(tokens)
        text = self.sp_model.decode_pieces(tokens)
        return self._detokenize(text, starts_word=bool(tokens) and self._starts_word(tokens[0]))

    def _encode_plus(self, *args: Any, **kwargs: Any) -> Any:
        # transformers' Python tokenizers silently ignore this flag: say so instead.
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError(
                f"{type(self).__name__} (Moses + sentencepiece, a Python tokenizer) cannot "
                "return offsets: Moses rewrites the text before BPE (`a-b` -> `a @-@ b`), so "
                "pieces are not spans of the input. Call it without return_offsets_mapping."
            )
        return super()._encode_plus(*args, **kwargs)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        """sentencepiece decoding of the ids (control tokens vanish either way), then Moses
        detokenization: the training code's decoder, plus the leading space of a word-initial
        first piece (see the module's docstring)."""
        ids = [token_ids] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        text = self.sp_model.decode(ids)
        shown = [i for i in ids if not self.sp_model.is_control(i)]
        first = self.sp_model.id_to_piece(shown[0]) if shown else ""
        return self._detokenize(text, starts_word=self._starts_word(first))

    def _starts_word(self, piece: str) -> bool:
        # An unknown piece is shown as " \u2047 " by sentencepiece: a word of its own.
        return piece.startswith(WORD_START) or piece == self.unk_token

    def _detokenize(self, text: str, starts_word: bool = False) -> str:
        """Moses detokenization of `text` (sentencepiece output, no leading space). With
        `starts_word`, the text is detokenized after a word and keeps the space Moses puts
        between them."""
        tokens = text.split()
        if not (starts_word and tokens):
            return self._detok.detokenize(tokens, return_str=True, unescape=self.escape)
        after = self._detok.detokenize([ANCHOR, *tokens], return_str=True, unescape=self.escape)
        if after.startswith(ANCHOR):
            return after[len(ANCHOR) :]
        return " " + self._detok.detokenize(tokens, return_str=True, unescape=self.escape)

    def save_vocabulary(
        self, save_directory: str, filename_prefix: str | None = None
    ) -> tuple[str, ...]:
        """Copy the sentencepiece model (the whole vocabulary) into `save_directory`."""
        if not os.path.isdir(save_directory):
            raise ValueError(f"vocabulary path {save_directory} should be a directory")
        name = (f"{filename_prefix}-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        out = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(out):
            shutil.copyfile(self.vocab_file, out)
        return (out,)
