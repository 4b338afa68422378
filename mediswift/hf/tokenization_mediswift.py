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

Decoding is sentencepiece's (special tokens vanish) followed by Moses detokenization, so it
gives the same text as the training code's decoder.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import sentencepiece as spm
from sacremoses import MosesDetokenizer, MosesTokenizer
from transformers import PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "bpe.model"}


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
        return self._detokenize(self.sp_model.decode_pieces(list(tokens)))

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        """sentencepiece decoding of the ids (control tokens vanish either way), then Moses
        detokenization: the training code's decoder, character for character."""
        ids = [token_ids] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        return self._detokenize(self.sp_model.decode(ids))

    def _detokenize(self, text: str) -> str:
        return self._detok.detokenize(text.split(), return_str=True, unescape=self.escape)

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
