"""MODEL and the options that say how to load it, defined once for every command that loads a
model (``smolchat`` and ``smolchat serve``).

A new loading option is one field of :class:`LoadOptions` (its typer option in the
annotation); :func:`with_load_options` gives it to each such command, which receives them all
as one ``load: LoadOptions``. Where the option is also a setting of the config file, it needs
its key in ``smolchat.chat.config`` too; where the loader reads it, a field of the RunConfig.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from typing import Annotated, Any, get_type_hints

import typer

__all__ = [
    "DEFAULT_MODEL",
    "DEVICE_HELP",
    "MODEL_PANEL",
    "DType",
    "LoadOptions",
    "Quantize",
    "check_device",
    "with_load_options",
]

DEFAULT_MODEL = "HuggingFaceTB/SmolLM3-3B"
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
MODEL_PANEL = "Model"  # the --help panel of these options


class DType(str, Enum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class Quantize(str, Enum):
    nf4 = "nf4"


def check_device(value: str | None) -> str | None:
    """typer callback: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` (else a usage error)."""
    if value is not None and not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r} is not a device; use {DEVICE_HELP}")
    return value


@dataclass(frozen=True)
class LoadOptions:
    """MODEL and how to load it, as the command line gave them (None or False: not given)."""

    model: Annotated[
        str | None,
        typer.Argument(help=f"Hub id, local folder or .gguf file (default: {DEFAULT_MODEL})."),
    ] = None
    device: Annotated[
        str | None,
        typer.Option(help=DEVICE_HELP, callback=check_device, rich_help_panel=MODEL_PANEL),
    ] = None
    dtype: Annotated[
        DType | None,
        typer.Option(
            case_sensitive=False,
            metavar="DTYPE",  # the choices in the help text: a column of them wraps mid-word
            help="auto, bfloat16, float16 or float32 (auto: bf16 on CUDA, see the README).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None
    quantize: Annotated[
        Quantize | None,
        typer.Option(help="Quantize the weights (4-bit NF4).", rich_help_panel=MODEL_PANEL),
    ] = None
    exact: Annotated[
        bool,
        typer.Option(
            "--exact",
            help="GGUF on CPU: dequantize every weight to float32 (equal to transformers; "
            "slower, ~7x the file in RAM) instead of keeping the file's 4/8-bit blocks.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = False

    def given(self) -> dict[str, Any]:
        """The ones given, by field name, as plain values: ``{"dtype": "float32", "exact":
        True}`` (an enum as its value; None and False left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value is not False:
                out[f.name] = value.value if isinstance(value, Enum) else value
        return out

    @staticmethod
    def option(name: str) -> str:
        """The command-line spelling of field ``name``: ``--device``."""
        return "--" + name.replace("_", "-")


def with_load_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` (a typer command function with a ``load: LoadOptions`` parameter) taking
    the fields of :class:`LoadOptions` as its command-line parameters, in that parameter's
    place; ``command`` is called with them gathered into ``load``."""
    names = [f.name for f in fields(LoadOptions)]
    option_types = get_type_hints(LoadOptions, include_extras=True)
    own_types = get_type_hints(command, include_extras=True)
    own = inspect.signature(command).parameters
    if "load" not in own:
        raise TypeError(f"{command.__name__} has no 'load: LoadOptions' parameter")
    parameters: list[inspect.Parameter] = []
    for parameter in own.values():
        if parameter.name != "load":
            annotation = own_types.get(parameter.name, parameter.annotation)
            parameters.append(parameter.replace(annotation=annotation))
            continue
        parameters.extend(
            inspect.Parameter(
                f.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=f.default,
                annotation=option_types[f.name],
            )
            for f in fields(LoadOptions)
        )

    @functools.wraps(command)
    def with_options(**kwargs: Any) -> Any:
        load = LoadOptions(**{name: kwargs.pop(name) for name in names})
        return command(load=load, **kwargs)

    # what typer reads: the parameters one by one (inspect.signature, get_type_hints)
    setattr(with_options, "__signature__", inspect.Signature(parameters))  # noqa: B010
    with_options.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_options
