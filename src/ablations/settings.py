"""Command-line settings as `key=value`, the way every entry point takes them (Hydra's style, without Hydra).

    chosen = settings.parse(sys.argv[1:], ReportSettings(), __doc__)

A dataclass instance gives the keys, their types and defaults; OmegaConf reads the values (`out=reports/r.pdf`,
`mlflow=false`, `tiers=[quick,full]`). A list also takes `tiers=quick` or `tiers=quick,full`, as Hydra's overrides
write a choice of experiments. An unknown key or a value of the wrong type ends the process with one line and
exit status 2; `help` prints the usage.
"""

from __future__ import annotations

import sys
from typing import NoReturn, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

HELP = ("help", "--help", "-h")

Settings = TypeVar("Settings")


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse(argv: list[str], defaults: Settings, usage: str) -> Settings:
    """`defaults` (a dataclass instance) with the `key=value` items of argv applied, in order."""
    if any(item in HELP for item in argv):
        print(usage)
        sys.exit(0)
    config = OmegaConf.structured(defaults)
    OmegaConf.set_struct(config, True)
    keys = list(config)
    for item in argv:
        key, equals, value = item.partition("=")
        if not equals or key not in keys:
            fail(f"unknown setting {item!r}; valid: {', '.join(f'{k}=' for k in keys)}")
        if isinstance(getattr(defaults, key), list) and not value.startswith("["):
            value = f"[{value}]"
        try:
            config.merge_with_dotlist([f"{key}={value}"])
        except OmegaConfBaseException as err:
            fail(f"{item}: {str(err).splitlines()[0]}")
        except yaml.YAMLError:
            fail(f"{item}: cannot read the value (a list is written [a,b])")
    try:
        return OmegaConf.to_object(config)
    except OmegaConfBaseException as err:  # an interpolation (`out=${results}/r.pdf`) that does not resolve
        fail(str(err).splitlines()[0])
