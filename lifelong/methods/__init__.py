"""The method registry: explicit, one entry per file."""

from pydantic import BaseModel

from lifelong.methods.base import Method
from lifelong.methods.ebll import EBLL
from lifelong.methods.ewc import EWC
from lifelong.methods.gs_mask import GSMask
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
              ModeIMM, GSMask, MARK)
}

# Config sections (top-level YAML keys) that hold hyperparameters, by section name.
PARAM_SECTIONS: dict[str, type[BaseModel]] = {m.config_section(): m.Params for m in METHODS.values()}

# A config's `slni` section turns these methods into their SLNI versions (`--method mas --set slni.lam=1e-3`).
WITH_SLNI: dict[str, str] = {MAS.name: MASSLNI.name, EWC.name: EWCSLNI.name}
