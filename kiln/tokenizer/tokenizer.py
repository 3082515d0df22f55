"""`Tokenizer`: text <-> token ids from a GGUF file's vocabulary alone, as llama.cpp tokenizes.

Encoding (llama.cpp's `llama_vocab::impl::tokenize`): special tokens are cut
out of the text first (user-defined ones always, control and unknown ones
with `parse_special`), the pieces in between go to the vocabulary's model
(byte-level BPE or SentencePiece BPE; SentencePiece prefixes a space to the
first piece and to each piece after a special token when `add_space_prefix`
is set), and with `add_special` BOS and EOS are added as the file says.

Decoding (llama.cpp's `detokenize` as `common_detokenize` calls it): each
token's bytes (`token_to_piece`); control and unknown tokens give their text,
or nothing with `skip_special`; unused tokens give nothing; with
`add_space_prefix` the first token loses one leading space; then, if the
vocabulary asks for it (`clean_spaces`), the spaces before `?!.,` and
before `'s 'm 're 've` are removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import TokenizerError
from ..gguf.special_tokens import end_of_generation_ids
from .bpe import ByteLevelBPE
from .special import SpecialSplitter
from .spm import SentencePieceBPE
from .vocab import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, Vocabulary


class Tokenizer:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self._model = SentencePieceBPE(vocab) if vocab.is_spm else ByteLevelBPE(vocab)
        self._splitters = {
            flag: SpecialSplitter(((i, vocab.tokens[i]) for i in vocab.special_ids(flag)), vocab.rstrip_ids)
            for flag in (False, True)
        }
        # the shared rule, applied to the token types as llama.cpp fixes them (an end-of-turn text is a
        # control token whatever type the file gives it), plus EOS where it is only llama.cpp's default
        fixed = {**vocab.metadata, "tokenizer.ggml.token_type": vocab.types}
        self._eog = frozenset(end_of_generation_ids(fixed) | ({vocab.eos_id} - {None}))
        self._pieces: dict[int, bytes] = {}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        """The tokenizer of a GGUF file's metadata (`tokenizer.*` keys, plus `general.name`)."""
        return cls(Vocabulary.from_metadata(meta))

    # ----- properties -----

    @property
    def vocab_size(self) -> int:
        return len(self.vocab.tokens)

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eog_ids(self) -> set[int]:
        """Tokens that end a generation: EOS, EOT, EOM and end-of-turn tokens found by their text
        (`kiln.gguf.special_tokens`, the rule the runtime stops on)."""
        return set(self._eog)

    def is_eog(self, token: int) -> bool:
        return token in self._eog

    @property
    def add_bos(self) -> bool:
        return self.vocab.add_bos

    @property
    def add_eos(self) -> bool:
        return self.vocab.add_eos

    @property
    def chat_template(self) -> str | None:
        return self.vocab.chat_template

    def token_text(self, token: int) -> str:
        """The token's text as the vocabulary stores it (byte-level or "▁" spelling)."""
        self._check(token)
        return self.vocab.tokens[token]

    def token_type(self, token: int) -> int:
        """The token's type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)."""
        self._check(token)
        return self.vocab.types[token]

    def _check(self, token: int) -> None:
        if not 0 <= token < len(self.vocab.tokens):
            raise TokenizerError(
                f"token id {token} is outside the vocabulary (0..{len(self.vocab.tokens) - 1})"
            )

    # ----- encoding -----

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`.

        add_special: add BOS/EOS as the file's add_bos_token/add_eos_token say.
        parse_special: texts of control tokens (`<|im_start|>`) become those tokens; without it they
        are tokenized as ordinary text. User-defined tokens are always matched.
        """
        if not isinstance(text, str):
            raise TokenizerError(
                f"encode needs a str, got {type(text).__name__}; decode bytes as UTF-8 first"
            )
        v = self.vocab
        out: list[int] = []
        if add_special and v.add_bos:
            if v.bos_id is None:
                raise TokenizerError(
                    "the vocabulary asks for a BOS token (add_bos_token) but has none (bos_token_id); "
                    "encode with add_special=False or convert the model again"
                )
            out.append(v.bos_id)
        parts = self._splitters[parse_special].split(text)
        if v.is_spm:
            prefix = v.add_space_prefix
            prev_special = (
                True  # a space goes before the first piece and before each piece after a special token
            )
            for part in parts:
                if isinstance(part, int):
                    out.append(part)
                    prev_special = True
                else:
                    out.extend(self._model.encode(" " + part if prefix and prev_special else part))
                    prev_special = False
        else:
            for part in parts:
                if isinstance(part, int):
                    out.append(part)
                else:
                    out.extend(self._model.encode(part))
        if add_special and v.add_eos:
            if v.eos_id is None:
                raise TokenizerError(
                    "the vocabulary asks for an EOS token (add_eos_token) but has none (eos_token_id); "
                    "encode with add_special=False or convert the model again"
                )
            out.append(v.eos_id)
        return out

    def pre_tokenize(self, text: str) -> list[str]:
        """How a byte-level BPE vocabulary's pre-tokenizer cuts `text` (for inspection)."""
        if not isinstance(self._model, ByteLevelBPE):
            raise TokenizerError("pre_tokenize: a SentencePiece vocabulary has no pre-tokenizer")
        return self._model.pre_tokenize(text)

    # ----- decoding -----

    def token_to_piece(self, token: int, special: bool = True) -> bytes:
        """The bytes a token stands for; control and unknown tokens give their text only with `special`."""
        token = int(token)
        self._check(token)
        kind = self.vocab.types[token]
        if kind in (CONTROL, UNKNOWN) and not special:
            return b""
        piece = self._pieces.get(token)
        if piece is None:
            text = self.vocab.tokens[token]
            if kind in (CONTROL, UNKNOWN, USER_DEFINED):
                piece = text.encode("utf-8")  # stored as plain text in both kinds of vocabulary
            elif kind == NORMAL:
                piece = self._model.piece(text)
            elif kind == BYTE:
                piece = self._model.byte(text)
            else:  # unused or undefined: nothing, as in llama.cpp
                piece = b""
            self._pieces[token] = piece
        return piece

    def decode(self, ids: Iterable[int], skip_special: bool = False, clean_spaces: bool | None = None) -> str:
        """The text of `ids` (llama.cpp's detokenize).

        skip_special: control and unknown tokens (BOS, `<|im_end|>`) give nothing.
        clean_spaces: remove spaces before punctuation and contractions; None: as the vocabulary says.
        """
        v = self.vocab
        special = not skip_special
        chunks = []
        for k, t in enumerate(ids):
            piece = self.token_to_piece(t, special=special)
            if k == 0 and v.add_space_prefix and piece.startswith(b" "):
                piece = piece[1:]
            chunks.append(piece)
        text = b"".join(chunks).decode("utf-8", errors="replace")
        if v.clean_spaces if clean_spaces is None else clean_spaces:
            text = clean_up_spaces(text)
        return text


def clean_up_spaces(text: str) -> str:
    """llama.cpp's three passes: drop the space in " ?", " !", " .", " ,"; turn " ' " into "'";
    drop the space before 's, 'm, 're, 've."""
    if any(p in text for p in (" ?", " !", " .", " ,")):
        out = [text[0]]
        for i in range(1, len(text)):
            x = text[i]
            if text[i - 1] == " " and x in "?!.,":
                out.pop()
            out.append(x)
        text = "".join(out)
    if " ' " in text:
        chars = list(text)
        out = [chars[0]]
        i = 1
        while i < len(chars):
            x = chars[i]
            if x == "'" and i + 1 < len(chars) and chars[i - 1] == " " and chars[i + 1] == " ":
                out.pop()
                i += 1
                chars[i] = "\0"  # llama.cpp overwrites the space it skips (seen by the next test)
            out.append(x)
            i += 1
        text = "".join(out)
    if " '" in text:
        n = len(text)
        out = [text[0]]
        for i in range(1, n):
            x = text[i]
            if text[i - 1] == " " and x == "'" and i + 1 < n:
                x1 = text[i + 1]
                if x1 in "sm" or (i + 2 < n and text[i + 1 : i + 3] in ("re", "ve")):
                    out.pop()
            out.append(x)
        text = "".join(out)
    return text
