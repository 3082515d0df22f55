"""`kiln bench`'s flags: comma lists parsed into value lists, and their cartesian product.

Every model flag takes a comma list (`-t 1,2 -ub 128,512 -ctk f16,q8_0 -fmoe 0,1`) and may be
repeated (the lists are joined), as in llama-bench; unlike ik_llama.cpp's llama-bench, `-fmoe`,
`-rtr` and `-ot` sweep too. `expand()` yields one `Instance` per combination and test, in
llama-bench's order (the model-load flags outermost, so that consecutive instances can share
a loaded model; threads and depth innermost).

`-ot` keeps ik_llama.cpp's meaning inside one alternative, `REGEX=TYPE[,REGEX=TYPE...]`, and a
repeated `-ot` adds to the set; `;` separates alternatives to sweep:

    -ot "exps=CPU;attn=CPU,exps=CPU"        two configurations
    -ot "exps=CPU" -ot "attn=CPU;"          {exps=CPU,attn=CPU} and {exps=CPU}
    -ot ";exps=CPU"                         no override, then exps=CPU

(each `-ot` contributes one of its alternatives; an empty alternative adds nothing).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionError
from ..runtime.options import KV_CACHE_TYPES

OUTPUT_FORMATS = ("md", "csv", "json", "jsonl")
SPLIT_MODES = ("none", "layer", "row", "graph")


# ----- one value of a flag -----

def _int(flag: str, text: str, low: int | None = 0, high: int | None = None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise OptionError(f"{flag} {text!r}: not an integer; give a comma list such as {flag} 128,512") from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise OptionError(f"{flag} {value}: must be {bounds}")
    return value


def _bool(flag: str, text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "on", "true", "yes"):
        return True
    if t in ("0", "off", "false", "no"):
        return False
    raise OptionError(f"{flag} {text!r}: expected 0 or 1 (a comma list sweeps both: {flag} 0,1)")


def _items(text: str) -> list[str]:
    return [s for s in text.split(",")]


def _ints(low: int | None = 0, high: int | None = None) -> Callable[[str, str], list]:
    return lambda flag, text: [_int(flag, s, low, high) for s in _items(text)]


def _bools(flag: str, text: str) -> list:
    return [_bool(flag, s) for s in _items(text)]


def _cache_types(flag: str, text: str) -> list:
    out = []
    for s in _items(text):
        if s not in KV_CACHE_TYPES:
            raise OptionError(f"{flag} {s}: unsupported KV cache type; use one of {', '.join(KV_CACHE_TYPES)}")
        out.append(s)
    return out


def _split_modes(flag: str, text: str) -> list:
    for s in _items(text):
        if s not in SPLIT_MODES:
            raise OptionError(f"{flag} {s}: use one of {', '.join(SPLIT_MODES)}")
    return _items(text)


def _models(flag: str, text: str) -> list:
    out = []
    for s in _items(text):
        if not s:
            raise OptionError(f"{flag} {text!r}: an empty model path")
        if not Path(s).is_file():
            raise OptionError(f"{flag} {s}: no such model file")
        out.append(s)
    return out


def _pair(flag: str, text: str) -> list:
    parts = text.split(",")
    if len(parts) != 2:
        raise OptionError(f"{flag} {text!r}: expected PP,TG (e.g. {flag} 512,128); repeat {flag} for several")
    return [(_int(flag, parts[0]), _int(flag, parts[1]))]


def _sers(flag: str, text: str) -> list:
    parts = text.split(",")
    if len(parts) % 2:
        raise OptionError(f"{flag} {text!r}: expected K,T pairs (e.g. {flag} 6,0.5 or {flag} -1,0,6,0.5)")
    out = []
    for k, t in zip(parts[::2], parts[1::2], strict=True):
        try:
            out.append((int(k), float(t)))
        except ValueError:
            raise OptionError(f"{flag} {k},{t}: expected an integer K and a number T (e.g. {flag} 6,0.5)") from None
    return out


def _thread_pairs(flag: str, text: str) -> list:
    """-tgb G,B[;G,B...]: generation and batch threads."""
    out = []
    for s in text.split(";"):
        parts = s.split(",")
        if len(parts) != 2:
            raise OptionError(f"{flag} {s!r}: expected GEN,BATCH thread counts (e.g. {flag} 4,8;2,8)")
        out.append((_int(flag, parts[0], 1), _int(flag, parts[1], 1)))
    return out


def _threads(flag: str, text: str) -> list:
    return [(t, t) for t in _ints(1)(flag, text)]


def _tensor_splits(flag: str, text: str) -> list:
    out = []
    for s in _items(text):
        try:
            out.append(tuple(float(x) for x in re.split(r"[;/]+", s) if x))
        except ValueError:
            raise OptionError(f"{flag} {s!r}: expected proportions such as {flag} 3/1") from None
    return out


def _overrides(flag: str, text: str) -> list:
    """The alternatives of one -ot value, each a tuple of REGEX=TYPE strings."""
    out = []
    for alternative in text.split(";"):
        pieces = [p for p in alternative.split(",") if p]
        for p in pieces:
            regex, eq, buft = p.partition("=")
            if not eq or not regex or not buft:
                raise OptionError(f"{flag} {p!r}: expected REGEX=TYPE (e.g. {flag} exps=CPU); ';' separates alternatives")
            try:
                re.compile(regex)
            except re.error as e:
                raise OptionError(f"{flag} {regex!r}: not a valid regular expression ({e})") from None
        out.append(tuple(pieces))
    return out


# ----- the flags -----

@dataclass(frozen=True)
class SweepFlag:
    field: str
    names: tuple[str, ...]
    parse: Callable[[str, str], list]
    default: tuple
    help: str


# In llama-bench's loop order (outermost first), then the tests.
SWEEP_FLAGS = (
    SweepFlag("model", ("-m", "--model"), _models, (None,), "GGUF files (default: SmolLM2-135M-Instruct Q4_1)"),
    SweepFlag("n_gpu_layers", ("-ngl", "--n-gpu-layers"), _ints(-1), (0,), "accepted, not acted on (CPU only)"),
    SweepFlag("split_mode", ("-sm", "--split-mode"), _split_modes, ("layer",), "accepted, not acted on"),
    SweepFlag("main_gpu", ("-mg", "--main-gpu"), _ints(0), (0,), "accepted, not acted on"),
    SweepFlag("tensor_split", ("-ts", "--tensor-split"), _tensor_splits, ((),), "accepted, not acted on"),
    SweepFlag("use_mmap", ("-mmp", "--mmap"), _bools, (True,), "0: read the weights into memory (--no-mmap)"),
    SweepFlag("repack", ("-rtr", "--run-time-repack"), _bools, (False,), "repack the weights for the CPU kernels at load (no mmap)"),
    SweepFlag("override_tensor", ("-ot", "--override-tensor"), _overrides, ((),),
              "REGEX=TYPE[,...]; ';' separates alternatives to sweep (accepted, not acted on yet)"),
    SweepFlag("n_batch", ("-b", "--batch-size"), _ints(1), (2048,), "logical batch size"),
    SweepFlag("n_ubatch", ("-ub", "--ubatch-size"), _ints(1), (512,), "physical batch size"),
    SweepFlag("type_k", ("-ctk", "--cache-type-k"), _cache_types, ("f16",), "K cache type"),
    SweepFlag("type_v", ("-ctv", "--cache-type-v"), _cache_types, ("f16",), "V cache type"),
    SweepFlag("no_kv_offload", ("-nkvo", "--no-kv-offload"), _bools, (False,), "accepted, not acted on"),
    SweepFlag("flash_attn", ("-fa", "--flash-attn"), _bools, (True,), "accepted; kiln's attention is exact"),
    SweepFlag("mla_attn", ("-mla", "--mla-use"), _ints(0, 3), (3,), "MLA mode for DeepSeek models"),
    SweepFlag("attn_max_batch", ("-amb", "--attention-max-batch"), _ints(0), (256,), "max MiB of K*Q per chunk"),
    SweepFlag("fused_moe", ("-fmoe", "--fused-moe"), _bools, (True,), "fuse the experts' up and gate products"),
    SweepFlag("ser", ("-ser", "--smart-expert-reduction"), _sers, ((-1, 0.0),),
              "K,T pairs: keep at least K experts, skip those below T x the best (default: -1,0: off)"),
    SweepFlag("n_threads", ("-t", "--threads"), _threads, ((0, 0),), "CPU threads (default: torch's count)"),
    SweepFlag("n_depth", ("-d", "--n-depth"), _ints(0), (0,), "tokens already in the KV cache before each test"),
)
TEST_FLAGS = (
    SweepFlag("n_prompt", ("-p", "--n-prompt"), _ints(0), (512,), "prompt processing tests (ppN)"),
    SweepFlag("n_gen", ("-n", "--n-gen"), _ints(0), (128,), "generation tests (tgN)"),
    SweepFlag("n_pg", ("-pg",), _pair, (), "PP,TG: prompt then generation, timed together (ppPP+tgTG)"),
    SweepFlag("n_gp", ("-gp",), _pair, (), "PP,TG: generation after a prompt, generation timed (tgTG@ppPP)"),
)
ALL_FLAGS = SWEEP_FLAGS + TEST_FLAGS
# extra spellings that fill the same field
THREAD_PAIRS = SweepFlag("n_threads", ("-tgb", "--threads-gen-batch"), _thread_pairs, (), "GEN,BATCH[;GEN,BATCH...] threads")


@dataclass
class BenchParams:
    values: dict[str, list]  # field -> the values to sweep (defaults filled in)
    reps: int = 5
    output: str = "md"
    warmup: bool = True
    verbose: bool = False
    print_overrides: bool = False

    def swept_or_changed(self, name: str) -> bool:
        """llama-bench's rule for showing a markdown column: several values, or not the default."""
        flag = next(f for f in ALL_FLAGS if f.field == name)
        return len(self.values[name]) > 1 or tuple(self.values[name]) != flag.default


def dest(flag: SweepFlag) -> str:
    """The argparse destination of a flag."""
    return "n_threads_gen_batch" if flag is THREAD_PAIRS else flag.field


def parse_params(raw: dict[str, list[str] | None], *, reps: str = "5", output: str = "md", warmup: str = "1",
                 verbose: bool = False, print_overrides: str = "0", default_threads: int = 1) -> BenchParams:
    """raw: argparse destination -> the strings given (one per occurrence of the flag, in order)."""
    values: dict[str, list] = {}
    for flag in ALL_FLAGS + (THREAD_PAIRS,):
        texts = raw.get(dest(flag)) or []
        if not texts:
            continue
        parsed = values.setdefault(flag.field, [])
        name = flag.names[0]
        if flag.field == "override_tensor":  # each -ot contributes one of its alternatives
            per_flag = [flag.parse(name, text) for text in texts]
            parsed.extend(_dedup(tuple(p for alt in combo for p in alt) for combo in itertools.product(*per_flag)))
        else:
            for text in texts:
                parsed.extend(flag.parse(name, text))
    for flag in ALL_FLAGS:
        values.setdefault(flag.field, list(flag.default))
    if values["n_threads"] == [(0, 0)]:
        values["n_threads"] = [(default_threads, default_threads)]
    if output not in OUTPUT_FORMATS:
        raise OptionError(f"-o {output}: use one of {', '.join(OUTPUT_FORMATS)}")
    params = BenchParams(values, reps=_int("-r", reps, 1), output=output, warmup=_bool("-w", warmup),
                         verbose=verbose, print_overrides=_bool("--print-overrides", print_overrides))
    if not any(n > 0 for n in values["n_prompt"] + values["n_gen"]) and not any(
        a or b for a, b in values["n_pg"] + values["n_gp"]
    ):
        raise OptionError("nothing to measure: every -p and -n is 0 and no -pg/-gp is given")
    return params


def _dedup(items) -> list:
    out = []
    for it in items:
        if it not in out:
            out.append(it)
    return out


# ----- the product -----

@dataclass(frozen=True)
class Test:
    kind: str  # "pp", "tg", "pg" (prompt then generation), "gp" (generation after a prompt)
    n_prompt: int
    n_gen: int
    n_depth: int = 0

    @property
    def label(self) -> str:
        base = {
            "pp": f"pp{self.n_prompt}",
            "tg": f"tg{self.n_gen}",
            "pg": f"pp{self.n_prompt}+tg{self.n_gen}",
            "gp": f"tg{self.n_gen}@pp{self.n_prompt}",
        }[self.kind]
        return base + (f" @ d{self.n_depth}" if self.n_depth else "")

    @property
    def n_tokens(self) -> int:
        """The tokens t/s counts: the prompt (not for gp, whose prompt is not timed) and the generation."""
        return (0 if self.kind == "gp" else self.n_prompt) + self.n_gen

    @property
    def n_ctx(self) -> int:
        return self.n_depth + self.n_prompt + self.n_gen


@dataclass
class Instance:
    """One row of the table: a combination of the swept flags (field -> value) and a test."""

    settings: dict
    test: Test

    @property
    def threads(self) -> int:
        """The thread count llama-bench reports: the generation threads when the test generates."""
        gen, batch = self.settings["n_threads"]
        return gen if self.test.n_gen > 0 else batch


def _tests(params: BenchParams, depth: int) -> list[Test]:
    v = params.values
    tests = [Test("pp", n, 0, depth) for n in v["n_prompt"] if n > 0]
    tests += [Test("tg", 0, n, depth) for n in v["n_gen"] if n > 0]
    tests += [Test("pg", p, g, depth) for p, g in v["n_pg"] if p or g]
    tests += [Test("gp", p, g, depth) for p, g in v["n_gp"] if p or g]
    return tests


def expand(params: BenchParams) -> list[Instance]:
    """Every combination of the swept values, each with every test, in llama-bench's order."""
    names = [f.field for f in SWEEP_FLAGS if f.field != "n_depth"]
    out = []
    for combo in itertools.product(*(params.values[n] for n in names)):
        settings = dict(zip(names, combo, strict=True))
        for depth in params.values["n_depth"]:
            out.extend(Instance(settings, t) for t in _tests(params, depth))
    return out


LOAD_INDEPENDENT = ("n_threads",)


def load_key(inst: Instance) -> tuple:
    """What a loaded engine depends on: two instances with the same key share one."""
    return tuple((k, repr(v)) for k, v in inst.settings.items() if k not in LOAD_INDEPENDENT)
