"""Every CPU block decoder by ggml type name (`decode_common.py` says what a decoder writes)."""

from __future__ import annotations

from .decode_iqk import DECODERS as _IQK
from .decode_kquants import DECODERS as _KQUANTS
from .decode_legacy import DECODERS as _LEGACY

DECODERS = {**_LEGACY, **_KQUANTS, **_IQK}
