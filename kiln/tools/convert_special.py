"""Tokenizer files of a checkpoint, and the special tokens, `add_*_token` flags and chat template in them.

`TokenizerFiles` reads tokenizer.json and tokenizer_config.json once.
`special_vocab` finds what llama.cpp's `SpecialVocab` finds: special token
ids (tokenizer_config.json's bos/eos/unk/sep/pad/mask token looked up among
tokenizer.json's added tokens, then config.json's `*_token_id`), the
`add_bos/eos/sep_token` flags (from a simple TemplateProcessing
post-processor, then tokenizer_config.json), and the chat template
(tokenizer_config.json, else chat_template.jinja or chat_template.json).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from ..errors import ConvertError
from ..gguf import GGUFWriter, ValueType

log = logging.getLogger("kiln.convert")

SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
# the special ids llama.cpp's writer has a key for (cls has none: it is skipped)
SPECIAL_ID_KEYS = {
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "unk": "tokenizer.ggml.unknown_token_id",
    "sep": "tokenizer.ggml.seperator_token_id",
    "pad": "tokenizer.ggml.padding_token_id",
    "mask": "tokenizer.ggml.mask_token_id",
    "eot": "tokenizer.ggml.eot_token_id",
    "eom": "tokenizer.ggml.eom_token_id",
}
ADD_KEYS = {
    "bos": "tokenizer.ggml.add_bos_token",
    "eos": "tokenizer.ggml.add_eos_token",
    "sep": "tokenizer.ggml.add_sep_token",
}


def load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path}: is not valid JSON ({e}); download the {what} again") from None


class TokenizerFiles:
    """The tokenizer files of a checkpoint directory, read once."""

    def __init__(self, hf_dir: Path, config: dict):
        self.dir = hf_dir
        self.config = config
        tj = hf_dir / "tokenizer.json"
        tc = hf_dir / "tokenizer_config.json"
        self.tokenizer_json: dict | None = load_json(tj, "tokenizer") if tj.is_file() else None
        self.tokenizer_config: dict | None = load_json(tc, "tokenizer config") if tc.is_file() else None
        self.spm_path = hf_dir / "tokenizer.model"
        if self.tokenizer_json is None and not self.spm_path.is_file():
            hint = (
                " (vocab.json/merges.txt is the slow tokenizer format: load it with transformers' "
                "AutoTokenizer and save_pretrained to create tokenizer.json)"
                if (hf_dir / "vocab.json").is_file()
                else ""
            )
            raise ConvertError(
                f"{hf_dir}: no tokenizer.json or tokenizer.model{hint}; copy the tokenizer files of the model "
                "into the directory"
            )

    @property
    def added_tokens(self) -> list[dict]:
        return list((self.tokenizer_json or {}).get("added_tokens") or [])

    @property
    def bpe_model(self) -> dict | None:
        model = (self.tokenizer_json or {}).get("model") or {}
        return model if model.get("type") == "BPE" else None

    def added_tokens_decoder(self) -> dict[int, dict]:
        """id -> {content, special}: tokenizer_config.json's list, else tokenizer.json's added_tokens."""
        dec = (self.tokenizer_config or {}).get("added_tokens_decoder")
        if isinstance(dec, dict) and dec:
            return {int(k): v for k, v in dec.items()}
        return {int(t["id"]): t for t in self.added_tokens}


def write_special(w: GGUFWriter, ids: dict[str, int], add: dict[str, bool], template) -> None:
    for typ, tid in ids.items():
        if typ in SPECIAL_ID_KEYS:
            w.add(SPECIAL_ID_KEYS[typ], tid, ValueType.UINT32)
    for typ, flag in add.items():
        if typ in ADD_KEYS:
            w.add(ADD_KEYS[typ], bool(flag), ValueType.BOOL)
    write_chat_template(w, template)


def write_chat_template(w: GGUFWriter, template: str | list | None) -> None:
    """One template -> tokenizer.chat_template; named ones -> tokenizer.chat_template.NAME too."""
    if isinstance(template, list):
        default, names = None, []
        for choice in template:
            name = re.sub(r"[^A-Za-z0-9]", "_", str(choice.get("name", "")))
            text = choice.get("template")
            if not name or text is None:
                continue
            if name == "default":
                default = text
            else:
                names.append(name)
                if text:
                    w.add(f"tokenizer.chat_template.{name}", text, ValueType.STRING)
        if names:
            w.add("tokenizer.chat_templates", names, ValueType.ARRAY, ValueType.STRING)
        template = default
    if template:
        w.add("tokenizer.chat_template", template, ValueType.STRING)


# ----- special tokens, add_*_token flags, chat template (llama.cpp's SpecialVocab) -----


def special_vocab(files: TokenizerFiles, n_vocab: int | None) -> tuple[dict[str, int], dict[str, bool], Any]:
    """(special ids, add_* flags, chat template); ids at or above `n_vocab` (when given) are skipped."""
    types = list(SPECIAL_TYPES)
    ids: dict[str, int] = {}
    add: dict[str, bool] = {}

    def set_id(typ: str, tid: Any) -> None:
        if not isinstance(tid, int) or isinstance(tid, bool) or typ in ids:
            return
        if tid < 0:
            raise ConvertError(f"{files.dir}: special token {typ} has the invalid id {tid}")
        if n_vocab is None or tid < n_vocab:
            ids[typ] = tid
        else:
            log.warning(
                "special token %s: id %d is not below the vocabulary size %d; skipped", typ, tid, n_vocab
            )

    tc = dict(files.tokenizer_config) if files.tokenizer_config else None
    if files.tokenizer_json is not None:
        _post_processor_flags(files.tokenizer_json, tc, add, types)
    if tc:
        for typ in types:
            flag = tc.get(f"add_{typ}_token")
            if isinstance(flag, bool):
                add[typ] = flag
            entry = tc.get(f"{typ}_token")
            content = entry.get("content") if isinstance(entry, dict) else entry
            if not isinstance(content, str):
                continue
            tid = next((t.get("id") for t in files.added_tokens if t.get("content") == content), None)
            set_id(typ, tid)
    for typ in types:
        set_id(typ, files.config.get(f"{typ}_token_id"))
    return ids, add, _chat_template(files, tc)


def _post_processor_flags(tj: dict, tc: dict | None, add: dict[str, bool], types: list[str]) -> None:
    """add_bos/add_eos/add_sep from the post-processor, as llama.cpp reads them (simple templates only)."""
    cfg = tc or {}
    bos, cls, eos, sep = (cfg.get(k) for k in ("bos_token", "cls_token", "eos_token", "sep_token"))
    bos, cls, eos, sep = (v.get("content") if isinstance(v, dict) else v for v in (bos, cls, eos, sep))
    if not bos and cls and tc:
        tc["bos_token"] = bos = cls
    if not eos and sep and tc:
        tc["eos_token"] = eos = sep
    post = tj.get("post_processor")
    if not post:
        return
    for proc in post.get("processors", [post]):
        kind = proc.get("type")
        if kind == "RobertaProcessing":
            add.update(bos=True, eos=True, sep=True)
            if not cls and tc:
                tc["cls_token"] = cls = proc.get("cls", [bos])[0]
            if not sep and tc:
                tc["sep_token"] = sep = proc.get("sep", [eos])[0]
            continue
        if kind != "TemplateProcessing":
            continue
        single, pair = proc.get("single") or [], proc.get("pair") or []
        first = last = None
        if len(single) > 1:
            first = single[0].get("SpecialToken", {}).get("id")
            if first:
                if not tc:
                    bos = first
                add["bos"] = first in (bos, cls)
            last = single[-1].get("SpecialToken", {}).get("id")
            if last:
                if not tc:
                    eos = last
                elif last != eos:
                    # the trailing token is the real eos; the configured one becomes eot (or eom)
                    extra = "eot" if "eot" not in types else ("eom" if "eom" not in types else None)
                    if extra:
                        types.append(extra)
                        tc[f"{extra}_token"] = eos
                    tc["eos_token"] = eos = last
                add["eos"] = last == eos
        if pair:
            start = 1 if first and pair[0].get("SpecialToken", {}).get("id") == first else 0
            stop = -1 if last and pair[-1].get("SpecialToken", {}).get("id") == last else None
            pair = pair[slice(start, stop)]
            if pair:
                a = pair[0].get("Sequence", {}).get("id")
                b = pair[-1].get("Sequence", {}).get("id")
                middle = pair[1:-1]
                if a == "A" and b == "B" and middle:
                    add_sep = False
                    entry = middle[0].get("SpecialToken", {}).get("id")
                    if entry and entry in (sep, eos) and not last:
                        add_sep = True
                    if len(middle) == 2:
                        entry = middle[1].get("SpecialToken", {}).get("id")
                        if entry and entry in (sep, eos):
                            add_sep = True
                    add["sep"] = add_sep
                    if add_sep and not sep and tc:
                        tc["sep_token"] = eos


def _chat_template(files: TokenizerFiles, tc: dict | None) -> str | list | None:
    alt: str | list | None = None
    jinja = files.dir / "chat_template.jinja"
    cj = files.dir / "chat_template.json"
    if jinja.is_file():
        alt = jinja.read_text(encoding="utf-8")
        extra = sorted((files.dir / "additional_chat_templates").glob("*.jinja"))
        if extra:
            alt = [{"name": "default", "template": alt}] + [
                {"name": p.stem, "template": p.read_text(encoding="utf-8")} for p in extra
            ]
    elif cj.is_file():
        alt = load_json(cj, "chat template").get("chat_template")
    template = (tc or {}).get("chat_template", alt)
    if template is None or isinstance(template, (str, list)):
        return template
    log.warning(
        "%s: chat_template has type %s; ignored", files.dir / "tokenizer_config.json", type(template).__name__
    )
    return None
