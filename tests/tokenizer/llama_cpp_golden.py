"""Token ids from ik_llama.cpp itself for the test vocabularies: the spec that kiln's tokenizer follows.

data/llama_cpp_golden.json holds, for each vocabulary variant (`VARIANTS`) and
each case (`CASES`: a text and the flags add_special / parse_special), the ids
that ik_llama.cpp's `llama-tokenize` printed. It was made in three steps
(see data/README.md):

    python -m tests.tokenizer.llama_cpp_golden prepare DIR   # GGUF files, texts and run.sh
    JOBS=16 DIR/run.sh path/to/llama-tokenize DIR/raw        # where ik_llama.cpp is built
    python -m tests.tokenizer.llama_cpp_golden collect DIR/raw

The variants are rebuilt by the tests from the stored vocabularies
(tests/tokenizer/vocabs.py), so the figures stay tied to them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from kiln.tokenizer.pretokenizers import PRE_TOKENIZERS

from .vocabs import DATA, TEXTS, WIKI, bpe_metadata, spm_metadata, write_gguf

GOLDEN = DATA / "llama_cpp_golden.json"
WIKI_CHARS = 60_000  # the slice of wiki.test.raw tokenized for the "wiki" case (its ids are stored as a hash)


def _variants() -> dict:
    v = {}
    for pre in sorted(PRE_TOKENIZERS):
        if pre == "gpt2":
            continue  # not a name llama.cpp accepts (kiln's alias of gpt-2)
        v[f"bpe-{pre}"] = (lambda pre=pre: bpe_metadata(pre), "kiln-test-vocab")
    v["bpe-gpt-2-bos-eos"] = (
        lambda: bpe_metadata(
            "gpt-2", **{"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True}
        ),
        "kiln-test-vocab",
    )
    v["spm-llama"] = (lambda: spm_metadata(), "kiln-test-vocab")
    v["spm-gemma"] = (lambda: spm_metadata(**{"tokenizer.ggml.add_space_prefix": False}), "kiln-test-vocab")
    # Phi-3 (by name): special tokens eat the whitespace after them; llama.cpp needs <|endoftext|> there
    phi3 = [("<|endoftext|>", 3), ("<|user|>", 3), ("<|end|>", 3)]
    v["spm-phi3"] = (lambda: spm_metadata(phi3), "Phi3 kiln-test-vocab")
    return v


VARIANTS = _variants()

BPE_SPECIAL_TEXTS = [
    "<|im_start|>user\nHi <think>x</think><|im_end|>\n<|im_start|>assistant\n",
    "[A]]x and <|eot_id|> and <unused0> and <|endoftext|><|endoftext|> end",
    " unreachableword unreachableword, again unreachablewords",
]
SPM_SPECIAL_TEXTS = [
    "<s>Hello</s> <start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>   spaces after a special token\t<end_of_turn>  \n and <unk> too",
    "<|user|>  Hi\n<|end|>\n<|endoftext|>  x </s>  y",
]

# (name, text) pairs; every text runs with (add_special, parse_special) = (1, 1), (0, 0) and (0, 1)
FLAGS = [(True, True), (False, False), (False, True)]


def cases(variant: str) -> list[tuple[str, str]]:
    special = SPM_SPECIAL_TEXTS if variant.startswith("spm") else BPE_SPECIAL_TEXTS
    out = [(f"text{i}", t) for i, t in enumerate(TEXTS)] + [(f"special{i}", t) for i, t in enumerate(special)]
    return out


def wiki_slice() -> str:
    return WIKI.read_text(encoding="utf-8")[:WIKI_CHARS]


def metadata(variant: str) -> dict:
    """The variant's metadata as kiln reads it from the GGUF file (`general.name` included)."""
    make, name = VARIANTS[variant]
    return {"general.name": name, **make()}


def ids_digest(ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode("ascii")).hexdigest()


def prepare(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "texts").mkdir(exist_ok=True)
    commands = []
    for variant, (make, name) in VARIANTS.items():
        write_gguf(out / f"{variant}.gguf", make(), name=name)
        for case, text in [*cases(variant), ("wiki", wiki_slice())]:
            path = out / "texts" / f"{variant}.{case}.txt"
            path.write_bytes(text.encode("utf-8"))
            for add, parse in FLAGS if case != "wiki" else [(False, False)]:
                flags = ("" if add else " --no-bos") + ("" if parse else " --no-parse-special")
                res = f'"$RAW/{variant}.{case}.{int(add)}{int(parse)}"'
                commands.append(
                    f'"$BIN" -m "$D/{variant}.gguf" -f "$D/texts/{variant}.{case}.txt" --ids --log-disable{flags}'
                    f" > {res} 2> {res}.err"
                )
    (out / "commands.txt").write_text("\n".join(commands) + "\n")
    script = """#!/bin/sh
# usage: run.sh LLAMA_TOKENIZE RAWDIR   (JOBS=n runs n at a time)
export BIN="$1" RAW="$2" D="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$RAW"
xargs -d '\\n' -n 1 -P "${JOBS:-2}" sh -c < "$D/commands.txt"
"""
    (out / "run.sh").write_text(script)
    (out / "run.sh").chmod(0o755)


def collect(raw: Path) -> None:
    """Write data/llama_cpp_golden.json: each distinct id list once ("ids"), and for each variant
    and case the index of its list (the wiki slice: count and sha256 of its ids)."""
    lists: dict[str, int] = {}
    variants: dict = {}
    for variant in VARIANTS:
        entry = {}
        for case, _ in [*cases(variant), ("wiki", "")]:
            for add, parse in FLAGS if case != "wiki" else [(False, False)]:
                key = f"{case}.{int(add)}{int(parse)}"
                text = (raw / f"{variant}.{key}").read_text().strip()
                if not text.startswith("["):
                    raise SystemExit(f"{variant}.{key}: no ids ({text[:200]!r})")
                ids = json.loads(text)
                if case == "wiki":
                    entry[key] = {"n": len(ids), "sha256": ids_digest(ids)}
                else:
                    entry[key] = lists.setdefault(json.dumps(ids, separators=(",", ":")), len(lists))
        variants[variant] = entry
    about = "ids printed by ik_llama.cpp's llama-tokenize (commit 8337e4cd3); see tests/tokenizer/llama_cpp_golden.py"
    lines = ["{", f'"_about": {json.dumps(about)},', '"ids": [']
    lines += [lst + ("," if i + 1 < len(lists) else "") for i, lst in enumerate(lists)]
    lines += ["],", '"variants": {']
    lines += [
        f"{json.dumps(v)}: {json.dumps(e, separators=(',', ':'))}" + ("," if i + 1 < len(variants) else "")
        for i, (v, e) in enumerate(variants.items())
    ]
    lines += ["}", "}"]
    GOLDEN.write_text("\n".join(lines) + "\n")
    print("wrote", GOLDEN)


def load_golden() -> dict:
    """{variant: {case key: ids, or {"n", "sha256"} for the wiki slice}}."""
    data = json.loads(GOLDEN.read_text())
    ids = data["ids"]
    return {
        v: {k: (ids[x] if isinstance(x, int) else x) for k, x in entry.items()}
        for v, entry in data["variants"].items()
    }


if __name__ == "__main__":
    command, where = sys.argv[1], Path(sys.argv[2])
    {"prepare": prepare, "collect": collect}[command](where)
