"""lifelong: continual learning with faithful methods, fast in-memory benchmarks and trustworthy metrics."""

from lifelong.config import Config, build_config
from lifelong.learner import Learner
from lifelong.loop import resume, run
from lifelong.version import __version__

__all__ = ["Config", "Learner", "build_config", "resume", "run", "__version__"]
