"""`tokenizer.ggml.pre`: which pre-tokenizer llama.cpp must use for a byte-level BPE vocabulary.

llama.cpp's converter tokenizes a fixed probe text, hashes the token ids
(sha256 of the Python list's `str`) and looks the hash up in a table of
known tokenizers. kiln does the same with the `tokenizers` library and the
same table (facts read from ik_llama.cpp's `convert_hf_to_gguf.py`). A
tokenizer that is not in the table (a fine-tune with a new vocabulary, a
tiny test model) is named from its pre-tokenizer regex where that regex is
one llama.cpp implements; otherwise it gets `default` and a warning.
"""

from __future__ import annotations

import json
import logging
from hashlib import sha256
from pathlib import Path

from ..errors import ConvertError

log = logging.getLogger("kiln.convert")

# llama.cpp's probe text
PROBE_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f "
    "(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 "
    "3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 "
    "?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll "
    "make it, 'D you like some tea? We'Ve a'lL"
)

# sha256 of str(token ids of PROBE_TEXT) -> tokenizer.ggml.pre (where llama.cpp's table lists a
# hash twice, the later name wins there, and only that one is kept here)
KNOWN_HASHES = {
    "66b8d4e19ab16c3bfd89bce5d785fb7e0155e8648708a1f42077cb9fe002c273": "grok-2",
    "65df2fe396b537a53433301848c0a739f56d56f67ad3d35eba27961ac33c12bb": "openpangu",
    "972da7b59cec44d1f0a490a86c96df53859e486e481563e5dddac155013d87ac": "laguna",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3-8B
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed": "falcon",
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
    "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8": "command-r",
    "52df12b4c8d4176e7481aab4b6e8454d1fd0a210a04a574f6d4e067d10e23c3e": "cohere2_moe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 .. Qwen3
    "d30d75d9059f1aa2c19359de71047b3ae408c70875e8a3ccf8c5fba56c9d8af4": "qwen35",
    "99cc61242f7106804ce24fdf3a6451e4a55251078dffd5453c806e11b2310db3": "qwen35",
    "1444df51289cfa8063b96f0e62b1125440111bc79a52003ea14b6eac7016fd5f": "qwen35",
    "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945": "qwen35",
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",  # also mpt-7b
    "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e": "dbrx",
    "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f": "jina-v2-en",  # also bge-small
    "171aeeedd6fb548d418a7461d053f11b6f1f1fc9b387bd66640d28a4b9f5c643": "jina-v2-es",
    "27949a2493fc4a9f53f5b9b029c82689cfbe5d3a1929bb25e043089e28466de6": "jina-v2-de",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "c7ea5862a53e4272c035c8238367063e2b270d51faa48c0f09e9d5b54746c360": "poro-chat",
    "7967bfa498ade6b757b064f31e964dddbb80f8f9a4d68d4ba7998fcf281c531a": "jina-v2-code",
    "b6e8e1518dc4305be2fe39c313ed643381c4da5db34a98f6a04c093f8afbe99b": "chatglm-bpe",
    "81d72c7348a9f0ebe86f23298d37debe0a5e71149e29bd283904c02262b27516": "chatglm-bpe",
    "a1336059768a55c99a734006ffb02203cd450fed003e9a71886c88acf24fdbc2": "glm4",
    "9ca2dd618e8afaf09731a7cf6e2105b373ba6a1821559f258b272fe83e6eb902": "glm4",
    "7fc505bd3104ca1083b150b17d088b59534ede9bde81f0dd2090967d7fe52cee": "viking",
    "b53802fb28e26d645c3a310b34bfe07da813026ec7c7716883404d5e0f8b1901": "jais",
    "7b3e7548e4308f52a76e8229e4e6cc831195d0d1df43aed21ac6c93da05fec5f": "codeshell",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": "deepseek-v3",
    "b4b8ca1f9769494fbd956ebc4c249de6131fb277a4a3345a7a92c7dd7a55808d": "joyai-llm",
    "d5f1dd6f980fec569fb218a81a7658ac45fc56b38c5a0adeb1c232fbe04ef5ec": "seed-coder",
    "81212dc7cdb7e0c1074ca62c5aeab0d43c9f52b8a737be7b12a777c953027890": "kimi-k2",
    "9b1be57e70d20d9501b2b3186e792d81181ae36ada3903c26f9fea418cf87206": "bailingmoe2",
    "f4f37b6c8eb9ea29b3eac6bb8c8487c5ab7885f8d8022e67edc1c68ce8403e95": "minimax-m2",
    "9dcf830ee9990cdbf78cc523a5f7bd9ad8f3f9890c2d3581d2785ad10f07049d": "mellum2",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
}

# pre-tokenizer regexes (as tokenizer.json writes them) of the pre-tokenizers llama.cpp implements
_CONTRACTIONS = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
KNOWN_REGEXES = {
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen35",
}


def probe_hash(tokenizer_json: dict) -> str:
    """llama.cpp's `chkhsh` of a tokenizer: sha256 of str(ids of the probe text, special tokens added)."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_str(json.dumps(tokenizer_json))
    except Exception as e:  # the tokenizers library raises plain Exceptions
        raise ConvertError(f"tokenizer.json cannot be loaded by the tokenizers library: {e}") from None
    ids = tok.encode(PROBE_TEXT).ids
    return sha256(str(list(ids)).encode()).hexdigest()


def _regex_name(pre: dict | None) -> str | None:
    """The llama.cpp pre-tokenizer whose regexes a tokenizer.json pre_tokenizer spells, if any."""
    if not pre:
        return None
    kind = pre.get("type")
    if kind == "ByteLevel":
        return "gpt-2" if pre.get("use_regex", True) else None
    if kind != "Sequence":
        return None
    steps = pre.get("pretokenizers") or []
    kinds = [s.get("type") for s in steps]
    if (
        kinds == ["Digits", "ByteLevel"]
        and steps[0].get("individual_digits")
        and steps[1].get("use_regex", True)
    ):
        return "smollm"  # starcoder's regexes: one digit per token, then GPT-2's
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        split = steps[0]
        regex = (split.get("pattern") or {}).get("Regex")
        if split.get("behavior") == "Isolated" and not split.get("invert"):
            return KNOWN_REGEXES.get(regex)
    return None


def guess_pre_tokenizer(tokenizer_json: dict | None, where: Path) -> str:
    """tokenizer.ggml.pre for a byte-level BPE tokenizer.json."""
    if tokenizer_json is None:
        return "default"
    chkhsh = probe_hash(tokenizer_json)
    if chkhsh in KNOWN_HASHES:
        return KNOWN_HASHES[chkhsh]
    name = _regex_name(tokenizer_json.get("pre_tokenizer"))
    if name is not None:
        log.info(
            "%s: pre-tokenizer hash %s is not a known one; its regex is llama.cpp's %r", where, chkhsh, name
        )
        return name
    log.warning(
        "%s: the BPE pre-tokenizer was not recognized (hash %s, not in llama.cpp's table, and its regex is not "
        "one llama.cpp implements); writing tokenizer.ggml.pre = 'default', so llama.cpp and kiln may split "
        "text differently from the original tokenizer",
        where,
        chkhsh,
    )
    return "default"
