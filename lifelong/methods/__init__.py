"""The method registry: explicit, one entry per file. Config sections and variants are derived from it."""

from __future__ import annotations

from collections.abc import Iterable

from lifelong.errors import UserError, unknown
from lifelong.methods.agem import AGEM
from lifelong.methods.base import Method, Params
from lifelong.methods.der import DER, DERPlusPlus
from lifelong.methods.ebll import EBLL
from lifelong.methods.er import ER
from lifelong.methods.er_ace import ERACE
from lifelong.methods.ewc import EWC
from lifelong.methods.gdumb import GDumb
from lifelong.methods.gs_mask import GSMask
from lifelong.methods.icarl import ICaRL
from lifelong.methods.imm import MeanIMM, ModeIMM
from lifelong.methods.joint import Joint
from lifelong.methods.lwf import LwF
from lifelong.methods.mark import MARK
from lifelong.methods.mas import MAS
from lifelong.methods.mas_alpha import MASAlpha
from lifelong.methods.naive import Naive
from lifelong.methods.online_ewc import OnlineEWC
from lifelong.methods.si import SI
from lifelong.methods.single_task import SingleTask
from lifelong.methods.slni import EWCSLNI, MASSLNI

METHODS: dict[str, type[Method]] = {
    m.name: m
    for m in (Naive, Joint, SingleTask, EWC, OnlineEWC, SI, MAS, MASAlpha, MASSLNI, EWCSLNI, LwF, EBLL, MeanIMM,
              ModeIMM, GSMask, MARK, ER, DER, DERPlusPlus, GDumb, ICaRL, AGEM, ERACE)
}


def param_sections() -> dict[str, type[Params]]:
    """The config sections (top-level YAML keys) that hold hyperparameters, by section name, from METHODS."""
    sections = {name: params for m in METHODS.values() for name, params in m.extra_sections.items()}
    return {**sections, **{m.config_section(): m.Params for m in METHODS.values()}}


def method_class(name: str, sections: Iterable[str] = ()) -> type[Method]:
    """The class that runs ``method: name`` in a config holding these method ``sections``.

    A registered variant (``variant_of = (base, section)``, e.g. mas-slni = mas + slni) replaces its base
    method when its section is present.
    """
    if name not in METHODS:
        raise unknown("method", name, METHODS)
    chosen = METHODS[name]
    for section in sections:
        variants = {m.variant_of[0]: m for m in METHODS.values() if m.variant_of and m.variant_of[1] == section}
        if not variants or chosen in variants.values():
            continue
        if chosen.name not in variants:
            raise UserError(f"the {section} section combines only with methods {', '.join(variants)} (or "
                            f"{', '.join(m.name for m in variants.values())}), not '{name}'; remove the section "
                            "or change the method")
        chosen = variants[chosen.name]
    return chosen
